"""The SoundStorm stage: its run config (conf/soundstorm/*.yaml), `build` for the registry, and loading a trained
one for generation (`load_soundstorm` -> `LoadedSoundStorm`, what `AudioLM` holds in place of coarse + fine).
`LoadedSoundStorm.save_pretrained(DIR)` / `from_pretrained(DIR)` share it as a folder (audiolm_pl/pretrained.py),
which `load_soundstorm` also reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from audiolm_pl.checkpoint import CheckpointError, load_stage_checkpoint, sub_state_dict
from audiolm_pl.config import from_dict
from audiolm_pl.lm.generation import LoadedLM
from audiolm_pl.lm.token_data import TokenDataConfig, read_producers, read_token_specs
from audiolm_pl.shareable import Shareable
from audiolm_pl.soundstorm.data import SoundStormDataModule, SoundStormFrames
from audiolm_pl.soundstorm.decoding import SoundStormSampling, generate_soundstorm
from audiolm_pl.soundstorm.model import SoundStormConfig, SoundStormModel
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import OptimConfig, TrainerConfig


@dataclass
class SoundStormRunConfig:
    model: SoundStormConfig = field(default_factory=SoundStormConfig)
    data: TokenDataConfig = field(default_factory=TokenDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sampling: SoundStormSampling = field(default_factory=SoundStormSampling)  # stored; AudioLM decodes with it
    num_levels: int = 0  # L: RVQ levels modelled (0 = all of the codec's)
    max_prompt_share: float = 0.5  # training: the unmasked prompt is 0..this share of a crop's frames


def make_frames(run_config: SoundStormRunConfig, specs: dict[str, TokenSpec]) -> SoundStormFrames:
    """The crop view for token shards of these specs; refuses a level count or frame-rate ratio that does not fit."""
    acoustic, semantic = specs["acoustic"], specs["semantic"]
    levels = run_config.num_levels or acoustic.num_quantizers
    if not 0 < levels <= acoustic.num_quantizers:
        raise ValueError(f"soundstorm: num_levels={run_config.num_levels} must be 0 (all) or 1..{acoustic.num_quantizers}, "
                         "the RVQ levels of the token shards")
    try:
        ratio = acoustic.whole_frame_ratio(semantic)
    except ValueError as err:
        raise ValueError(f"soundstorm: needs a whole number of acoustic frames per semantic id: {err}") from None
    return SoundStormFrames(semantic.vocab_size, acoustic.vocab_size, levels, ratio)


def build(run_config: SoundStormRunConfig):
    """-> (SoundStormModule, SoundStormDataModule) over `data.train_shards`; the crop must fit the context."""
    from audiolm_pl.soundstorm.lightning_module import SoundStormModule

    specs = read_token_specs(run_config.data.train_shards)
    frames = make_frames(run_config, specs)
    crop = specs["acoustic"].frames_for(specs["semantic"].frames_in(run_config.data.crop_seconds), specs["semantic"])
    if crop > run_config.model.max_seq_len:
        raise ValueError(f"soundstorm: data.crop_seconds={run_config.data.crop_seconds} makes crops of {crop} frames; "
                         f"model.max_seq_len={run_config.model.max_seq_len} is too short (raise it or shorten the crop)")
    module = SoundStormModule(run_config, frames, specs, read_producers(run_config.data.train_shards))
    return module, SoundStormDataModule(run_config.data, frames, specs)


@dataclass
class LoadedSoundStorm(Shareable):
    model: SoundStormModel  # eval mode
    layout: SoundStormFrames
    token_specs: dict[str, TokenSpec]  # {"semantic", "acoustic"} of the training shards
    sampling: SoundStormSampling  # its run config's `sampling` (its YAML)
    path: Path
    producers: dict[str, str] = field(default_factory=dict)
    stage: str = "soundstorm"

    # the spec and producer checks are the LMs' own (same fields, same messages)
    require_specs = LoadedLM.require_specs
    require_producer = LoadedLM.require_producer

    @property
    def num_quantizers(self) -> int:
        return self.layout.num_levels

    def generate(self, semantic_ids: torch.Tensor, num_frames: int, prompt_codes: Optional[torch.Tensor] = None,
                 sampling: Optional[SoundStormSampling] = None, generator=None) -> torch.Tensor:
        """-> codes (B, num_frames, L); see `decoding.generate_soundstorm`."""
        return generate_soundstorm(self.model, semantic_ids, num_frames, prompt_codes, sampling or self.sampling, generator)


def load_soundstorm(path: str | Path, device: str | torch.device = "cpu") -> LoadedSoundStorm:
    """A SoundStorm checkpoint, run directory or save_pretrained folder -> `LoadedSoundStorm`; weights-only load."""
    checkpoint = load_stage_checkpoint(path, expected_stage="soundstorm")
    run_config = from_dict(SoundStormRunConfig, checkpoint.config)
    if not checkpoint.layout:
        raise CheckpointError(f"{checkpoint.path} stores no 'layout' (semantic vocabulary, codebook, levels)")
    layout = SoundStormFrames(**{k: v for k, v in checkpoint.layout.items() if k != "stage"})
    model = SoundStormModel(run_config.model, layout.semantic_vocab, layout.codebook_size, layout.num_levels,
                            layout.frames_per_id)
    model.load_state_dict(sub_state_dict(checkpoint.state_dict, "model"))
    return LoadedSoundStorm(model.eval().to(device), layout, checkpoint.token_specs, run_config.sampling,
                            checkpoint.path, checkpoint.producers)
