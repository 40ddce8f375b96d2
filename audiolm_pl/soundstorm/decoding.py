"""MaskGIT-style parallel decoding of the RVQ levels (SoundStorm, section 3.3).

Level by level, from 0: all of the level's unknown frames start masked; each of its `iterations` forward
passes samples every masked frame, keeps the most confident samples and masks the others again, so the
masked share falls along `cosine_share` to 0 at the last pass. Confidence is the sampled code's
log-probability plus Gumbel noise scaled by the temperature and by the share of passes left (MaskGIT's
annealed choice noise). Levels above 0 decode greedily by default (the paper: one greedy pass each).
Prompt frames are given codes at every level and are never changed. Outputs longer than the trained
context are made window by window (`lm/windows.frame_windows`): each window reads the second half of
the previous one as its prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import torch

from audiolm_pl.lm.sampling import filter_logits, sample_categorical
from audiolm_pl.lm.transformer import AttentionContext
from audiolm_pl.lm.windows import frame_windows
from audiolm_pl.soundstorm.masking import cosine_share
from audiolm_pl.soundstorm.model import SoundStormModel, align_semantic


@dataclass
class SoundStormSampling:
    iterations: list[int] = field(default_factory=lambda: [8, 1, 1, 1])  # passes per level; the last repeats
    temperature: float = 0.8  # level 0 (0 = greedy)
    level_temperature: float = 0.0  # levels above 0 (0 = greedy, the paper's)
    top_k: int = 0  # 0 = all codes
    window: int = 0  # frames per forward pass; 0 = the trained context (model.max_seq_len)

    def __post_init__(self) -> None:
        if not self.iterations or min(self.iterations) < 1:
            raise ValueError(f"sampling.iterations must list >= 1 pass per level, got {self.iterations}")
        if self.window < 0 or 0 < self.window < 2:
            raise ValueError(f"sampling.window must be 0 (the trained context) or >= 2 frames, got {self.window}")
        if self.temperature < 0 or self.level_temperature < 0 or self.top_k < 0:
            raise ValueError(f"sampling needs temperature, level_temperature, top_k >= 0; got {self}")

    def passes(self, level: int) -> int:
        return self.iterations[min(level, len(self.iterations) - 1)]

    def temperature_of(self, level: int) -> float:
        return self.temperature if level == 0 else self.level_temperature


@dataclass
class SoundStormSamplingOverride:
    """Fields of SoundStorm's sampling to override in a pipeline YAML (`sampling.soundstorm.iterations=[16,1]`);
    a field left None keeps the checkpoint's own."""

    iterations: Optional[list[int]] = None
    temperature: Optional[float] = None
    level_temperature: Optional[float] = None
    top_k: Optional[int] = None
    window: Optional[int] = None

    def over(self, base: SoundStormSampling) -> SoundStormSampling:
        """`base` with the fields this override sets (validated by SoundStormSampling)."""
        return replace(base, **{key: value for key, value in asdict(self).items() if value is not None})


def _sample(logits: torch.Tensor, temperature: float, top_k: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, C) -> codes (B, T) and their log-probabilities (B, T)."""
    logits = logits.float()
    if temperature == 0:
        codes = logits.argmax(-1)  # (B, T)
    else:
        flat = filter_logits(logits.flatten(0, 1) / temperature, top_k)  # (B * T, C)
        codes = sample_categorical(flat.softmax(-1), generator).view(logits.shape[:2])  # (B, T)
    log_probs = logits.log_softmax(-1).gather(-1, codes[..., None]).squeeze(-1)  # (B, T)
    return codes, log_probs


def _gumbel(shape, device, generator) -> torch.Tensor:
    uniform = torch.rand(shape, device=device, generator=generator).clamp(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(uniform))


def decode_level(model: SoundStormModel, semantic: torch.Tensor, codes: torch.Tensor, level: int, passes: int,
                 temperature: float, top_k: int = 0, generator: Optional[torch.Generator] = None,
                 context: Optional[AttentionContext] = None) -> torch.Tensor:
    """codes (B, T, L) with MASK where unknown -> codes with every masked frame of `level` filled (in place too).
    context: the model's `attention_context` of these T frames, to build it once for every pass."""
    unknown = codes[:, :, level] == model.mask_id  # (B, T) frames this level still has to make
    total = unknown.sum(dim=1)  # (B,)
    context = context or model.attention_context(codes.shape[1], codes.device)
    for step in range(passes):
        logits = model.level_logits(model(semantic, codes, context=context), level)  # (B, T, C)
        sampled, confidence = _sample(logits, temperature, top_k, generator)  # (B, T) each
        masked = codes[:, :, level] == model.mask_id  # (B, T)
        left = torch.floor(cosine_share((step + 1) / passes) * total).long()  # (B,) masked after this pass
        if temperature > 0:
            confidence = confidence + temperature * (1 - (step + 1) / passes) * _gumbel(confidence.shape, codes.device, generator)
        confidence = confidence.masked_fill(~masked, float("inf"))  # known frames rank above every masked one
        rank = confidence.argsort(dim=1).argsort(dim=1)  # (B, T): 0 = least confident
        stay_masked = rank < left[:, None]  # (B, T) the least confident `left` masked frames
        fill = masked & ~stay_masked  # (B, T)
        codes[:, :, level] = torch.where(fill, sampled, codes[:, :, level])
    return codes


@torch.no_grad()
def generate_soundstorm(model: SoundStormModel, semantic_ids: torch.Tensor, num_frames: int,
                        prompt_codes: Optional[torch.Tensor] = None, sampling: Optional[SoundStormSampling] = None,
                        generator: Optional[torch.Generator] = None, window: Optional[int] = None) -> torch.Tensor:
    """semantic ids (B, T_s) at their own rate (raw, not deduplicated), optional prompt codes (B, P, >= L) of the
    first P frames -> codes (B, num_frames, L), the prompt's frames first and unchanged.

    window: frames per forward pass (default: `sampling.window`, else the trained context `max_seq_len`)."""
    sampling = sampling or SoundStormSampling()
    B, L = semantic_ids.shape[0], model.num_levels
    device = next(model.parameters()).device
    semantic = align_semantic(semantic_ids.to(device), num_frames, model.frames_per_id, model.semantic_vocab)  # (B, T)
    codes = torch.full((B, num_frames, L), model.mask_id, dtype=torch.long, device=device)  # (B, T, L)
    known = 0
    if prompt_codes is not None:
        if prompt_codes.shape[2] < L:
            raise ValueError(f"prompt codes have {prompt_codes.shape[2]} levels; this model makes {L}")
        known = min(prompt_codes.shape[1], num_frames)
        codes[:, :known] = prompt_codes[:, :known, :L].to(device)
    size = window or sampling.window or model.config.max_seq_len
    was_training = model.training
    model.eval()
    try:
        for part in frame_windows(num_frames, size, known, overlap=size // 2 if num_frames > size else 0):
            span = slice(part.start, part.end)
            codes[:, span] = _decode_window(model, semantic[:, span], codes[:, span].clone(), sampling, generator)
    finally:
        model.train(was_training)
    return codes


def _decode_window(model, semantic, codes, sampling: SoundStormSampling, generator) -> torch.Tensor:
    """One window: semantic (B, W), codes (B, W, L) with its prompt frames known -> every level filled."""
    context = model.attention_context(codes.shape[1], codes.device)  # the same for every pass over the window
    for level in range(model.num_levels):
        decode_level(model, semantic, codes, level, sampling.passes(level), sampling.temperature_of(level),
                     sampling.top_k, generator, context)
    return codes


def forward_passes(num_frames: int, window: int, levels: int, sampling: SoundStormSampling, known: int = 0) -> int:
    """Forward passes `generate_soundstorm` makes for `num_frames` frames (the benchmark's cost model)."""
    windows = len(frame_windows(num_frames, window, known, overlap=window // 2 if num_frames > window else 0))
    return windows * sum(sampling.passes(level) for level in range(levels))

