"""The learning-rate schedule: warm-up + cosine over steps, or over the time budget (`optim.decay=budget`)."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from audiolm_pl.training import OptimConfig, TrainerConfig, transformer_optimizers, warmup_cosine


def test_cosine_follows_whichever_of_steps_and_time_is_ahead():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)  # warm-up: (step + 1) / warmup
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.55)  # half way: min + (1 - min) / 2
    assert warmup_cosine(55, 10, 100, 0.1, used=0.2) == pytest.approx(0.55)  # steps ahead: time ignored
    assert warmup_cosine(20, 10, 100, 0.1, used=0.5) == pytest.approx(0.55)  # time ahead: it sets the decay
    assert warmup_cosine(20, 10, 100, 0.1, used=1.0) == pytest.approx(0.1)
    assert warmup_cosine(5, 10, 100, 0.1, used=0.9) == pytest.approx(0.6)  # warm-up is counted in steps only
    with pytest.raises(ValueError, match="optim.decay must be 'steps' or 'budget', got 'time'"):
        OptimConfig(decay="time")


class Tiny(L.LightningModule):
    def __init__(self, optim: OptimConfig, max_steps: int):
        super().__init__()
        self.run_config = SimpleNamespace(optim=optim, trainer=TrainerConfig(max_steps=max_steps))
        self.model = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_index):
        return self.model(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return transformer_optimizers(self)


def _fit(module: Tiny, steps: int, **trainer) -> float:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4)), batch_size=4)
    L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, **trainer).fit(module, data)
    return module.trainer.optimizers[0].param_groups[0]["lr"]


def test_budget_decay_reads_lightnings_timer(monkeypatch):
    """A run whose clock is spent ends at the minimum learning rate although its steps are not; the same run
    with decay over steps has barely decayed."""
    from lightning.pytorch.callbacks import Timer

    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage="train": 3600.0)  # the whole hour spent
    optim = dict(lr=1.0, warmup_steps=0, min_lr_ratio=0.1)
    budget = _fit(Tiny(OptimConfig(**optim, decay="budget"), 1000), 3, max_time={"hours": 2})
    assert budget == pytest.approx(0.55)  # half the budget: half way down the cosine
    steps = _fit(Tiny(OptimConfig(**optim), 1000), 3, max_time={"hours": 2})
    assert steps > 0.99  # 3 of 1,000 steps


def test_budget_decay_needs_max_time():
    with pytest.raises(ValueError, match="optim.decay=budget decays over trainer.max_time"):
        _fit(Tiny(OptimConfig(decay="budget"), 10), 1)
