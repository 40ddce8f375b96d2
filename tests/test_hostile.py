"""Careless-user cases of issue 13 about inputs and arguments: a corrupt sample in a shard, bad `generate`
arguments, bad `data:` values, damaged or odd inputs to `data shards`, too many dataloader workers. Each goes
through the real command and checks the exit code, the one-line message and that nothing finished is lost.
A new feature adds its own hostile cases here."""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audiolm_pl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def error_line(err: str, command: str) -> str:
    """The CLI's one error line; no traceback."""
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith(f"audiolm-pl {command}: error:")]
    return line


def train_codec(shards: Path, out: Path, *overrides: str) -> int:
    return main(["train", "codec", "--config", "tiny", "--trainer", "cpu", f"data.train_shards={shards}",
                 f"data.val_shards={shards}", "data.batch_size=2", "data.val_samples=2", "data.shuffle_buffer=1",
                 "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                 "trainer.enable_progress_bar=false", f"trainer.output_dir={out}", *overrides])


def corrupt_members(shard_dir: Path, tmp_path: Path, keys: set[str] | None = None) -> Path:
    """A copy of `shard_dir` whose FLAC members of `keys` (all when None) are garbled after their magic bytes."""
    copy = tmp_path / "corrupt_shards"
    shutil.copytree(shard_dir, copy)
    for shard in sorted(copy.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
        with tarfile.open(shard, "w") as tar:
            for member, payload in members:
                key = member.name.rsplit(".", 1)[0]
                if member.name.endswith(".flac") and (keys is None or key in keys):
                    payload = b"fLaC" + bytes(range(256)) * 4  # a FLAC magic, then garbage
                    member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    return copy


# -- 3: a corrupt sample in a shard ------------------------------------------------------------------

def test_a_corrupt_flac_member_is_skipped_named_once_and_training_finishes(audio_shards, tmp_path, caplog):
    first_shard = sorted(audio_shards.train.glob("*.tar"))[0]
    with tarfile.open(first_shard) as tar:
        bad_key = sorted(name.rsplit(".", 1)[0] for name in tar.getnames() if name.endswith(".flac"))[0]
    shards = corrupt_members(audio_shards.train, tmp_path, {bad_key})
    with caplog.at_level(logging.WARNING, logger="audiolm_pl.data.stream"):
        assert train_codec(shards, tmp_path / "runs", "trainer.max_steps=6", "trainer.log_every_n_steps=1") == 0
    assert (tmp_path / "runs" / "codec" / "checkpoints" / "last.ckpt").exists()
    named = [record.getMessage() for record in caplog.records if bad_key in record.getMessage()]
    assert len(named) == 1, named  # training resamples the shard; the bad sample is named once
    assert f"{first_shard.name}:{bad_key}" in named[0] and "cannot decode" in named[0]
    from audiolm_pl.jobs.report import last_scalars

    skipped = last_scalars(tmp_path / "runs" / "codec", prefixes=("data/",))  # shown in the progress bar too
    assert skipped["data/bad_samples"] >= 1  # every read of the bad sample counts (training resamples shards)


def test_mostly_corrupt_shards_stop_with_one_line(audio_shards, tmp_path, capsys):
    shards = corrupt_members(audio_shards.train, tmp_path)
    assert train_codec(shards, tmp_path / "runs") == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "samples read were unreadable" in line and "data.max_bad_fraction=0.1" in line


def test_the_bad_share_threshold_is_a_data_setting(audio_shards, tmp_path):
    from audiolm_pl.data.stream import BadSample, BadSampleCounter, TooManyBadSamples

    counter = BadSampleCounter(max_bad_fraction=0.5)
    for index in range(40):  # every other sample bad: 50 %, not more
        counter.read()
        if index % 2:
            counter.skip(BadSample(f"shard.tar:key{index}"), f"shard.tar:key{index}")
    counter.read()
    with pytest.raises(TooManyBadSamples):
        counter.skip(BadSample("shard.tar:last"), "shard.tar:last")


# -- 4: generate checks its arguments before any work ----------------------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (["--seconds", "0"], "--seconds must be > 0; got 0"),
    (["--seconds", "-1"], "--seconds must be > 0; got -1"),
    (["--seconds", "600"], "pass --allow-long"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--task", "continue"], "--task continue needs --prompt"),
    (["--task", "continue", "--prompt", "missing.wav"], "--prompt missing.wav does not exist"),
    (["--out", "OUT_DIR"], "is a directory"),
    (["--out", "OUT_FILE/x.wav"], "is a file, not a folder"),
    (["--out", "OUT_DIR/sound.xyz"], "soundfile cannot write .xyz"),
])
def test_generate_refuses_bad_arguments_before_loading_anything(tmp_path, capsys, arguments, message):
    (tmp_path / "taken").write_text("keep me")
    arguments = [a.replace("OUT_DIR", str(tmp_path)).replace("OUT_FILE", str(tmp_path / "taken")) for a in arguments]
    base = {"--task": "unconditional", "--seconds": "1", "--out": str(tmp_path / "out.wav")}
    for flag, value in zip(arguments[::2], arguments[1::2]):
        base[flag] = value
    # the pipeline YAML does not exist: an error about it would mean the arguments were checked too late
    argv = ["generate", "--pipeline", str(tmp_path / "no_pipeline.yaml")] + [w for pair in base.items() for w in pair]
    assert main(argv) == 2
    assert message in error_line(capsys.readouterr().err, "generate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (tmp_path / "taken").read_text() == "keep me"


def test_generate_writes_whole_files_and_keeps_them_when_a_later_one_fails(tiny_run, tmp_path, capsys, monkeypatch):
    import audiolm_pl.plotting

    calls = []

    def png_that_fails_the_second_time(wav, sample_rate, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise ValueError("disk full while drawing")
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(audiolm_pl.plotting, "save_spectrogram_png", png_that_fails_the_second_time)
    out = tmp_path / "new" / "gen.wav"
    assert main(["generate", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--task", "unconditional",
                 "--seconds", "0.2", "--num-samples", "2", "--seed", "0", "--out", str(out)]) == 2
    assert "disk full" in error_line(capsys.readouterr().err, "generate")
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["gen-0.png", "gen-0.wav", "gen-1.wav"]  # both finished wavs kept, no temporary left
    assert soundfile.info(out.parent / "gen-1.wav").frames > 0


def test_generate_shows_a_progress_bar_per_stage(tiny_run, tmp_path, capsys):
    out = tmp_path / "gen.wav"
    assert main(["generate", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--task", "unconditional",
                 "--seconds", "0.2", "--seed", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for stage in ("semantic", "coarse", "fine"):
        assert f"{stage}: " in err and "tok" in err, err[-500:]  # tqdm: "coarse:  40%|####  | 8/20 [.., 9.1tok/s]"


def test_generation_from_python_shows_no_progress_unless_asked(capsys):
    import torch

    from audiolm_pl.lm.sampling import SamplingConfig, generate, show_progress, stage_progress
    from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM

    model = TransformerLM(TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=32), 11)
    prefix = torch.zeros(1, 1, dtype=torch.long)
    generate(model, prefix, 5, SamplingConfig())
    assert capsys.readouterr().err == ""  # a notebook or a script sees no bars by default
    with show_progress(), stage_progress("coarse"):
        generate(model, prefix, 5, SamplingConfig())
    assert "coarse: " in capsys.readouterr().err


# -- 6: config values, checked where declared ---------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "data.batch_size must be a positive integer; got 0"),
    ("data.batch_size=-3", "data.batch_size must be a positive integer; got -3"),
    ("data.crop_seconds=0", "data.crop_seconds must be > 0"),
    ("data.max_bad_fraction=2", "data.max_bad_fraction must be between 0 and 1"),
])
def test_bad_data_values_are_one_line_for_every_stage(audio_shards, tmp_path, capsys, override, message):
    assert train_codec(audio_shards.train, tmp_path / "runs", override) == 2
    assert message in error_line(capsys.readouterr().err, "train")
    assert main(["train", "semantic", "--config", "tiny", "--trainer", "cpu", override,
                 f"trainer.output_dir={tmp_path / 'runs'}"]) == 2
    assert message in error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "runs").exists()


def test_too_many_workers_is_refused_before_any_worker_starts(audio_shards, tmp_path, capsys):
    assert train_codec(audio_shards.train, tmp_path / "runs", "data.num_workers=5") == 2
    err = capsys.readouterr().err
    assert "set data.num_workers to at most 4" in error_line(err, "train")
    assert "DataLoader worker" not in err


# -- 6: data shards reports damaged and odd inputs -----------------------------------------------------------

def write_voice(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000, subtype="PCM_16")


def test_shards_report_truncated_files_folders_named_wav_and_symlink_loops(tmp_path, capsys):
    source = tmp_path / "in" / "spk"
    write_voice(source / "good.wav", 1.0)
    write_voice(source / "cut.wav", 1.0)
    whole = (source / "cut.wav").read_bytes()
    (source / "cut.wav").write_bytes(whole[: len(whole) // 2])  # a copy that stopped half way
    write_voice(source / "claims.wav", 1.0)
    claims = bytearray((source / "claims.wav").read_bytes())
    struct.pack_into("<I", claims, claims.find(b"data") + 4, 4 * 32000)  # header: 4 s; data: 1 s
    (source / "claims.wav").write_bytes(bytes(claims))
    (source / "folder.wav").mkdir()
    (source / "loop.wav").symlink_to(source / "loop.wav")
    (source / "back").symlink_to(source, target_is_directory=True)

    out = tmp_path / "shards"
    assert main(["data", "shards", str(tmp_path / "in"), str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    notes = {Path(entry["path"]).name: entry["note"] for entry in report["notes"]}
    assert sorted(notes) == ["claims.wav", "cut.wav"] and all("truncated" in note for note in notes.values())
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in report["skipped"]}
    assert "folder with an audio file's name" in skipped["folder.wav"]
    assert "symlink loop" in skipped["loop.wav"]
    assert "symlinked folder, not followed" in skipped["back"]
    assert "skipped 3 file(s), 2 kept with a note" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_samples"] == 3  # good, cut (its first half) and claims (its 1 s) are all kept
    assert manifest["total_seconds"] == pytest.approx(2.5, abs=0.01)


def test_long_files_are_segmented_by_default(tmp_path, capsys):
    write_voice(tmp_path / "in" / "spk" / "long.wav", 65.0)
    out = tmp_path / "shards"
    assert main(["data", "shards", str(tmp_path / "in"), str(out)]) == 0
    assert "files over 30 s cut into segments" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_samples"] == 3 and manifest["made_by"]["max_seconds"] == 30.0
    assert json.loads((out / "report.json").read_text())["max_seconds"] == 30.0
    whole = tmp_path / "whole"
    assert main(["data", "shards", str(tmp_path / "in"), str(whole), "--max-seconds", "0"]) == 0
    assert json.loads((whole / "manifest.json").read_text())["total_samples"] == 1


def test_zero_max_steps_is_one_line_before_anything_is_written(tmp_path, capsys):
    from audiolm_pl.cli import main

    code = main(["train", "codec", "--config", "tiny", f"trainer.output_dir={tmp_path}", "trainer.max_steps=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("trainer.max_steps must be a positive number of optimizer steps; got 0")
    assert not any(tmp_path.iterdir())  # no run directory, no checkpoint
