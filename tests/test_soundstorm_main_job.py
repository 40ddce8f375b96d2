"""The main job with `acoustic_stage=soundstorm`: it trains SoundStorm in place of the coarse and fine LMs, with their
combined minutes, a semantic LM that keeps every id at its time, and a pipeline.yaml whose generate and eval steps
use it. Runs on a copy of the tiny main job (`tiny_run`) after its tokenize step, so only the semantic LM,
SoundStorm (3 steps each), one continuation and a quick eval run here."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import soundfile

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def soundstorm_run(tiny_run, tmp_path_factory):
    """`tiny_run`'s workdir up to its tokens (no report.json: that run was coarse_fine), then the rest of the job
    with acoustic_stage=soundstorm."""
    from audiolm_pl.jobs.main import run_main_job

    root = tmp_path_factory.mktemp("main_soundstorm")
    for part in ("shards", "runs/codec", "semantic", "tokens"):
        shutil.copytree(tiny_run.root / part, root / part)
    (root / "steps").mkdir()
    for step in ("codec", "semantic_tokenizer", "tokenize"):
        shutil.copy(tiny_run.root / "steps" / f"{step}.done", root / "steps")
    config = replace(tiny_run, workdir=str(root), acoustic_stage="soundstorm",
                     steps=["semantic_lm", "coarse_lm", "fine_lm", "soundstorm", "generate"])
    return config, run_main_job(config)


def test_soundstorm_replaces_coarse_and_fine_with_their_minutes(soundstorm_run):
    from audiolm_pl.checkpoint import load_stage_checkpoint
    from audiolm_pl.lm import load_lm

    config, report = soundstorm_run
    assert report["acoustic_stage"] == "soundstorm"
    assert list(report["steps"]) == ["semantic_lm", "soundstorm", "generate"]  # coarse_lm, fine_lm skipped
    assert not (config.root / "runs" / "coarse").exists() and not (config.root / "steps" / "fine_lm.done").exists()
    figures = report["steps"]["soundstorm"]
    assert figures["step"] == 3 and "val/ce" in figures and "train/loss" in figures
    trainer = load_stage_checkpoint(config.root / "runs" / "soundstorm").config["trainer"]
    assert trainer["max_time"] == "00:00:09:30"  # coarse 5 + fine 4.5 minutes (soundstorm_minutes=0)
    assert load_lm(config.root / "runs" / "semantic").layout.dedup is False  # tiny's semantic LM deduplicates


def test_generate_and_eval_use_the_soundstorm_pipeline(soundstorm_run, monkeypatch):
    from audiolm_pl.evaluation import runner
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.jobs.main import step_eval

    config, report = soundstorm_run
    pipeline = config.root / "pipeline.yaml"
    assert "acoustic_stage: soundstorm" in pipeline.read_text()
    assert set(AudioLM.from_config(pipeline).lms) == {"semantic", "soundstorm"}
    (continuation,) = report["steps"]["generate"]["continuations"]
    wav, rate = soundfile.read(continuation)
    assert len(wav) >= (config.prompt_seconds + config.continuation_seconds - 0.05) * rate
    load_judges = runner.load_judges  # quick judges: no ASR model, MFCC speaker vectors
    monkeypatch.setattr(runner, "load_judges", lambda eval_config, sample_rate: load_judges(
        replace(eval_config, asr=[], speaker="mfcc", dnsmos=False), sample_rate))
    figures = step_eval(replace(config, eval_per_speaker=1))
    saved = json.loads((config.root / "eval" / "eval.json").read_text())
    assert saved["continuation"] is not None and saved["acoustic"] is not None
    assert "soundstorm" in (config.root / "eval" / "results.md").read_text().lower()
    assert figures["targets"] == {t["name"]: {"figure": t["figure"], "passed": t["passed"]} for t in saved["targets"]}


def test_a_workdir_does_not_switch_acoustic_stage(soundstorm_run, tiny_run, tmp_path):
    """Its semantic LM, generations and eval were made for one stage; their step markers would skip them. Once
    those markers are deleted, it may (and the other stage's figures leave the report)."""
    from audiolm_pl.jobs.main import MainJobConfig, run_main_job

    config, _ = soundstorm_run
    shutil.copytree(config.root / "steps", tmp_path / "steps")
    shutil.copy(config.root / "report.json", tmp_path)
    switched = replace(config, workdir=str(tmp_path), acoustic_stage="coarse_fine", steps=["soundstorm"])
    with pytest.raises(ValueError, match="was run with acoustic_stage=soundstorm .*semantic_lm"):
        run_main_job(switched)
    for step in ("semantic_lm", "soundstorm", "generate"):
        (tmp_path / "steps" / f"{step}.done").unlink()
    report = run_main_job(switched)  # the soundstorm step is not used with coarse_fine: skipped, nothing trained
    assert report["acoustic_stage"] == "coarse_fine" and "soundstorm" not in report["steps"]
    with pytest.raises(ValueError, match="was run with acoustic_stage=coarse_fine"):  # a report from before the option
        run_main_job(replace(tiny_run, acoustic_stage="soundstorm", steps=["generate"]))
    with pytest.raises(ValueError, match="acoustic_stage must be one of"):
        MainJobConfig(acoustic_stage="parallel")
