"""Careless-user cases of issue 13 about identity and place: another producer of the same token spec,
outputs read from another directory or after a move, a torn `last.ckpt`, two trainings in one run
directory. Each goes through the real command and checks the exit code, the one-line message and
that nothing finished is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl.cli import main

from conftest import make_codec

pytestmark = pytest.mark.usefixtures("one_thread")


def error_line(err: str, command: str) -> str:
    """The CLI's one error line; no traceback."""
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith(f"audiolm-pl {command}: error:")]
    return line


def generate(pipeline, out, *overrides) -> int:
    return main(["generate", "--pipeline", str(pipeline), "--task", "unconditional", "--seconds", "0.2",
                 "--seed", "0", "--out", str(out), *overrides])


# -- 1: a producer with the same TokenSpec but other ids --------------------------------------------

def test_a_tokenizer_whose_feature_model_was_replaced_at_the_same_path_has_another_identity(tmp_path):
    from audiolm_pl.config import to_dict
    from audiolm_pl.semantic import load_tokenizer
    from audiolm_pl.semantic.features import FeatureSource
    from audiolm_pl.semantic.kmeans import KMeansConfig
    from audiolm_pl.semantic.ssl_model import SSLModel, SSLModelConfig
    from audiolm_pl.semantic.tokenizer import FramePipeline, fit_tokenizer

    def save_ssl(seed: int) -> Path:  # what `audiolm-pl train ssl` writes, minus the optimiser
        torch.manual_seed(seed)
        config = SSLModelConfig(num_targets=16)
        state = {f"model.{k}": v for k, v in SSLModel(config).state_dict().items()}
        path = tmp_path / "ssl.ckpt"
        torch.save({"hyper_parameters": {"stage": "ssl", "config": {"model": to_dict(config)}}, "state_dict": state}, path)
        return path

    source = FeatureSource(kind="ssl", path=str(save_ssl(0)), layer=1)
    wavs = [torch.randn(16000) * 0.1 for _ in range(2)]
    fit_tokenizer(FramePipeline(source, 25.0), wavs, KMeansConfig(num_clusters=4, batch_size=32, epochs=1)).save(
        tmp_path / "tok.safetensors")
    before = load_tokenizer(tmp_path / "tok.safetensors").identity()
    assert load_tokenizer(tmp_path / "tok.safetensors").identity() == before  # the same files: the same identity
    save_ssl(1)  # the SSL model retrained in place; the tokenizer file is untouched
    assert load_tokenizer(tmp_path / "tok.safetensors").identity() != before


def test_lm_checkpoints_carry_the_identity_of_their_token_makers(tiny_run, tmp_path):
    from audiolm_pl.checkpoint import load_stage_checkpoint
    from audiolm_pl.codec import load_codec
    from audiolm_pl.semantic import load_tokenizer

    root = tiny_run.root
    tokenizer_file = root / "semantic" / "tokenizer.safetensors"
    expected = {"semantic": load_tokenizer(tokenizer_file).identity(), "acoustic": load_codec(root / "runs" / "codec").identity()}
    assert json.loads((root / "tokens" / "speech" / "train" / "manifest.json").read_text())["producers"] == expected
    for stage in ("semantic", "coarse", "fine"):
        assert load_stage_checkpoint(root / "runs" / stage).producers == expected
    shutil.copy(tokenizer_file, tmp_path / "copy.safetensors")  # a copy elsewhere is the same producer
    assert load_tokenizer(tmp_path / "copy.safetensors").identity() == expected["semantic"]


def test_generate_refuses_another_tokenizer_or_codec_of_the_same_spec(tiny_run, audio_shards, tmp_path, capsys):
    pipeline = tiny_run.root / "pipeline.yaml"
    other_tokenizer = tmp_path / "other.safetensors"  # same source, clusters and rate as the main job's; another fit
    assert main(["semantic", "kmeans", "--source", "mfcc", "--shards", str(audio_shards.train), "--clusters", "8",
                 "--frame-rate", "25", "--max-frames", "4000", "--seed", "1", "--out", str(other_tokenizer)]) == 0
    _, other_codec = make_codec(tmp_path)  # the tiny codec, untrained: the main job's codec's spec, not its weights
    capsys.readouterr()
    for override, producer in ((f"semantic_tokenizer={other_tokenizer}", "semantic tokenizer"), (f"codec={other_codec}", "codec")):
        out = tmp_path / f"{producer.split()[-1]}.wav"
        assert generate(pipeline, out, override) == 2
        line = error_line(capsys.readouterr().err, "generate")
        assert f"{producer} (" in line and "same token spec, other ids" in line and "allow_producer_swap: true" in line
        assert not out.exists()
        assert generate(pipeline, out, override, "allow_producer_swap=true") == 0  # a deliberate swap
        assert soundfile.info(str(out)).frames > 0


def test_lm_checkpoint_from_before_identities_loads_with_a_warning(tiny_run, tmp_path, caplog):
    checkpoint = torch.load(tiny_run.root / "runs" / "fine" / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["hyper_parameters"]["producers"]
    torch.save(checkpoint, tmp_path / "old_fine.ckpt")
    out = tmp_path / "out.wav"
    assert generate(tiny_run.root / "pipeline.yaml", out, f"fine_lm={tmp_path / 'old_fine.ckpt'}") == 0
    assert out.exists()
    (warning,) = [r.getMessage() for r in caplog.records if "records no producer identities" in r.getMessage()]
    assert str(tmp_path / "old_fine.ckpt") in warning


# -- 2: outputs that work from any directory and after a move -----------------------------------------

def test_generate_from_another_directory_and_from_a_moved_copy(tiny_run, tmp_path, monkeypatch):
    from audiolm_pl.config import load_config
    from audiolm_pl.inference.audiolm import PipelineConfig

    pipeline = tiny_run.root / "pipeline.yaml"
    assert str(tiny_run.root) not in pipeline.read_text()  # the main job writes paths relative to the YAML
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert generate(pipeline.resolve(), "here.wav") == 0
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run.root, moved)
    resolved = load_config(PipelineConfig, moved / "pipeline.yaml")
    named = [key for key in PipelineConfig.FILE_RELATIVE_PATHS if getattr(resolved, key)]  # "" names no stage
    assert all(Path(getattr(resolved, key)).is_relative_to(moved) for key in named)
    assert generate(moved / "pipeline.yaml", "moved.wav") == 0
    here, _ = soundfile.read("here.wav")
    there, _ = soundfile.read("moved.wav")
    np.testing.assert_array_equal(here, there)  # the same seeded generation from the moved copy


def _ssl_checkpoint(run_dir: Path) -> None:
    """A stage checkpoint of the tiny SSL model (untrained), as `audiolm-pl train ssl` leaves it."""
    from audiolm_pl.config import to_dict
    from audiolm_pl.semantic.ssl_model import SSLModel
    from audiolm_pl.training import load_stage_config

    config = load_stage_config("ssl", "tiny", overrides=["model.num_targets=4"])
    torch.manual_seed(0)
    model = SSLModel(config.model)
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{name}": value for name, value in model.state_dict().items()},
                "hyper_parameters": {"stage": "ssl", "config": to_dict(config), "token_specs": {}}, "global_step": 0},
               run_dir / "checkpoints" / "last.ckpt")


def test_tokenizer_finds_its_feature_source_after_the_tree_moves(audio_shards, tmp_path, monkeypatch, capsys):
    from audiolm_pl.semantic.tokenizer import read_tokenizer_file

    monkeypatch.chdir(tmp_path)
    _ssl_checkpoint(tmp_path / "work" / "runs" / "ssl")
    assert main(["semantic", "kmeans", "--source", "ssl:work/runs/ssl", "--layer", "1", "--shards", str(audio_shards.train),
                 "--clusters", "4", "--frame-rate", "25", "--max-frames", "400", "--epochs", "1", "--batch-size", "256",
                 "--out", "work/semantic/tokenizer.safetensors"]) == 0
    metadata, _ = read_tokenizer_file(tmp_path / "work" / "semantic" / "tokenizer.safetensors")
    assert metadata["source"]["path"] == "../runs/ssl"  # relative to the tokenizer file, not to the cwd
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, np.random.default_rng(0).standard_normal(8000).astype("float32") * 0.1, 16000)
    assert main(["semantic", "encode", "work/semantic/tokenizer.safetensors", str(wav)]) == 0
    ids_before = capsys.readouterr().out.strip().splitlines()[-1]
    shutil.move(tmp_path / "work", tmp_path / "moved")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert main(["semantic", "encode", str(tmp_path / "moved" / "semantic" / "tokenizer.safetensors"), str(wav)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == ids_before


# -- 5: run directories ------------------------------------------------------------------------------

def train_semantic(shards, output_dir, *overrides) -> int:
    return main(["train", "semantic", "--config", "tiny", "--trainer", "cpu", f"data.train_shards={shards.train}",
                 f"data.val_shards={shards.val}", "data.batch_size=4", f"trainer.output_dir={output_dir}",
                 "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0", *overrides])


def test_torn_last_checkpoint_resumes_from_the_newest_readable_step(token_shards, tmp_path, caplog, capsys):  # noqa: F811
    checkpoints = tmp_path / "semantic" / "checkpoints"
    assert train_semantic(token_shards, tmp_path, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=1") == 0
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while writing it
    assert train_semantic(token_shards, tmp_path, "trainer.max_steps=3", "trainer.checkpoint_every_n_steps=1") == 0
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert str(last) in warning and "resuming from step0000002.ckpt" in warning
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 3  # steps 1-2 kept, one more trained
    assert {p.name for p in checkpoints.glob("step*.ckpt")} == {"step0000001.ckpt", "step0000002.ckpt", "step0000003.ckpt"}

    torn = tmp_path / "torn" / "checkpoints"
    torn.mkdir(parents=True)
    (torn / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    capsys.readouterr()
    assert train_semantic(token_shards, tmp_path, "trainer.run_name=torn", "trainer.max_steps=1") == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "cannot resume" in line and "last.ckpt" in line and "trainer.resume=false" in line
    assert (torn / "last.ckpt").read_bytes() == b"PK\x03\x04 torn"  # left for the user to look at


def test_second_training_into_a_run_directory_is_refused(token_shards, tmp_path, caplog, capsys):  # noqa: F811
    run = tmp_path / "semantic"
    run.mkdir()
    holder = subprocess.Popen(  # a first training, holding the run directory's lock
        [sys.executable, "-c", "import sys; from audiolm_pl.run_directory import run_lock\n"
         f"with run_lock({str(run)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train_semantic(token_shards, tmp_path, "trainer.max_steps=1") == 2
        line = error_line(capsys.readouterr().err, "train")
        assert f"run directory {run} is in use by another training (pid {holder.pid} on " in line
        assert sorted(p.name for p in run.iterdir()) == ["train.lock"]  # the second run wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the lock file keeps its pid
        holder.wait()
    assert train_semantic(token_shards, tmp_path, "trainer.max_steps=1") == 0
    (note,) = [r.getMessage() for r in caplog.records if "took over the lock" in r.getMessage()]
    assert f"pid {holder.pid} on" in note
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "train.lock").read_text() == ""
