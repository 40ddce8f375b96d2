"""The three LM stages: run configs (YAML under conf/lm/<stage>/) and `build_*` for the registry.

Each `build_*` reads the TokenSpecs and the producers' identities (kept in the checkpoint) from
the token-shard manifest, makes the stage's layout (vocabulary offsets, coarse/fine split),
checks that the longest crop fits the model's context, and returns (TokenLMModule, TokenDataModule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from audiolm_pl.lm.aligned import AlignedCoarseLayout
from audiolm_pl.lm.interleaved import InterleavedCoarseLayout, InterleavedFineLayout
from audiolm_pl.lm.layouts import AcousticOnlyCoarseLayout, CoarseLayout, FineLayout, Layout, SemanticLayout
from audiolm_pl.lm.lightning_module import TokenLMModule
from audiolm_pl.lm.sampling import SamplingConfig
from audiolm_pl.lm.token_data import TokenDataConfig, TokenDataModule, read_producers, read_token_specs
from audiolm_pl.lm.transformer import TransformerConfig
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import OptimConfig, TrainerConfig

log = logging.getLogger(__name__)


@dataclass
class LMRunConfig:
    """What every LM stage's YAML holds; the stages add their own keys."""

    model: TransformerConfig = field(default_factory=TransformerConfig)
    data: TokenDataConfig = field(default_factory=TokenDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # the stage's sampling at generation, stored in its checkpoint (`LoadedLM.sampling`); AudioLM uses it
    # unless the pipeline YAML gives this stage's `sampling` (paper: 0.6 / 0.8 / 0.6)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class SemanticRunConfig(LMRunConfig):
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.6))
    dedup: bool = True  # remove consecutive duplicate semantic ids (paper)


@dataclass
class CoarseRunConfig(LMRunConfig):
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.8))
    num_coarse: int = 4  # Q': RVQ levels modelled by this stage
    dedup_semantic: bool = True  # deduplicate the semantic prefix (paper; the prefix layout only)
    # "prefix": all semantic ids, then the codes (paper) | "interleaved": each id before its frames' codes |
    # "aligned": the codes only, each position given the semantic ids around its frame (lm/aligned.py) |
    # "acoustic_only": the codes only, no semantic ids at all (the paper's ablation; generated without a semantic LM)
    layout: str = "prefix"
    lookahead: int = 2  # interleaved / aligned: semantic ids of look-ahead
    # aligned: share of training examples whose semantic ids are all dropped (PAD), so that the same model is
    # also unconditioned and `sampling.guidance` > 1 can be used at generation (0 = off; 0.1-0.2 is usual)
    condition_dropout: float = 0.0


@dataclass
class FineRunConfig(LMRunConfig):
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.6))
    num_coarse: int = 4  # Q': levels given as context; the codec's levels Q'..L-1 are generated
    # L: codec levels this stage completes (0 = all Q of the codec). A codec trained with quantizer
    # dropout decodes any first L levels, so a CPU-sized run can spend its minutes on the levels that matter.
    num_levels: int = 0
    layout: str = "prefix"  # "prefix": coarse codes, then fine codes per chunk (paper) | "interleaved"
    lookahead: int = 2  # interleaved: frames of coarse look-ahead


def longest_sequence(layout: Layout, specs: dict[str, TokenSpec], crop_seconds: float) -> int:
    """Tokens in the longest training sequence of a crop (the model reads one fewer)."""
    semantic = specs["semantic"].frames_in(crop_seconds)
    return layout.sequence_length(semantic, specs["acoustic"].frames_for(semantic, specs["semantic"]))


def _check_context(stage: str, run_config, layout, specs: dict[str, TokenSpec]) -> None:
    needed = longest_sequence(layout, specs, run_config.data.crop_seconds) - 1
    if needed > run_config.model.max_seq_len:
        raise ValueError(
            f"{stage} LM: data.crop_seconds={run_config.data.crop_seconds} makes sequences of {needed} tokens; "
            f"model.max_seq_len={run_config.model.max_seq_len} is too short (raise it or shorten the crop)"
        )


def _check_coarse(stage: str, num_coarse: int, acoustic: TokenSpec) -> None:
    if not 0 < num_coarse <= acoustic.num_quantizers - (stage == "fine"):
        raise ValueError(
            f"{stage} LM: num_coarse={num_coarse} does not fit token shards with {acoustic.num_quantizers} "
            f"RVQ levels (need 1 <= num_coarse <= {acoustic.num_quantizers - (stage == 'fine')})"
        )


def _frames_per_id(layout: str, specs: dict[str, TokenSpec]) -> int:
    try:
        return specs["acoustic"].whole_frame_ratio(specs["semantic"])
    except ValueError as err:
        raise ValueError(f"coarse LM: layout={layout} needs a whole number of acoustic frames per semantic id: {err}") from None


def _fine_levels(run_config, acoustic: TokenSpec) -> int:
    """L: the fine stage's last level + 1 (`num_levels`, 0 = every level of the codec)."""
    levels = run_config.num_levels or acoustic.num_quantizers
    if not run_config.num_coarse < levels <= acoustic.num_quantizers:
        raise ValueError(f"fine LM: num_levels={run_config.num_levels} must be above num_coarse={run_config.num_coarse} "
                         f"and at most the {acoustic.num_quantizers} levels of the token shards (0 = all)")
    return levels


def make_layout(stage: str, run_config, specs: dict[str, TokenSpec]) -> Layout:
    """The token layout of `stage` for shards with these specs (used when a stage is built)."""
    semantic, acoustic = specs["semantic"], specs["acoustic"]
    if stage == "semantic":
        return SemanticLayout(semantic.vocab_size, run_config.dedup)
    _check_coarse(stage, run_config.num_coarse, acoustic)
    allowed = ("prefix", "interleaved", "aligned", "acoustic_only") if stage == "coarse" else ("prefix", "interleaved")
    if run_config.layout not in allowed:
        raise ValueError(f"{stage} LM: layout must be one of {allowed}, got {run_config.layout!r}")
    if stage == "coarse" and run_config.layout == "acoustic_only":  # dedup_semantic has no ids to act on
        return AcousticOnlyCoarseLayout(acoustic.vocab_size, run_config.num_coarse)
    interleaved = run_config.layout == "interleaved"
    if interleaved and run_config.lookahead < 1:  # the look-ahead head is also what generation starts from
        raise ValueError(f"{stage} LM: layout=interleaved needs lookahead >= 1, got {run_config.lookahead}")
    if stage == "coarse" and run_config.layout != "prefix" and run_config.dedup_semantic:
        raise ValueError(f"coarse LM: layout={run_config.layout} places each semantic id at its time, so it needs "
                         "dedup_semantic=false (deduplicated ids have lost their timing)")
    if stage == "coarse" and not 0 <= run_config.condition_dropout < 1:
        raise ValueError(f"coarse LM: condition_dropout must be in [0, 1), got {run_config.condition_dropout}")
    if stage == "coarse" and run_config.layout == "aligned":
        return AlignedCoarseLayout(semantic.vocab_size, acoustic.vocab_size, run_config.num_coarse,
                                   _frames_per_id("aligned", specs), max(0, run_config.lookahead))
    if stage == "coarse" and interleaved:
        return InterleavedCoarseLayout(semantic.vocab_size, acoustic.vocab_size, run_config.num_coarse,
                                       _frames_per_id("interleaved", specs), run_config.lookahead)
    if stage == "coarse":
        return CoarseLayout(semantic.vocab_size, acoustic.vocab_size, run_config.num_coarse, run_config.dedup_semantic)
    levels = _fine_levels(run_config, acoustic) if stage == "fine" else 0
    if stage == "fine" and interleaved:
        return InterleavedFineLayout(acoustic.vocab_size, run_config.num_coarse, levels, run_config.lookahead)
    if stage == "fine":
        return FineLayout(acoustic.vocab_size, run_config.num_coarse, levels)
    raise ValueError(f"unknown LM stage {stage!r}; expected semantic, coarse or fine")


RUN_CONFIGS = {"semantic": SemanticRunConfig, "coarse": CoarseRunConfig, "fine": FineRunConfig}


def _build(stage: str, run_config):
    specs = read_token_specs(run_config.data.train_shards)
    layout = make_layout(stage, run_config, specs)
    _check_context(stage, run_config, layout, specs)
    module = TokenLMModule(stage, run_config, layout, specs, read_producers(run_config.data.train_shards))
    return module, TokenDataModule(run_config.data, layout, specs)


def build_semantic(run_config: SemanticRunConfig):
    return _build("semantic", run_config)


def build_coarse(run_config: CoarseRunConfig):
    return _build("coarse", _without_guidance_unless_aligned(run_config))


def _without_guidance_unless_aligned(run_config: CoarseRunConfig) -> CoarseRunConfig:
    """Classifier-free guidance needs per-position conditions to drop: with another layout (e.g. `small` +
    `layout=acoustic_only`) condition_dropout and sampling.guidance are set off, and the checkpoint says so."""
    if run_config.layout == "aligned" or not (run_config.condition_dropout or run_config.sampling.guided):
        return run_config
    log.info("coarse LM: layout=%s has no per-position semantic conditions; condition_dropout=%s and "
             "sampling.guidance=%s are not used (0 and 1)", run_config.layout, run_config.condition_dropout,
             run_config.sampling.guidance)
    return replace(run_config, condition_dropout=0.0, sampling=replace(run_config.sampling, guidance=1.0))


def build_fine(run_config: FineRunConfig):
    return _build("fine", run_config)
