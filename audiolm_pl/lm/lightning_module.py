"""`TokenLMModule`: the LightningModule the three LM stages share (loss, metrics, optimiser).

It owns a `TransformerLM` as `self.model` and the stage's layout; batches come from
`TokenDataModule` ({"inputs", "targets", "levels"} (B, T)). Loss is cross-entropy on the
targets whose level is >= 0. Validation logs cross-entropy (nats), accuracy and perplexity
over all loss positions and per RVQ level (`val/ce_q{level}`, ...), summed over ranks, and
`val/unigram_entropy`: the entropy (nats) of the validation targets' own id frequencies, the
cross-entropy of the best context-free model, which a useful LM must beat.
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F

from audiolm_pl.config import to_dict
from audiolm_pl.training import log_level_metrics, transformer_optimizers
from audiolm_pl.lm.layouts import Layout
from audiolm_pl.lm.transformer import Block, TransformerLM
from audiolm_pl.tokens import TokenSpec


class TokenLMModule(L.LightningModule):
    def __init__(self, stage: str, run_config, layout: Layout, token_specs: dict[str, TokenSpec],
                 producers: dict[str, str] | None = None):
        super().__init__()
        self.run_config = run_config
        self.layout = layout
        self.model = TransformerLM(run_config.model, layout.vocab_size, layout.condition_vocab)
        self.save_hyperparameters({
            "stage": stage,
            "config": to_dict(run_config),
            "token_specs": {role: spec.to_dict() for role, spec in token_specs.items()},
            "layout": layout.to_dict(),
            "producers": dict(producers or {}),  # role -> identity() of what made the training tokens
        })
        self._val_sums: torch.Tensor | None = None  # (1 + levels, 3): ce sum, correct, count
        self._val_counts: torch.Tensor | None = None  # (V,): how often each id is a target
        self._step_started = time.perf_counter()

    def configure_model(self) -> None:
        """Under FSDP2 (`ModelParallelStrategy`): `fully_shard` every `Block`, then the whole model, over the
        data-parallel mesh. With `model.compile`: `torch.compile` every block (after sharding, so FSDP2's
        all-gather hooks stay eager). Does nothing the second time it is called."""
        self._shard_blocks()
        if self.run_config.model.compile:
            for block in self.model.blocks:
                # in place (`nn.Module.compile`): parameter names and checkpoints stay those of the eager model
                if getattr(block, "_compiled_call_impl", None) is None:
                    block.compile()

    def _shard_blocks(self) -> None:
        from lightning.pytorch.strategies import ModelParallelStrategy
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        if isinstance(self.model, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]
        # one all-gather per block: only one block's full weights live at a time (plus the root's embeddings)
        for block in self.model.blocks:
            assert isinstance(block, Block)
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def _loss_terms(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> per-position ce (N,), correct (N,) and level (N,) over the loss positions."""
        logits = self.model(batch["inputs"], conditions=batch.get("conditions"))  # (B, T, V)
        keep = batch["levels"] >= 0  # (B, T)
        logits, targets = logits[keep].float(), batch["targets"][keep]  # (N, V), (N,)
        ce = F.cross_entropy(logits, targets, reduction="none")  # (N,)
        return ce, logits.argmax(-1) == targets, batch["levels"][keep]

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss, accuracy = self._training_loss(batch)
        now = time.perf_counter()
        tokens = batch["inputs"].numel()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", accuracy)
        self.log("train/tokens_per_s", tokens / max(now - self._step_started, 1e-9))
        self._step_started = now
        return loss

    def _training_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mean cross-entropy and accuracy over the loss positions, both 0-dim tensors.

        Masks with `ignore_index` instead of boolean indexing (`_loss_terms`): selecting the loss positions
        needs their count on the host, a device sync every step; this keeps the step free of any."""
        logits = self.model(batch["inputs"], conditions=self._dropped_conditions(batch.get("conditions")))  # (B, T, V)
        keep = batch["levels"] >= 0  # (B, T)
        targets = batch["targets"].masked_fill(~keep, -100)  # (B, T); -100: F.cross_entropy's ignore_index
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum", ignore_index=-100)
        count = keep.sum().clamp_min(1)  # a batch of prefixes only gives 0 / 1, not NaN
        correct = ((logits.argmax(-1) == batch["targets"]) & keep).sum()
        return ce / count, correct / count

    def _dropped_conditions(self, conditions: torch.Tensor | None) -> torch.Tensor | None:
        """Training conditions (B, T, w) with each example's semantic ids dropped (all PAD) with probability
        `condition_dropout`: the unconditioned model that classifier-free guidance (`sampling.guidance`) needs,
        learnt by the same network at no extra cost (AudioGen / MusicGen train it this way)."""
        rate = getattr(self.run_config, "condition_dropout", 0.0)
        if conditions is None or not rate:
            return conditions
        drop = torch.rand(conditions.shape[0], 1, 1, device=conditions.device) < rate  # (B, 1, 1)
        return torch.where(drop, self.layout.null_conditions(conditions), conditions)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(1 + len(self.layout.levels), 3, device=self.device, dtype=torch.float64)
        self._val_counts = torch.zeros(self.layout.vocab_size, device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_index: int) -> None:
        ce, correct, levels = self._loss_terms(batch)
        self._val_counts += torch.bincount(batch["targets"][batch["levels"] >= 0], minlength=self.layout.vocab_size)
        rows = [torch.ones_like(levels, dtype=torch.bool)] + [levels == level for level in self.layout.levels]
        for row, mask in enumerate(rows):
            self._val_sums[row, 0] += ce[mask].double().sum()
            self._val_sums[row, 1] += correct[mask].double().sum()
            self._val_sums[row, 2] += mask.sum()

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")  # (1 + levels, 3)
        names = [""] + [f"_q{level}" for level in self.layout.levels]
        log_level_metrics(self, sums, names)
        counts = self.trainer.strategy.reduce(self._val_counts, reduce_op="sum")  # (V,)
        if counts.sum() > 0:
            p = counts[counts > 0] / counts.sum()
            self.log("val/unigram_entropy", float(-(p * p.log()).sum()), sync_dist=False)

    def configure_optimizers(self):
        return transformer_optimizers(self.model, self.run_config.optim, self.run_config.trainer.max_steps)
