"""Codec (SoundStream; the frame codec has tests/test_frame_codec.py): shapes, frame rate, causality,
lower bitrates, gradients through the quantizer, codebook usage over ranks; SoundStream training (slow:
the frame codec's tests train the same `CodecModule` in the default run)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl.codec import SoundStream, load_codec
from audiolm_pl.codec.lightning import CodecRunConfig, check_dead_code_threshold
from audiolm_pl.codec.metrics import CodebookUsage
from audiolm_pl.codec.quantizer import QuantizerConfig, ResidualQuantizer
from audiolm_pl.config import CONF_DIR, load_config
from audiolm_pl.training import load_stage_config, train_stage


@pytest.fixture
def tiny_codec(untrained_codec) -> SoundStream:
    return untrained_codec("soundstream_tiny")


def test_encode_decode_shapes_and_frame_rate(tiny_codec):
    codec = tiny_codec
    wav = torch.randn(3, 16000 + 100) * 0.1  # 1 s + a partial frame
    codes = codec.encode(wav)
    assert codec.frame_rate == 50.0 and codec.token_spec.samples_per_frame == 320
    assert codes.shape == (3, 51, 4) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < codec.codebook_size
    assert codec.decode(codes).shape == (3, 51 * 320)
    latents = codec.encode_latents(wav)  # the unquantized path, the autoencoder's own ceiling
    assert latents.shape == (3, 51, codec.config.latent_dim)
    assert torch.equal(codec.decode(codes), codec.decode_latents(codec.quantizer.decode(codes)))
    assert codec.decode_latents(latents).shape == (3, 51 * 320)


def test_fewer_quantizers_decode_and_differ(tiny_codec):
    codec = tiny_codec
    # 200 frames for 64 codes: k-means initialisation cannot fit every frame with level 1 alone
    codes = codec.encode(torch.randn(1, 64000) * 0.1)
    outputs = [codec.decode(codes[:, :, :n]) for n in (1, 2, 4)]
    assert all(out.shape == (1, 64000) for out in outputs)
    assert not torch.allclose(outputs[0], outputs[2])  # each level adds detail
    with pytest.raises(ValueError, match="1 <= q <= 4"):
        codec.decode(torch.zeros(1, 25, 5, dtype=torch.long))


def test_encoder_and_decoder_are_causal(tiny_codec):
    codec = tiny_codec
    wav = torch.randn(1, 6400, requires_grad=True)
    latents = codec.encoder(wav)  # (1, D, 20)
    latents[0, :, 9].sum().backward()  # frame 9 covers samples [2880, 3200)
    assert torch.all(wav.grad[0, 3200:] == 0) and wav.grad[0, :3200].abs().sum() > 0
    z = torch.randn(1, codec.config.latent_dim, 20, requires_grad=True)
    codec.decoder(z)[0, :320 * 5].sum().backward()  # samples of the first 5 frames
    assert torch.all(z.grad[0, :, 5:] == 0)


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_quantizer_dropout_probability_sets_share_of_steps_with_every_level(probability):
    config = QuantizerConfig(num_quantizers=6, codebook_size=16, kmeans_init=False, dead_code_threshold=0.0,
                             quantizer_dropout_probability=probability)
    quantizer = ResidualQuantizer(8, config).train()
    torch.manual_seed(0)
    steps = 600
    full = sum(bool((quantizer(torch.randn(2, 10, 8)).codes >= 0).all()) for _ in range(steps)) / steps
    # a dropped step keeps all 6 levels with chance 1/6
    assert full == pytest.approx(1 - probability + probability / 6, abs=0.06)
    codes = quantizer.eval().encode(torch.randn(1, 10, 8))
    assert quantizer.decode(codes[:, :, :2]).shape == (1, 10, 8)  # fewer levels still decode afterwards


def test_training_forward_passes_gradients_through_the_quantizer(tiny_codec):
    """Straight-through: the reconstruction loss reaches the encoder, the commitment loss is a live term."""
    codec = tiny_codec.train()
    out = codec(torch.randn(2, 3200) * 0.1)
    assert out.wav.shape == (2, 3200) and out.codes.shape == (2, 10, 4)
    (out.wav.pow(2).mean() + out.commitment_loss).backward()
    first_conv = next(codec.encoder.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert torch.isfinite(out.commitment_loss) and out.commitment_loss.requires_grad


def test_codebook_usage_and_perplexity():
    usage = CodebookUsage(num_quantizers=2, codebook_size=4)
    usage.update(torch.tensor([[[0, -1], [1, 2], [2, 2], [3, 2]]]))  # (B=1, T=4, Q=2); -1 = dropped
    stats = usage.compute()
    assert stats.usage.tolist() == [1.0, 0.25]
    assert stats.perplexity.tolist() == pytest.approx([4.0, 1.0])


def _rank_metrics(codes: torch.Tensor) -> tuple[CodebookUsage, CodebookUsage]:
    """Two "ranks" that each saw half of the batch."""
    ranks = CodebookUsage(3, 16), CodebookUsage(3, 16)
    ranks[0].update(codes[:2])
    ranks[1].update(codes[2:])
    return ranks


def test_codebook_usage_sums_ranks_before_computing():
    codes = torch.randint(0, 16, (4, 8, 3), generator=torch.Generator().manual_seed(0))  # (B, T_a, Q)
    codes[:, :, 0] = torch.arange(32).view(4, 8) // 2  # level 0: rank 0 sees codes 0-7, rank 1 codes 8-15
    everything = CodebookUsage(3, 16)
    everything.update(codes)
    expected = everything.compute()
    assert expected.usage[0] == 1.0

    alone, _ = _rank_metrics(codes)
    assert alone.compute().usage[0] == 0.5  # what rank 0 would log on its own
    merged, other = _rank_metrics(codes)
    merged.merge_state(other)
    assert torch.equal(merged.counts, everything.counts)
    torch.testing.assert_close(merged.compute().usage, expected.usage)
    torch.testing.assert_close(merged.compute().perplexity, expected.perplexity)

    # what compute() does under DDP: gather every rank's histogram, reduce it with dist_reduce_fx, compute
    other = CodebookUsage(3, 16)
    other.update(codes[2:])
    rank0 = CodebookUsage(3, 16, dist_sync_fn=lambda state, group=None: [state, other.counts],
                          distributed_available_fn=lambda: True)
    rank0.update(codes[:2])
    torch.testing.assert_close(rank0.compute().perplexity, expected.perplexity)
    assert rank0.compute().usage.tolist() == expected.usage.tolist()


@pytest.mark.parametrize("size", ["soundstream_tiny", "soundstream_small", "paper"])
def test_dead_code_threshold_below_mean_count_per_code(size):
    config = load_config(CodecRunConfig, CONF_DIR / "codec" / f"{size}.yaml")
    check_dead_code_threshold(config)  # every shipped config keeps its codebooks settled on one device
    config.data.batch_size = 1
    config.model.quantizer.dead_code_threshold = 1.0
    with pytest.raises(ValueError, match=r"model.quantizer.dead_code_threshold=1.0 .*data.batch_size=1"):
        check_dead_code_threshold(config)
    check_dead_code_threshold(config, world_size=10_000)  # codebooks sync over ranks: frames add up


@pytest.fixture(scope="module")
def trained_soundstream(audio_shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("codec_run")
    config = load_stage_config("codec", "soundstream_tiny", "cpu", [
        f"data.train_shards={audio_shards.train}", f"data.val_shards={audio_shards.val}", "trainer.max_steps=8",
        "trainer.val_check_interval=4", f"trainer.output_dir={run}", "trainer.run_name=codec", "loss.discriminator_start=2",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
    ])
    return train_stage("codec", config)


@pytest.mark.slow
def test_soundstream_training_logs_gan_and_codebook_figures(trained_soundstream):
    from conftest import assert_run_logged

    assert_run_logged(trained_soundstream, (
        "train/mel", "train/commitment", "train/adversarial", "train/feature_matching", "train/discriminator",
        "val/si_sdr_q4", "val/mel_distance_q1", "val/codebook_usage_q3", "val/codebook_perplexity_q0", "val/stoi_q4"))


@pytest.mark.slow
def test_soundstream_checkpoint_loads_weights_only_with_ema_and_spec(trained_soundstream):
    raw = torch.load(trained_soundstream / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["token_specs"]["acoustic"]["vocab_size"] == 64
    codec = load_codec(trained_soundstream)
    ema = {k[len("ema_model.module."):]: v for k, v in raw["state_dict"].items() if k.startswith("ema_model.module.")}
    assert torch.equal(codec.state_dict()["decoder.net.0.conv.parametrizations.weight.original1"],
                       ema["decoder.net.0.conv.parametrizations.weight.original1"])
    assert not codec.training
