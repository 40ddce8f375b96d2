"""The frame-domain codec (ConvNeXt at 50 Hz + inverse STFT + residual FSQ), the codec registry, and
`CodecModule` training (GAN, validation figures, media, EMA checkpoint) and the codec CLI on it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl import registry
from audiolm_pl.codec import FrameCodec, load_codec
from audiolm_pl.codec.fsq import FactorisedResidualFSQ, FSQConfig
from audiolm_pl.codec.lightning import FrameCodecRunConfig, SoundStreamRunConfig
from audiolm_pl.config import ConfigError
from audiolm_pl.training import load_stage_config, train_stage

# FSQ runs many tiny kernels: on a shared CPU one thread is far faster than two
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_frame_codec(untrained_codec) -> FrameCodec:
    return untrained_codec("tiny")


def test_encode_decode_shapes_and_frame_rate(tiny_frame_codec):
    codec = tiny_frame_codec
    wav = torch.randn(3, 16000 + 100) * 0.1  # 1 s + a partial frame
    codes = codec.encode(wav)
    assert codec.frame_rate == 50.0 and codec.codebook_size == 64 and codec.num_quantizers == 4
    assert codes.shape == (3, 51, 4) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < 64
    outputs = [codec.decode(codes[:, :, :n]) for n in (1, 2, 4)]
    assert all(out.shape == (3, 51 * 320) for out in outputs)
    assert not torch.allclose(outputs[0], outputs[2])  # each level adds detail
    assert torch.equal(codec.decode(codes), codec.decode_latents(codec.quantizer.decode(codes)))
    with pytest.raises(ValueError, match="1 <= q <= 4"):
        codec.decode(torch.zeros(1, 25, 5, dtype=torch.long))


def test_synthesis_inverts_analysis_framing(tiny_frame_codec):
    """A head that states the true log-magnitude and phase of each sub-frame gives the waveform back:
    the STFT framing of both sides lines up (sub-frame order, the dropped last frame, padding)."""
    codec = tiny_frame_codec
    wav = torch.randn(2, 32 * 320) * 0.01  # 32 token frames, log-magnitudes far below the soft ceiling
    config, bins = codec.config, codec.config.n_fft // 2 + 1
    spec = torch.stft(wav, config.n_fft, codec.stft_hop, window=codec.window, return_complex=True)[:, :, :-1]  # (B, bins, T_a * S)
    head = torch.stack([spec.abs().clamp_min(1e-7).log(), spec.angle()], dim=2)  # (B, bins, 2, T_a * S)
    head = head.permute(0, 3, 2, 1).reshape(2, 32, config.subframes * 2 * bins)  # (B, T_a, S * 2 * bins)
    out = codec.synthesis(head)
    assert out.shape == wav.shape
    # the last n_fft / 2 samples lean on the centred frame past the end, which the codec does not predict
    torch.testing.assert_close(out[:, : -config.n_fft], wav[:, : -config.n_fft], atol=1e-5, rtol=1e-3)
    logmag = codec.analysis(wav)  # (B, T_a, S * bins): sub-frame s of frame t is STFT frame t * S + s
    torch.testing.assert_close(logmag[:, 5, bins : 2 * bins], spec[:, :, 5 * config.subframes + 1].abs().clamp_min(1e-5).log())


def test_fsq_levels_each_refine_the_residual():
    """Trained on random latents, more levels reconstruct better, and every code stays in range."""
    torch.manual_seed(0)
    quantizer = FactorisedResidualFSQ(16, FSQConfig(num_quantizers=4, levels=[5, 5, 5], quantizer_dropout=False))
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    for _ in range(200):
        latents = torch.randn(8, 20, 16)
        loss = (quantizer(latents).latents - latents).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    latents = torch.randn(4, 50, 16)
    codes = quantizer.encode(latents)
    assert codes.shape == (4, 50, 4) and codes.min() >= 0 and codes.max() < 125
    with torch.no_grad():
        errors = [float((quantizer.decode(codes[:, :, :n]) - latents).pow(2).mean()) for n in (1, 2, 3, 4)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.6 * errors[0]  # later levels reach directions the first one cannot


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_fsq_dropout_probability_sets_share_of_steps_with_every_level(probability):
    quantizer = FactorisedResidualFSQ(8, FSQConfig(num_quantizers=6, levels=[3, 3], quantizer_dropout_probability=probability)).train()
    torch.manual_seed(0)
    full = sum(bool((quantizer(torch.randn(2, 10, 8)).codes >= 0).all()) for _ in range(300)) / 300
    assert full == pytest.approx(1 - probability + probability / 6, abs=0.07)  # a dropped step keeps all 6 with chance 1/6
    assert (quantizer.eval()(torch.randn(2, 10, 8)).codes >= 0).all()  # never dropped outside training


def test_model_kind_selects_the_codec_class(tmp_path):
    assert isinstance(load_stage_config("codec", "tiny"), FrameCodecRunConfig)
    assert isinstance(load_stage_config("codec", "soundstream_tiny"), SoundStreamRunConfig)
    assert isinstance(load_stage_config("codec", "paper"), SoundStreamRunConfig)
    for kind, entry in registry.CODECS.items():  # each run config's model block declares its own kind
        assert entry.run_config_class()().model.kind == kind
    with pytest.raises(ValueError, match=r"unknown codec kind 'nope'.*\['frame', 'soundstream'\]"):
        load_stage_config("codec", "tiny", overrides=["model.kind=nope"])
    with pytest.raises(ConfigError, match="model.strides"):  # a SoundStream key is not a frame-codec key
        load_stage_config("codec", "tiny", overrides=["model.strides=[2,4]"])


@pytest.fixture(scope="module")
def trained_frame_codec(audio_shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("frame_codec_run")
    config = load_stage_config("codec", "tiny", "cpu", [
        f"data.train_shards={audio_shards.train}", f"data.val_shards={audio_shards.val}", "trainer.max_steps=6",
        "trainer.val_check_interval=3", f"trainer.output_dir={run}", "trainer.run_name=codec",
        "loss.stft=1.0", "loss.complex_stft=0.5", "loss.adversarial=1.0", "loss.feature_matching=2.0",
        "loss.discriminator_start=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
    ])
    return train_stage("codec", config)


def test_frame_codec_trains_through_the_codec_module(trained_frame_codec):
    from conftest import assert_run_logged

    assert_run_logged(trained_frame_codec, (
        "train/mel", "train/stft", "train/complex_stft", "train/adversarial", "train/feature_matching",
        "train/discriminator", "val/mel_distance_q4", "val/si_sdr_q1", "val/codebook_usage_q3",
        "val/codebook_perplexity_q0", "val/codebook_usage_min", "val/stoi_q4"))
    codec = load_codec(trained_frame_codec)
    assert isinstance(codec, FrameCodec) and not codec.training
    raw = torch.load(trained_frame_codec / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema = raw["state_dict"]["ema_model.module.decoder.out.weight"]
    assert torch.equal(codec.decoder.out.weight, ema)  # load_codec takes the EMA generator


def test_no_discriminator_when_its_weights_are_zero(audio_shards, tmp_path):
    from audiolm_pl.jobs.report import last_scalars

    config = load_stage_config("codec", "tiny", "cpu", [
        f"data.train_shards={audio_shards.train}", f"data.val_shards={audio_shards.val}", "trainer.max_steps=3",
        f"trainer.output_dir={tmp_path}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
    ])
    assert config.loss.adversarial == 0 and config.loss.feature_matching == 0
    figures = last_scalars(train_stage("codec", config))
    assert "train/mel" in figures and "train/discriminator" not in figures and figures["step"] >= 2


def test_cli_roundtrip_encode_decode(trained_frame_codec, tmp_path, capsys):
    from audiolm_pl.cli import main

    source = tmp_path / "in.wav"
    soundfile.write(source, (0.3 * np.sin(np.arange(12000) / 10)).astype("float32"), 22050)  # resampled on read
    assert main(["codec", "roundtrip", str(trained_frame_codec), str(source), str(tmp_path / "rt.wav"), "--quantizers", "2"]) == 0
    wav, rate = soundfile.read(tmp_path / "rt.wav")
    assert rate == 16000 and abs(len(wav) - round(12000 * 16000 / 22050)) <= 1
    assert main(["codec", "encode", str(trained_frame_codec), str(source), str(tmp_path / "c.safetensors")]) == 0
    assert main(["codec", "decode", str(trained_frame_codec), str(tmp_path / "c.safetensors"), str(tmp_path / "d.wav")]) == 0
    assert "2 of 4 quantizers" in capsys.readouterr().out
    assert main(["codec", "roundtrip", str(trained_frame_codec), str(source), str(tmp_path / "x.wav"), "--quantizers", "9"]) == 2


def test_discriminator_start_counts_restored_generator_steps():
    """The start of GAN training is read from the generator-step buffer once (not every step: a GPU sync), so a
    resume that restores the buffer must be seen: a run resumed past `discriminator_start` trains the discriminator."""
    from audiolm_pl.codec.lightning import CodecModule

    config = load_stage_config("codec", "tiny", overrides=["loss.adversarial=1.0", "loss.discriminator_start=2"])
    module = CodecModule(config)
    assert not module.discriminator_active  # step 0 of 2
    state = {"generator_steps": torch.tensor(5)}
    module.load_state_dict({**module.state_dict(), **state})
    module.on_load_checkpoint({})  # what Lightning calls when it restores a checkpoint
    assert module.discriminator_active
