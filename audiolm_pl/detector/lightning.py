"""Training the detector: binary cross-entropy on balanced real / synthetic crops, and loading it back.

`build(run_config)` is the registry's entry (`audiolm-pl train detector --config tiny`); `load_detector(path)`
reads a checkpoint or run directory weights-only, as every stage does. TensorBoard: train/loss, train/accuracy,
val/loss, val/accuracy, and val/real_accuracy / val/synthetic_accuracy (each class's share judged right: a
detector that calls everything synthetic scores 0.5 accuracy but 0 on real audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.nn import functional as F

from audiolm_pl.config import to_dict
from audiolm_pl.detector.data import DetectorDataConfig, DetectorDataModule
from audiolm_pl.detector.model import DetectorConfig, MelCNNDetector
from audiolm_pl.training import OptimConfig, TrainerConfig, adamw_with_schedule


@dataclass
class DetectorRunConfig:
    model: DetectorConfig = field(default_factory=DetectorConfig)
    data: DetectorDataConfig = field(default_factory=DetectorDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class DetectorModule(L.LightningModule):
    def __init__(self, run_config: DetectorRunConfig):
        super().__init__()
        self.run_config = run_config
        self.model = MelCNNDetector(run_config.model)
        self.save_hyperparameters({"stage": "detector", "config": to_dict(run_config)})

    def _figures(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.model(batch["wav"], batch["mask"])  # (B,)
        label = batch["label"].to(logits.dtype)  # (B,)
        right = ((logits > 0).to(logits.dtype) == label).to(logits.dtype)  # (B,)
        return {"loss": F.binary_cross_entropy_with_logits(logits, label), "accuracy": right.mean(),
                "real_accuracy": right[label == 0].mean(), "synthetic_accuracy": right[label == 1].mean()}

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        figures = self._figures(batch)
        size = batch["wav"].shape[0]
        self.log("train/loss", figures["loss"], prog_bar=True, batch_size=size)
        self.log("train/accuracy", figures["accuracy"], prog_bar=True, batch_size=size)
        return figures["loss"]

    def validation_step(self, batch: dict, batch_index: int) -> None:
        figures = self._figures(batch)
        # each half of a batch is one class, so the per-class means average correctly over batches
        self.log_dict({f"val/{name}": value for name, value in figures.items()}, batch_size=batch["wav"].shape[0],
                      sync_dist=True)

    def configure_optimizers(self):
        optimizer, scheduler = adamw_with_schedule(self.model.parameters(), self.run_config.optim,
                                                   self.run_config.trainer.max_steps)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def build(run_config: DetectorRunConfig) -> tuple[DetectorModule, DetectorDataModule]:
    if run_config.data.sample_rate != run_config.model.sample_rate:
        raise ValueError(f"data.sample_rate={run_config.data.sample_rate} but model.sample_rate={run_config.model.sample_rate}")
    return DetectorModule(run_config), DetectorDataModule(run_config.data)


@dataclass
class LoadedDetector:
    model: MelCNNDetector  # eval mode
    crop_seconds: float  # the training crop: files are judged in windows of this length
    path: Path


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> LoadedDetector:
    """A detector checkpoint (or run directory) -> `LoadedDetector`; weights-only load, no pickled code."""
    from audiolm_pl.checkpoint import CheckpointError, load_stage_checkpoint, sub_state_dict
    from audiolm_pl.config import from_dict

    checkpoint = load_stage_checkpoint(path, expected_stage="detector")
    run_config = from_dict(DetectorRunConfig, checkpoint.config)
    model = MelCNNDetector(run_config.model)
    missing, unexpected = model.load_state_dict(sub_state_dict(checkpoint.state_dict, "model"), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint.path}: detector weights do not fit its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return LoadedDetector(model.eval().to(device), run_config.data.crop_seconds, checkpoint.path)


def file_probability(detector: LoadedDetector, wav: torch.Tensor) -> float:
    """wav (T,) at the detector's rate -> P(synthetic) of the whole file: the mean over windows of one training
    crop each (the last one zero-padded and masked), as the detector was trained to judge."""
    crop = max(1, round(detector.crop_seconds * detector.model.sample_rate))
    windows = max(1, -(-wav.shape[0] // crop))
    padded = torch.zeros(windows * crop)
    padded[: wav.shape[0]] = wav
    mask = torch.zeros(windows * crop, dtype=torch.bool)
    mask[: wav.shape[0]] = True
    device = next(detector.model.parameters()).device
    probabilities = detector.model.probability(padded.view(windows, crop).to(device),
                                               mask.view(windows, crop).to(device))  # (windows,)
    return float(probabilities.mean())
