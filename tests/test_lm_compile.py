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
