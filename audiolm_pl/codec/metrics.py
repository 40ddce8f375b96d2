"""What tells a user that a codec learns: codebook usage/perplexity per RVQ level, SI-SDR, mel
distance, and STOI/PESQ when `pystoi` / `pesq` are installed (the `metrics` extra)."""

from __future__ import annotations

import importlib.util

import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio


class CodebookUsage:
    """Counts of every code per level, accumulated over batches (ignores dropped levels, -1)."""

    def __init__(self, num_quantizers: int, codebook_size: int):
        self.counts = torch.zeros(num_quantizers, codebook_size, dtype=torch.long)

    def update(self, codes: torch.Tensor) -> None:
        """codes (B, T_a, Q)"""
        flat = codes.reshape(-1, codes.shape[-1]).cpu()  # (B * T_a, Q)
        for level in range(min(flat.shape[1], self.counts.shape[0])):
            used = flat[:, level][flat[:, level] >= 0]
            self.counts[level] += torch.bincount(used, minlength=self.counts.shape[1])

    def usage(self) -> torch.Tensor:
        """(Q,) fraction of each level's codes used at least once."""
        return (self.counts > 0).float().mean(dim=1)

    def perplexity(self) -> torch.Tensor:
        """(Q,) exp(entropy) of each level's code distribution (= codebook size when uniform)."""
        probs = self.counts.float() / self.counts.sum(dim=1, keepdim=True).clamp_min(1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
        return entropy.exp()


def si_sdr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, T), (B, T) -> mean SI-SDR in dB."""
    return scale_invariant_signal_distortion_ratio(predicted.float(), target.float()).mean()


def optional_perceptual_metrics(predicted: torch.Tensor, target: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """STOI and wide-band PESQ where their packages are installed (both need 16 kHz for PESQ wb)."""
    figures: dict[str, float] = {}
    if importlib.util.find_spec("pystoi"):
        from torchmetrics.functional.audio import short_time_objective_intelligibility

        figures["stoi"] = float(short_time_objective_intelligibility(predicted.float().cpu(), target.float().cpu(), sample_rate).mean())
    if importlib.util.find_spec("pesq") and sample_rate == 16000:
        from torchmetrics.functional.audio import perceptual_evaluation_speech_quality

        try:
            scores = perceptual_evaluation_speech_quality(predicted.float().cpu(), target.float().cpu(), 16000, "wb")
            figures["pesq"] = float(scores.mean())
        except Exception:  # pesq raises on silent or too-short clips; the metric is then not reported
            pass
    return figures
