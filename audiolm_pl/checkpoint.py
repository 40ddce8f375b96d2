"""Reading stage checkpoints safely: `torch.load(weights_only=True)` only, never pickle code.

A stage checkpoint is a Lightning `.ckpt` whose `hyper_parameters` hold plain containers:
`{"config": <run config as dict>, "token_specs": {"acoustic": {...}, "semantic": {...}}}`, and for
LM stages `"producers": {"acoustic": <codec identity>, "semantic": <tokenizer identity>}` (absent in
checkpoints from before they were recorded).
`load_stage_checkpoint` returns those plus the model's state dict; a directory is
accepted too and means `<dir>/checkpoints/last.ckpt` (a run directory).

Under FSDP2 (`--trainer fsdp`) `last.ckpt` is a sharded directory (torch.distributed.checkpoint files plus
Lightning's `meta.pt`): resume reads it, but a single file is what inference reads. `consolidate` gathers
one into `<run>/checkpoints/consolidated.ckpt` (weights and hyper-parameters, as a single-process run writes
them), which a run directory then resolves to; until then the resolver refuses, naming the command.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from audiolm_pl.tokens import TokenSpec


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not the kind of checkpoint expected."""


@dataclass
class StageCheckpoint:
    path: Path
    stage: str  # "codec", "ssl", "semantic", "coarse", "fine", ...
    config: dict  # the run config the stage was trained with, as plain containers
    token_specs: dict[str, TokenSpec]  # what the stage produces / consumes, by role
    state_dict: dict[str, torch.Tensor]  # the LightningModule's state dict
    global_step: int
    layout: dict | None = None  # LM stages: how tokens were laid out (`layout.to_dict()`)
    producers: dict[str, str] = field(default_factory=dict)  # LM stages: role -> identity() of the token makers


SHARDED_METADATA = "meta.pt"  # Lightning's non-tensor part of a sharded checkpoint (step, loops, hyper-parameters)
CONSOLIDATED = "consolidated.ckpt"


def is_sharded(path: str | Path) -> bool:
    """True for a torch.distributed.checkpoint directory written by Lightning (FSDP2 runs)."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file() and (path / SHARDED_METADATA).is_file()


def resolve_checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if is_sharded(path):
        return _consolidated_for(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if is_sharded(candidate):
                return _consolidated_for(candidate)
            if candidate.exists():
                return candidate
        raise CheckpointError(f"{path} is a directory without checkpoints/last.ckpt or last.ckpt")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _consolidated_for(sharded: Path) -> Path:
    """The consolidated file beside a sharded checkpoint, when it is at least as new; else a clear refusal."""
    single = sharded.parent / CONSOLIDATED
    if single.is_file() and single.stat().st_mtime >= (sharded / SHARDED_METADATA).stat().st_mtime:
        return single
    state = "is older than it" if single.is_file() else "does not exist"
    raise CheckpointError(f"{sharded} is a sharded (FSDP) checkpoint and {single} {state}; write it with "
                          f"`audiolm-pl checkpoint consolidate {sharded}`")


def consolidate(path: str | Path, output: str | Path | None = None) -> Path:
    """A sharded checkpoint (or a run directory whose `checkpoints/last.ckpt` is one) -> one `.ckpt` file with
    the full `state_dict` (keys as a single-process run writes them) and Lightning's metadata (hyper-parameters,
    step), optimizer states left out: it is for inference, resume reads the sharded one. Written atomically to
    `output` (default: `consolidated.ckpt` beside the sharded directory); returns its path. Like `load_raw` it runs
    no code from the files: `meta.pt` is read weights-only, and torch.distributed.checkpoint's `.metadata` (a
    pickle) through an unpickler that admits only the classes describing tensors and shards."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    from audiolm_pl.fileio import atomic_output

    path = Path(path)
    sharded = path if is_sharded(path) else path / "checkpoints" / "last.ckpt"
    if not is_sharded(sharded):
        raise CheckpointError(f"{path} is neither a sharded checkpoint directory (.metadata + {SHARDED_METADATA}) "
                              "nor a run directory whose checkpoints/last.ckpt is one")
    tensors: dict = {}
    # no process group: this process reads every shard and keeps full tensors (the whole model fits in CPU memory)
    reader = _metadata_checked_reader(sharded)
    reader.read_metadata()  # here, not inside the loader: torch would wrap a refusal in its own exception
    _load_state_dict(tensors, storage_reader=reader, planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    checkpoint = torch.load(sharded / SHARDED_METADATA, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = {key: value.contiguous() for key, value in tensors["state_dict"].items()}
    output = Path(output) if output is not None else sharded.parent / CONSOLIDATED
    with atomic_output(output) as temporary:
        torch.save(checkpoint, temporary)
    return output


# what a torch.distributed.checkpoint `.metadata` pickle may name (torch 2.x): descriptions of tensors and shards
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "MetadataIndex", "ChunkStorageMetadata", "TensorProperties",
                                              "TensorStorageMetadata", "BytesStorageMetadata", "StorageMeta",
                                              "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # a layout by its name
    "torch": {"Size"},  # and dtypes, checked below
    "pathlib": {"Path", "PosixPath", "WindowsPath"},
    "collections": {"OrderedDict"},
}


def _metadata_checked_reader(directory: Path):
    """torch's `FileSystemReader` whose `.metadata` is unpickled with only `_METADATA_GLOBALS`: a crafted file
    raises `CheckpointError` instead of running code."""
    import pickle

    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class CheckedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
            if dtype or name in _METADATA_GLOBALS.get(module, ()):
                return super().find_class(module, name)
            raise CheckpointError(f"{directory / '.metadata'} names {module}.{name}, which a sharded checkpoint's "
                                  "metadata never holds; refusing to load it (it could run code)")

    class Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(directory / ".metadata", "rb") as handle:
                metadata = CheckedUnpickler(handle).load()
            if getattr(metadata, "storage_meta", None) is None:  # as torch's own reader does
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(directory)


def load_raw(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint file or run directory -> its dict, weights only. mmap: map the file instead of reading it
    (for a look at its metadata: tensors are read only when touched)."""
    path = resolve_checkpoint_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # UnpicklingError for foreign objects, EOFError for truncated files
        raise CheckpointError(
            f"cannot read {path} as a weights-only checkpoint ({type(err).__name__}: {err}); "
            "only tensors and plain containers are accepted"
        ) from None


def unreadable_reason(path: str | Path) -> str | None:
    """Why `path` cannot be read as a weights-only checkpoint (one line), or None when it can. Its
    tensors are memory-mapped, not read: a cheap check for a file torn by a killed writer. A sharded (FSDP)
    checkpoint, a directory, is judged by its metadata file."""
    if Path(path).is_dir():
        if not is_sharded(path):
            return f"IsADirectoryError: {path} is a directory but not a sharded checkpoint"
        path = Path(path) / SHARDED_METADATA
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # RuntimeError for a torn zip archive, UnpicklingError for foreign objects
        first_sentence = " ".join(str(err).split()).split(". ")[0]
        return f"{type(err).__name__}: {first_sentence[:200]}"
    return None


def load_stage_checkpoint(path: str | Path, expected_stage: str | None = None) -> StageCheckpoint:
    from audiolm_pl.pretrained import is_pretrained_folder, read_stage_folder

    if is_pretrained_folder(path):  # a save_pretrained folder (JSON + safetensors, pretrained.py) reads the same
        return read_stage_folder(path, expected_stage)
    path = resolve_checkpoint_path(path)
    raw = load_raw(path)
    hparams = raw.get("hyper_parameters") or {}
    stage = hparams.get("stage")
    if stage is None or "config" not in hparams:
        raise CheckpointError(f"{path} is not an audiolm_pl stage checkpoint (no 'stage'/'config' hyper-parameters)")
    if expected_stage is not None and stage != expected_stage:
        raise CheckpointError(f"{path} is a {stage!r} checkpoint; expected a {expected_stage!r} checkpoint")
    specs = {role: TokenSpec.from_dict(spec) for role, spec in (hparams.get("token_specs") or {}).items()}
    return StageCheckpoint(
        path=path,
        stage=stage,
        config=hparams["config"],
        token_specs=specs,
        state_dict=raw["state_dict"],
        global_step=int(raw.get("global_step", 0)),
        layout=hparams.get("layout"),
        producers=dict(hparams.get("producers") or {}),
    )


def sub_state_dict(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under `prefix.` with the prefix removed (e.g. the `model.` of a LightningModule)."""
    prefix = prefix.rstrip(".") + "."
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def file_hash(path: str | Path, length: int = 16) -> str:
    """A short sha256 of a file's bytes: names the checkpoint that produced some tokens."""
    digest = hashlib.sha256()
    with open(resolve_checkpoint_path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
