"""Our SSL model: shipped configs build, fast_dev_run trains, a checkpoint becomes a 25 Hz tokenizer."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import synthetic_voice

from audiolm_pl.config import CONF_DIR
from audiolm_pl.semantic import FeatureSource, FramePipeline, KMeansConfig, fit_tokenizer, load_tokenizer
from audiolm_pl.semantic.ssl_lightning import SSLRunConfig, align_targets, sample_span_mask
from audiolm_pl.training import load_stage_config, train_stage


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, phone_shards):
    from audiolm_pl.semantic.corpus import iter_utterances

    root = tmp_path_factory.mktemp("ssl_corpus")
    train = shutil.copytree(phone_shards.train, root / "train")
    shutil.copytree(phone_shards.val, root / "val")
    wavs = [torch.from_numpy(u.wav) for u in iter_utterances(train)]
    mfcc = fit_tokenizer(FramePipeline(FeatureSource(kind="mel"), 50.0), wavs, KMeansConfig(num_clusters=20, batch_size=256, epochs=2))
    mfcc.save(root / "mfcc_v0.safetensors")
    return root


def overrides_for(root, **extra):
    values = {
        "targets.tokenizer": root / "mfcc_v0.safetensors",
        "data.train_shards": root / "train",
        "data.val_shards": root / "val",
        "data.batch_size": 2,
        "data.val_samples": 2,
        "trainer.output_dir": root / "runs",
        "trainer.enable_progress_bar": False,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "ssl").glob("*.yaml")))
def test_shipped_ssl_configs_load(name):
    config = load_stage_config("ssl", name, "cpu")
    assert isinstance(config, SSLRunConfig)
    stride = 1
    for s in config.model.conv_stride:
        stride *= s
    assert config.data.sample_rate / stride == 50.0  # tokenizers pool pairs to 25 Hz


def test_span_mask_and_target_alignment():
    frame_mask = torch.ones(3, 100, dtype=torch.bool)
    frame_mask[1, 60:] = False
    masked = sample_span_mask(frame_mask, 0.5, 10, torch.Generator().manual_seed(0))
    assert not masked[1, 60:].any()
    assert 0.2 < masked[0].float().mean() < 0.8
    ids = torch.tensor([[0, 1, 2]])  # 25 Hz
    assert align_targets(ids, 25.0, 50.0, 6).tolist() == [[0, 0, 1, 1, 2, 2]]


def test_fast_dev_run(tiny_corpus):
    extra = {"trainer.fast_dev_run": True, "targets.unmasked_weight": 0.5}
    config = load_stage_config("ssl", "tiny", "cpu", overrides_for(tiny_corpus, **extra))
    train_stage("ssl", config)
    assert config.model.num_targets == 20  # resolved from the target tokenizer


def test_ssl_checkpoint_becomes_tokenizer(tiny_corpus):
    from audiolm_pl.checkpoint import load_stage_checkpoint

    extra = {"trainer.max_steps": 3, "trainer.val_check_interval": 3, "trainer.limit_val_batches": 1, "trainer.run_name": "it1"}
    directory = train_stage("ssl", load_stage_config("ssl", "tiny", "cpu", overrides_for(tiny_corpus, **extra)))
    checkpoint = load_stage_checkpoint(directory, expected_stage="ssl")
    assert checkpoint.global_step == 3 and checkpoint.token_specs["targets"].vocab_size == 20
    source = FeatureSource(kind="ssl", path=str(directory), layer=1)
    wavs = [torch.from_numpy(synthetic_voice(140, 2.0, 16000, seed=i)) for i in range(3)]
    fit_tokenizer(FramePipeline(source, 25.0), wavs, KMeansConfig(num_clusters=8, batch_size=64, epochs=1)).save(tiny_corpus / "ssl_v1.safetensors")
    tokenizer = load_tokenizer(tiny_corpus / "ssl_v1.safetensors")
    assert tokenizer.encode(wavs[0][None, :16000]).shape == (1, 25)
