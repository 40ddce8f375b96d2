"""Trained stages as folders to share: `save_pretrained(stage, folder)` / `from_pretrained(folder)`.

    save_pretrained(codec, "./export/codec")  # a codec, SSL model, LoadedLM, LoadedSoundStorm or semantic tokenizer
    codec = from_pretrained("./export/codec")  # the same stage back, eval mode, its TokenSpecs checked
    AudioLM.save_pretrained("export") / AudioLM.from_pretrained("export")   # every stage of a pipeline in one folder

Weights only: tensors in safetensors files, everything else JSON (no pickle is written or read). Every folder
has `audiolm_pl.json` = {"format", "stage", "token_specs", ...}; per stage:

- codec: + "kind" (the codec class), "config": {"model": its config}; `model.safetensors` (the weights that
  `load_codec` gives: EMA when the run kept it). A transformers codec (`hf:DIR`) is copied as it is
  (`config.json` + safetensors, no `audiolm_pl.json`) and named `hf:codec?num_quantizers=..&sample_rate=..`.
- semantic / coarse / fine LM: + "config": {"model", "sampling", "data": {"crop_seconds"}}, "layout" (the token
  layout it was trained with), "producers"; `model.safetensors`.
- soundstorm (the parallel acoustic stage): + "config": {"model", "sampling"}, "layout" (`SoundStormFrames`),
  "producers"; `model.safetensors`.
- ssl (our SSL model): a real transformers directory (`config.json`, `model.safetensors`,
  `preprocessor_config.json`) that `transformers.AutoModel.from_pretrained` and the `hf:DIR` feature source read,
  + "config": {"model": SSLModelConfig} and `head.safetensors` (the k-means target head, unknown to transformers).
- semantic_tokenizer: + "file": `tokenizer.safetensors` (the tokenizer file), whose feature source is in
  `features/` (an ssl folder as above, or a copy of its HF model; nothing for MFCC / log-mel).

Codec, LM, SoundStorm and SSL folders read through `checkpoint.load_stage_checkpoint` as a `StageCheckpoint`, so
`load_codec`, `load_lm`, `load_soundstorm` and `load_ssl_model` take a folder wherever they take a checkpoint and
check what they check there; an LM or SoundStorm folder's layout must also agree with its TokenSpecs (`_check_layout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiolm_pl.checkpoint import CheckpointError, StageCheckpoint
from audiolm_pl.tokens import TokenSpec

FORMAT = "audiolm_pl.pretrained/1"
METADATA = "audiolm_pl.json"  # in every folder
WEIGHTS = "model.safetensors"
SSL_HEAD = "head.safetensors"
TOKENIZER_FILE = "tokenizer.safetensors"
FEATURES = "features"  # a tokenizer folder's feature model
LM_STAGES = ("semantic", "coarse", "fine")
LAYOUT_STAGES = (*LM_STAGES, "soundstorm")  # `model.safetensors` + a token layout made from the TokenSpecs


# -- folders and weights -------------------------------------------------------------------------------------
def folder_hash(folder: str | Path, length: int = 16) -> str:
    """A short sha256 of a stage folder's files (names and bytes, sorted; `features/` included): what token
    shards record as the hash of a codec or tokenizer given as a folder."""
    folder, digest = Path(folder), hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def is_pretrained_folder(path: str | Path) -> bool:
    """True for a folder written by `save_pretrained` (it holds `audiolm_pl.json`)."""
    return (Path(path) / METADATA).is_file()


def read_metadata(folder: str | Path, expected_stage: str | None = None) -> dict:
    """`audiolm_pl.json` of a folder, its format and stage checked; CheckpointError naming the file otherwise."""
    path = Path(folder) / METADATA
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a save_pretrained folder (no {METADATA})")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r}; this code reads {FORMAT!r}")
    stage = metadata.get("stage")
    if expected_stage is not None and stage != expected_stage:
        raise CheckpointError(f"{folder} holds a {stage!r} stage; expected a {expected_stage!r} stage")
    return metadata


def write_metadata(folder: Path, stage: str, token_specs: dict[str, TokenSpec], **entries) -> None:
    specs = {role: spec.to_dict() for role, spec in token_specs.items()}
    payload = {"format": FORMAT, "stage": stage, "token_specs": specs, **entries}
    (folder / METADATA).write_text(json.dumps(payload, indent=1, sort_keys=True))


def stored_specs(metadata: dict, folder: Path) -> dict[str, TokenSpec]:
    try:
        return {role: TokenSpec.from_dict(spec) for role, spec in (metadata.get("token_specs") or {}).items()}
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / METADATA}: token_specs do not read as TokenSpecs ({err})") from None


def check_target(folder: str | Path, overwrite: bool = False) -> None:
    """Refuse to export into a file, a non-empty folder (unless `overwrite`), or with `overwrite` into a
    non-empty folder that is not an earlier export (it would be deleted)."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; name a folder to export into")
    if any(folder.iterdir()) and not (overwrite and is_pretrained_folder(folder)):
        why = "is not an exported folder (no audiolm_pl.json), so it is left alone" if overwrite else \
            "exists and is not empty; name a new folder or pass overwrite (--overwrite)"
        raise ValueError(f"{folder} {why}")


@contextmanager
def writing_folder(folder: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `folder` to write into; it becomes `folder` only when the block ends
    without an error (else it is removed), so an interrupted export never leaves half a folder. An existing
    `folder` is replaced only with `overwrite` and only if it is empty or itself an exported folder."""
    folder = Path(folder)
    check_target(folder, overwrite)
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        if folder.exists():
            shutil.rmtree(folder)
        temporary.rename(folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_weights(state_dict: dict[str, torch.Tensor], file: Path) -> None:
    """A state dict -> one safetensors file. Tied parameters (the LM's output head is its embedding) are stored
    once and named again in the header (`aliases`), which safetensors itself refuses to hold twice."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().cpu().clone().contiguous()  # a copy: no two entries share memory
    save_file(tensors, str(file), metadata={"aliases": json.dumps(aliases)})


def load_weights(file: Path) -> dict[str, torch.Tensor]:
    """Inverse of `save_weights`: every name of the state dict, tied ones sharing one tensor again."""
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist (a save_pretrained folder keeps its weights there)")
    with safe_open(str(file), framework="pt") as handle:
        aliases = json.loads((handle.metadata() or {}).get("aliases", "{}"))
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    for alias, name in aliases.items():
        tensors[alias] = tensors[name]
    return tensors


# -- reading a stage folder as a checkpoint --------------------------------------------------------------------
def read_stage_folder(folder: str | Path, expected_stage: str | None = None) -> StageCheckpoint:
    """A codec / LM / SoundStorm / SSL folder -> the `StageCheckpoint` its loader reads (weights under `model.`)."""
    folder = Path(folder)
    metadata = read_metadata(folder, expected_stage)
    stage = metadata["stage"]
    if stage == "ssl":
        model_weights = {f"encoder.{name}": value for name, value in _transformers_weights(folder).items()}
        model_weights.update({f"head.{name}": value for name, value in load_weights(folder / SSL_HEAD).items()})
    elif stage == "codec" or stage in LAYOUT_STAGES:
        model_weights = load_weights(folder / WEIGHTS)
    else:
        raise CheckpointError(f"{folder} holds a {stage!r} folder, which is not read as a stage checkpoint "
                              "(from_pretrained reads every kind)")
    specs = stored_specs(metadata, folder)
    if stage in LAYOUT_STAGES:
        _check_layout(metadata.get("layout") or {}, specs, folder)
    return StageCheckpoint(path=folder, stage=stage, config=metadata["config"], token_specs=specs,
                           state_dict={f"model.{name}": value for name, value in model_weights.items()},
                           global_step=int(metadata.get("global_step", 0)), layout=metadata.get("layout"),
                           producers=dict(metadata.get("producers") or {}))


def _transformers_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The encoder's state dict as transformers reads its own directory (key names are its business)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder, local_files_only=True).state_dict()


def _check_layout(layout: dict, specs: dict[str, TokenSpec], folder: Path) -> None:
    """An LM's (or SoundStorm's) layout was made from the TokenSpecs of its training shards: refuse a folder where
    they disagree (a hand-edited spec), naming both."""
    semantic, acoustic = specs.get("semantic"), specs.get("acoustic")
    expected = {}
    if semantic is not None:
        expected["semantic_vocab"] = (semantic.vocab_size, f"token_specs.semantic.vocab_size = {semantic.vocab_size}")
    if acoustic is not None:
        expected["codebook_size"] = (acoustic.vocab_size, f"token_specs.acoustic.vocab_size = {acoustic.vocab_size}")
    if semantic is not None and acoustic is not None and "frames_per_id" in layout:
        ratio = acoustic.frame_ratio(semantic)
        expected["frames_per_id"] = (ratio, f"token_specs give {ratio:g} acoustic frames per semantic frame")
    for key, (value, source) in expected.items():
        if key in layout and layout[key] != value:
            raise CheckpointError(f"{folder / METADATA}: layout.{key} = {layout[key]} but {source}; "
                                  "the stage was trained on other tokens than this file says")
    for key in ("num_coarse", "num_quantizers", "num_levels"):  # num_levels: SoundStorm's RVQ levels
        if acoustic is not None and layout.get(key, 0) > acoustic.num_quantizers:
            raise CheckpointError(f"{folder / METADATA}: layout.{key} = {layout[key]} but token_specs.acoustic has "
                                  f"{acoustic.num_quantizers} quantizers")


# -- writing one stage ----------------------------------------------------------------------------------------
def save_pretrained(stage, folder: str | Path, overwrite: bool = False) -> Path:
    """A codec (ours or hf:DIR), an `SSLModel`, a `LoadedLM`, a `LoadedSoundStorm`, a `KMeansSemanticTokenizer` or an
    `AudioLM` -> a folder that `from_pretrained` reads back. Written whole or not at all (`writing_folder`); returns
    the folder."""
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.lm.generation import LoadedLM
    from audiolm_pl.semantic.ssl_model import SSLModel
    from audiolm_pl.semantic.tokenizer import KMeansSemanticTokenizer
    from audiolm_pl.soundstorm.stage import LoadedSoundStorm
    from audiolm_pl.tokens import AcousticCodec

    if isinstance(stage, AudioLM):
        return stage.save_pretrained(folder, overwrite=overwrite)
    writers = ((AcousticCodec, _write_codec), (SSLModel, _write_ssl), (LoadedLM, _write_lm),
               (LoadedSoundStorm, _write_soundstorm), (KMeansSemanticTokenizer, _write_tokenizer))
    for kind, write in writers:
        if isinstance(stage, kind):
            with writing_folder(folder, overwrite) as temporary:
                write(stage, temporary)
            return Path(folder)
    raise TypeError(f"save_pretrained takes a codec, SSLModel, LoadedLM, LoadedSoundStorm, KMeansSemanticTokenizer or "
                    f"AudioLM; got {type(stage).__name__}")


def _write_codec(codec, folder: Path) -> None:
    from audiolm_pl.codec.hf import HFCodec, weight_files
    from audiolm_pl.config import to_dict
    from audiolm_pl.registry import CODECS

    if isinstance(codec, HFCodec):  # already a folder: copied byte for byte, which its identity() hashes
        for file in weight_files(codec.path):
            shutil.copyfile(file, folder / file.name)
        return
    kind = getattr(getattr(codec, "config", None), "kind", None)
    if kind not in CODECS:
        raise ValueError(f"save_pretrained writes our codec classes ({sorted(CODECS)}) and transformers codecs "
                         f"(hf:DIR); a {type(codec).__name__} is neither")
    save_weights(codec.state_dict(), folder / WEIGHTS)
    write_metadata(folder, "codec", {"acoustic": codec.token_spec}, kind=kind, config={"model": to_dict(codec.config)})


def _write_lm(lm, folder: Path) -> None:
    from audiolm_pl.config import to_dict

    save_weights(lm.model.state_dict(), folder / WEIGHTS)
    config = {"model": to_dict(lm.model.config), "sampling": to_dict(lm.sampling),
              "data": {"crop_seconds": lm.chunk_seconds}}
    write_metadata(folder, lm.stage, lm.token_specs, config=config, layout=lm.layout.to_dict(), producers=lm.producers)


def _write_soundstorm(soundstorm, folder: Path) -> None:
    """Its weights, the model config and decoding settings `load_soundstorm` rebuilds it from (the rest of its run
    config is training's), its layout, TokenSpecs and the producers of its training tokens."""
    from audiolm_pl.config import to_dict

    save_weights(soundstorm.model.state_dict(), folder / WEIGHTS)
    config = {"model": to_dict(soundstorm.model.config), "sampling": to_dict(soundstorm.sampling)}
    write_metadata(folder, "soundstorm", soundstorm.token_specs, config=config, layout=soundstorm.layout.to_dict(),
                   producers=soundstorm.producers)


def _write_ssl(model, folder: Path) -> None:
    """A transformers directory of the encoder, with the feature extractor settings that make `hf:DIR` see the
    audio as `SSLModel.forward` does (each clip normalised to zero mean, unit variance), + our head."""
    from transformers import Wav2Vec2FeatureExtractor

    from audiolm_pl.config import to_dict

    model.encoder.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=model.sample_rate, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    save_weights(model.head.state_dict(), folder / SSL_HEAD)
    write_metadata(folder, "ssl", {}, config={"model": to_dict(model.config)})


def _write_tokenizer(tokenizer, folder: Path) -> None:
    """The tokenizer file, its feature model copied into `features/` and the file pointed at it, so the folder
    is whole; the tokenizer's `identity()` (which leaves out the path) stays the same."""
    source = tokenizer.frames.source
    if source.kind == "ssl":
        _write_ssl(tokenizer.frames.extractor.model, _made(folder / FEATURES))
    elif source.kind == "hf":
        hf = tokenizer.frames.extractor  # HFLayerFeatures: the model and its feature extractor as loaded
        hf.model.save_pretrained(folder / FEATURES)
        if hf.extractor is not None:
            hf.extractor.save_pretrained(folder / FEATURES)
    elif source.kind == "whisper" and source.path:
        raise ValueError(f"save_pretrained copies no CTranslate2 Whisper directory ({source.path}); use the packaged "
                         "tiny.en (path '') or copy the directory beside the folder by hand")
    portable = replace(source, path=str(folder / FEATURES)) if source.kind in ("ssl", "hf") else source
    tokenizer.frames.source = portable  # saved relative to the file: "features"
    try:
        tokenizer.save(folder / TOKENIZER_FILE)
    finally:
        tokenizer.frames.source = source
    write_metadata(folder, "semantic_tokenizer", {"semantic": tokenizer.token_spec}, file=TOKENIZER_FILE)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def codec_name(codec, folder_name: str) -> str:
    """How a pipeline YAML names the codec saved in `folder_name`: the folder itself, or for a transformers codec
    `hf:FOLDER?...` with the levels and input rate it was used with."""
    from audiolm_pl.codec.hf import HFCodec

    if isinstance(codec, HFCodec):
        return f"hf:{folder_name}?num_quantizers={codec.num_quantizers}&sample_rate={codec.sample_rate}"
    return folder_name


# -- reading any folder ---------------------------------------------------------------------------------------
def tokenizer_file(path: str | Path) -> Path:
    """A semantic tokenizer folder -> its tokenizer file; a file stays as it is."""
    path = Path(path)
    if path.is_dir() and is_pretrained_folder(path):
        return path / read_metadata(path, "semantic_tokenizer")["file"]
    return path


def from_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """A `save_pretrained` folder -> its stage, in eval mode on `device`: a codec, `SSLModel`, `LoadedLM`,
    `LoadedSoundStorm`, `KMeansSemanticTokenizer` or `AudioLM`, checked as its checkpoint loader checks it."""
    folder = Path(folder)
    stage = read_metadata(folder)["stage"]
    if stage == "codec":
        from audiolm_pl.codec import load_codec

        return load_codec(folder, device=device)
    if stage in LM_STAGES:
        from audiolm_pl.lm import load_lm

        return load_lm(folder, expected_stage=stage, device=device)
    if stage == "soundstorm":
        from audiolm_pl.soundstorm import load_soundstorm

        return load_soundstorm(folder, device=device)
    if stage == "ssl":
        from audiolm_pl.semantic.ssl_model import load_ssl_model

        return load_ssl_model(folder).eval().to(device)
    if stage == "semantic_tokenizer":
        return load_tokenizer_folder(folder, device)
    if stage == "pipeline":
        from audiolm_pl.inference.audiolm import AudioLM

        return AudioLM.from_pretrained(folder, overrides=(f"device={device}",))
    raise CheckpointError(f"{folder / METADATA}: unknown stage {stage!r}")


def load_tokenizer_folder(folder: Path, device: str | torch.device = "cpu"):
    """A semantic tokenizer folder -> the tokenizer, whose TokenSpec must be the one the folder states."""
    from audiolm_pl.semantic import load_tokenizer
    from audiolm_pl.tokens import require_same_spec

    metadata = read_metadata(folder, "semantic_tokenizer")
    tokenizer = load_tokenizer(folder / metadata["file"], device=device)
    stored = stored_specs(metadata, folder).get("semantic")
    if stored is not None:
        require_same_spec(stored, tokenizer.token_spec, consumer=f"semantic tokenizer folder {folder} ({METADATA})",
                          producer=f"its tokenizer file {metadata['file']}")
    return tokenizer
