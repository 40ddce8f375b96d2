"""The three token LMs (semantic, coarse, fine) of AudioLM; see docs/lm.md.

`load_lm(path)` gives a `LoadedLM`; `generate_semantic`, `generate_coarse` and `generate_fine`
are the generation API of each stage (KV-cached, sliding window, temperature/top-k/top-p).
"""

from audiolm_pl.lm.generation import LoadedLM, generate_coarse, generate_fine, generate_semantic, load_lm
from audiolm_pl.lm.sampling import SamplingConfig
from audiolm_pl.lm.transformer import Block, TransformerConfig, TransformerLM

__all__ = [
    "Block",
    "LoadedLM",
    "SamplingConfig",
    "TransformerConfig",
    "TransformerLM",
    "generate_coarse",
    "generate_fine",
    "generate_semantic",
    "load_lm",
]
