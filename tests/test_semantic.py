"""Semantic tokenizer: k-means, the feature sources, the tokenizer file; PNMI against torchmetrics."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from audiolm_pl.semantic import FeatureSource, FramePipeline, KMeansConfig, MiniBatchKMeans, fit_tokenizer, load_tokenizer
from audiolm_pl.semantic.features import MelConfig, fit_length, reduce_frames
from audiolm_pl.semantic.kmeans import assign


def blobs(num_centres=8, per_centre=500, dim=5, noise=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_centres, dim, generator=generator) * 5  # (K, D)
    labels = torch.arange(num_centres).repeat_interleave(per_centre)  # (N,)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels, centres


def test_kmeans_recovers_separated_blobs():
    frames, labels, centres = blobs()
    kmeans = MiniBatchKMeans(KMeansConfig(num_clusters=8, batch_size=256, epochs=4, init_samples=4000))
    centroids = kmeans.fit(frames)
    ids = assign(frames, centroids)
    # each true blob maps to exactly one cluster and vice versa
    pairs = set(zip(labels.tolist(), ids.tolist()))
    assert len(pairs) == 8 and len({i for _, i in pairs}) == 8
    assert kmeans.inertia_history[-1] < 5 * 0.1**2 * 1.5
    assert torch.cdist(centres, centroids).min(1).values.max() < 0.1


def test_kmeans_reseeds_empty_clusters():
    frames, _, _ = blobs(num_centres=4, per_centre=300)
    kmeans = MiniBatchKMeans(KMeansConfig(num_clusters=4, batch_size=1200, epochs=1))
    kmeans.initialise(frames, torch.Generator().manual_seed(0))
    kmeans.centroids[1] = 1e4  # a centre nobody is near
    counts, _ = kmeans.partial_fit(frames)
    assert counts[1] == 0
    moved = kmeans.reseed(counts, frames, torch.Generator().manual_seed(1))
    assert moved == 1 and kmeans.centroids[1].abs().max() < 100


def _ddp_worker(rank: int, world: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    frames, _, _ = blobs(seed=0)
    frames = frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))]
    shard = frames[rank::world][: 1500 + 200 * rank]  # unequal sizes per rank
    centroids = MiniBatchKMeans(KMeansConfig(num_clusters=8, batch_size=256, epochs=3)).fit(shard)
    results[rank] = centroids.clone()
    dist.destroy_process_group()


def test_kmeans_all_reduces_under_ddp(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert torch.equal(results[0], results[1])  # both ranks hold the same centres
    frames, labels, _ = blobs(seed=0)
    assert len(set(zip(labels.tolist(), assign(frames, results[0]).tolist()))) == 8


def test_pooling_and_length():
    features = torch.arange(10.0).reshape(1, 5, 2)  # (B, T, D)
    pooled = reduce_frames(features, 2)
    assert pooled.shape == (1, 3, 2) and torch.equal(pooled[0, 0], torch.tensor([1.0, 2.0]))
    assert fit_length(pooled, 4).shape == (1, 4, 2) and torch.equal(fit_length(pooled, 4)[0, 3], pooled[0, 2])
    assert fit_length(pooled, 2).shape == (1, 2, 2)


# -- the three sources -----------------------------------------------------------------------

CONV = dict(conv_dim=(16, 16, 16, 16), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4))  # 320 -> 50 Hz
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def save_tiny_hf(kind: str, directory):
    """A random-initialised HuBERT / wav2vec 2.0 / Wav2Vec2-BERT saved with save_pretrained (offline)."""
    from transformers import (
        HubertConfig,
        HubertModel,
        SeamlessM4TFeatureExtractor,
        Wav2Vec2BertConfig,
        Wav2Vec2BertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(0)
    common = dict(TINY, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    if kind == "hubert":
        model = HubertModel(HubertConfig(**common, **CONV))
    elif kind == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**common, **CONV))
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    else:
        config = Wav2Vec2BertConfig(**TINY, output_hidden_size=32, conv_depthwise_kernel_size=3, feature_projection_input_dim=160)
        model = Wav2Vec2BertModel(config)
        SeamlessM4TFeatureExtractor().save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def save_tiny_ssl_checkpoint(path):
    """What `audiolm-pl train ssl` writes, minus the optimiser: hyper-parameters + `model.` weights."""
    from audiolm_pl.config import to_dict
    from audiolm_pl.semantic.ssl_model import SSLModel, SSLModelConfig

    torch.manual_seed(0)
    config = SSLModelConfig(num_targets=16)
    model = SSLModel(config)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"stage": "ssl", "config": {"model": to_dict(config)}}, "state_dict": state}, path)
    return path


def speechlike(seconds=1.3, batch=2):
    from conftest import synthetic_voice

    return torch.stack([torch.from_numpy(synthetic_voice(120 + 60 * b, seconds, 16000, seed=b)) for b in range(batch)])


SOURCES = ["mel", "logmel", "hf:hubert", "hf:wav2vec2", "hf:wav2vec2-bert", "ssl"]


def make_source(name: str, tmp_path) -> FeatureSource:
    if name == "mel":
        return FeatureSource(kind="mel")
    if name == "logmel":
        return FeatureSource(kind="mel", mel=MelConfig(kind="logmel", deltas=False))
    if name == "ssl":
        return FeatureSource(kind="ssl", path=str(save_tiny_ssl_checkpoint(tmp_path / "ssl.ckpt")), layer=1)
    kind = name.split(":")[1]
    return FeatureSource(kind="hf", path=str(save_tiny_hf(kind, tmp_path / kind)), layer=1)


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_gives_declared_rate_and_vocab(name, tmp_path):
    source = make_source(name, tmp_path)
    wav = speechlike()  # (2, 20800): 1.3 s -> 32 ids at 25 Hz
    wavs = [speechlike(seconds=2.0, batch=3)[i] for i in range(3)]
    tokenizer = fit_tokenizer(FramePipeline(source, 25.0), wavs, KMeansConfig(num_clusters=12, batch_size=64, epochs=2))
    ids = tokenizer.encode(wav)
    native = tokenizer.frames.extractor(wav).shape[1]  # 50 Hz before pooling: ~65 frames, not stretched
    assert abs(native - 65) <= 2 and tokenizer.frames.extractor.frame_rate == 50.0
    assert ids.shape == (2, 32) and ids.dtype == torch.int64
    assert tokenizer.frame_rate == 25.0 and tokenizer.sample_rate == 16000 and tokenizer.vocab_size == 12
    assert 0 <= int(ids.min()) and int(ids.max()) < 12 and ids.unique().numel() > 1
    tokenizer.save(tmp_path / "tok.safetensors")
    loaded = load_tokenizer(tmp_path / "tok.safetensors")
    assert torch.equal(loaded.encode(wav), ids)
    # a source beside the tokenizer file is recorded relative to it, so the two move together
    assert dataclasses.replace(loaded.source, path=source.path) == source and loaded.token_spec == tokenizer.token_spec
    assert loaded.source.path == (os.path.relpath(source.path, tmp_path) if source.path else "")


def test_missing_source_is_named(tmp_path):
    source = make_source("hf:hubert", tmp_path)
    wavs = [speechlike(seconds=2.0, batch=1)[0]]
    fit_tokenizer(FramePipeline(source, 25.0), wavs, KMeansConfig(num_clusters=4, batch_size=64, epochs=1)).save(tmp_path / "t.safetensors")
    import shutil

    shutil.rmtree(tmp_path / "hubert")
    with pytest.raises(FileNotFoundError, match="hubert"):
        load_tokenizer(tmp_path / "t.safetensors")


def test_frame_rate_must_divide_native_rate():
    with pytest.raises(ValueError, match="whole number"):
        FramePipeline(FeatureSource(), 30.0)


# -- token quality ---------------------------------------------------------------------------

def test_pnmi_is_torchmetrics_mutual_information_over_phone_entropy():
    """PNMI = I(phone; id) / H(phone) (HuBERT), which is the homogeneity of the ids with phones as classes."""
    from torchmetrics.functional.clustering import homogeneity_score, mutual_info_score

    from audiolm_pl.semantic.metrics import scores_from_counts

    generator = torch.Generator().manual_seed(0)
    phones = torch.randint(0, 7, (3000,), generator=generator)  # (N,) frame labels
    noisy = torch.rand(3000, generator=generator) < 0.4
    ids = torch.where(noisy, torch.randint(0, 13, (3000,), generator=generator), 2 * phones)  # (N,) 60% phonetic
    counts = torch.zeros(7, 13).index_put_((phones, ids), torch.ones(3000), accumulate=True)  # (P, K)
    pnmi, _, _ = scores_from_counts(counts)
    p_phone = torch.bincount(phones).double() / len(phones)
    phone_entropy = -(p_phone * p_phone.log()).sum()
    assert pnmi == pytest.approx(float(mutual_info_score(ids, phones) / phone_entropy), rel=1e-5)
    assert pnmi == pytest.approx(float(homogeneity_score(ids, phones)), rel=1e-5)
    assert 0.3 < pnmi < 0.9  # partly phonetic ids: neither end of the scale
