"""Training a codec (any class of `registry.CODECS`): reconstruction losses, then optionally GAN
training with manual optimisation (two optimisers).

Guards against the known failure modes of open SoundStream training: the discriminator
starts only after `loss.discriminator_start` generator steps, both optimisers clip their
gradients, a non-finite loss skips the step (and is counted in `train/skipped_steps`), the
STFT discriminator runs in fp32, a dead-code threshold that would re-seed the codebooks at
every step is refused at fit start, and an EMA copy of the generator is what validation,
`load_codec` and the tokenize job use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from audiolm_pl.codec.discriminators import DiscriminatorConfig, Discriminators
from audiolm_pl.codec.frame_model import FrameCodecConfig
from audiolm_pl.codec.losses import (MultiResolutionSTFTLoss, MultiScaleMelLoss, discriminator_hinge_loss,
                                     feature_matching_loss, generator_hinge_loss)
from audiolm_pl.codec.model import SoundStreamConfig
from audiolm_pl.codec.validation import CodecValidation
from audiolm_pl.config import to_dict
from audiolm_pl.data.datamodule import AudioDataConfig, AudioDataModule
from audiolm_pl.tokens import AcousticCodec
from audiolm_pl.training import OptimConfig, TrainerConfig, adamw_with_schedule


@dataclass
class CodecLossConfig:
    """Weights as in DAC (a stable open recipe); the paper uses adv 1, feature 100, rec 1 on other scales."""

    mel: float = 15.0
    mel_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])  # STFT windows of the mel loss
    stft: float = 0.0  # multi-resolution STFT: log-magnitude L1 + spectral convergence
    complex_stft: float = 0.0  # multi-resolution STFT of compressed complex values: phase errors count
    stft_sizes: list[int] = field(default_factory=lambda: [320, 640, 1280])  # windows of both STFT losses
    adversarial: float = 1.0  # adversarial and feature_matching both 0: no discriminator at all
    feature_matching: float = 2.0
    commitment: float = 0.25
    discriminator_start: int = 1000  # generator steps trained on reconstruction alone
    ema_decay: float = 0.999  # EMA of generator weights, used for evaluation
    clip_norm: float = 10.0


@dataclass
class CodecRunConfig:
    """What every codec class trains with; `model` is the class's own config, chosen by `model.kind`
    (`registry.CODECS`): loading a codec YAML or checkpoint gives the matching subclass below."""

    model: Any = None
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, betas=[0.5, 0.9], weight_decay=0.0))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    validation_quantizers: list[int] = field(default_factory=list)  # levels to evaluate; [] = 1, Q/4, Q/2, Q

    @classmethod
    def schema_for(cls, raw) -> type:
        """The run config of the codec class that `model.kind` names (SoundStream when absent)."""
        from omegaconf import OmegaConf

        from audiolm_pl.registry import get_codec

        return get_codec(OmegaConf.select(raw, "model.kind", default="soundstream")).run_config_class()


@dataclass
class SoundStreamRunConfig(CodecRunConfig):
    model: SoundStreamConfig = field(default_factory=SoundStreamConfig)


@dataclass
class FrameCodecRunConfig(CodecRunConfig):
    model: FrameCodecConfig = field(default_factory=FrameCodecConfig)


def build_codec(model_config) -> AcousticCodec:
    """A codec model config (`SoundStreamConfig`, `FrameCodecConfig`, ...) -> its codec, by `kind`."""
    from audiolm_pl.registry import get_codec

    return get_codec(model_config.kind).model_class()(model_config)


class CodecModule(L.LightningModule):
    def __init__(self, run_config: CodecRunConfig):
        super().__init__()
        self.run_config = run_config
        self.automatic_optimization = False
        self.model = build_codec(run_config.model)
        self.discriminator = Discriminators(run_config.discriminator)
        # parameters only: codebooks are buffers (EMA-updated and re-seeded by the quantizer itself),
        # copied from the live model after each update rather than blended
        self.ema_model = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(run_config.loss.ema_decay), use_buffers=False)
        self.mel_loss = MultiScaleMelLoss(run_config.model.sample_rate, run_config.loss.mel_sizes)
        self.mel_distance = MultiScaleMelLoss(run_config.model.sample_rate)  # the metric: the same windows for every config
        self.stft_loss = MultiResolutionSTFTLoss(run_config.loss.stft_sizes)
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self._host_generator_steps: int | None = None  # its host copy: reading the buffer every step would sync a GPU
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.validation = CodecValidation(self)
        self.save_hyperparameters({"stage": "codec", "config": to_dict(run_config),
                                   "token_specs": {"acoustic": self.model.token_spec.to_dict()}})

    @property
    def discriminator_active(self) -> bool:
        weights = self.run_config.loss
        uses_gan = weights.adversarial > 0 or weights.feature_matching > 0
        if self._host_generator_steps is None:  # once per fit or resume, not once per step
            self._host_generator_steps = int(self.generator_steps)
        return uses_gan and self._host_generator_steps >= weights.discriminator_start

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._host_generator_steps = None  # the restored buffer is read again on first use

    def on_fit_start(self) -> None:
        check_dead_code_threshold(self.run_config, self.trainer.world_size)

    def training_step(self, batch: dict, batch_index: int) -> None:
        weights, wav = self.run_config.loss, batch["wav"]  # (B, T)
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        out = self.model(wav)
        logs = {}
        if self.discriminator_active:
            loss_d = discriminator_hinge_loss(self.discriminator(wav), self.discriminator(out.wav.detach()))
            if self._step(opt_d, sched_d, loss_d):
                logs["train/discriminator"] = loss_d.detach()
        mel = self.mel_loss(out.wav, wav)
        loss_g = weights.mel * mel + weights.commitment * out.commitment_loss
        logs.update({"train/mel": mel.detach(), "train/commitment": out.commitment_loss.detach()})
        if weights.stft or weights.complex_stft:
            stft = self.stft_loss(out.wav, wav)
            loss_g = loss_g + weights.stft * stft.magnitude + weights.complex_stft * stft.complex
            logs.update({"train/stft": stft.magnitude.detach(), "train/complex_stft": stft.complex.detach()})
        if self.discriminator_active:
            real, fake = self.discriminator(wav), self.discriminator(out.wav)
            adversarial, features = generator_hinge_loss(fake), feature_matching_loss(real, fake)
            loss_g = loss_g + weights.adversarial * adversarial + weights.feature_matching * features
            logs.update({"train/adversarial": adversarial.detach(), "train/feature_matching": features.detach()})
        if self._step(opt_g, sched_g, loss_g):
            self.ema_model.update_parameters(self.model)
            for ema_buffer, buffer in zip(self.ema_model.module.buffers(), self.model.buffers()):
                ema_buffer.copy_(buffer)
            self.generator_steps += 1
            if self._host_generator_steps is not None:
                self._host_generator_steps += 1
            logs["train/generator"] = loss_g.detach()
        logs["train/skipped_steps"] = self.skipped_steps.float()
        self.log_dict(logs, prog_bar=False, batch_size=wav.shape[0])
        self.log("train/mel_loss", mel.detach(), prog_bar=True, batch_size=wav.shape[0])

    def _step(self, optimizer, scheduler, loss: torch.Tensor) -> bool:
        """Backward + clipped step; a non-finite loss skips the step instead of poisoning the weights."""
        if not torch.isfinite(loss):
            self.skipped_steps += 1
            return False
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.clip_gradients(optimizer, gradient_clip_val=self.run_config.loss.clip_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler.step()
        return True

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self.validation.step(batch, batch_index)

    def on_validation_epoch_start(self) -> None:
        self.validation.reset()

    def on_validation_epoch_end(self) -> None:
        self.validation.finish()

    def configure_optimizers(self):
        o, total = self.run_config.optim, self.run_config.trainer.max_steps
        opt_g, sched_g = adamw_with_schedule(self.model.parameters(), o, total)
        opt_d, sched_d = adamw_with_schedule(self.discriminator.parameters(), o, total)
        return [opt_g, opt_d], [{"scheduler": sched_g, "interval": "step"}, {"scheduler": sched_d, "interval": "step"}]


def check_dead_code_threshold(run_config: CodecRunConfig, world_size: int = 1) -> None:
    """Refuse a dead-code threshold at or above the mean number of frames a code receives per
    step: the EMA count of almost every code then sits below it, so the whole codebook is
    re-seeded from the batch at every step and never settles (the codebook collapse of short
    runs with large codebooks). Codebooks are synchronised over ranks, so frames add up."""
    model, data = run_config.model, run_config.data
    quantizer = model.quantizer
    if getattr(quantizer, "dead_code_threshold", 0) <= 0:  # FSQ has no codebook to re-seed
        return
    frames = data.batch_size * int(data.crop_seconds * model.sample_rate) // math.prod(model.strides) * world_size
    mean_count = frames / quantizer.codebook_size
    if quantizer.dead_code_threshold >= mean_count:
        raise ValueError(
            f"model.quantizer.dead_code_threshold={quantizer.dead_code_threshold} is not below the mean count a code "
            f"receives per step ({mean_count:.3g} = {frames} frames (data.batch_size={data.batch_size} x "
            f"data.crop_seconds={data.crop_seconds} x {world_size} rank(s)) / codebook_size={quantizer.codebook_size}): "
            f"every code would be re-seeded at every step. Use a threshold well below {mean_count:.3g} "
            f"(e.g. {mean_count / 8:.2g}), or larger batches or crops.")


def build(run_config: CodecRunConfig) -> tuple[CodecModule, AudioDataModule]:
    if run_config.data.sample_rate != run_config.model.sample_rate:
        raise ValueError(f"data.sample_rate={run_config.data.sample_rate} but model.sample_rate={run_config.model.sample_rate}")
    return CodecModule(run_config), AudioDataModule(run_config.data)
