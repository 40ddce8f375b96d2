"""The one place that maps a stage name (and a codec kind) to the classes that build it.

Entries are "module:attribute" strings, imported on first use so that `audiolm-pl --help`
stays fast and a stage's heavy imports load only when that stage runs. Swapping a stage's
implementation is an edit here (or a different config), nowhere else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class StageEntry:
    name: str
    conf_group: str  # folder under conf/
    config_ref: str  # "module:RunConfigDataclass"
    build_ref: str  # "module:build" -> (LightningModule, LightningDataModule)

    def config_class(self) -> type:
        return _resolve(self.config_ref)

    def build(self, run_config: Any):
        builder: Callable = _resolve(self.build_ref)
        return builder(run_config)


STAGES: dict[str, StageEntry] = {}


def register(entry: StageEntry) -> None:
    STAGES[entry.name] = entry


def get_stage(name: str) -> StageEntry:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {sorted(STAGES)}")
    return STAGES[name]


def _resolve(ref: str) -> Any:
    module_name, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# Trainable stages. Each module keeps its run-config dataclass and `build` side by side.
for _entry in (
    StageEntry("codec", "codec", "audiolm_pl.codec.lightning:CodecRunConfig", "audiolm_pl.codec.lightning:build"),
    StageEntry("ssl", "ssl", "audiolm_pl.semantic.ssl_lightning:SSLRunConfig", "audiolm_pl.semantic.ssl_lightning:build"),
    StageEntry("semantic", "lm/semantic", "audiolm_pl.lm.stages:SemanticRunConfig", "audiolm_pl.lm.stages:build_semantic"),
    StageEntry("coarse", "lm/coarse", "audiolm_pl.lm.stages:CoarseRunConfig", "audiolm_pl.lm.stages:build_coarse"),
    StageEntry("fine", "lm/fine", "audiolm_pl.lm.stages:FineRunConfig", "audiolm_pl.lm.stages:build_fine"),
    # the parallel acoustic stage, in place of coarse + fine (docs/soundstorm.md)
    StageEntry("soundstorm", "soundstorm", "audiolm_pl.soundstorm.stage:SoundStormRunConfig",
               "audiolm_pl.soundstorm.stage:build"),
    # not a generation stage: the classifier of real vs our synthetic audio (docs/detector.md)
    StageEntry("detector", "detector", "audiolm_pl.detector.lightning:DetectorRunConfig",
               "audiolm_pl.detector.lightning:build"),
):
    register(_entry)


@dataclass(frozen=True)
class CodecEntry:
    """A codec class behind the `AcousticCodec` contract, chosen by `model.kind` in a codec config."""

    kind: str
    model_ref: str  # "module:AcousticCodecClass", built as Class(model config)
    run_config_ref: str  # "module:RunConfigDataclass": training config whose `model` field is the model's config

    def model_class(self) -> type:
        return _resolve(self.model_ref)

    def run_config_class(self) -> type:
        return _resolve(self.run_config_ref)


CODECS: dict[str, CodecEntry] = {
    entry.kind: entry
    for entry in (
        # the paper's: causal time-domain convolutions + residual VQ, trained with discriminators (GPU scale)
        CodecEntry("soundstream", "audiolm_pl.codec.model:SoundStream",
                   "audiolm_pl.codec.lightning:SoundStreamRunConfig"),
        # ConvNeXt at the frame rate + inverse STFT + residual FSQ: learns in CPU minutes
        CodecEntry("frame", "audiolm_pl.codec.frame_model:FrameCodec",
                   "audiolm_pl.codec.lightning:FrameCodecRunConfig"),
    )
}


def get_codec(kind: str) -> CodecEntry:
    if kind not in CODECS:
        raise ValueError(f"unknown codec kind {kind!r} (model.kind); known kinds: {sorted(CODECS)}")
    return CODECS[kind]


@dataclass(frozen=True)
class PretrainedCodecEntry:
    """A transformers codec class that `hf:DIR` wraps as an `AcousticCodec` (codec/hf.py), by the folder's
    config.json `model_type`."""

    model_type: str
    transformers_class: str  # the class `AutoModel` builds from that folder
    level_option: str  # how `hf:DIR?...` chooses the RVQ levels kept


PRETRAINED_CODECS: dict[str, PretrainedCodecEntry] = {
    entry.model_type: entry
    for entry in (
        # the 24 kHz mono model only: the chunked 48 kHz one keeps a scale per chunk beside its codes
        PretrainedCodecEntry("encodec", "EncodecModel", "num_quantizers or bandwidth (kbps, in target_bandwidths)"),
        PretrainedCodecEntry("dac", "DacModel", "num_quantizers (of n_codebooks)"),
        PretrainedCodecEntry("mimi", "MimiModel", "num_quantizers (at least num_semantic_quantizers)"),
        PretrainedCodecEntry("xcodec", "XcodecModel", "num_quantizers or bandwidth (kbps, in target_bandwidths)"),
    )
}


def get_pretrained_codec(model_type: str, where: str) -> PretrainedCodecEntry:
    if model_type not in PRETRAINED_CODECS:
        raise ValueError(f"{where}: model_type {model_type!r} is not a supported pretrained codec; "
                         f"supported: {sorted(PRETRAINED_CODECS)}")
    return PRETRAINED_CODECS[model_type]
