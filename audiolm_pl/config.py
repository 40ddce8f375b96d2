"""Typed YAML configs: every YAML maps 1:1 onto a dataclass beside the class it builds.

`load_config(Schema, "conf/codec/tiny.yaml", ["trainer.max_steps=10"])` merges, in order,
the dataclass defaults, the YAML file(s) and dotted command-line overrides, and returns an
instance of `Schema` (nested dataclasses all the way down). A key the dataclass does not
have is an error that names the key, the file it came from and the keys that are valid
there, so a typo never becomes a silent default.

A schema whose class picks among variants (the codec: `model.kind` selects the model class)
defines a classmethod `schema_for(raw: DictConfig) -> type`: it sees the merged layers before
any checking and returns the concrete dataclass that they are then checked against.

A schema whose fields name files (the pipeline's checkpoints) lists their dotted keys in a
`FILE_RELATIVE_PATHS` class variable: a relative path given in a YAML file is taken relative to
that file's folder, so the YAML works from any working directory and moves with its outputs.
Overrides stay relative to the working directory, where the user typed them.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped_conf_dir() -> Path:
    """The folder of shipped YAMLs (`codec/`, `lm/<stage>/`, `ssl/`, `trainer/`, `pipeline/`).

    A built wheel or `pip install .` carries the repository's top-level `conf/` inside the package as
    `audiolm_pl/conf` (setup.py maps it there at build time); a checkout or an editable install has no
    such folder and reads the repository's `conf/` itself, so edits there take effect without a reinstall.
    """
    packaged = resources.files("audiolm_pl") / "conf"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return REPO_ROOT / "conf"


CONF_DIR = shipped_conf_dir()


class ConfigError(ValueError):
    """A config file or override does not fit the dataclass it is meant for."""


def resolve_config_path(group: str, name_or_path: str | Path) -> Path:
    """`tiny` -> `conf/<group>/tiny.yaml`; an existing path is returned as it is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path
    if not CONF_DIR.is_dir():  # an install whose wheel was built without its package data
        raise ConfigError(f"no shipped configs: {CONF_DIR} is missing; reinstall audiolm_pl or pass a YAML path")
    candidate = CONF_DIR / group / f"{name_or_path}.yaml"
    if not candidate.exists():
        shipped = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ConfigError(
            f"no config named {name_or_path!r} in {CONF_DIR / group}; shipped configs: {shipped}"
        )
    return candidate


def _valid_keys(schema: DictConfig, full_key: str) -> list[str]:
    """The keys allowed at the parent of `full_key` (dotted) in `schema`."""
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _merge(schema: DictConfig, merged: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(merged, layer)
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        valid = _valid_keys(schema, key)
        leaf = key.rsplit(".", 1)[-1]
        hint = difflib.get_close_matches(leaf, valid, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{source}: unknown key {key!r}{did_you_mean}; valid keys there: {valid}"
        ) from None
    except ValidationError as err:
        raise ConfigError(f"{source}: bad value for {err.full_key!r}: {err.msg}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(
    schema_cls: type[T],
    *sources: str | Path | dict | None,
    overrides: Sequence[str] = (),
    at: dict[str, str | Path] | None = None,
) -> T:
    """Build a `schema_cls` instance from YAML files / dicts and dotted overrides.

    sources:   YAML paths or plain dicts, merged left to right (None is skipped).
    at:        {"trainer": "conf/trainer/cpu.yaml"}: a YAML merged under a sub-key.
    overrides: ["trainer.max_steps=100", "model.depth=4"], applied last.
    """
    layers = _layers(sources, overrides, at)
    if hasattr(schema_cls, "schema_for"):
        raw = OmegaConf.merge(*(layer for layer, _ in layers)) if layers else OmegaConf.create()
        schema_cls = schema_cls.schema_for(raw)
    given = [source for source in sources if source is not None]  # the first layers, in order
    for (layer, _), source in zip(layers, given):
        if not isinstance(source, dict):
            _rebase_paths(layer, getattr(schema_cls, "FILE_RELATIVE_PATHS", ()), Path(source).parent)
    schema = OmegaConf.structured(schema_cls)
    merged = schema
    for layer, source in layers:
        merged = _merge(schema, merged, layer, source)
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config for {schema_cls.__name__} is incomplete: {err}") from None


def _layers(sources, overrides: Sequence[str], at: dict | None) -> list[tuple[DictConfig, str]]:
    """Every layer to merge, in order, with the name an error message gives it."""
    layers = []
    for source in sources:
        if source is None:
            continue
        if isinstance(source, dict):
            layers.append((OmegaConf.create(source), "config dict"))
        else:
            layers.append((_load_yaml(source), str(source)))
    for key, path in (at or {}).items():
        layers.append((OmegaConf.create({key: _load_yaml(path)}), str(path)))
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.sub=value")
        layers.append((OmegaConf.from_dotlist([override]), f"override {override!r}"))
    return layers


def _rebase_paths(layer: DictConfig, keys: Sequence[str], folder: Path) -> None:
    """Make the relative paths at `keys` of a YAML layer relative to the YAML's `folder`. A path that exists
    only from the working directory (a YAML written before this rule) is kept as it is. A pretrained codec
    `hf:DIR?options` is rebased on its DIR, keeping the prefix and the options."""
    for key in keys:
        value = OmegaConf.select(layer, key, default=None)
        if not isinstance(value, str) or not value:
            continue
        prefix = "hf:" if value.startswith("hf:") else ""
        path, mark, options = value[len(prefix):].partition("?") if prefix else (value, "", "")
        if Path(path).is_absolute():
            continue
        rebased = folder / path
        if rebased.exists() or not Path(path).exists():
            OmegaConf.update(layer, key, f"{prefix}{rebased}{mark}{options}")


def _load_yaml(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def to_dict(config: Any) -> dict:
    """A dataclass config as plain python containers (safe for `weights_only` checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def from_dict(schema_cls: type[T], values: dict) -> T:
    """Inverse of `to_dict`, with the same strict key checking."""
    return load_config(schema_cls, values)


def save_yaml(config: Any, path: str | Path) -> None:
    from audiolm_pl.fileio import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(config)))
