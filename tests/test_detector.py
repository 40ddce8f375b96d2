"""The generated-audio detector: synthetic shards from a codec, training through the registry, `detect`.

The learning test gives the detector a case it must separate (real voices vs the same voices low-passed at
2 kHz, which removes the noise floor above it) and requires held-out accuracy near 1 after a few dozen steps:
a detector that does not learn, a label swapped between the sets, or a pooling that reads the padding fails it.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl import registry
from audiolm_pl.config import CONF_DIR
from audiolm_pl.data.manifest import read_manifest
from audiolm_pl.data.shard_io import ShardWriter, iter_samples
from audiolm_pl.detector.shards import generated_shards, resynthesize, resynthesize_shards
from audiolm_pl.training import load_stage_config
from conftest import make_codec


def low_passed(audio: np.ndarray, sample_rate: int, cutoff: float = 2000.0) -> np.ndarray:
    """A brick-wall low-pass (FFT bins above `cutoff` zeroed)."""
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / sample_rate) > cutoff] = 0
    return np.fft.irfft(spectrum, len(audio)).astype(np.float32)


def write_low_passed(source, out):
    """Every sample of the audio shards `source`, low-passed, as shards in `out` (one per input shard)."""
    out.mkdir(parents=True)
    for index, shard in enumerate(sorted(source.glob("*.tar"))):
        with ShardWriter(out / f"low-{index:06d}.tar") as writer:
            for sample in iter_samples(shard, 16000):
                writer.write_sample(sample.key, sample.meta, audio=low_passed(sample.audio, 16000), sample_rate=16000)
    return out


def test_codec_resynthesis_shards_keep_keys_lengths_and_resume(audio_shards, tmp_path):
    codec, codec_path = make_codec(tmp_path)
    out = tmp_path / "detector" / "codec"
    report = resynthesize_shards(codec, audio_shards.val, out, codec_hash="abc")
    real = list(iter_samples(audio_shards.val, 16000))
    fake = list(iter_samples(out, 16000))
    assert report.shards_written == 1 and report.samples == len(real) == len(fake) == 4
    assert [s.key for s in fake] == [s.key for s in real]
    assert all(len(f.audio) == len(r.audio) and f.meta["synthetic"] == "codec" for f, r in zip(fake, real))
    first = resynthesize(codec, torch.from_numpy(real[0].audio)).numpy()
    assert np.abs(fake[0].audio - first).max() < 1e-3  # the codec's round trip, up to 16-bit FLAC rounding
    assert np.abs(fake[0].audio - real[0].audio).max() > 1e-2  # and not the input copied
    manifest = read_manifest(out)
    assert manifest.total_samples == 4 and manifest.made_by["codec_hash"] == "abc"
    again = resynthesize_shards(codec, audio_shards.val, out, codec_hash="abc")
    assert (again.shards_written, again.shards_skipped) == (0, 1)
    with pytest.raises(ValueError, match="was written by"):
        resynthesize_shards(codec, audio_shards.val, out, codec_hash="another")


def test_generated_shards_drop_the_prompt(tmp_path):
    folder = tmp_path / "generated"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.full(16000 * 2, 0.1, np.float32), 16000)
    soundfile.write(folder / "a.png", np.zeros(10), 16000, format="WAV")  # not audio by name: passed over
    report = generated_shards(folder, tmp_path / "out", 16000, skip_seconds=1.5)
    (sample,) = list(iter_samples(tmp_path / "out", 16000))
    assert report.samples == 1 and len(sample.audio) == 8000 and sample.meta["synthetic"] == "generated"


@pytest.fixture(scope="module")
def low_pass_shards(audio_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("low_pass")
    return write_low_passed(audio_shards.train, root / "train"), write_low_passed(audio_shards.val, root / "val")


def test_detector_trains_through_the_cli_and_separates_an_easy_case(audio_shards, low_pass_shards, tmp_path, capsys):
    from audiolm_pl.cli import main
    from audiolm_pl.jobs.report import last_scalars

    torch.manual_seed(0)
    overrides = [f"data.real_train_shards={audio_shards.train}", f"data.synthetic_train_shards={low_pass_shards[0]}",
                 f"data.real_val_shards={audio_shards.val}", f"data.synthetic_val_shards={low_pass_shards[1]}",
                 "trainer.max_steps=30", "trainer.val_check_interval=30", "trainer.checkpoint_every_n_steps=0",
                 "trainer.enable_progress_bar=false", f"trainer.output_dir={tmp_path}", "trainer.accelerator=cpu"]
    assert main(["train", "detector", "--config", "tiny", *overrides]) == 0
    run = tmp_path / "detector"
    figures = last_scalars(run)
    assert {"train/loss", "train/accuracy", "val/loss", "val/real_accuracy", "val/synthetic_accuracy"} <= set(figures)
    assert figures["val/accuracy"] >= 0.9, figures  # held-out speaker, both classes
    assert min(figures["val/real_accuracy"], figures["val/synthetic_accuracy"]) >= 0.8, figures

    val = next(iter_samples(audio_shards.val, 16000))
    real, fake = tmp_path / "real.wav", tmp_path / "fake.wav"
    soundfile.write(real, val.audio, 16000)
    soundfile.write(fake, low_passed(val.audio, 16000), 16000)
    capsys.readouterr()
    assert main(["detect", str(run), str(real), str(fake)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(real), str(fake)]
    p_real, p_fake = (float(line.split("\t")[1]) for line in lines)
    assert 0 <= p_real < 0.5 < p_fake <= 1, lines
    assert main(["detect", str(run), str(tmp_path / "missing.wav")]) == 2


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONF_DIR / "detector").glob("*.yaml")))
def test_shipped_detector_config_builds_and_judges_a_crop(name, audio_shards):
    shards = [f"data.real_train_shards={audio_shards.train}", f"data.synthetic_train_shards={audio_shards.train}",
              f"data.real_val_shards={audio_shards.val}", f"data.synthetic_val_shards={audio_shards.val}"]
    config = load_stage_config("detector", name, "cpu", shards)
    module, datamodule = registry.get_stage("detector").build(config)
    crop = torch.randn(2, int(config.data.crop_seconds * 16000)) * 0.1
    mask = torch.ones_like(crop, dtype=torch.bool)
    mask[1, crop.shape[1] // 2 :] = False
    crop[1, crop.shape[1] // 2 :] = 0
    logits = module.model.eval()(crop, mask)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    # pooling reads only the frames over audio: the first half of the second clip's
    frames = 8
    weights = module.model._frame_weights(mask, crop.shape[1], frames, torch.float32, "cpu")  # (2, 1, frames)
    assert weights[0].sum() == frames and weights[1, 0].tolist() == [1.0] * (frames // 2) + [0.0] * (frames // 2)
    assert datamodule.config.batch_size % 2 == 0


def test_odd_batch_is_refused():
    from audiolm_pl.detector.data import DetectorDataConfig

    with pytest.raises(ValueError, match="even"):
        DetectorDataConfig(batch_size=7)
