"""The command line (one parser, one `cli` module per package) and the main job, which calls the
functions the commands call: the same parsers, the same results, figures taken from what training returns."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
from safetensors import safe_open

from audiolm_pl import cli

# argv -> (module, function) that must run it; every sub-command the docs and the main job rely on
DISPATCH = {
    ("data", "shards", "in", "out"): ("audiolm_pl.data.shards", "_run"),
    ("data", "speech", "out"): ("audiolm_pl.corpus.speech", "_run"),
    ("data", "piano", "out"): ("audiolm_pl.corpus.piano", "_run"),
    ("data", "real", "out"): ("audiolm_pl.corpus.real", "_run"),
    ("codec", "roundtrip", "c", "in.wav", "out.wav"): ("audiolm_pl.codec.cli", "_roundtrip"),
    ("codec", "encode", "c", "in.wav", "codes.safetensors"): ("audiolm_pl.codec.cli", "_encode"),
    ("codec", "decode", "c", "codes.safetensors", "out.wav"): ("audiolm_pl.codec.cli", "_decode"),
    ("semantic", "kmeans", "--shards", "s", "--out", "t.safetensors"): ("audiolm_pl.semantic.cli", "run_kmeans"),
    ("semantic", "encode", "t.safetensors", "in.wav"): ("audiolm_pl.semantic.cli", "run_encode"),
    ("semantic", "measure", "t.safetensors", "--shards", "s"): ("audiolm_pl.semantic.cli", "run_measure"),
    ("train", "coarse"): ("audiolm_pl.jobs.cli", "_run_train"),
    ("tokenize", "--codec", "c", "--semantic", "t", "in", "out"): ("audiolm_pl.jobs.cli", "_run_tokenize"),
    ("main", "speech_hours=2"): ("audiolm_pl.jobs.cli", "_run_main"),
    ("checkpoint", "consolidate", "runs/coarse"): ("audiolm_pl.jobs.cli", "_run_consolidate"),
    ("generate", "--pipeline", "p.yaml", "--out", "o.wav"): ("audiolm_pl.inference.cli", "_run"),
    ("eval", "--pipeline", "p.yaml", "--shards", "s"): ("audiolm_pl.evaluation.cli", "_run"),
    ("export", "--pipeline", "p.yaml", "out"): ("audiolm_pl.inference.cli", "_export"),
    ("detector-shards", "out", "--generated", "g"): ("audiolm_pl.detector.cli", "_run_shards"),
    ("detect", "runs/detector", "a.wav"): ("audiolm_pl.detector.cli", "_run_detect"),
}


def test_every_command_comes_from_one_cli_module_and_runs_its_function():
    import importlib

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # top-level name -> parser
    assert sorted(commands) == sorted({argv[0] for argv in DISPATCH})
    assert all(name.endswith(".cli") for name in cli.COMMAND_MODULES)
    for argv, (module, function) in DISPATCH.items():
        args = parser.parse_args(list(argv))
        assert args.func is getattr(importlib.import_module(module), function), argv


def test_main_dispatches_with_overrides_after_options(monkeypatch, tmp_path, capsys):
    """`train STAGE --config tiny key=value` reaches `train_stage` with the override applied."""
    from audiolm_pl import training

    seen = {}

    def fake_train_stage(stage, run_config):
        seen.update(stage=stage, config=run_config)
        return tmp_path / stage

    monkeypatch.setattr(training, "train_stage", fake_train_stage)
    code = cli.main(["train", "semantic", "--config", "tiny", "--trainer", "cpu", "trainer.max_steps=7", "model.n_layer=1"])
    assert code == 0
    assert seen["stage"] == "semantic" and seen["config"].trainer.max_steps == 7 and seen["config"].model.n_layer == 1
    assert seen["config"].trainer.accelerator == "cpu"  # the preset
    assert str(tmp_path / "semantic" / "checkpoints" / "last.ckpt") in capsys.readouterr().out


def test_stray_words_after_a_command_are_refused():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "semantic", "--config", "tiny", "not_an_override"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("text, items", [("whisper,sphinx", ["whisper", "sphinx"]), (" a , b,,c ,", ["a", "b", "c"]),
                                         ("hf:/m/x", ["hf:/m/x"]), (",", [])])
def test_comma_list(text, items):
    assert cli.comma_list(text) == items


def test_comma_separated_arguments_use_the_one_parser(monkeypatch):
    """`eval --asr/--sections` and `data real --packages` split the same way."""
    from audiolm_pl.corpus import real

    args = cli.build_parser().parse_args(["eval", "--pipeline", "p", "--shards", "s", "--asr", "whisper, hf:/m",
                                          "--sections", "codec,continuation,"])
    assert args.asr == ["whisper", "hf:/m"] and args.sections == ["codec", "continuation"]
    seen = {}

    def fake_make_real_corpus(out_dir, keys, *args, **kwargs):
        seen["keys"] = keys
        return {"clips": 0, "hours": 0.0, "failures": 0, "speakers": {}}

    monkeypatch.setattr(real, "make_real_corpus", fake_make_real_corpus)
    assert cli.main(["data", "real", "out", "--packages", " it,,ru "]) == 0
    assert seen["keys"] == ["it", "ru"]


# -- the main job calls functions ------------------------------------------------------------


def test_kmeans_command_and_function_make_the_same_tokenizer(audio_shards, tmp_path, capsys):
    from audiolm_pl.semantic.cli import fit_kmeans, parse_source

    options = dict(clusters=5, frame_rate=25.0, max_frames=400, epochs=2, batch_size=128, seed=3)
    assert cli.main(["semantic", "kmeans", "--source", "mfcc", "--shards", str(audio_shards.train), str(audio_shards.val),
                     "--clusters", "5", "--frame-rate", "25", "--max-frames", "400", "--epochs", "2", "--batch-size", "128",
                     "--seed", "3", "--device", "cpu", "--out", str(tmp_path / "cli.safetensors")]) == 0
    assert "semantic tokenizer" in capsys.readouterr().out
    fit = fit_kmeans(parse_source("mfcc", 6, 16000), [audio_shards.train, audio_shards.val], tmp_path / "function.safetensors",
                     device="cpu", **options)
    assert fit.path == tmp_path / "function.safetensors" and fit.tokenizer.vocab_size == 5
    tensors, headers = [], []
    for name in ("cli", "function"):
        with safe_open(str(tmp_path / f"{name}.safetensors"), "pt") as handle:
            tensors.append({key: handle.get_tensor(key) for key in handle.keys()})
            header = json.loads(handle.metadata()["audiolm_pl"])
            header["extra"].pop("seconds")
            headers.append(header)
    assert headers[0] == headers[1]  # source, rates, shards, k-means options
    assert headers[0]["extra"]["shards"] == [str(audio_shards.train), str(audio_shards.val)]
    for key in ("centroids", "mean", "std"):
        assert np.array_equal(tensors[0][key].numpy(), tensors[1][key].numpy()), key


def test_main_job_steps_never_go_through_the_command_line(audio_shards, tmp_path, monkeypatch):
    """The semantic-tokenizer step on its own: it must call `fit_kmeans`, not `audiolm_pl.cli.main`."""
    import shutil

    from audiolm_pl.jobs.main import MainJobConfig, run_main_job
    from audiolm_pl.semantic import load_tokenizer

    monkeypatch.setattr(cli, "main", lambda argv=None: pytest.fail(f"main job ran the CLI: {argv}"))
    shutil.copytree(audio_shards.train, tmp_path / "shards" / "speech" / "train")
    config = MainJobConfig(workdir=str(tmp_path), real_speech=[], steps=["semantic_tokenizer"], semantic_source="mfcc",
                           semantic_clusters=6)
    run_main_job(config)
    tokenizer = load_tokenizer(tmp_path / "semantic" / "tokenizer.safetensors")
    assert tokenizer.vocab_size == 6 and tokenizer.frame_rate == 25.0
    assert (tmp_path / "steps" / "semantic_tokenizer.done").exists()


@pytest.mark.parametrize("step, run", [("codec", "codec"), ("semantic_lm", "semantic"), ("coarse_lm", "coarse"),
                                       ("fine_lm", "fine")])
def test_training_steps_report_what_the_run_logged(tiny_run, step, run):
    """The figures in report.json come from `fit_stage`; TensorBoard holds the same last validation."""
    from audiolm_pl.jobs.report import last_scalars

    figures = json.loads((tiny_run.root / "report.json").read_text())["steps"][step]
    logged = last_scalars(tiny_run.root / "runs" / run)
    validation = {name: value for name, value in logged.items() if name.startswith("val/")}
    assert validation and {name: figures[name] for name in validation} == validation
    assert not {name for name in figures if name.startswith("val/")} - set(validation)  # nothing that was not logged
    assert figures["step"] == logged["step"] == 3  # max_steps=3: the logger's step, also for the codec's two optimisers
    assert figures["max_steps"] == 3 and figures["stopped_by"] == "max_steps"
    assert any(name.startswith("train/") for name in figures)  # the last step's training figures


def test_fit_stage_on_a_finished_run_returns_its_final_validation(tiny_run, tmp_path):
    """A main job stopped after training but before `steps/<name>.done` trains again: no steps are left, and
    the figures are those of the same final validation."""
    import shutil

    from audiolm_pl.training import fit_stage, load_stage_config

    report = json.loads((tiny_run.root / "report.json").read_text())["steps"]["fine_lm"]
    shutil.copytree(tiny_run.root / "runs" / "fine", tmp_path / "fine")
    overrides = [f"trainer.output_dir={tmp_path}", "trainer.run_name=fine", "trainer.max_steps=3",
                 f"data.train_shards={tiny_run.train_split('tokens')}",
                 f"data.val_shards={tiny_run.root / 'tokens' / 'speech' / 'val'}"]
    result = fit_stage("fine", load_stage_config("fine", "tiny", "cpu", overrides))
    assert result.directory == tmp_path / "fine" and result.step == 3
    validation = {name: round(value, 4) for name, value in result.metrics.items() if name.startswith("val/")}
    assert validation == {name: value for name, value in report.items() if name.startswith("val/")}


def test_generate_step_writes_what_the_generate_command_writes(tiny_run, tmp_path):
    (continuation,) = json.loads((tiny_run.root / "report.json").read_text())["steps"]["generate"]["continuations"]
    prompt = next((tiny_run.root / "generated" / "prompts").glob("*.wav"))
    out = tmp_path / "cli.wav"
    assert cli.main(["generate", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--prompt", str(prompt),
                     "--seconds", str(tiny_run.continuation_seconds), "--seed", str(tiny_run.seed), "--out", str(out)]) == 0
    step_wav, rate = soundfile.read(continuation, dtype="float32")
    cli_wav, cli_rate = soundfile.read(out, dtype="float32")
    assert rate == cli_rate and np.array_equal(step_wav, cli_wav)


def test_eval_step_reports_the_targets_of_eval_json(tiny_run, monkeypatch):
    """The eval step judges with the `eval` command's defaults; here quick judges and the codec section only."""
    from audiolm_pl.evaluation import runner
    from audiolm_pl.evaluation.runner import EvalConfig
    from audiolm_pl.jobs.main import step_eval

    load_judges, evaluate_pipeline, seen = runner.load_judges, runner.evaluate_pipeline, {}
    monkeypatch.setattr(runner, "load_judges", lambda config, rate: load_judges(
        replace(config, asr=[], speaker="mfcc", dnsmos=False), rate))

    def codec_section_only(model, utterances, config, out_dir=None):
        seen["config"] = config
        return evaluate_pipeline(model, utterances, replace(config, sections=["codec"]), out_dir=out_dir)

    monkeypatch.setattr(runner, "evaluate_pipeline", codec_section_only)
    config = replace(tiny_run, eval_per_speaker=1)
    figures = step_eval(config)
    defaults = cli.build_parser().parse_args(["eval", "--pipeline", "p", "--shards", "s"])
    assert seen["config"] == EvalConfig(per_speaker=1, prompt_seconds=1.0, seconds=1.0, seed=0, asr=defaults.asr,
                                        speaker=defaults.speaker, sections=defaults.sections)
    saved = json.loads((config.root / "eval" / "eval.json").read_text())
    assert figures["targets"] == {t["name"]: {"figure": t["figure"], "passed": t["passed"]} for t in saved["targets"]}
    assert "codec round trip STOI" in figures["targets"] and figures["report"] == str(config.root / "eval" / "report.md")


@pytest.mark.parametrize("trainer, minutes, warned", [("cpu", 4.0, True), ("cpu", 30.0, False), ("ddp", 4.0, False)])
def test_ssl_source_on_a_cpu_budget_warns_that_its_ids_carry_little(monkeypatch, tmp_path, caplog, trainer, minutes, warned):
    """4 CPU minutes leave our SSL model inside its warm-up (measured: 47 steps): the job says so instead of silently
    tokenizing with an untrained model."""
    from audiolm_pl.jobs import main as job

    monkeypatch.setattr(job, "_kmeans", lambda *args, **kwargs: None)
    monkeypatch.setattr(job, "_train", lambda *args, **kwargs: {})
    config = job.MainJobConfig(workdir=str(tmp_path), semantic_source="ssl", trainer=trainer, ssl_minutes=minutes)
    with caplog.at_level("WARNING", logger="audiolm_pl.jobs.main"):
        job._ssl_tokenizer(config, tmp_path / "semantic" / "tokenizer.safetensors")
    assert ("stays near its random start" in caplog.text) == warned


def test_a_stage_stopped_by_its_minutes_is_named_in_the_report(audio_shards, tmp_path):
    """The budgets are minutes: a stage whose clock runs out before its max_steps (a slower machine) says so in
    report.json and report.md, naming the key that gives it more time."""
    from audiolm_pl.jobs import main as job
    from audiolm_pl.jobs.report import write_markdown_report

    config = job.MainJobConfig(workdir=str(tmp_path), size="tiny", codec_minutes=1 / 60)  # one second
    figures = job._train(config, "codec", "codec_minutes", f"data.train_shards={audio_shards.train}",
                         f"data.val_shards={audio_shards.val}", "trainer.enable_progress_bar=false")
    assert figures["max_steps"] == 1000 and figures["step"] < 1000  # conf/codec/tiny.yaml's, not reached in 1 s
    assert figures["stopped_by"] == "codec_minutes"
    report = {"steps": {"codec": {"seconds": 1.0, **figures},
                        "fine_lm": {"seconds": 1.0, "step": 3, "max_steps": 3, "stopped_by": "max_steps"}}}
    write_markdown_report(report, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert f"codec at step {figures['step']:,} of 1,000 (`codec_minutes=`)" in text and "fine_lm at step" not in text
