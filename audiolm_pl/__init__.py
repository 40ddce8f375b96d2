"""audiolm_pl: AudioLM (Borsos et al. 2022) as a PyTorch Lightning modular pipeline."""

from audiolm_pl.tokens import AcousticCodec, SemanticTokenizer, TokenSpec, TokenSpecMismatch, require_same_spec

__version__ = "0.1.0"

__all__ = ["AcousticCodec", "SemanticTokenizer", "TokenSpec", "TokenSpecMismatch", "require_same_spec"]
