"""audiolm_pl: AudioLM (Borsos et al. 2022) as a PyTorch Lightning modular pipeline."""

from audiolm_pl.tokens import AcousticCodec, SemanticTokenizer, TokenSpec, TokenSpecMismatch, require_same_spec

__version__ = "0.1.0"


def __getattr__(name: str):
    # AudioLM pulls in every stage; import it only when asked for
    if name == "AudioLM":
        from audiolm_pl.inference import AudioLM

        return AudioLM
    raise AttributeError(f"module 'audiolm_pl' has no attribute {name!r}")


__all__ = ["AudioLM", "AcousticCodec", "SemanticTokenizer", "TokenSpec", "TokenSpecMismatch", "require_same_spec"]
