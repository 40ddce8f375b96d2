"""`KMeansSemanticTokenizer`: frame features -> pooled to the token rate -> normalised -> nearest centroid.

Saved as one safetensors file: tensors `centroids` (K, D), `mean` (D,), `std` (D,) and a JSON
header entry `audiolm_pl` holding the feature source, the token rate and the vocabulary.
Loading reads tensors and JSON only (no pickle); the feature source (an HF directory or our
SSL checkpoint) is rebuilt from the recorded path, which is relative to the tokenizer file when
the source sits in the same tree (so the two move together; `portable_source_path`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiolm_pl.config import from_dict, to_dict
from audiolm_pl.fileio import atomic_output
from audiolm_pl.semantic.features import FeatureSource, build_features, fit_length, portable_source_path, reduce_frames
from audiolm_pl.semantic.kmeans import KMeansConfig, MiniBatchKMeans, assign
from audiolm_pl.tokens import SemanticTokenizer, tensors_hash

FORMAT = "audiolm_pl.semantic_tokenizer/1"


def pooling_factor(native_rate: float, frame_rate: float) -> int:
    """How many native frames one token averages; the ratio must be a whole number."""
    factor = native_rate / frame_rate
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
        raise ValueError(
            f"token frame_rate {frame_rate:g} Hz must divide the features' native rate {native_rate:g} Hz "
            "by a whole number (e.g. 50 -> 25 Hz pools pairs)"
        )
    return int(round(factor))


class FramePipeline(torch.nn.Module):
    """wav (B, T_wav) -> pooled, length-fitted, un-normalised frames (B, T_s, D) at `frame_rate`
    (None: the features' native rate, no pooling)."""

    def __init__(self, source: FeatureSource, frame_rate: float | None, relative_to: Path | None = None):
        super().__init__()
        self.source = source
        self.extractor = build_features(source, relative_to)
        self._frame_rate = float(frame_rate or self.extractor.frame_rate)
        self.pool = pooling_factor(self.extractor.frame_rate, self._frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sample_rate)

    def weights_identity(self) -> str:
        """A hash of the feature model's weights (MFCC: its fixed filterbank and DCT buffers)."""
        if hasattr(self.extractor, "weights_identity"):  # weights outside torch (Whisper's CTranslate2 file)
            return self.extractor.weights_identity()
        return tensors_hash(self.extractor.state_dict())

    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def dim(self) -> int:
        return int(self.extractor.dim)

    def num_frames(self, num_samples: int) -> int:
        return int(num_samples * self._frame_rate // self.sample_rate)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"expected wav of shape (B, T), got {tuple(wav.shape)}")
        features = reduce_frames(self.extractor(wav), self.pool)  # (B, ~T_wav / hop / pool, D)
        return fit_length(features.float(), self.num_frames(wav.shape[1]))  # (B, T_s, D)


class KMeansSemanticTokenizer(SemanticTokenizer):
    def __init__(self, frames: FramePipeline, centroids: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        if centroids.shape[1] != frames.dim or mean.shape != (frames.dim,) or std.shape != (frames.dim,):
            raise ValueError(
                f"centroids {tuple(centroids.shape)}, mean {tuple(mean.shape)}, std {tuple(std.shape)} "
                f"do not fit {frames.dim}-dim features of source {frames.source.kind}:{frames.source.path}"
            )
        self.frames = frames
        self.register_buffer("centroids", centroids.float())  # (K, D)
        self.register_buffer("mean", mean.float())  # (D,)
        self.register_buffer("std", std.float())  # (D,)

    @property
    def sample_rate(self) -> int:
        return self.frames.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.frames.frame_rate

    @property
    def vocab_size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def source(self) -> FeatureSource:
        return self.frames.source

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    @torch.no_grad()
    def normalised_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_wav) -> the normalised frames that k-means sees (B, T_s, D)."""
        return self.normalise(self.frames(wav.to(self.centroids.device)))

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_wav) float at `sample_rate` -> ids (B, T_s) int64, T_s = T_wav * frame_rate // sample_rate."""
        features = self.normalised_frames(wav)  # (B, T_s, D)
        batch, length, dim = features.shape
        ids = assign(features.reshape(batch * length, dim), self.centroids)  # (B * T_s,)
        return ids.reshape(batch, length)  # (B, T_s)

    def identity(self) -> str:
        """A hash of the centroids, the normalisation, the feature source without its path and the feature
        model's weights: a copied or moved tokenizer (and its source) keeps its identity, and one whose feature
        model was retrained or replaced at the same path does not."""
        source = {key: value for key, value in to_dict(self.source).items() if key != "path"}
        tensors = {"centroids": self.centroids, "mean": self.mean, "std": self.std}
        return tensors_hash(tensors, extra={"source": source, "frame_rate": self.frame_rate,
                                            "feature_weights": self.frames.weights_identity()})

    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "source": to_dict(self.source),
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "vocab_size": self.vocab_size,
            "token_spec": self.token_spec.to_dict(),
        }

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write one safetensors file atomically; `extra` (plain JSON) is stored beside the metadata."""
        path = Path(path)
        metadata = self.metadata()
        metadata["source"]["path"] = portable_source_path(self.source.path, path.parent)
        header = {"audiolm_pl": json.dumps({**metadata, "extra": extra or {}})}
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in ("centroids", "mean", "std")}
        with atomic_output(path) as temporary:
            save_file(tensors, str(temporary), metadata=header)
        return path


def read_tokenizer_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a tokenizer file, checking its format; no model is built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"semantic tokenizer file {path} does not exist (make one with `audiolm-pl semantic kmeans`)")
    with safe_open(str(path), framework="pt") as handle:
        header = (handle.metadata() or {}).get("audiolm_pl")
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    if header is None:
        raise ValueError(f"{path} is a safetensors file without the 'audiolm_pl' tokenizer metadata")
    metadata = json.loads(header)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: tokenizer format {metadata.get('format')!r}; this code reads {FORMAT!r}")
    missing = {"centroids", "mean", "std"} - set(tensors)
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)}")
    return metadata, tensors


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> KMeansSemanticTokenizer:
    """A tokenizer file -> `KMeansSemanticTokenizer` in eval mode; the feature source must exist."""
    metadata, tensors = read_tokenizer_file(path)
    source = from_dict(FeatureSource, metadata["source"])
    frames = FramePipeline(source, metadata["frame_rate"], relative_to=Path(path).resolve().parent)
    tokenizer = KMeansSemanticTokenizer(frames, tensors["centroids"], tensors["mean"], tensors["std"])
    return tokenizer.eval().to(device)


@torch.no_grad()
def fit_tokenizer(
    frames: FramePipeline,
    wavs: Iterable[torch.Tensor],
    kmeans: KMeansConfig,
    max_frames: int = 1_000_000,
    normalise: bool = True,
    device: str | torch.device = "cpu",
) -> KMeansSemanticTokenizer:
    """Collect up to `max_frames` frames of `wavs` (each (T_wav,) or (1, T_wav)), fit k-means on them.

    normalise: per-dimension mean/std of the collected frames (the paper's normalisation);
    otherwise mean 0, std 1 are stored and the frames are clustered as they are.
    """
    frames = frames.to(device).eval()
    collected, total = [], 0
    for wav in wavs:
        features = frames(wav.reshape(1, -1).to(device))[0]  # (T_s, D)
        collected.append(features)
        total += features.shape[0]
        if total >= max_frames:
            break
    if not collected:
        raise ValueError("no audio to fit k-means on (the input shards / files are empty)")
    data = torch.cat(collected)[:max_frames]  # (N, D)
    mean = data.mean(0) if normalise else torch.zeros(data.shape[1], device=device)
    std = data.std(0).clamp_min(1e-5) if normalise else torch.ones(data.shape[1], device=device)
    centroids = MiniBatchKMeans(kmeans).fit((data - mean) / std)
    return KMeansSemanticTokenizer(frames, centroids, mean, std).eval()


# k-means files that hold pickled Python objects (scikit-learn / fairseq / textless `km.bin`, joblib dumps):
# reading them runs code from the file, so they are refused with the one-line export that makes a .npy
PICKLED_SUFFIXES = (".bin", ".pkl", ".pickle", ".joblib", ".pt", ".pth")
NPZ_KEYS = ("centroids", "cluster_centers_", "cluster_centers")


def read_centroids(path: str | Path) -> torch.Tensor:
    """A `.npy` array (K, D), or a `.npz` holding one array (or one named centroids / cluster_centers_),
    read without unpickling -> float32 (K, D). Pickled k-means files are refused with how to export them."""
    import numpy as np

    path = Path(path)
    if path.suffix.lower() in PICKLED_SUFFIXES:
        raise ValueError(
            f"{path}: a pickled k-means file ({path.suffix}) would run code when read, so it is not read here. "
            "Export its centroids once where you trust it: python -c \"import joblib, numpy; "
            f"numpy.save('centroids.npy', joblib.load('{path.name}').cluster_centers_)\" and import the .npy")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"{path}: centroids must be a .npy (K, D) array or a .npz holding one")
    if not path.is_file():
        raise FileNotFoundError(f"centroids file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:  # an object array needs pickle
        raise ValueError(f"{path}: not a plain numeric array ({err})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            named = [key for key in NPZ_KEYS if key in loaded.files]
            if len(loaded.files) != 1 and not named:
                raise ValueError(f"{path}: holds arrays {loaded.files}; expected one array or one named {list(NPZ_KEYS)}")
            loaded = loaded[named[0] if named else loaded.files[0]]
    if loaded.ndim != 2 or loaded.shape[0] < 2 or not np.issubdtype(loaded.dtype, np.floating):
        raise ValueError(f"{path}: centroids must be a float array (K, D) with K >= 2; got {loaded.dtype} {loaded.shape}")
    if not np.isfinite(loaded).all():
        raise ValueError(f"{path}: centroids hold NaN or infinite values")
    return torch.from_numpy(loaded.astype(np.float32))


def tokenizer_from_centroids(frames: FramePipeline, centroids: torch.Tensor) -> KMeansSemanticTokenizer:
    """Centroids (K, D) fitted elsewhere on the raw features `frames` gives -> a tokenizer that assigns each
    frame to its nearest centroid as they were fitted: mean 0 and std 1, so no normalisation is applied."""
    if centroids.shape[1] != frames.dim:
        raise ValueError(f"centroids have dimension {centroids.shape[1]}; the features of {frames.source.kind}:"
                         f"{frames.source.path} layer {frames.source.layer} have {frames.dim}")
    dim = centroids.shape[1]
    return KMeansSemanticTokenizer(frames, centroids, torch.zeros(dim), torch.ones(dim)).eval()
