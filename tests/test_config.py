"""The config system: strict keys, clear errors, overrides, and every shipped YAML builds."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from audiolm_pl import registry
from audiolm_pl.config import CONF_DIR, ConfigError, from_dict, load_config, to_dict
from audiolm_pl.training import TrainerConfig, load_stage_config


@dataclass
class Inner:
    depth: int = 2
    name: str = "x"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rate: float = 1.0


def test_layers_merge_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  depth: 3\nrate: 2.5\n")
    preset = tmp_path / "preset.yaml"
    preset.write_text("accelerator: cpu\nmax_steps: 7\n")
    config = load_config(Outer, path, overrides=["inner.depth=5"], at={"trainer": preset})
    assert isinstance(config, Outer) and isinstance(config.inner, Inner)
    assert (config.inner.depth, config.rate, config.trainer.accelerator, config.trainer.max_steps) == (5, 2.5, "cpu", 7)


def test_misspelt_key_names_key_file_and_valid_keys(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("inner:\n  dpeth: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    message = str(err.value)
    assert str(path) in message and "inner.dpeth" in message and "did you mean 'depth'" in message
    assert "['depth', 'name']" in message


def test_bad_override_value_and_shape():
    with pytest.raises(ConfigError, match="inner.depth"):
        load_config(Outer, overrides=["inner.depth=deep"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Outer, overrides=["inner.depth"])
    with pytest.raises(ConfigError, match="unknown key 'trainer.max_stpes'"):
        load_config(Outer, overrides=["trainer.max_stpes=3"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "absent.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, listy)


def test_dict_round_trip_is_plain_containers():
    config = load_config(Outer, overrides=["inner.name=y"])
    plain = to_dict(config)
    assert type(plain) is dict and type(plain["inner"]) is dict
    assert from_dict(Outer, plain) == config


SHIPPED_STAGE_CONFIGS = [
    (stage, path)
    for stage, entry in sorted(registry.STAGES.items())
    for path in sorted((CONF_DIR / entry.conf_group).glob("*.yaml"))
]


@pytest.mark.parametrize("trainer_preset", sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")))
def test_every_trainer_preset_loads(trainer_preset):
    config = load_config(Outer, at={"trainer": CONF_DIR / "trainer" / f"{trainer_preset}.yaml"})
    assert config.trainer.accelerator in ("cpu", "gpu", "auto")


@pytest.mark.parametrize("stage,path", SHIPPED_STAGE_CONFIGS, ids=[f"{s}-{p.stem}" for s, p in SHIPPED_STAGE_CONFIGS])
def test_every_shipped_stage_config_loads_strictly(stage, path):
    """Each YAML fits its stage's dataclass (the stage tests build the models they describe)."""
    run_config = load_stage_config(stage, path, "cpu", overrides=["trainer.max_steps=1"])
    assert isinstance(run_config, registry.get_stage(stage).config_class())
    assert run_config.trainer.max_steps == 1 and run_config.trainer.accelerator == "cpu"


def test_pipeline_config_loads():
    from audiolm_pl.inference.audiolm import PipelineConfig

    for path in (CONF_DIR / "pipeline").glob("*.yaml"):
        config = load_config(PipelineConfig, path)
        assert config.sampling.coarse is None  # each LM's own sampling (docs/inference.md), unless overridden


def test_every_shipped_yaml_is_covered():
    covered = {path for _, path in SHIPPED_STAGE_CONFIGS} | set((CONF_DIR / "trainer").glob("*.yaml"))
    shipped = set(CONF_DIR.rglob("*.yaml"))
    pipelines = set((CONF_DIR / "pipeline").glob("*.yaml"))
    assert shipped - covered - pipelines == set(), "a YAML under conf/ is not loaded by any test"
