"""Sampling from a `TransformerLM`: temperature, top-k, top-p, KV-cached decoding, sliding window.

`generate` is stage-agnostic: the stage says, step by step, which token ids are allowed
(`allowed(step, previous) -> bool mask`), e.g. only the codes of the RVQ level due next.
With `use_cache` it prefills a KV cache with the prefix and then feeds one token per step;
without, it reruns the whole (windowed) sequence every step (the reference, and the
benchmark's baseline). Past `window` positions it slides (`windows.TokenWindow`, the one place that
knows how generation goes past the trained context).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch
from tqdm.auto import tqdm

from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.lm.windows import TokenWindow

# allowed(step, previous) -> bool (V,) or (B, V) mask of ids that may come next;
# step counts generated tokens from 0, previous (B,) is the last token of the sequence.
AllowedFn = Callable[[int, torch.Tensor], torch.Tensor]

# progress bars for token loops: off unless a caller (the generate command) turns them on; AudioLM names the stage
_SHOW_PROGRESS: ContextVar[bool] = ContextVar("audiolm_pl_show_progress", default=False)
_STAGE: ContextVar[str] = ContextVar("audiolm_pl_stage", default="tokens")


@contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Inside, every token loop of `generate` shows a progress bar on stderr (tokens done, tokens per second)."""
    reset = _SHOW_PROGRESS.set(enabled)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(reset)


@contextmanager
def stage_progress(name: str) -> Iterator[None]:
    """Names the progress bars of the token loops inside (`semantic`, `coarse`, `fine`)."""
    reset = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(reset)


def _steps(num_tokens: int) -> Iterable[int]:
    if not _SHOW_PROGRESS.get():
        return range(num_tokens)
    return tqdm(range(num_tokens), desc=_STAGE.get(), unit="tok", leave=False, mininterval=1.0)


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # keep the k most likely ids; 0 = all
    top_p: float = 1.0  # keep the smallest set of ids whose probability reaches top_p
    # classifier-free guidance scale g (1 = off): log p(x | c) + (g - 1) (log p(x | c) - log p(x | null)).
    # Needs a model trained with condition dropout and conditioned per position (the aligned coarse layout).
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.guidance < 0:
            raise ValueError(
                f"sampling needs temperature >= 0, top_k >= 0, 0 < top_p <= 1 and guidance >= 0; got {self}"
            )

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits (B, V) -> logits (B, V) with -inf outside the top-k / nucleus (top-p) set."""
    logits = logits.clone()
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)  # (B, V)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this id already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocab order
        logits[drop] = float("-inf")
    return logits


def sample_categorical(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """probs (N, V), rows summing to 1 -> one id per row (N,), drawn by inverting the cumulative distribution
    with one uniform per row. `torch.multinomial` draws an exponential variate per id instead, which is most of
    the cost of a parallel decoding pass over thousands of rows of 1024 codes; ids of probability 0 are never
    drawn (a row's cumulative sum does not rise at them)."""
    cumulative = probs.cumsum(-1)  # (N, V)
    uniform = torch.rand(probs.shape[0], 1, device=probs.device, generator=generator) * cumulative[:, -1:]  # (N, 1)
    ids = torch.searchsorted(cumulative, uniform, right=True)  # first id whose cumulative sum passes the draw
    return ids.squeeze(1).clamp_max(probs.shape[-1] - 1)  # (N,)


def sample_next(logits: torch.Tensor, sampling: SamplingConfig, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits (B, V) -> ids (B,)."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    return sample_categorical(logits.softmax(-1), generator)


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """logits (2B, V) of [conditioned; null-conditioned] rows -> guided log-probabilities (B, V).

    Classifier-free guidance (Ho & Salimans 2022; AudioGen / MusicGen decode this way): the conditioned
    distribution sharpened away from the unconditioned one, in log-probabilities so that both rows'
    normalisers cancel. Ids that the stage forbids stay forbidden (`_restrict` runs after)."""
    conditioned, null = logits.float().log_softmax(-1).chunk(2)  # (B, V) each
    return null + scale * (conditioned - null)


def _restrict(logits: torch.Tensor, allowed: Optional[AllowedFn], step: int, previous: torch.Tensor) -> torch.Tensor:
    if allowed is None:
        return logits
    mask = allowed(step, previous).to(logits.device)  # (V,) or (B, V)
    return logits.masked_fill(~mask, float("-inf"))


@torch.no_grad()
def generate(
    model: TransformerLM,
    prefix: torch.Tensor,
    num_tokens: int,
    sampling: SamplingConfig,
    allowed: Optional[AllowedFn] = None,
    window: Optional[int] = None,
    use_cache: bool = True,
    generator: Optional[torch.Generator] = None,
    conditions: Optional[torch.Tensor] = None,
    null_conditions: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """prefix (B, T0) int64, T0 >= 1 -> the `num_tokens` new tokens (B, num_tokens).

    window: most positions the model attends over (default: its trained `max_seq_len`).
    conditions: (B, T0 + num_tokens - 1, w) condition ids of every input position, for a model built
    with condition embeddings (the aligned layout): known in advance, unlike the tokens.
    null_conditions: the same positions' conditions with the condition dropped (`AlignedCoarseLayout.null_conditions`),
    needed when `sampling.guidance` is not 1: each step then runs a batch of 2B rows, conditioned and null, and
    samples from their guided mix (`guide`).
    """
    if prefix.dim() != 2 or prefix.shape[1] == 0:
        raise ValueError(f"prefix must be (B, T0) with T0 >= 1, got shape {tuple(prefix.shape)}")
    if conditions is not None and conditions.shape[1] < prefix.shape[1] + num_tokens - 1:
        raise ValueError(f"conditions cover {conditions.shape[1]} positions; {prefix.shape[1]} prompt + "
                         f"{num_tokens} new tokens read {prefix.shape[1] + num_tokens - 1}")
    if sampling.guided:
        if conditions is None or null_conditions is None:
            raise ValueError(f"sampling.guidance={sampling.guidance} needs a model conditioned per position and trained "
                             "with condition dropout (the coarse LM's aligned layout with condition_dropout > 0); "
                             "set guidance: 1.0 for this stage")
        prefix, conditions = prefix.repeat(2, 1), torch.cat([conditions, null_conditions])  # (2B, T0), (2B, T, w)
    window = TokenWindow(window or model.config.max_seq_len)
    was_training = model.training
    model.eval()
    try:
        if use_cache:
            return _generate_cached(model, prefix, num_tokens, sampling, allowed, window, generator, conditions)
        return _generate_uncached(model, prefix, num_tokens, sampling, allowed, window, generator, conditions)
    finally:
        model.train(was_training)


def _conditions(conditions: Optional[torch.Tensor], start: int, end: int) -> Optional[torch.Tensor]:
    return None if conditions is None else conditions[:, start:end]  # (B, end - start, w)


def _guided(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """The model's last-position logits -> what to sample from: (B, V), guided when the batch is doubled."""
    return guide(logits, sampling.guidance) if sampling.guided else logits


def _both(ids: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Sampled ids (B,) -> the ids both halves of a guided batch read next: (2B,), else (B,)."""
    return ids.repeat(2) if sampling.guided else ids


def _generate_uncached(model, prefix, num_tokens, sampling, allowed, window: TokenWindow, generator,
                       conditions=None) -> torch.Tensor:
    tokens, rows = prefix, prefix.shape[0] // (2 if sampling.guided else 1)  # (B or 2B, T0); B sequences
    for step in _steps(num_tokens):
        length = tokens.shape[1]
        start = window.start(length)
        logits = _guided(model(tokens[:, start:], conditions=_conditions(conditions, start, length))[:, -1], sampling)
        next_ids = sample_next(_restrict(logits, allowed, step, tokens[:rows, -1]), sampling, generator)  # (B,)
        tokens = torch.cat([tokens, _both(next_ids, sampling)[:, None]], dim=1)  # (B or 2B, T + 1)
    return tokens[:rows, prefix.shape[1]:]  # (B, num_tokens)


def _generate_cached(model, prefix, num_tokens, sampling, allowed, window: TokenWindow, generator,
                     conditions=None) -> torch.Tensor:
    batch, length = prefix.shape
    cache = model.new_cache(batch, window.window)
    start = window.start(length)
    logits = _guided(model(prefix[:, start:], cache, _conditions(conditions, start, length))[:, -1], sampling)  # (B, V)
    previous = prefix[: len(logits), -1]
    generated = []
    for step in _steps(num_tokens):
        next_ids = sample_next(_restrict(logits, allowed, step, previous), sampling, generator)  # (B,)
        generated.append(next_ids)
        previous = next_ids
        if step == num_tokens - 1:
            break
        window.make_room(cache)
        step_conditions = _conditions(conditions, length + step, length + step + 1)  # (B, 1, w) or None
        logits = _guided(model(_both(next_ids, sampling)[:, None], cache, step_conditions)[:, -1], sampling)  # (B, V)
    return torch.stack(generated, dim=1)  # (B, num_tokens)
