"""`SoundStormModule`: SoundStorm's training (masking, loss, metrics); optimiser and logging as the LMs'.

Batches come from `SoundStormDataModule` ({"semantic", "codes", "frames"}); each step masks them afresh
(`masking.mask_batch`) and takes the cross-entropy of the chosen level's head on its masked frames.
Validation masks with a generator seeded by the batch index, so every validation sees the same masks, and
logs `val/ce`, `val/acc` and per level `val/ce_q{level}`, `val/acc_q{level}` (summed over ranks).
"""

from __future__ import annotations


import lightning as L
import torch
import torch.nn.functional as F

from audiolm_pl.config import to_dict
from audiolm_pl.soundstorm.data import SoundStormFrames
from audiolm_pl.soundstorm.masking import MaskedBatch, mask_batch
from audiolm_pl.soundstorm.model import SoundStormModel
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import log_level_metrics, transformer_optimizers


class SoundStormModule(L.LightningModule):
    def __init__(self, run_config, layout: SoundStormFrames, token_specs: dict[str, TokenSpec],
                 producers: dict[str, str] | None = None):
        super().__init__()
        self.run_config = run_config
        self.layout = layout
        self.model = SoundStormModel(run_config.model, layout.semantic_vocab, layout.codebook_size,
                                     layout.num_levels, layout.frames_per_id)
        self.save_hyperparameters({
            "stage": "soundstorm",
            "config": to_dict(run_config),
            "token_specs": {role: spec.to_dict() for role, spec in token_specs.items()},
            "layout": layout.to_dict(),
            "producers": dict(producers or {}),  # role -> identity() of what made the training tokens
        })
        self._val_sums: torch.Tensor | None = None  # (1 + L, 3): ce sum, correct, count

    def _masked_loss(self, batch: dict, masked: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> cross-entropy (B, T) and correct (B, T) of each row's level on every frame (use `loss_mask`)."""
        hidden = self.model(batch["semantic"], masked.codes, batch["frames"])  # (B, T, d)
        logits = self.model.level_logits(hidden, masked.level).float()  # (B, T, C)
        targets = batch["codes"].gather(2, masked.level[:, None, None].expand(-1, hidden.shape[1], 1)).squeeze(2)  # (B, T)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
        return ce, logits.argmax(-1) == targets

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        masked = mask_batch(batch["codes"], batch["frames"], self.model.mask_id, self.run_config.max_prompt_share)
        ce, correct = self._masked_loss(batch, masked)
        count = masked.loss_mask.sum().clamp_min(1)
        loss = (ce * masked.loss_mask).sum() / count
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (correct & masked.loss_mask).sum() / count)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(1 + self.layout.num_levels, 3, device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_index: int) -> None:
        generator = torch.Generator(device=self.device).manual_seed(batch_index)
        masked = mask_batch(batch["codes"], batch["frames"], self.model.mask_id, self.run_config.max_prompt_share,
                            generator=generator)
        ce, correct = self._masked_loss(batch, masked)
        for row in range(self.layout.num_levels + 1):
            keep = masked.loss_mask if row == 0 else masked.loss_mask & (masked.level == row - 1)[:, None]  # (B, T)
            self._val_sums[row] += torch.stack([(ce * keep).sum(), (correct & keep).sum(), keep.sum()]).double()

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")  # (1 + L, 3)
        names = [""] + [f"_q{level}" for level in range(self.layout.num_levels)]
        log_level_metrics(self, sums, names)

    def configure_optimizers(self):
        return transformer_optimizers(self.model, self.run_config.optim, self.run_config.trainer.max_steps)
