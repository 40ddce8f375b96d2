"""The config system: strict keys, clear errors, overrides; the trainer presets and the shipped pipeline
(every stage YAML is built in tests/test_configs_build.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from audiolm_pl.config import CONF_DIR, ConfigError, from_dict, load_config, to_dict
from audiolm_pl.training import TrainerConfig


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


@pytest.mark.parametrize("trainer_preset", sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")))
def test_every_trainer_preset_loads(trainer_preset):
    config = load_config(Outer, at={"trainer": CONF_DIR / "trainer" / f"{trainer_preset}.yaml"})
    assert config.trainer.accelerator in ("cpu", "gpu")
    # the GPU presets train in bf16-mixed, the CPU ones in fp32; every preset names how it spreads over devices
    assert config.trainer.precision == ("bf16-mixed" if config.trainer.accelerator == "gpu" else "32-true")


def test_shipped_pipeline_points_where_the_main_job_writes(tmp_path):
    """conf/pipeline/default.yaml names the stages of `audiolm-pl main` (outputs/main), relative to its own folder."""
    from audiolm_pl.inference.audiolm import PipelineConfig
    from audiolm_pl.jobs.main import MainJobConfig, write_pipeline_yaml

    shipped = load_config(PipelineConfig, CONF_DIR / "pipeline" / "default.yaml")
    made = load_config(PipelineConfig, write_pipeline_yaml(MainJobConfig(workdir=str(tmp_path))))
    main_workdir = CONF_DIR.parent / MainJobConfig().workdir
    for key in PipelineConfig.FILE_RELATIVE_PATHS:
        if getattr(shipped, key) == getattr(made, key) == "":  # an optional stage neither names (soundstorm)
            continue
        shipped_path, made_path = Path(getattr(shipped, key)).resolve(), Path(getattr(made, key)).resolve()
        assert shipped_path.relative_to(main_workdir.resolve()) == made_path.relative_to(tmp_path.resolve()), key
    sampling = shipped.sampling
    assert (sampling.semantic, sampling.coarse, sampling.fine) == (None, None, None)  # each LM's own (docs/inference.md)
