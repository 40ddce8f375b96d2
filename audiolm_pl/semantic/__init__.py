"""Semantic tokens: SSL / HF / log-mel frame features + our mini-batch k-means (see docs/semantic.md).

`load_tokenizer(path)` reads a tokenizer file written by `audiolm-pl semantic kmeans` and
returns a `SemanticTokenizer` (wav (B, T) -> ids (B, T_s) at 25 Hz by default).
"""

from audiolm_pl.semantic.features import FeatureSource, MelConfig
from audiolm_pl.semantic.kmeans import KMeansConfig, MiniBatchKMeans
from audiolm_pl.semantic.tokenizer import FramePipeline, KMeansSemanticTokenizer, fit_tokenizer, load_tokenizer

__all__ = [
    "FeatureSource",
    "FramePipeline",
    "KMeansConfig",
    "KMeansSemanticTokenizer",
    "MelConfig",
    "MiniBatchKMeans",
    "fit_tokenizer",
    "load_tokenizer",
]
