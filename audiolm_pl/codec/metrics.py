"""What tells a user that a codec learns: codebook usage/perplexity per RVQ level, SI-SDR, mel
distance, and STOI/PESQ when `pystoi` / `pesq` are installed (the `metrics` extra)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
from torchmetrics import Metric
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio


@dataclass
class CodebookStats:
    usage: torch.Tensor  # (Q,) fraction of each level's codes used at least once
    perplexity: torch.Tensor  # (Q,) exp(entropy) of each level's code distribution (= codebook size when uniform)


class CodebookUsage(Metric):
    """How often each code of each RVQ level is used, over every batch of every rank.

    The state is one (Q, codebook_size) histogram summed across ranks (`dist_reduce_fx="sum"`), so usage
    and perplexity describe the codes all ranks saw: a mean of per-rank usages would not (each rank sees
    a share of the codes). Dropped levels (code -1) are not counted.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_quantizers: int, codebook_size: int, **kwargs):
        super().__init__(**kwargs)
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.add_state("counts", default=torch.zeros(num_quantizers, codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor) -> None:
        """codes (B, T_a, Q') int64, Q' <= Q levels, -1 where a level was dropped."""
        flat = codes.reshape(-1, codes.shape[-1])[:, : self.num_quantizers]  # (N, Q')
        levels = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)  # (N, Q')
        kept = flat >= 0
        # one bincount over (level, code) pairs: bin = level * codebook_size + code
        bins = levels[kept] * self.codebook_size + flat[kept]  # (M,)
        histogram = torch.bincount(bins, minlength=self.num_quantizers * self.codebook_size)  # (Q * C,)
        self.counts += histogram.view(self.num_quantizers, self.codebook_size)

    def compute(self) -> CodebookStats:
        counts = self.counts.double()  # (Q, C)
        probs = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)  # (Q, C)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)  # (Q,)
        return CodebookStats(usage=(self.counts > 0).double().mean(dim=1), perplexity=entropy.exp())


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
