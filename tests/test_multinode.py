"""Two `torchrun` "nodes" on this machine (`--nnodes 2 --nproc-per-node 1`, static rendezvous on 127.0.0.1) train
the semantic LM from token shards with the real command line (`audiolm-pl train semantic ... trainer.num_nodes=2`,
DDP over gloo): the nodes must read disjoint shards (`AUDIOLM_PL_READ_LOG`, data/stream.py) and end in step (same
step, the same weights on both ranks, one checkpoint)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from audiolm_pl.checkpoint import load_raw
from audiolm_pl.data.shard_paths import resolve_shards

STEPS = 4
WORKERS = 2  # per rank: 2 nodes x 2 workers = 4 readers, one per training shard of the fixture

# The command line the user runs, plus one callback that saves what each rank holds when training ends: the
# checkpoint comes from rank 0 only, so without it rank 1's weights could not be compared.
NODE_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from lightning.pytorch.callbacks import Callback
    from audiolm_pl import training
    from audiolm_pl.cli import main

    class SaveFinalWeights(Callback):
        def on_train_end(self, trainer, pl_module):
            torch.save({{"global_step": trainer.global_step, "world_size": trainer.world_size,
                        "state_dict": pl_module.state_dict()}}, f"{root}/final-rank{{trainer.global_rank}}.pt")

    build_trainer = training.build_trainer

    def build_trainer_saving_weights(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.callbacks.append(SaveFinalWeights())
        return trainer

    training.build_trainer = build_trainer_saving_weights
    sys.exit(main(sys.argv[1:]))
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(node_rank: int, port: int, script: Path, token_shards, root: Path) -> list[str]:
    """`torchrun` for one node of two, then `train semantic` as a user would type it."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    train = ["train", "semantic", "--config", "tiny", "--trainer", "cpu", "trainer.strategy=ddp",
             "trainer.num_nodes=2", "trainer.devices=1", f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=0",
             "trainer.checkpoint_every_n_steps=0", "trainer.enable_progress_bar=false", f"trainer.output_dir={root}",
             f"data.train_shards={token_shards.train}", f"data.val_shards={token_shards.val}", "data.batch_size=2",
             f"data.num_workers={WORKERS}", "data.shuffle_buffer=4", f"data.samples_per_epoch={2 * STEPS}"]
    return [*torchrun, str(script), *train]


@pytest.fixture(scope="module")
def two_nodes(token_shards, tmp_path_factory):
    """Start both nodes, wait for both; returns the output root (run directory, read logs, final weights)."""
    root = tmp_path_factory.mktemp("multinode")
    script = root / "node.py"
    script.write_text(NODE_SCRIPT.format(root=root))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIOLM_PL_READ_LOG": str(root / "reads")}
    port = free_port()
    nodes = []
    for node_rank in (0, 1):
        log = open(root / f"node{node_rank}.log", "w")
        # a session of its own: a failed run is ended with torchrun's workers, not just torchrun
        nodes.append((subprocess.Popen(node_command(node_rank, port, script, token_shards, root), env=env, cwd=root,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    try:
        codes = [process.wait(timeout=240) for process, _ in nodes]
    finally:
        for process, log in nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            log.close()
    logs = "\n".join((root / f"node{rank}.log").read_text()[-3000:] for rank in (0, 1))
    assert codes == [0, 0], logs
    return root


def test_two_nodes_read_disjoint_shards(two_nodes, token_shards):
    shards = [Path(url).name for url in resolve_shards(str(token_shards.train))]
    assert len(shards) == 2 * WORKERS  # one shard per reader: the test below pins each reader to its shard
    read = defaultdict(set)  # (rank, worker) -> shard names
    for record in (two_nodes / "reads").glob("reads-rank*-worker*.tsv"):
        rank, worker = map(int, re.fullmatch(r"reads-rank(\d+)-worker(\d+)", record.stem).groups())
        for line in record.read_text().splitlines():
            epoch, url, key = line.split("\t")
            read[rank, worker].add(Path(url).name)
    assert set(read) == {(rank, worker) for rank in (0, 1) for worker in range(WORKERS)}
    # split_by_node then split_by_worker: rank r keeps shards r, r + 2; its worker w keeps the w-th of those
    assert {reader: sorted(names) for reader, names in read.items()} == \
           {(rank, worker): [shards[rank + 2 * worker]] for rank in (0, 1) for worker in range(WORKERS)}
    node_shards = [set().union(*(read[rank, worker] for worker in range(WORKERS))) for rank in (0, 1)]
    assert not node_shards[0] & node_shards[1]


def test_two_nodes_end_in_step_with_one_checkpoint(two_nodes):
    final = [torch.load(two_nodes / f"final-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [f["world_size"] for f in final] == [2, 2]  # one world of two, not two worlds of one
    assert [f["global_step"] for f in final] == [STEPS, STEPS]
    # different data on each rank, the same weights: only the all-reduced gradients make them equal
    assert final[0]["state_dict"].keys() == final[1]["state_dict"].keys()
    for name, weight in final[0]["state_dict"].items():
        assert torch.equal(weight, final[1]["state_dict"][name]), name
    checkpoints = two_nodes / "semantic" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt"]  # rank 1 wrote none of its own
    checkpoint = load_raw(checkpoints / "last.ckpt")
    assert checkpoint["global_step"] == STEPS
    for name, weight in final[0]["state_dict"].items():
        assert torch.equal(weight, checkpoint["state_dict"][name]), name


@pytest.mark.timeout(60)  # the bug this guards against is a hang
def test_a_validation_set_too_small_for_the_readers_is_refused_not_a_hang(tmp_path):
    """Validation deals samples round-robin to ranks x workers and cycles until each reader has its quota: a
    reader dealt nothing in a whole pass would cycle forever (2 samples, 3 ranks: rank 2 gets none)."""
    from conftest import write_voice_shards
    from audiolm_pl.data.stream import ShardStream

    write_voice_shards(tmp_path, speakers=(("v", 150.0),), per_speaker=2, seconds=0.5)
    stream = ShardStream(resolve_shards(str(tmp_path)), lambda sample, rng: sample, list, 1, train=False,
                         samples_per_rank=4)
    assert len(list(stream._raw_val_samples(1, 2, 0, 1))) == 4  # 1 sample of 2 ranks' share, cycled to the quota
    with pytest.raises(ValueError, match="hold 2 samples, too few .* 3 ranks x 1 dataloader workers"):
        next(stream._raw_val_samples(2, 3, 0, 1))
