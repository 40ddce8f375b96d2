"""Reading stage checkpoints safely: `torch.load(weights_only=True)` only, never pickle code.

A stage checkpoint is a Lightning `.ckpt` whose `hyper_parameters` hold plain containers:
`{"config": <run config as dict>, "token_specs": {"acoustic": {...}, "semantic": {...}}}`, and for
LM stages `"producers": {"acoustic": <codec identity>, "semantic": <tokenizer identity>}` (absent in
checkpoints from before they were recorded).
`load_stage_checkpoint` returns those plus the model's state dict; a directory is
accepted too and means `<dir>/checkpoints/last.ckpt` (a run directory).
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


def resolve_checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.exists():
                return candidate
        raise CheckpointError(f"{path} is a directory without checkpoints/last.ckpt or last.ckpt")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load_raw(path: str | Path) -> dict:
    path = resolve_checkpoint_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for foreign objects, EOFError for truncated files
        raise CheckpointError(
            f"cannot read {path} as a weights-only checkpoint ({type(err).__name__}: {err}); "
            "only tensors and plain containers are accepted"
        ) from None


def unreadable_reason(path: str | Path) -> str | None:
    """Why `path` cannot be read as a weights-only checkpoint (one line), or None when it can. Its
    tensors are memory-mapped, not read: a cheap check for a file torn by a killed writer."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # RuntimeError for a torn zip archive, UnpicklingError for foreign objects
        first_sentence = " ".join(str(err).split()).split(". ")[0]
        return f"{type(err).__name__}: {first_sentence[:200]}"
    return None


def load_stage_checkpoint(path: str | Path, expected_stage: str | None = None) -> StageCheckpoint:
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
