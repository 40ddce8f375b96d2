"""One source of sampling settings: each LM's own (its YAML, stored in its checkpoint), unless the pipeline
YAML gives a stage; LM checkpoints must store their layout; the dedup density is a pipeline parameter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from audiolm_pl.config import CONF_DIR, load_config, to_dict
from audiolm_pl.inference.audiolm import AudioLM, PipelineConfig, PipelineSampling, SamplingOverride
from audiolm_pl.lm.layouts import SemanticLayout
from audiolm_pl.lm.sampling import SamplingConfig


def test_the_shipped_pipeline_takes_each_lms_own_sampling_and_an_override_names_single_fields():
    config = load_config(PipelineConfig, CONF_DIR / "pipeline" / "default.yaml")
    assert config.sampling == PipelineSampling()  # no stage given: every LM samples with its own
    config = load_config(PipelineConfig, CONF_DIR / "pipeline" / "default.yaml", overrides=["sampling.coarse.top_k=50"])
    assert config.sampling.coarse == SamplingOverride(top_k=50) and config.sampling.fine is None


def test_audiolm_uses_the_lms_sampling_unless_the_pipeline_gives_the_stage():
    own = {stage: SamplingConfig(temperature=t, top_k=k) for stage, t, k in (("semantic", 0.6, 5), ("coarse", 0.8, 6), ("fine", 0.6, 7))}
    lms = {f"{stage}_lm": SimpleNamespace(sampling=sampling) for stage, sampling in own.items()}
    model = SimpleNamespace(sampling=PipelineSampling(coarse=SamplingOverride(temperature=0.3),
                                                      fine=SamplingOverride(top_k=50)), **lms)
    assert AudioLM.stage_sampling(model, "semantic") is own["semantic"]
    assert AudioLM.stage_sampling(model, "coarse") == SamplingConfig(temperature=0.3, top_k=6)  # the LM's top_k kept
    assert AudioLM.stage_sampling(model, "fine") == SamplingConfig(temperature=0.6, top_k=50)  # the LM's temperature kept
    with pytest.raises(ValueError, match="temperature >= 0"):
        SamplingOverride(temperature=-1.0).over(own["coarse"])


def test_the_lm_yaml_sampling_reaches_the_loaded_lm(tiny_run):
    from audiolm_pl.lm.stages import CoarseRunConfig

    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    yaml_sampling = load_config(CoarseRunConfig, CONF_DIR / "lm" / "coarse" / "tiny.yaml").sampling
    assert model.stage_sampling("coarse") == model.coarse_lm.sampling == yaml_sampling


def test_an_lm_checkpoint_without_its_layout_is_refused_with_what_to_do(tmp_path):
    from audiolm_pl.checkpoint import CheckpointError
    from audiolm_pl.lm import load_lm
    from audiolm_pl.lm.stages import CoarseRunConfig

    path = tmp_path / "old.ckpt"
    specs = {"semantic": {"kind": "semantic", "sample_rate": 16000, "frame_rate": 25.0, "vocab_size": 8, "num_quantizers": 1}}
    torch.save({"hyper_parameters": {"stage": "coarse", "config": to_dict(CoarseRunConfig()), "token_specs": specs},
                "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"old\.ckpt stores no token layout .* Train the coarse LM again"):
        load_lm(path)


def test_unconditional_length_of_a_deduplicating_semantic_lm_uses_the_pipelines_density():
    dedup = SimpleNamespace(semantic_lm=SimpleNamespace(layout=SemanticLayout(10, dedup=True)), dedup_density=0.4)
    assert AudioLM._semantic_density(dedup, None) == 0.4
    assert AudioLM._semantic_density(dedup, torch.tensor([[1, 1, 2, 2]])) == 0.5  # a prompt's own density
    raw = SimpleNamespace(semantic_lm=SimpleNamespace(layout=SemanticLayout(10, dedup=False)), dedup_density=0.4)
    assert AudioLM._semantic_density(raw, None) == 1.0
