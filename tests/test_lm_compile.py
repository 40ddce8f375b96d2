"""The LM training step: free of host syncs, and trainable with `model.compile=true` (torch.compile per block)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode

from audiolm_pl import registry
from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.training import load_stage_config


def tiny_module(token_shards, stage="coarse", *overrides):
    config = load_stage_config(stage, "tiny", "cpu", [f"data.train_shards={token_shards.train}",
                                                       f"data.val_shards={token_shards.val}", *overrides])
    return registry.get_stage(stage).build(config)


def first_batch(datamodule) -> dict:
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def test_training_loss_equals_the_mean_over_loss_positions(token_shards):
    """The sync-free loss (ignore_index) and the masked-select one that validation uses agree; the coarse
    stage's semantic prefix carries no loss, so a mask that let it in would change the mean."""
    torch.manual_seed(0)
    module, datamodule = tiny_module(token_shards)
    batch = first_batch(datamodule)
    assert (batch["levels"] < 0).any() and (batch["levels"] >= 0).any()
    loss, accuracy = module._training_loss(batch)
    ce, correct, _ = module._loss_terms(batch)
    torch.testing.assert_close(loss, ce.mean())
    torch.testing.assert_close(accuracy, correct.float().mean())


def test_training_loss_needs_no_value_from_the_device(token_shards):
    """Under FakeTensorMode a tensor has no values: any step that reads one on the host (`.item()`, boolean
    indexing, `if tensor:`) raises there. The training loss must run; the validation path shows the check bites."""
    module, datamodule = tiny_module(token_shards)
    batch = first_batch(datamodule)
    mode = FakeTensorMode(allow_non_fake_inputs=True)  # the weights stay real; the batch has no values
    fake = {name: mode.from_tensor(value) if torch.is_tensor(value) else value for name, value in batch.items()}
    with mode:
        loss, accuracy = module._training_loss(fake)
        assert loss.shape == accuracy.shape == ()
        with pytest.raises((DynamicOutputShapeException, DataDependentOutputException)):
            module._loss_terms(fake)  # boolean indexing: the number of loss positions is needed on the host


@pytest.mark.slow
def test_tiny_lm_trains_with_compiled_blocks(token_shards, one_thread):
    """model.compile=true: the blocks compile in configure_model, two steps train, the compiled model computes
    what the eager one does with the same weights, and its state_dict keys are the eager model's (checkpoints
    stay loadable by load_lm)."""
    torch.manual_seed(0)
    module, datamodule = tiny_module(token_shards, "semantic", "model.compile=true", "data.batch_size=2")
    before = {name: value.clone() for name, value in module.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2
    assert all(block._compiled_call_impl is not None for block in module.model.blocks)
    assert set(module.state_dict()) == set(before)
    assert not torch.equal(module.state_dict()["model.blocks.0.mlp.up.weight"], before["model.blocks.0.mlp.up.weight"])

    eager = TransformerLM(module.run_config.model, module.layout.vocab_size)
    eager.load_state_dict(module.model.state_dict())
    tokens = first_batch(datamodule)["inputs"]  # (B, T)
    module.model.eval(), eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(module.model(tokens), eager(tokens), atol=1e-4, rtol=1e-4)


FSDP_COMPILE_SCRIPT = """
import json, sys
import torch
from audiolm_pl.training import fit_stage, load_stage_config

config = load_stage_config("semantic", "tiny", "fsdp_cpu", [
    "data.train_shards={train}", "data.val_shards={val}", "data.batch_size=2", "trainer.output_dir={root}",
    "trainer.enable_progress_bar=false", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.checkpoint_every_n_steps=0", "trainer.limit_val_batches=1", "model.compile=true"])
result = fit_stage("semantic", config)
if torch.distributed.get_rank() == 0:
    json.dump({{"step": result.step, "loss": result.metrics["train/loss"]}}, open("{root}/report.json", "w"))
"""


@pytest.mark.slow
def test_compiled_blocks_train_under_fsdp2(token_shards, tmp_path):
    """model.compile=true under `fsdp_cpu` (2 gloo processes): the blocks compile after fully_shard, two steps
    train, and the sharded checkpoint consolidates into the single file load_lm reads (in-place compile keeps
    the parameter names)."""
    import json
    import os
    import subprocess
    import sys

    from audiolm_pl.checkpoint import consolidate
    from audiolm_pl.lm import load_lm

    script = tmp_path / "run.py"
    script.write_text(FSDP_COMPILE_SCRIPT.format(train=token_shards.train, val=token_shards.val, root=tmp_path))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["step"] == 2 and torch.isfinite(torch.tensor(report["loss"]))
    consolidate(tmp_path / "semantic")
    assert load_lm(tmp_path / "semantic", expected_stage="semantic").model.config.compile
