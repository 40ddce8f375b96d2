"""`data shards`: resampling, layouts, segmenting, bad inputs, atomic resumable writing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audiolm_pl.cli import main
from audiolm_pl.data import shards as shards_module
from audiolm_pl.data.shards import write_shards


def read_samples(out_dir: Path) -> dict[str, dict]:
    """Every sample of every shard: key -> {"audio": (T,), "rate": int, "meta": dict}."""
    samples: dict[str, dict] = {}
    for shard in sorted(out_dir.glob("audio-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.rpartition(".")
                entry = samples.setdefault(key, {})
                payload = tar.extractfile(member).read()
                if ext == "flac":
                    entry["audio"], entry["rate"] = soundfile.read(io.BytesIO(payload), dtype="float32")
                else:
                    entry["meta"] = json.loads(payload)
    return samples


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    root = tmp_path / "in"
    (root / "alice").mkdir(parents=True)
    (root / "bob").mkdir()
    soundfile.write(root / "alice" / "good.wav", tone(1.0, 16000), 16000)
    (root / "alice" / "good.txt").write_text("hello world")
    soundfile.write(root / "alice" / "stereo44k.wav", tone(0.5, 44100, channels=2), 44100)
    soundfile.write(root / "bob" / "narrow8k.flac", tone(0.75, 8000), 8000)
    (root / "bob" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio at all")
    (root / "bob" / "empty.flac").write_bytes(b"")
    nan_audio = tone(0.2, 16000)
    nan_audio[100] = np.nan
    soundfile.write(root / "bob" / "nan.wav", nan_audio, 16000, subtype="FLOAT")
    (root / "bob" / "notes.json").write_text("{}")  # not audio: ignored, not reported
    return root


def test_good_files_land_resampled_and_bad_ones_are_reported(messy_folder, tmp_path):
    out = tmp_path / "out"
    report = write_shards(messy_folder, out, sample_rate=16000, samples_per_shard=2, progress=False)
    samples = read_samples(out)
    assert sorted(samples) == ["alice/good", "alice/stereo44k", "bob/narrow8k"]
    lengths = {key: len(s["audio"]) for key, s in samples.items()}
    assert all(s["rate"] == 16000 and s["audio"].ndim == 1 for s in samples.values())
    assert lengths == {"alice/good": 16000, "alice/stereo44k": 8000, "bob/narrow8k": 12000}
    assert samples["alice/good"]["meta"]["text"] == "hello world"
    assert samples["bob/narrow8k"]["meta"]["speaker"] == "bob"
    # the 440 Hz tone survives resampling
    spectrum = np.abs(np.fft.rfft(samples["bob/narrow8k"]["audio"]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5

    reasons = {Path(entry["path"]).name: entry["reason"] for entry in json.loads((out / "report.json").read_text())["skipped"]}
    assert set(reasons) == {"corrupt.wav", "empty.flac", "nan.wav"}
    assert "empty file" in reasons["empty.flac"] and "NaN" in reasons["nan.wav"]
    assert "corrupt.wav: not audio" in reasons["corrupt.wav"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_samples"] == report.samples == 3
    assert manifest["sample_rate"] == 16000 and len(manifest["shards"]) == report.shards == 2
    assert manifest["total_hours"] == pytest.approx(2.25 / 3600, rel=1e-3)


def test_rerun_after_interruption_gives_the_same_manifest(messy_folder, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    write_shards(messy_folder, reference, samples_per_shard=1, progress=False)

    real_write = shards_module.write_one_shard
    calls = {"n": 0}

    def crash_on_second_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while shard 1 was being written
        return real_write(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(shards_module, "write_one_shard", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        write_shards(messy_folder, out, samples_per_shard=1, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == ["audio-000000.tar"]  # no half shard
    assert not (out / "manifest.json").exists()

    monkeypatch.setattr(shards_module, "write_one_shard", real_write)
    first_shard_mtime = (out / "audio-000000.tar").stat().st_mtime_ns
    write_shards(messy_folder, out, samples_per_shard=1, progress=False)
    assert (out / "audio-000000.tar").stat().st_mtime_ns == first_shard_mtime  # skipped, not redone
    assert (out / "manifest.json").read_text() == (reference / "manifest.json").read_text()
    assert read_samples(out).keys() == read_samples(reference).keys()
    for name in ("audio-000001.tar", "audio-000002.tar"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_long_files_are_segmented_with_phones_shifted(tmp_path):
    root = tmp_path / "in" / "carol"
    root.mkdir(parents=True)
    soundfile.write(root / "long.wav", tone(5.0, 16000), 16000)
    (root / "long.phones.json").write_text(json.dumps([[0.0, 1.0, "a"], [2.4, 2.6, "b"], [4.0, 5.0, "c"]]))
    out = tmp_path / "out"
    write_shards(tmp_path / "in", out, max_seconds=2.0, progress=False)
    samples = read_samples(out)
    assert sorted(samples) == ["carol/long-seg000", "carol/long-seg001", "carol/long-seg002"]
    assert [round(s["meta"]["duration"], 3) for s in samples.values()] == [1.667, 1.667, 1.667]
    middle = samples["carol/long-seg001"]["meta"]
    assert middle["offset"] == pytest.approx(1.6667, abs=1e-3)
    assert middle["phones"] == [[0.7333, 0.9333, "b"]]


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "in" / "19" / "198"
    chapter.mkdir(parents=True)
    soundfile.write(chapter / "19-198-0001.flac", tone(0.5, 16000), 16000)
    (chapter / "19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n")
    out = tmp_path / "out"
    write_shards(tmp_path / "in", out, progress=False)
    meta = read_samples(out)["19/198/19-198-0001"]["meta"]
    assert (meta["speaker"], meta["text"]) == ("19", "NORTHANGER ABBEY")


def test_cli_runs_and_reports(messy_folder, tmp_path, capsys):
    code = main(["data", "shards", str(messy_folder), str(tmp_path / "out"), "--samples-per-shard", "8", "--workers", "2"])
    printed = capsys.readouterr().out
    assert code == 0 and "wrote 3 samples" in printed and "skipped 3 file(s)" in printed


def test_missing_or_empty_input_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "shards", str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "absent does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "shards", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_brace_pattern_over_directories_and_mixed_token_specs(tmp_path):
    """`{speech,real}/train` names both directories' shards in brace order; their manifests must agree."""
    from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
    from audiolm_pl.data.shard_paths import manifest_for, resolve_shards

    def token_manifest(vocab: int) -> ShardManifest:
        spec = {"kind": "semantic", "sample_rate": 16000, "frame_rate": 25.0, "vocab_size": vocab, "num_quantizers": 1}
        return ShardManifest(content="tokens", sample_rate=16000,
                             shards=[ShardEntry(f"tokens-{index:06d}.tar", 0, 0.0) for index in range(2)],
                             token_specs={"semantic": spec, "acoustic": {**spec, "kind": "acoustic"}})

    for corpus in ("speech", "real"):
        directory = tmp_path / corpus / "train"
        directory.mkdir(parents=True)
        for index in range(2):
            (directory / f"tokens-{index:06d}.tar").write_bytes(b"")
        write_manifest(directory, token_manifest(100))
    pattern = str(tmp_path / "{speech,real}" / "train")
    found = resolve_shards(pattern)
    assert [Path(p).parent.parent.name for p in found] == ["speech", "speech", "real", "real"]
    assert manifest_for(pattern).token_specs["semantic"]["vocab_size"] == 100
    write_manifest(tmp_path / "real" / "train", token_manifest(50))
    with pytest.raises(ValueError, match=r"mixes shards of other token specs.*real/train"):
        manifest_for(pattern)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        resolve_shards(str(tmp_path / "{nothing,none}" / "train"))
