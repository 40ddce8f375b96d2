"""Validation of the codec (EMA weights): quality at several bitrates, codebook health, and
audio + spectrograms of reconstructions in TensorBoard."""

from __future__ import annotations

from collections import defaultdict

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from audiolm_pl.codec.metrics import CodebookUsage, optional_perceptual_metrics, si_sdr


def evaluation_levels(num_quantizers: int, requested: list[int]) -> list[int]:
    levels = requested or [1, num_quantizers // 4, num_quantizers // 2, num_quantizers]
    return sorted({n for n in levels if 1 <= n <= num_quantizers})


class CodecValidation:
    def __init__(self, module):
        self.module = module
        self.levels = evaluation_levels(module.model.num_quantizers, module.run_config.validation_quantizers)
        # a submodule of the LightningModule, so it follows it to the device (NCCL reduces device tensors);
        # its histogram is not a persistent state, so checkpoints do not change
        module.codebook_usage = CodebookUsage(module.model.num_quantizers, module.model.codebook_size)
        self.reset()

    @property
    def usage(self) -> CodebookUsage:
        return self.module.codebook_usage

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.batches = 0
        self.usage.reset()

    @torch.no_grad()
    def step(self, batch: dict, batch_index: int) -> None:
        module, wav = self.module, batch["wav"]  # (B, T)
        codec = module.ema_model.module
        codes = codec.encode(wav)  # (B, T_a, Q)
        self.usage.update(codes)
        for n in self.levels:
            recon = codec.decode(codes[:, :, :n])[:, : wav.shape[1]]  # (B, T)
            self.sums[f"val/mel_distance_q{n}"] += float(module.mel_distance(recon, wav))
            self.sums[f"val/si_sdr_q{n}"] += float(si_sdr(recon, wav))
            if batch_index == 0:
                for name, value in optional_perceptual_metrics(recon, wav, codec.sample_rate).items():
                    module.log(f"val/{name}_q{n}", value, batch_size=wav.shape[0])
        self.batches += 1
        if batch_index == 0 and module.global_rank == 0:
            self._log_media(wav[:2], codec.decode(codes[:2])[:, : wav.shape[1]])

    def finish(self) -> None:
        module = self.module
        if self.batches == 0:
            return
        for name, total in self.sums.items():
            module.log(name, total / self.batches, sync_dist=True)
        full = max(self.levels)
        module.log("val/mel_distance", self.sums[f"val/mel_distance_q{full}"] / self.batches, sync_dist=True)
        # compute() sums the code histograms of every rank first, so these are the same on every rank;
        # sync_dist (a mean of equal values) only tells Lightning so
        stats = self.usage.compute()
        figures = {f"val/codebook_usage_q{level}": usage for level, usage in enumerate(stats.usage.tolist())}
        figures |= {f"val/codebook_perplexity_q{level}": ppl for level, ppl in enumerate(stats.perplexity.tolist())}
        figures["val/codebook_usage_min"] = float(stats.usage.min())
        module.log_dict(figures, sync_dist=True)

    def _log_media(self, original: torch.Tensor, reconstructed: torch.Tensor) -> None:
        logger = self.module.logger
        if not isinstance(logger, TensorBoardLogger):
            return
        from audiolm_pl.plotting import spectrogram_figure

        rate, step = self.module.model.sample_rate, self.module.global_step
        for index in range(original.shape[0]):
            for kind, wav in (("original", original[index]), ("reconstruction", reconstructed[index])):
                clip = wav.float().clamp(-1, 1).cpu()
                logger.experiment.add_audio(f"audio/{index}_{kind}", clip[None], step, sample_rate=rate)
                logger.experiment.add_figure(f"spectrogram/{index}_{kind}", spectrogram_figure(clip, rate, kind), step)
