"""The token contract between stages (see DESIGN.md, "Stages and the token contract").

Producers of tokens (an acoustic codec, a semantic tokenizer) expose `sample_rate`,
`frame_rate` and their vocabulary as properties; `token_spec` bundles them into a
`TokenSpec` that is stored in every checkpoint and token shard. Consumers (the LMs,
the tokenize job, the composite) keep the spec they were trained on and call
`require_same_spec` when they meet a producer, which refuses a mismatch with a
message that names both sides.

A spec says what shape the ids have, not what they mean: two tokenizers with the same
spec give unrelated ids. So every producer also has an `identity()`, a short hash of what
decides its tokens (weights, centroids), which the token shards and the LMs trained on
them record; the composite refuses a producer whose identity differs (`ProducerMismatch`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from audiolm_pl.shareable import Shareable

TokenKind = Literal["acoustic", "semantic"]


class TokenSpecMismatch(ValueError):
    """Two stages that must share a token vocabulary do not."""


class ProducerMismatch(TokenSpecMismatch):
    """Tokens of the right spec, but from another codec or tokenizer than the consumer was trained on."""


def tensors_hash(tensors: dict[str, torch.Tensor], extra: dict | None = None, length: int = 16) -> str:
    """A short sha256 of named tensors (name, dtype, shape, bytes) and plain JSON `extra`: the same
    for the same values whichever file, copy or machine they were loaded from."""
    digest = hashlib.sha256(json.dumps(extra or {}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, not copied
    return digest.hexdigest()[:length]


@dataclass(frozen=True)
class TokenSpec:
    """What a token id means: which audio rate, how many frames per second, how many ids.

    For an acoustic codec `vocab_size` is the codebook size of each of `num_quantizers`
    residual levels; a semantic tokenizer has `num_quantizers == 1`.
    """

    kind: TokenKind
    sample_rate: int
    frame_rate: float
    vocab_size: int
    num_quantizers: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("acoustic", "semantic"):
            raise ValueError(f"TokenSpec.kind must be 'acoustic' or 'semantic', got {self.kind!r}")
        for name in ("sample_rate", "vocab_size", "num_quantizers"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"TokenSpec.{name} must be positive, got {getattr(self, name)!r}")
        if self.frame_rate <= 0:
            raise ValueError(f"TokenSpec.frame_rate must be positive, got {self.frame_rate!r}")

    # -- frame arithmetic: every samples <-> frames and rate-to-rate conversion goes through these ----------
    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate / self.frame_rate

    def num_frames(self, samples: int) -> int:
        """Whole frames in `samples` audio samples: floor(samples * frame_rate / sample_rate). A producer fed
        padded audio makes more; the first `num_frames(length)` are the clip's own."""
        return int(samples * self.frame_rate // self.sample_rate)

    def samples_for(self, frames: int) -> int:
        """Audio samples that `frames` frames decode to."""
        return round(frames * self.samples_per_frame)

    def frames_in(self, seconds: float) -> int:
        """Whole frames that fit in `seconds` (a crop, a chunk): floor(seconds * frame_rate)."""
        return math.floor(seconds * self.frame_rate)

    def frames_covering(self, seconds: float) -> int:
        """Frames needed to cover `seconds` (an output length): ceil(seconds * frame_rate)."""
        return math.ceil(seconds * self.frame_rate)

    def frame_ratio(self, other: "TokenSpec") -> float:
        """Frames of this spec per frame of `other` (acoustic.frame_ratio(semantic) = 2 at 50 Hz / 25 Hz)."""
        return self.frame_rate / other.frame_rate

    def whole_frame_ratio(self, other: "TokenSpec") -> int:
        """`frame_ratio(other)` where it must be a whole number >= 1 (layouts that give each of `other`'s
        frames the same number of ours); `ValueError` naming both rates otherwise."""
        ratio = self.frame_ratio(other)
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(f"{self.kind} frame rate {self.frame_rate:g} Hz is not a whole multiple of the "
                             f"{other.kind} frame rate {other.frame_rate:g} Hz (ratio {ratio:g})")
        return int(round(ratio))

    def frames_for(self, count: int, other: "TokenSpec", whole: bool = False) -> int:
        """Our frames spanning the time of `count` frames of `other`: rounded to the nearest, or with
        `whole` only the frames that `count` covers entirely (floor)."""
        frames = count * self.frame_rate / other.frame_rate
        return int(frames) if whole else round(frames)

    def describe(self) -> str:
        if self.kind == "acoustic":
            vocab = f"{self.num_quantizers} x {self.vocab_size} codes"
        else:
            vocab = f"{self.vocab_size} ids"
        return f"{vocab} at {self.frame_rate:g} Hz over {self.sample_rate} Hz audio"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TokenSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown TokenSpec keys {sorted(unknown)}; expected {sorted(fields)}")
        return cls(**values)


def require_same_spec(
    expected: TokenSpec, actual: TokenSpec, *, consumer: str, producer: str
) -> None:
    """Raise `TokenSpecMismatch` unless `actual` is the spec `consumer` was trained on.

    consumer: who holds `expected`, e.g. "coarse LM (runs/coarse/last.ckpt)".
    producer: who produced `actual`, e.g. "codec (runs/codec/last.ckpt)".
    """
    if expected == actual:
        return
    differing = [
        f"{f.name} {getattr(expected, f.name)!r} vs {getattr(actual, f.name)!r}"
        for f in dataclasses.fields(TokenSpec)
        if getattr(expected, f.name) != getattr(actual, f.name)
    ]
    raise TokenSpecMismatch(
        f"{consumer} was trained on {expected.kind} tokens of {expected.describe()}; "
        f"{producer} gives {actual.describe()} (differs in: {', '.join(differing)})"
    )


class TokenProducer(Shareable, nn.Module, abc.ABC):
    """What the codec and the semantic tokenizer share: audio rate, frame rate, an identity and a spec."""

    token_kind: TokenKind

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float: ...

    def identity(self) -> str:
        """A hash of what decides the tokens; by default every weight and buffer (see `tensors_hash`)."""
        return tensors_hash(self.state_dict())

    def _spec(self, vocab_size: int, num_quantizers: int) -> TokenSpec:
        return TokenSpec(kind=self.token_kind, sample_rate=int(self.sample_rate), frame_rate=float(self.frame_rate),
                         vocab_size=int(vocab_size), num_quantizers=int(num_quantizers))


class AcousticCodec(TokenProducer):
    """Waveform <-> residual codes (B, T_a, Q). Implemented by the codec stage (`registry.CODECS`)."""

    token_kind = "acoustic"

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_quantizers(self) -> int: ...

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_wav) float at `sample_rate` -> codes (B, T_a, Q) int64."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_a, q) int64 with q <= Q (fewer levels = lower bitrate) -> wav (B, T_wav)."""

    @property
    def token_spec(self) -> TokenSpec:
        return self._spec(self.codebook_size, self.num_quantizers)


class SemanticTokenizer(TokenProducer):
    """Waveform -> semantic ids (SSL features + k-means). Implemented by the semantic stage."""

    token_kind = "semantic"

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_wav) float at `sample_rate` -> ids (B, T_s) int64 in [0, vocab_size)."""

    @property
    def token_spec(self) -> TokenSpec:
        return self._spec(self.vocab_size, 1)
