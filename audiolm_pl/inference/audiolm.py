"""`AudioLM`: the five stages chained for generation, usable from a notebook.

    model = AudioLM.from_config("outputs/main/pipeline.yaml")
    result = model.continue_audio(prompt_wav, seconds=7)       # result.wav (B, T) at model.sample_rate
    result = model.generate_acoustics(wav=source)               # same words, new voice
    result = model.generate_unconditional(seconds=5, num_samples=2)

Built from a pipeline YAML naming one checkpoint (or run directory, or save_pretrained folder) per
stage, or from objects; `save_pretrained(folder)` writes every stage into one folder (safetensors +
JSON and a `pipeline.yaml`, audiolm_pl/pretrained.py) that `AudioLM.from_pretrained(folder)` loads.
Every TokenSpec is checked when it is built: a stage trained on other tokens is refused with a message
that names both sides. So is a codec or semantic tokenizer whose `identity()` differs from the one that
made an LM's training tokens (same spec, other ids), unless `allow_producer_swap` is set. Swapping a
stage = editing one path; paths in a pipeline YAML are relative to the YAML's folder. `acoustic_stage:
soundstorm` with `soundstorm: RUN` makes the acoustics with one parallel model in place of the coarse and
fine LMs (docs/soundstorm.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch
from torch import nn

from audiolm_pl.config import load_config
from audiolm_pl.lm import LoadedLM, SamplingConfig, generate_coarse, generate_fine, generate_semantic, load_lm
from audiolm_pl.lm.aligned import AlignedCoarseLayout
from audiolm_pl.lm.interleaved import InterleavedLayout
from audiolm_pl.lm.layouts import AcousticOnlyCoarseLayout, dedup_consecutive
from audiolm_pl.lm.sampling import stage_progress
from audiolm_pl.soundstorm.decoding import SoundStormSamplingOverride
from audiolm_pl.soundstorm.stage import LoadedSoundStorm, load_soundstorm
from audiolm_pl.tokens import AcousticCodec, SemanticTokenizer, TokenSpecMismatch, require_same_spec

log = logging.getLogger(__name__)


@dataclass
class SamplingOverride:
    """Fields of one stage's sampling to override; a field left None keeps the LM's own value."""

    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    guidance: Optional[float] = None  # classifier-free guidance scale (coarse LM trained with condition_dropout)

    def over(self, base: SamplingConfig) -> SamplingConfig:
        """`base` with the fields this override sets (validated by SamplingConfig)."""
        return replace(base, **{key: value for key, value in asdict(self).items() if value is not None})


@dataclass
class PipelineSampling:
    """Per-stage sampling overrides, field by field. What is left out (None) samples with the LM's own
    `sampling`, stored in its checkpoint from its YAML (conf/lm/<stage>/*.yaml; the paper's 0.6 / 0.8 / 0.6):
    `sampling.coarse.top_k=50` changes the coarse top_k and keeps its LM's temperature and top_p."""

    semantic: Optional[SamplingOverride] = None
    coarse: Optional[SamplingOverride] = None
    fine: Optional[SamplingOverride] = None
    soundstorm: Optional[SoundStormSamplingOverride] = None  # iterations per level, temperature, ... (docs/soundstorm.md)


@dataclass
class PipelineConfig:
    # in a YAML file, relative paths are relative to its folder (config.py)
    FILE_RELATIVE_PATHS: ClassVar[tuple[str, ...]] = ("codec", "semantic_tokenizer", "semantic_lm", "coarse_lm", "fine_lm",
                                                      "soundstorm")

    codec: str = "outputs/main/runs/codec"  # codec checkpoint, run directory or save_pretrained folder (each stage)
    semantic_tokenizer: str = "outputs/main/semantic/tokenizer.safetensors"  # the file, or its exported folder
    semantic_lm: str = "outputs/main/runs/semantic"  # "": none (an acoustic-only coarse LM needs none)
    coarse_lm: str = "outputs/main/runs/coarse"
    fine_lm: str = "outputs/main/runs/fine"
    # what makes the acoustic codes: "coarse_fine" (the paper's two LMs above) | "soundstorm" (one parallel model,
    # the checkpoint `soundstorm`; coarse_lm and fine_lm are then not loaded)
    acoustic_stage: str = "coarse_fine"
    soundstorm: str = ""
    sampling: PipelineSampling = field(default_factory=PipelineSampling)  # default: each LM's own
    prompt_seconds: float = 3.0  # the CLI keeps this much of a prompt file
    # semantic ids per semantic frame left after deduplication, to size unconditional generation by a semantic LM
    # trained on deduplicated ids (a continuation measures its prompt's own); ~0.6 for 25 Hz speech tokens
    dedup_density: float = 0.6
    device: str = "cpu"
    # accept a codec / semantic tokenizer other than the one that made the LMs' training tokens
    # (a deliberate swap of an equivalent producer); the LMs' token specs must still match
    allow_producer_swap: bool = False


@dataclass
class GenerationResult:
    wav: torch.Tensor  # (B, T) float at the codec's sample rate; the prompt (if any) first
    semantic_ids: torch.Tensor  # (B, T_s) prompt + generated semantic ids (deduplicated if the LM was)
    codes: torch.Tensor  # (B, T_a, L) acoustic codes, prompt frames first (L = the fine LM's levels, <= Q)
    prompt_samples: int  # how many leading samples of `wav` are the prompt


class AudioLM(nn.Module):
    def __init__(self, codec: AcousticCodec, semantic_tokenizer: SemanticTokenizer, semantic_lm: Optional[LoadedLM],
                 coarse_lm: Optional[LoadedLM], fine_lm: Optional[LoadedLM], sampling: Optional[PipelineSampling] = None,
                 names: Optional[dict[str, str]] = None, allow_producer_swap: bool = False,
                 dedup_density: float = 0.6, prompt_seconds: float = 3.0, soundstorm: Optional[LoadedSoundStorm] = None):
        super().__init__()
        if not 0 < dedup_density <= 1:
            raise ValueError(f"dedup_density must be in (0, 1] (ids per semantic frame after deduplication); "
                             f"got {dedup_density}")
        self.codec, self.semantic_tokenizer = codec.eval(), semantic_tokenizer.eval()
        two_lms = coarse_lm is not None and fine_lm is not None
        if (soundstorm is None) != two_lms or (soundstorm is not None and (coarse_lm is not None or fine_lm is not None)):
            raise ValueError("AudioLM makes acoustics with either a coarse and a fine LM or a SoundStorm model "
                             "(acoustic_stage: soundstorm), not both or neither")
        self.semantic_lm, self.coarse_lm, self.fine_lm, self.soundstorm = semantic_lm, coarse_lm, fine_lm, soundstorm
        # registered so .to(device) moves the LMs too
        self.lms = nn.ModuleDict({stage: lm.model for stage, lm in
                                  (("semantic", semantic_lm), ("coarse", coarse_lm), ("fine", fine_lm),
                                   ("soundstorm", soundstorm)) if lm is not None})
        if semantic_lm is None and not self.acoustic_only:
            reader = f"coarse LM ({coarse_lm.path})" if soundstorm is None else f"SoundStorm ({soundstorm.path})"
            raise ValueError(f"{reader} reads semantic ids, so the pipeline needs a semantic LM; "
                             "only an acoustic-only coarse LM (layout=acoustic_only) generates without one")
        self.sampling = sampling or PipelineSampling()
        self.names = {"codec": "codec", "semantic_tokenizer": "semantic tokenizer", **(names or {})}
        self.allow_producer_swap = allow_producer_swap
        self.dedup_density = dedup_density
        self.prompt_seconds = prompt_seconds  # what the CLI keeps of a prompt file; kept by save_pretrained
        self.check_specs()
        self.check_producers()

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PipelineConfig | str | Path, overrides: tuple[str, ...] = ()) -> "AudioLM":
        if not isinstance(config, PipelineConfig):
            config = load_config(PipelineConfig, config, overrides=overrides)
        from audiolm_pl.codec import load_codec
        from audiolm_pl.pretrained import tokenizer_file
        from audiolm_pl.semantic import load_tokenizer

        names = {
            "codec": f"codec ({config.codec})",
            "semantic_tokenizer": f"semantic tokenizer ({config.semantic_tokenizer})",
        }
        parallel = _soundstorm_chosen(config)
        model = cls(
            load_codec(config.codec),
            load_tokenizer(tokenizer_file(config.semantic_tokenizer)),
            load_lm(config.semantic_lm, expected_stage="semantic") if config.semantic_lm else None,
            None if parallel else load_lm(config.coarse_lm, expected_stage="coarse"),
            None if parallel else load_lm(config.fine_lm, expected_stage="fine"),
            soundstorm=load_soundstorm(config.soundstorm) if parallel else None,
            sampling=config.sampling,
            names=names,
            allow_producer_swap=config.allow_producer_swap,
            dedup_density=config.dedup_density,
            prompt_seconds=config.prompt_seconds,
        )
        return model.to(config.device)

    @classmethod
    def from_pretrained(cls, folder: str | Path, overrides: tuple[str, ...] = ()) -> "AudioLM":
        """A folder written by `save_pretrained` -> the model, every stage's TokenSpec checked against the others
        (as `from_config`) and against the ones the folder states. `overrides` as for its pipeline.yaml
        (`("device=cuda",)`)."""
        from audiolm_pl.pretrained import METADATA, read_metadata, stored_specs

        folder = Path(folder)
        metadata = read_metadata(folder, expected_stage="pipeline")
        model = cls.from_config(folder / metadata["config"], overrides=overrides)
        stated = stored_specs(metadata, folder)
        producers = {"semantic": (model.semantic_tokenizer, model.names["semantic_tokenizer"]),
                     "acoustic": (model.codec, model.names["codec"])}
        for role, spec in stated.items():
            producer, name = producers[role]
            require_same_spec(spec, producer.token_spec, consumer=f"pipeline folder {folder} ({METADATA})",
                              producer=name)
        return model

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Every stage into one folder: `codec/`, `semantic_tokenizer/` (its feature model inside), `semantic_lm/`,
        and `coarse_lm/` + `fine_lm/` or `soundstorm/` (see audiolm_pl/pretrained.py), a `pipeline.yaml` naming them
        with this model's acoustic stage, sampling overrides and settings, and `audiolm_pl.json` with both
        TokenSpecs. Weights only (safetensors); written whole or not at all. Returns the folder."""
        from audiolm_pl.config import save_yaml
        from audiolm_pl.pretrained import codec_name, save_pretrained, write_metadata, writing_folder

        if self.semantic_lm is None:
            raise ValueError("save_pretrained writes every stage; this pipeline has no semantic LM (acoustic-only)")
        acoustic = {"soundstorm": self.soundstorm} if self.soundstorm is not None else \
            {"coarse_lm": self.coarse_lm, "fine_lm": self.fine_lm}
        stages = {"codec": self.codec, "semantic_tokenizer": self.semantic_tokenizer, "semantic_lm": self.semantic_lm,
                  **acoustic}
        with writing_folder(folder, overwrite) as temporary:
            for name, stage in stages.items():
                save_pretrained(stage, temporary / name)
            # the stages this folder lacks are named "" (not loaded), not the defaults' outputs/main paths
            names = {"coarse_lm": "", "fine_lm": "", **{name: name for name in stages},
                     "codec": codec_name(self.codec, "codec")}
            config = PipelineConfig(**names, acoustic_stage="coarse_fine" if self.soundstorm is None else "soundstorm",
                                    sampling=self.sampling, prompt_seconds=self.prompt_seconds,
                                    dedup_density=self.dedup_density, device="cpu",
                                    allow_producer_swap=self.allow_producer_swap)
            save_yaml(config, temporary / "pipeline.yaml")
            write_metadata(temporary, "pipeline", {"semantic": self.semantic_tokenizer.token_spec,
                                                   "acoustic": self.codec.token_spec},
                           config="pipeline.yaml")
        return Path(folder)

    def check_specs(self) -> None:
        """Refuse stages that were trained on other tokens than these producers make."""
        semantic_spec, acoustic_spec = self.semantic_tokenizer.token_spec, self.codec.token_spec
        if self.soundstorm is not None:
            self._check_soundstorm_specs()
            return
        for lm in (self.semantic_lm, self.coarse_lm):
            if lm is not None:
                lm.require_specs("semantic", semantic_spec, self.names["semantic_tokenizer"])
        for lm in (self.coarse_lm, self.fine_lm):
            lm.require_specs("acoustic", acoustic_spec, self.names["codec"])
        if self._time_aligned_coarse() and self.semantic_lm.layout.dedup:
            order = self.coarse_lm.layout.to_dict()["order"]
            raise TokenSpecMismatch(
                f"coarse LM ({self.coarse_lm.path}) reads semantic ids at their time (layout={order}); "
                f"semantic LM ({self.semantic_lm.path}) generates deduplicated ids, which have lost it (train it with dedup=false)")
        coarse_levels, fine_context = self.coarse_lm.layout.num_coarse, self.fine_lm.layout.num_coarse
        if coarse_levels != fine_context:
            raise TokenSpecMismatch(
                f"coarse LM ({self.coarse_lm.path}) generates {coarse_levels} coarse levels; "
                f"fine LM ({self.fine_lm.path}) was trained on {fine_context} coarse levels as context"
            )

    def _check_soundstorm_specs(self) -> None:
        """SoundStorm reads both token kinds, and each semantic id at its time (so not deduplicated ones)."""
        for lm in (self.semantic_lm, self.soundstorm):
            lm.require_specs("semantic", self.semantic_tokenizer.token_spec, self.names["semantic_tokenizer"])
        self.soundstorm.require_specs("acoustic", self.codec.token_spec, self.names["codec"])
        if self.semantic_lm.layout.dedup:
            raise TokenSpecMismatch(
                f"SoundStorm ({self.soundstorm.path}) reads each semantic id at its time; semantic LM "
                f"({self.semantic_lm.path}) generates deduplicated ids, which have lost it (train it with dedup=false)")

    def check_producers(self) -> None:
        """Refuse LMs whose training tokens another codec / semantic tokenizer made (unless allowed)."""
        makers = {"semantic": (self.semantic_tokenizer.identity(), self.names["semantic_tokenizer"]),
                  "acoustic": (self.codec.identity(), self.names["codec"])}
        readers = {"semantic": tuple(lm for lm in (self.semantic_lm, self.coarse_lm, self.soundstorm) if lm is not None),
                   "acoustic": tuple(lm for lm in (self.coarse_lm, self.fine_lm, self.soundstorm) if lm is not None)}
        for lm in (lm for lm in (self.semantic_lm, self.coarse_lm, self.fine_lm, self.soundstorm) if lm is not None):
            if not lm.producers:
                log.warning("%s LM (%s) records no producer identities (trained before they were stored): "
                            "cannot check that this codec and semantic tokenizer made its training tokens", lm.stage, lm.path)
        for role, (identity, name) in makers.items():
            for lm in readers[role]:
                if not self.allow_producer_swap:
                    lm.require_producer(role, identity, name)
                elif lm.producers.get(role, identity) != identity:
                    log.warning("allow_producer_swap: %s LM (%s) was trained on %s tokens of producer %s; using %s (%s)",
                                lm.stage, lm.path, role, lm.producers[role], name, identity)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def acoustic_only(self) -> bool:
        """The paper's ablation: a coarse LM that reads no semantic ids, so no semantic stage runs."""
        return self.coarse_lm is not None and isinstance(self.coarse_lm.layout, AcousticOnlyCoarseLayout)

    def stage_sampling(self, stage: str) -> SamplingConfig:
        """The sampling `stage` generates with: the pipeline's override if it gives one, else its LM's own."""
        own, override = getattr(self, f"{stage}_lm").sampling, getattr(self.sampling, stage)
        return own if override is None else override.over(own)

    @property
    def device(self) -> torch.device:
        return next(self.lms.parameters()).device

    # -- tasks -----------------------------------------------------------------------
    @torch.inference_mode()
    def continue_audio(self, prompt: torch.Tensor, seconds: float, num_samples: int = 1,
                       seed: Optional[int] = None) -> GenerationResult:
        """prompt (T,) or (1, T) at `sample_rate` -> prompt + `seconds` of continuation, `num_samples` rows."""
        prompt = _as_batch(prompt, num_samples).to(self.device)  # (B, T_p)
        generator = _generator(seed, self.device)
        codes_prompt = self.codec.encode(prompt)  # (B, T_ap, Q)
        if self.acoustic_only:  # no semantic ids: the coarse LM continues the prompt's codes alone
            semantic = semantic_prompt = codes_prompt.new_zeros(codes_prompt.shape[0], 0)  # (B, 0)
        else:
            semantic_prompt = self.semantic_tokenizer.encode(prompt)  # (B, T_sp)
            semantic = self._continue_semantic(semantic_prompt, seconds, generator)  # (B, T_s)
        acoustic = self.codec.token_spec
        total_frames = codes_prompt.shape[1] + acoustic.frames_covering(seconds)
        codes = self._acoustics(semantic, codes_prompt, total_frames, generator, semantic_prompt.shape[1])  # (B, T_a, L)
        wav = self.codec.decode(codes)[:, : acoustic.samples_for(total_frames)]  # (B, T)
        wav[:, : prompt.shape[1]] = prompt  # the prompt itself, not its codec reconstruction
        return GenerationResult(wav, semantic, codes, prompt.shape[1])

    @torch.inference_mode()
    def generate_acoustics(self, semantic_ids: Optional[torch.Tensor] = None, wav: Optional[torch.Tensor] = None,
                           num_samples: int = 1, seed: Optional[int] = None) -> GenerationResult:
        """New acoustics (voice, recording) for given semantic ids (B, T_s) or for the words of `wav` (T,)."""
        if (semantic_ids is None) == (wav is None):
            raise ValueError("generate_acoustics takes exactly one of semantic_ids or wav")
        if self.acoustic_only:
            raise ValueError(f"coarse LM ({self.coarse_lm.path}) is acoustic-only: it reads no semantic ids, so it "
                             "cannot give new acoustics to given ones")
        if wav is not None:
            semantic_ids = self.semantic_tokenizer.encode(_as_batch(wav, num_samples).to(self.device))  # (B, T_s)
        semantic_ids = semantic_ids.to(self.device)
        frames = self.codec.token_spec.frames_for(semantic_ids.shape[1], self.semantic_tokenizer.token_spec)
        codes = self._acoustics(semantic_ids, None, frames, _generator(seed, self.device))  # (B, T_a, Q)
        return GenerationResult(self.codec.decode(codes), semantic_ids, codes, 0)

    @torch.inference_mode()
    def generate_unconditional(self, seconds: float, num_samples: int = 1, seed: Optional[int] = None) -> GenerationResult:
        generator = _generator(seed, self.device)
        if self.acoustic_only:
            semantic = torch.zeros(num_samples, 0, dtype=torch.long, device=self.device)  # (B, 0): none read
        else:
            count = self._semantic_count(seconds, self._semantic_density(None))
            with stage_progress("semantic"):
                semantic = generate_semantic(self.semantic_lm, None, count, self.stage_sampling("semantic"),
                                             batch_size=num_samples, generator=generator)  # (B, count)
        frames = self.codec.token_spec.frames_covering(seconds)
        codes = self._acoustics(semantic, None, frames, generator)  # (B, T_a, Q)
        return GenerationResult(self.codec.decode(codes), semantic, codes, 0)

    # -- stages ----------------------------------------------------------------------
    def _semantic_density(self, semantic_prompt: Optional[torch.Tensor]) -> float:
        """Ids per frame left after deduplication: 1.0 when the LM keeps repeats, else the prompt's own
        (first row), else the pipeline's `dedup_density`."""
        if not self.semantic_lm.layout.dedup:
            return 1.0
        if semantic_prompt is None or semantic_prompt.shape[1] < 2:
            return self.dedup_density
        row = semantic_prompt[0].cpu().numpy()
        return max(0.1, len(dedup_consecutive(row)) / len(row))

    def _semantic_count(self, seconds: float, density: float) -> int:
        """Semantic ids to generate for `seconds` of audio at `density` ids per semantic frame."""
        return math.ceil(seconds * self.semantic_tokenizer.token_spec.frame_rate * density)

    def _continue_semantic(self, semantic_prompt: torch.Tensor, seconds: float, generator) -> torch.Tensor:
        count = self._semantic_count(seconds, self._semantic_density(semantic_prompt))
        with stage_progress("semantic"):
            new = generate_semantic(self.semantic_lm, semantic_prompt, count, self.stage_sampling("semantic"),
                                    generator=generator)
        return torch.cat([semantic_prompt, new.to(semantic_prompt.device)], dim=1)  # (B, T_sp + count)

    def _time_aligned_coarse(self) -> bool:
        """A coarse LM that reads each semantic id at its time (not the paper's deduplicated prefix)."""
        return self.coarse_lm is not None and isinstance(self.coarse_lm.layout, (InterleavedLayout, AlignedCoarseLayout))

    def _acoustics(self, semantic: torch.Tensor, codes_prompt: Optional[torch.Tensor], frames: int, generator,
                   prompt_ids: int = 0) -> torch.Tensor:
        """semantic (B, T_s), the first `prompt_ids` of them the prompt's (raw, at their times), + optional prompt
        codes (B, T_p, Q) -> all codes (B, frames, L), L <= Q the levels the fine LM completes. Outputs longer
        than the LMs' trained context are made as `lm/windows.py` says for each layout. With a SoundStorm model:
        all its levels at once, by parallel decoding (soundstorm/decoding.py)."""
        if self.soundstorm is not None:
            with stage_progress("soundstorm"):
                override, own = self.sampling.soundstorm, self.soundstorm.sampling
                sampling = own if override is None else override.over(own)
                return self.soundstorm.generate(semantic, frames, codes_prompt, sampling, generator)  # (B, frames, L)
        num_coarse = self.coarse_lm.layout.num_coarse
        coarse_prompt = None if codes_prompt is None else codes_prompt[:, :, :num_coarse]  # (B, T_p, Q')
        with stage_progress("coarse"):
            coarse = generate_coarse(self.coarse_lm, semantic, coarse_prompt, self.stage_sampling("coarse"),
                                     num_frames=frames, timed_ids=prompt_ids, generator=generator)  # (B, frames, Q')
        levels = self.fine_lm.layout.num_quantizers  # L <= Q: the codec decodes the first L levels
        fine_prompt = None if codes_prompt is None else codes_prompt[:, :, num_coarse:levels]  # (B, T_p, L - Q')
        with stage_progress("fine"):
            fine = generate_fine(self.fine_lm, coarse, fine_prompt, self.stage_sampling("fine"),
                                 generator=generator)  # (B, frames, L - Q')
        return torch.cat([coarse, fine], dim=2)  # (B, frames, L)


def _soundstorm_chosen(config: PipelineConfig) -> bool:
    """True for `acoustic_stage: soundstorm` (which then needs `soundstorm`), False for the coarse and fine LMs."""
    if config.acoustic_stage not in ("coarse_fine", "soundstorm"):
        raise ValueError(f"pipeline acoustic_stage must be 'coarse_fine' or 'soundstorm', got {config.acoustic_stage!r}")
    if config.acoustic_stage == "soundstorm" and not config.soundstorm:
        raise ValueError("pipeline acoustic_stage: soundstorm needs `soundstorm:` the SoundStorm checkpoint or run directory")
    return config.acoustic_stage == "soundstorm"


def _as_batch(wav: torch.Tensor, num_samples: int) -> torch.Tensor:
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if wav.dim() == 1:
        wav = wav[None]  # (1, T)
    if wav.dim() != 2 or wav.shape[0] not in (1, num_samples):
        raise ValueError(f"expected a mono waveform (T,) or (1, T) or ({num_samples}, T); got shape {tuple(wav.shape)}")
    return wav.expand(num_samples, -1).contiguous()  # (B, T)


def _generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)
