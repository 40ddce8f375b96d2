"""FSDP2 on 2 CPU processes (`--trainer fsdp_cpu`): each LM stage trains from token shards with its blocks
`fully_shard`-ed, saves a sharded checkpoint, resumes from it, and is consolidated into the single file that
`load_lm` reads and generates from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from audiolm_pl import registry
from audiolm_pl.cli import main
from audiolm_pl.checkpoint import CheckpointError, consolidate, is_sharded, load_raw
from audiolm_pl.training import load_stage_config

STAGES = ["semantic", "coarse", "fine"]

FSDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch.distributed.fsdp import FSDPModule
    from audiolm_pl.training import fit_stage, load_stage_config

    def config(stage, steps, *extra):
        return load_stage_config(stage, "tiny", "fsdp_cpu", [
            "data.train_shards={train}", "data.val_shards={val}", "data.batch_size=2", "data.num_workers=0",
            "trainer.output_dir={root}", "trainer.enable_progress_bar=false", f"trainer.max_steps={{steps}}",
            "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=0", "trainer.limit_val_batches=1",
            *extra])

    report = {{}}
    for stage in {stages!r}:
        # activation checkpointing on for one stage: recomputation under fully_shard must work too
        extra = ["model.activation_checkpointing=true"] if stage == "coarse" else []
        result = fit_stage(stage, config(stage, 2, *extra))
        report[stage] = {{"step": result.step, "loss": result.metrics["train/loss"]}}
    # resume the semantic run from its sharded last.ckpt: one more step, not three from scratch
    resumed = fit_stage("semantic", config("semantic", 3))
    report["resumed"] = {{"step": resumed.step}}
    if torch.distributed.get_rank() == 0:
        with open("{root}/report.json", "w") as handle:
            json.dump(report, handle)
    """
)


@pytest.fixture(scope="module")
def fsdp_runs(token_shards, tmp_path_factory):
    """One 2-process launch that trains every LM stage under fsdp_cpu (2 steps each) and resumes one."""
    root = tmp_path_factory.mktemp("fsdp")
    script = root / "fsdp_run.py"
    script.write_text(FSDP_SCRIPT.format(train=token_shards.train, val=token_shards.val, root=root, stages=STAGES))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400, env=env,
                            cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return root, json.loads((root / "report.json").read_text())


def test_fsdp_preset_without_a_device_count_is_refused_clearly():
    from lightning.pytorch.strategies import ModelParallelStrategy

    from audiolm_pl.training import TrainerConfig, build_strategy

    assert isinstance(build_strategy(TrainerConfig(strategy="fsdp", accelerator="cpu", devices=2)), ModelParallelStrategy)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.devices='auto' with trainer.strategy=fsdp"):
            build_strategy(TrainerConfig(strategy="fsdp", accelerator="gpu", devices="auto"))


def test_resume_from_sharded_checkpoint_continues_the_step_count(fsdp_runs):
    root, report = fsdp_runs
    last = root / "semantic" / "checkpoints" / "last.ckpt"
    assert report["semantic"]["step"] == 2 and is_sharded(last)
    metadata = torch.load(last / "meta.pt", weights_only=True)
    # 2 restored + 1 more: a resume that lost the step count would run 3 afresh and train/loss would restart
    assert metadata["global_step"] == 3 and metadata["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"][
        "completed"] == 3 and report["resumed"]["step"] > report["semantic"]["step"]


@pytest.mark.parametrize("stage", STAGES)
def test_fsdp_run_consolidates_into_what_a_single_process_run_writes(stage, fsdp_runs, token_shards):
    from audiolm_pl.lm import generate_coarse, generate_fine, generate_semantic, load_lm

    root, report = fsdp_runs
    run = root / stage
    assert torch.isfinite(torch.tensor(report[stage]["loss"]))
    with pytest.raises(CheckpointError, match="checkpoint consolidate"):
        load_lm(run)  # the sharded directory is not read as if it were a file
    if stage == "fine":  # the command line, as a user runs it
        assert main(["checkpoint", "consolidate", str(run)]) == 0
        path = run / "checkpoints" / "consolidated.ckpt"
    else:
        path = consolidate(run)
    raw = load_raw(path)
    # the same keys and shapes a single-process module of this config holds: `model.` prefix, full tensors
    config = load_stage_config(stage, "tiny", "cpu", [f"data.train_shards={token_shards.train}",
                                                       f"data.val_shards={token_shards.val}"])
    single, _ = registry.get_stage(stage).build(config)
    assert {k: tuple(v.shape) for k, v in raw["state_dict"].items()} == \
           {k: tuple(v.shape) for k, v in single.state_dict().items()}
    assert raw["hyper_parameters"]["stage"] == stage and raw["global_step"] == (3 if stage == "semantic" else 2)
    assert "optimizer_states" not in raw  # inference only: resume reads the sharded directory

    lm = load_lm(run, expected_stage=stage)  # the run directory now resolves to consolidated.ckpt
    assert lm.path == path
    semantic = torch.randint(0, token_shards.tokenizer.vocab_size, (2, 8))
    if stage == "semantic":
        assert generate_semantic(lm, semantic, 12).shape == (2, 12)
    elif stage == "coarse":
        assert generate_coarse(lm, semantic).shape == (2, 16, 2)
    else:
        coarse = torch.randint(0, token_shards.codec.codebook_size, (2, 56, 2))
        assert generate_fine(lm, coarse).shape == (2, 56, 2)


def test_consolidate_never_runs_code_from_a_crafted_metadata_file(tmp_path):
    import pickle

    import torch.distributed.checkpoint as dcp

    sharded = tmp_path / "last.ckpt"
    dcp.save({"state_dict": {"model.w": torch.randn(3, 4)}}, storage_writer=dcp.FileSystemWriter(sharded), no_dist=True)
    torch.save({"hyper_parameters": {"stage": "semantic"}, "global_step": 1}, sharded / "meta.pt")
    assert set(load_raw(consolidate(sharded))["state_dict"]) == {"model.w"}  # a genuine one consolidates

    class Payload:  # what a malicious .metadata would hold: a call to run on unpickling
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (sharded / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=r"\.metadata names .*system.* refusing"):
        consolidate(sharded)
    assert not (tmp_path / "pwned").exists()
