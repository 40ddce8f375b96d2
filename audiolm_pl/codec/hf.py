"""Pretrained codecs from transformers as `AcousticCodec`s: `hf:DIR` names a local `save_pretrained` folder.

    hf:DIR                      every RVQ level the model has
    hf:DIR?num_quantizers=8     the first 8 levels (any class)
    hf:DIR?bandwidth=6          EnCodec / X-Codec: the levels of 6 kbps (one of the model's target_bandwidths)
    hf:DIR?sample_rate=24000    the rate `encode` takes and `decode` gives (default 16000, the pipeline's)

Supported `model_type`s (`registry.PRETRAINED_CODECS`): `encodec` (the 24 kHz mono model), `dac`, `mimi`,
`xcodec`. Weights are read from `*.safetensors` only (no pickle) and never downloaded (`local_files_only`).

    wav (B, T) @ sample_rate ──resample (soxr)──▶ native rate ──pad to whole hops──▶ model.encode ──▶ (B, T_a, Q)
    codes (B, T_a, q) ──model.decode──▶ native (B, T_a · hop) ──resample──▶ (B, samples_for(T_a)) @ sample_rate

The frame rate is the model's own (native rate / hop): EnCodec 24 kHz 75 Hz, Mimi 12.5 Hz, DAC 16 kHz
50 Hz (the 16 kHz model), X-Codec 50 Hz. Our layouts need it to be a whole multiple of the semantic tokenizer's
(docs/codec.md, "Pretrained codecs").
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F

from audiolm_pl.registry import get_pretrained_codec
from audiolm_pl.tokens import AcousticCodec

PREFIX = "hf:"
OPTIONS = ("num_quantizers", "bandwidth", "sample_rate")


@dataclass(frozen=True)
class HFCodecSpec:
    """`hf:DIR?key=value&...` parsed: the folder and the options (None = the model's default)."""

    path: Path
    num_quantizers: int | None = None
    bandwidth: float | None = None  # kbps
    sample_rate: int = 16000


def is_hf_codec(name: str | Path) -> bool:
    """True for `hf:DIR[?options]`, a pretrained transformers codec folder."""
    return str(name).startswith(PREFIX)


def parse_hf_codec(name: str | Path) -> HFCodecSpec:
    """'hf:DIR[?num_quantizers=N|bandwidth=KBPS][&sample_rate=HZ]' -> HFCodecSpec; ValueError naming what is
    wrong."""
    text = str(name)
    if not text.startswith(PREFIX) or len(text) == len(PREFIX):
        raise ValueError(f"codec {text!r}: expected hf:DIR (a transformers save_pretrained folder)")
    path, _, query = text[len(PREFIX):].partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"codec {text!r}: unknown option(s) {sorted(unknown)}; known: {list(OPTIONS)}")
    if "num_quantizers" in options and "bandwidth" in options:
        raise ValueError(f"codec {text!r}: give num_quantizers or bandwidth, not both")
    try:
        return HFCodecSpec(
            Path(path),
            num_quantizers=int(options["num_quantizers"]) if "num_quantizers" in options else None,
            bandwidth=float(options["bandwidth"]) if "bandwidth" in options else None,
            sample_rate=int(options.get("sample_rate", 16000)),
        )
    except ValueError as err:
        raise ValueError(f"codec {text!r}: {err}") from None


def weight_files(path: Path) -> list[Path]:
    """The folder's config.json and safetensors weights, in a fixed order; refuses a folder without them."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"codec folder {path} has no config.json (expected a transformers save_pretrained folder)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"codec folder {path} has no *.safetensors weights; only safetensors are read "
                                "(save with model.save_pretrained(DIR), which writes them)")
    return [path / "config.json", *weights]


def folder_hash(path: str | Path, length: int = 16) -> str:
    """A short sha256 of config.json and every *.safetensors file of a codec folder: the `codec_hash` of
    token shards, as `checkpoint.file_hash` is for our own codec checkpoints."""
    digest = hashlib.sha256()
    for file in weight_files(Path(path)):
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def resample(wav: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    """wav (B, T) -> (B, ~T * rate_out / rate_in) with soxr (torchaudio is not usable here), on wav's device."""
    if rate_in == rate_out:
        return wav
    import soxr

    columns = wav.detach().float().cpu().numpy().T  # (T, B): soxr resamples channels in columns
    out = soxr.resample(np.ascontiguousarray(columns), rate_in, rate_out)  # (T', B)
    return torch.from_numpy(np.ascontiguousarray(out.T)).to(wav.device)


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """wav (B, T) trimmed or zero-padded at the end to (B, length)."""
    return wav[:, :length] if wav.shape[1] >= length else F.pad(wav, (0, length - wav.shape[1]))


class HFCodec(AcousticCodec):
    """A transformers EnCodec / DAC / Mimi / X-Codec model behind the `AcousticCodec` contract (see the module doc)."""

    def __init__(self, spec: HFCodecSpec):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        # hashed before the weights are read, so identity() names the bytes this model was built from
        self._folder_hash = folder_hash(spec.path, length=64)
        config = AutoConfig.from_pretrained(spec.path, local_files_only=True)
        get_pretrained_codec(config.model_type, where=f"codec folder {spec.path}")
        _check_supported(spec.path, config)
        self.model_type, self.path = config.model_type, spec.path
        self.model = AutoModel.from_pretrained(spec.path, local_files_only=True, use_safetensors=True).eval()
        self.native_rate, self.hop = _native_rate_and_hop(config)
        self._codebook_size = int(config.codebook_size)
        self.max_levels = int(config.n_codebooks if self.model_type == "dac" else config.num_quantizers)
        self.levels = self._levels(spec, config)
        self._sample_rate = int(spec.sample_rate)
        if self._sample_rate <= 0:
            raise ValueError(f"codec {spec.path}: sample_rate must be positive, got {spec.sample_rate}")

    def _levels(self, spec: HFCodecSpec, config) -> int:
        """How many RVQ levels the codes keep: num_quantizers, or what `bandwidth` allows, else all."""
        levels = self.max_levels
        if spec.bandwidth is not None:
            bandwidths = list(getattr(config, "target_bandwidths", None) or [])
            if self.model_type not in ("encodec", "xcodec"):
                raise ValueError(f"codec {spec.path}: bandwidth is an EnCodec / X-Codec option; "
                                 f"a {self.model_type} model takes num_quantizers")
            if spec.bandwidth not in bandwidths:
                raise ValueError(f"codec {spec.path}: bandwidth {spec.bandwidth:g} kbps is not one of the model's "
                                 f"target_bandwidths {bandwidths}")
            # the models' own rule: each level carries log2(codebook_size) bits per frame
            levels = max(1, math.floor(spec.bandwidth * 1000 / (math.log2(self._codebook_size) * self.frame_rate)))
        elif spec.num_quantizers is not None:
            levels = spec.num_quantizers
        minimum = int(getattr(config, "num_semantic_quantizers", 1))  # Mimi: its semantic level(s) come first
        if not minimum <= levels <= self.max_levels:
            raise ValueError(f"codec {spec.path}: {levels} levels asked; this {self.model_type} model has "
                             f"{minimum}..{self.max_levels}")
        return levels

    # -- the contract's properties -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self.native_rate / self.hop

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def num_quantizers(self) -> int:
        return self.levels

    def identity(self) -> str:
        """A hash of config.json and the safetensors bytes (read when the model was loaded), the levels kept and
        the input rate: what decides the codes. A copied folder keeps it."""
        options = {"model_type": self.model_type, "levels": self.levels, "sample_rate": self.sample_rate,
                   "resampler": "soxr-hq"}
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
        digest.update(self._folder_hash.encode())
        return digest.hexdigest()[:16]

    # -- encode / decode -----------------------------------------------------------------------------------
    @property
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.model.parameters())
        return parameter.device, parameter.dtype

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) at `sample_rate` -> codes (B, ceil(T * frame_rate / sample_rate), num_quantizers) int64."""
        if wav.dim() != 2:
            raise ValueError(f"expected wav of shape (B, T), got {tuple(wav.shape)}")
        frames = math.ceil(wav.shape[1] * self.frame_rate / self.sample_rate - 1e-9)  # frames covering the clip
        native = fit_length(resample(wav, self.sample_rate, self.native_rate), frames * self.hop)  # (B, T_a * hop)
        device, dtype = self._device_dtype
        codes = self._encode_native(native.to(device=device, dtype=dtype)[:, None])  # (B, Q_model, T_a')
        if codes.shape[2] < frames:
            raise RuntimeError(f"{self.model_type} codec {self.path} gave {codes.shape[2]} frames for "
                               f"{frames * self.hop} samples; expected {frames}")
        return codes[:, : self.levels, :frames].transpose(1, 2).long()  # (B, T_a, Q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_a, q) with 1 <= q <= num_quantizers -> wav (B, round(T_a * sample_rate / frame_rate))."""
        if codes.dim() != 3 or not 1 <= codes.shape[2] <= self.levels:
            raise ValueError(f"expected codes (B, T_a, q) with 1 <= q <= {self.levels}, got {tuple(codes.shape)}")
        device, _ = self._device_dtype
        native = self._decode_native(codes.transpose(1, 2).to(device).long())  # (B, 1, ~T_a * hop) or (B, ~T_a * hop)
        native = fit_length(native.reshape(codes.shape[0], -1).float(), codes.shape[1] * self.hop)  # (B, T_a * hop)
        wav = resample(native, self.native_rate, self.sample_rate)  # (B, ~T_a * samples_per_frame)
        return fit_length(wav, self.token_spec.samples_for(codes.shape[1]))

    def _encode_native(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, 1, T_a * hop) at the native rate -> codes (B, Q_model, T_a) of every level (RVQ: the first
        q levels do not depend on how many follow, so slicing equals asking the model for q)."""
        if self.model_type == "encodec":
            top = max(self.model.config.target_bandwidths)
            return self.model.encode(wav, bandwidth=top, return_dict=True).audio_codes[0]  # (1 chunk, B, Q, T_a)[0]
        return self.model.encode(wav, return_dict=True).audio_codes  # (B, Q, T_a)

    def _decode_native(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, q, T_a) -> native wav."""
        if self.model_type == "encodec":
            return self.model.decode(codes[None], [None], return_dict=True).audio_values  # one chunk, no scale
        if self.model_type == "dac":
            return self.model.decode(audio_codes=codes, return_dict=True).audio_values
        return self.model.decode(codes, return_dict=True).audio_values


def _native_rate_and_hop(config) -> tuple[int, int]:
    """(the model's sample rate, its audio samples per code frame), from its config."""
    if config.model_type == "mimi":
        rate = int(config.sampling_rate)
        return rate, int(round(rate / config.frame_rate))  # the encoder's hop x the downsampling to 12.5 Hz
    if config.model_type == "xcodec":
        return int(config.sample_rate), int(config.hop_length)
    return int(config.sampling_rate), int(config.hop_length)  # encodec, dac


def _check_supported(path: Path, config) -> None:
    """Refuse what codes alone cannot round-trip: EnCodec's chunked / normalised (48 kHz) models keep a scale per
    chunk beside the codes, and stereo models code two channels."""
    if int(getattr(config, "audio_channels", 1)) != 1:
        raise ValueError(f"codec folder {path}: a {config.audio_channels}-channel model; only mono codecs are "
                         "supported")
    if config.model_type == "encodec" and (config.chunk_length_s is not None or config.normalize):
        raise ValueError(f"codec folder {path}: a chunked / normalised EnCodec (the 48 kHz model) needs a scale per "
                         "chunk beside its codes; use the 24 kHz model (chunk_length_s null, normalize false)")


def load_hf_codec(name: str | Path, device: str | torch.device = "cpu") -> HFCodec:
    """'hf:DIR[?options]' -> `HFCodec` in eval mode on `device`."""
    return HFCodec(parse_hf_codec(name)).eval().to(device)
