"""Kill -9 and resume: a training run (the real `audiolm-pl train` command, a subprocess) is SIGKILLed after a
step checkpoint, in the middle of an epoch, while it trains on; the same command started again resumes from
`last.ckpt` and ends with the weights and optimiser state, bit for bit, of a run that was never interrupted.
Once on one process and once under DDP over 2 CPU processes (`--trainer ddp_cpu`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

STEPS = 58  # not a multiple of CHECKPOINT_EVERY: the last steps are kept only by the end-of-training save
CHECKPOINT_EVERY = 5
BATCHES_PER_EPOCH = 12  # data.samples_per_epoch / data.batch_size: the kill lands inside an epoch
KILL_AFTER = 15  # the step checkpoint to wait for: epoch 1, batch 3


def train_command(shards, output_dir: Path, run_name: str, trainer: str) -> list[str]:
    """The command a user types; dropout on, so the resumed run must also restore the random state."""
    return [sys.executable, "-m", "audiolm_pl", "train", "semantic", "--config", "tiny", "--trainer", trainer,
            f"data.train_shards={shards.train}", f"data.val_shards={shards.val}", "data.batch_size=2",
            f"data.samples_per_epoch={2 * BATCHES_PER_EPOCH}", "model.dropout=0.1", f"trainer.max_steps={STEPS}",
            f"trainer.checkpoint_every_n_steps={CHECKPOINT_EVERY}", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", f"trainer.output_dir={output_dir}", f"trainer.run_name={run_name}"]


def start(command: list[str], log: Path) -> subprocess.Popen:
    # a session of its own, so the kill reaches every process of the run (ddp_spawn's workers too)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def finish(process: subprocess.Popen, log: Path) -> None:
    assert process.wait(timeout=300) == 0, log.read_text()[-4000:]


def kill_after_checkpoint(process: subprocess.Popen, checkpoint: Path, log: Path) -> None:
    """SIGKILL the whole run as soon as `checkpoint` exists; fails if the run ended before that."""
    while not checkpoint.exists():
        assert process.poll() is None, f"the run ended before writing {checkpoint.name}:\n{log.read_text()[-4000:]}"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL  # killed while it trained on, not finished


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(resumed: dict, straight: dict) -> None:
    assert resumed["global_step"] == straight["global_step"] == STEPS
    assert resumed["state_dict"].keys() == straight["state_dict"].keys()
    for name, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    (resumed_optimizer,), (straight_optimizer,) = resumed["optimizer_states"], straight["optimizer_states"]
    for index, moments in straight_optimizer["state"].items():
        for key, value in moments.items():
            assert torch.equal(resumed_optimizer["state"][index][key], value), (index, key)
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]


@pytest.mark.parametrize("trainer", ["cpu", pytest.param("ddp_cpu", marks=pytest.mark.slow)])  # ddp: ~60-120 s
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(token_shards, tmp_path, trainer):
    straight = start(train_command(token_shards, tmp_path, "straight", trainer), tmp_path / "straight.log")
    killed_log, resumed_log = tmp_path / "killed.log", tmp_path / "resumed.log"
    command = train_command(token_shards, tmp_path, "killed", trainer)
    checkpoints = tmp_path / "killed" / "checkpoints"
    kill_after_checkpoint(start(command, killed_log), checkpoints / f"step{KILL_AFTER:07d}.ckpt", killed_log)
    # readable, and at the step file's step or the one before: a checkpoint step writes step*.ckpt, then last.ckpt,
    # and the kill may land between the two or inside either write
    at_kill = load(checkpoints / "last.ckpt")["global_step"]
    assert at_kill in (KILL_AFTER - CHECKPOINT_EVERY, KILL_AFTER) and at_kill % BATCHES_PER_EPOCH  # inside an epoch
    finish(start(command, resumed_log), resumed_log)
    finish(straight, tmp_path / "straight.log")
    assert f"resuming semantic from {checkpoints / 'last.ckpt'}" in resumed_log.read_text()
    final = load(checkpoints / "last.ckpt")
    assert final["global_step"] == STEPS  # saved when training ended, also inside ddp_spawn's workers
    assert_same_training_state(final, load(tmp_path / "straight" / "checkpoints" / "last.ckpt"))


# -- a kill during a save ----------------------------------------------------------------------------

SAVE_AND_HANG = """
import sys, time
import torch
from audiolm_pl.resumable import AtomicCheckpointIO

class Hang:  # pickled inside the save, after the file was opened: the kill lands mid-write
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(600)
        return (int, (0,))

AtomicCheckpointIO().save_checkpoint({"global_step": 2, "weights": torch.ones(1000), "hang": Hang()}, sys.argv[1])
"""


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    from audiolm_pl.resumable import AtomicCheckpointIO, remove_stale_temporaries

    last = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "weights": torch.zeros(1000)}, last)
    before = last.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", SAVE_AND_HANG, str(last)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    (temporary,) = last.parent.glob(".last.ckpt.*.tmp")  # where the new one was being written
    assert last.read_bytes() == before and load(last)["global_step"] == 1
    remove_stale_temporaries(last.parent)  # as the next training does when it starts
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


# -- checkpoints every N steps and every M minutes ---------------------------------------------------

def test_checkpoints_on_the_clock_and_every_n_steps_share_one_last_checkpoint(token_shards, tmp_path, monkeypatch):
    from audiolm_pl.resumable import AtomicCheckpointIO
    from audiolm_pl.training import fit_stage, load_stage_config

    saved = []  # (file name, step) of every checkpoint written
    save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, **kwargs):
        saved.append((Path(path).name, checkpoint["global_step"]))
        save(self, checkpoint, path, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)

    def run(name: str, *overrides: str):
        saved.clear()
        fit_stage("semantic", load_stage_config("semantic", "tiny", "cpu", [
            f"data.train_shards={token_shards.train}", f"data.val_shards={token_shards.val}", "data.batch_size=2",
            "trainer.max_steps=3", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
            f"trainer.output_dir={tmp_path}", f"trainer.run_name={name}", *overrides]))
        return sorted(p.name for p in (tmp_path / name / "checkpoints").iterdir())

    # a clock that is always due: last.ckpt after every step, besides the step checkpoints and the final save
    files = run("both", "trainer.checkpoint_every_n_steps=2", "trainer.checkpoint_every_minutes=1e-9")
    assert files == ["last.ckpt", "step0000002.ckpt"]  # one last.ckpt for both writers, no last-v1.ckpt
    assert [step for name, step in saved if name == "last.ckpt"] == [1, 2, 2, 3, 3]
    assert run("steps", "trainer.checkpoint_every_n_steps=2") == ["last.ckpt", "step0000002.ckpt"]
    assert [step for name, step in saved if name == "last.ckpt"] == [2, 3]  # off by default: no save on the clock
    with pytest.raises(ValueError, match="trainer.checkpoint_every_minutes must be a positive number of minutes"):
        load_stage_config("semantic", "tiny", "cpu", ["trainer.checkpoint_every_minutes=0"])


# -- sharded (FSDP2) checkpoints: a directory swapped in whole ---------------------------------------

@pytest.mark.parametrize("exchange", [True, False])  # False: a file system without renameat2's exchange
def test_a_sharded_checkpoint_directory_is_replaced_whole(tmp_path, monkeypatch, exchange):
    from audiolm_pl import fileio
    from audiolm_pl.resumable import remove_stale_temporaries

    if not exchange:
        monkeypatch.setattr(fileio, "_exchange", lambda first, second: (_ for _ in ()).throw(OSError("EINVAL")))

    def sharded(path: Path, step: int) -> Path:
        path.mkdir()
        for name in ("__0_0.distcp", "__1_0.distcp", ".metadata", "meta.pt"):
            (path / name).write_text(f"step {step}")
        return path

    last = tmp_path / "last.ckpt"
    fileio.replace_directory(sharded(tmp_path / ".last.ckpt.partial", 1), last)  # the first save: a rename
    fileio.replace_directory(sharded(tmp_path / ".last.ckpt.partial", 2), last)  # later ones: a swap
    assert {p.read_text() for p in last.iterdir()} == {"step 2"}  # no shard of step 1 left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    sharded(tmp_path / ".last.ckpt.partial", 3)  # a save killed while writing
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    (tmp_path / "file.ckpt").write_text("a single-file checkpoint of another strategy")
    fileio.replace_directory(sharded(tmp_path / ".file.ckpt.partial", 4), tmp_path / "file.ckpt")
    assert {p.read_text() for p in (tmp_path / "file.ckpt").iterdir()} == {"step 4"}
