"""Training our SSL model HuBERT-style: predict k-means ids of masked frames.

Targets come from a semantic tokenizer file (`targets.tokenizer`): iteration 1 uses an MFCC
k-means tokenizer, iteration 2 a tokenizer over this model's own layer features. They are
computed on the fly from the batch's wav (cheap for MFCC), so the run needs audio shards only.

    audiolm-pl semantic kmeans --source mfcc --shards shards/speech/train --clusters 100 --frame-rate 50 --out runs/semantic/mfcc_v0.safetensors
    audiolm-pl train ssl --config tiny targets.tokenizer=runs/semantic/mfcc_v0.safetensors
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F

from audiolm_pl.config import ConfigError, to_dict
from audiolm_pl.data.datamodule import AudioDataConfig, AudioDataModule
from audiolm_pl.semantic.ssl_model import SSLModel, SSLModelConfig
from audiolm_pl.semantic.tokenizer import KMeansSemanticTokenizer, load_tokenizer
from audiolm_pl.training import OptimConfig, TrainerConfig, adamw_with_schedule


@dataclass
class TargetConfig:
    tokenizer: str = "runs/semantic/mfcc_v0.safetensors"  # `audiolm-pl semantic kmeans` output
    mask_prob: float = 0.5  # about this fraction of frames is masked (before span overlap)
    mask_length: int = 10  # frames per masked span (200 ms at 50 Hz)
    unmasked_weight: float = 0.0  # HuBERT's 1 - alpha: weight of the loss on visible frames (0 = masked only)


@dataclass
class SSLRunConfig:
    model: SSLModelConfig = field(default_factory=SSLModelConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def sample_span_mask(frame_mask: torch.Tensor, prob: float, span: int, generator: torch.Generator) -> torch.Tensor:
    """frame_mask (B, T_f) bool -> spans to mask (B, T_f) bool, about `prob` of each row's real frames."""
    batch, frames = frame_mask.shape
    masked = torch.zeros(batch, frames, dtype=torch.bool)
    for row, length in enumerate(frame_mask.sum(1).tolist()):
        width = min(span, max(length - 1, 1))
        spans = max(1, int(prob * length / width + torch.rand(1, generator=generator).item()))
        starts = torch.randint(0, max(length - width, 0) + 1, (spans,), generator=generator)
        positions = (starts[:, None] + torch.arange(width)).flatten()  # (spans * width,)
        masked[row, positions.clamp_max(max(length - 1, 0))] = True
    return masked.to(frame_mask.device) & frame_mask


def align_targets(ids: torch.Tensor, token_rate: float, frame_rate: float, num_frames: int) -> torch.Tensor:
    """ids (B, T_s) at `token_rate` -> (B, num_frames) at the model's `frame_rate` (nearest earlier token)."""
    centres = (torch.arange(num_frames, device=ids.device) + 0.5) / frame_rate  # (T_f,) seconds
    index = (centres * token_rate).long().clamp(0, ids.shape[1] - 1)  # (T_f,)
    return ids[:, index]  # (B, T_f)


class SSLLightning(L.LightningModule):
    def __init__(self, model: SSLModel, target_tokenizer: KMeansSemanticTokenizer, run_config: SSLRunConfig):
        super().__init__()
        self.model = model
        self._targets = [target_tokenizer]  # a list: kept out of the state dict and of DDP's parameters
        self.run_config = run_config
        self.save_hyperparameters(
            {"stage": "ssl", "config": to_dict(run_config), "token_specs": {"targets": target_tokenizer.token_spec.to_dict()}}
        )

    def configure_model(self) -> None:
        """Under FSDP2 (`ModelParallelStrategy`): `fully_shard` the conv feature encoder and every transformer
        layer (`SSLModel.shard_units`), then the whole model, over the data-parallel mesh. Does nothing under any
        other strategy, and nothing the second time it is called. The target tokenizer is not sharded: it has no
        trainable state, and each rank computes the k-means targets of its own batch with a full copy."""
        from lightning.pytorch.strategies import ModelParallelStrategy
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        if isinstance(self.model, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]
        # one all-gather per unit: only one layer's full weights live at a time (plus the root's)
        for unit in self.model.shard_units():
            fully_shard(unit, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    @property
    def target_tokenizer(self) -> KMeansSemanticTokenizer:
        tokenizer = self._targets[0]
        if tokenizer.centroids.device != self.device:
            tokenizer.to(self.device)
        return tokenizer

    def _step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        wav, padding = batch["wav"], batch["mask"]  # (B, T), (B, T)
        frame_mask = self.model.frame_mask(padding)  # (B, T_f)
        tokenizer = self.target_tokenizer
        with torch.no_grad():
            ids = tokenizer.encode(wav)  # (B, T_s)
        targets = align_targets(ids, tokenizer.frame_rate, self.model.frame_rate, frame_mask.shape[1])  # (B, T_f)
        t = self.run_config.targets
        masked = sample_span_mask(frame_mask, t.mask_prob, t.mask_length, generator)  # (B, T_f)
        output = self.model(wav, padding, mask_time_indices=masked)
        loss = F.cross_entropy(output.logits[masked], targets[masked])  # over (M, num_targets) masked frames
        visible = frame_mask & ~masked
        if t.unmasked_weight > 0 and visible.any():
            loss = loss + t.unmasked_weight * F.cross_entropy(output.logits[visible], targets[visible])
        with torch.no_grad():
            predicted = output.logits.argmax(-1)  # (B, T_f)
            return {
                "loss": loss,
                "masked_acc": (predicted[masked] == targets[masked]).float().mean(),
                "unmasked_acc": (predicted[visible] == targets[visible]).float().mean(),
                "masked_fraction": masked.sum() / frame_mask.sum().clamp_min(1),
            }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.run_config.trainer.seed * 1_000_003 + self.global_step * 97 + self.global_rank)
        metrics = self._step(batch, generator)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True, batch_size=len(batch["key"]))
        return metrics["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(10_000 + batch_idx)  # the same masks at every validation
        metrics = self._step(batch, generator)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True, batch_size=len(batch["key"]))

    def configure_optimizers(self):
        optimizer, scheduler = adamw_with_schedule(self.model.parameters(), self.run_config.optim, self.run_config.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build(run_config: SSLRunConfig) -> tuple[SSLLightning, AudioDataModule]:
    """Load the target tokenizer, resolve `model.num_targets` from it, build module + data."""
    try:
        tokenizer = load_tokenizer(run_config.targets.tokenizer)
    except FileNotFoundError as err:
        raise ConfigError(
            f"targets.tokenizer={run_config.targets.tokenizer!r}: {err}. Make iteration-1 targets with "
            "`audiolm-pl semantic kmeans --source mfcc --shards <train shards> --clusters 100 --frame-rate 50 --out <file>`"
        ) from None
    model_config = run_config.model
    if model_config.num_targets == 0:
        model_config.num_targets = tokenizer.vocab_size
    elif model_config.num_targets != tokenizer.vocab_size:
        raise ConfigError(
            f"model.num_targets={model_config.num_targets} but targets.tokenizer {run_config.targets.tokenizer} "
            f"has {tokenizer.vocab_size} ids; set model.num_targets=0 to follow the tokenizer"
        )
    for name, rate in (("model.sample_rate", model_config.sample_rate), ("data.sample_rate", run_config.data.sample_rate)):
        if rate != tokenizer.sample_rate:
            raise ConfigError(f"{name}={rate} but the target tokenizer reads {tokenizer.sample_rate} Hz audio")
    module = SSLLightning(SSLModel(model_config), tokenizer, run_config)
    return module, AudioDataModule(run_config.data)
