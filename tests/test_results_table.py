"""`audiolm-pl eval` writes results.md: a row per experiment it has figures for, the paper's figure beside ours,
and the compute behind ours, on the tiny pipeline of the `tiny_run` fixture (tests/conftest.py)."""

from __future__ import annotations

import json

import pytest

from audiolm_pl.evaluation.results_table import PAPER_ACOUSTIC_CER, PAPER_DETECTOR, PAPER_SPEAKER_ID

QUICK_JUDGES = ["--asr", "sphinx", "--speaker", "mfcc", "--no-dnsmos"]


def eval_args(tiny_run, out, *extra) -> list[str]:
    """One held-out utterance (the val split's one speaker, its longest clips first), quick judges."""
    return ["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--shards", str(tiny_run.root / "shards" / "speech" / "val"),
            "--out", str(out), "--per-speaker", "1", "--prompt-seconds", "0.5", "--seconds", "0.5", *QUICK_JUDGES, *extra]


def table_rows(markdown: str) -> list[list[str]]:
    """The first table's body rows, cells stripped."""
    lines = markdown.split("| experiment |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_results_md_has_the_rows_of_the_sections_run(tiny_run, tmp_path):
    from audiolm_pl.cli import main

    out = tmp_path / "eval"
    assert main(eval_args(tiny_run, out)) == 0
    report = json.loads((out / "eval.json").read_text())
    rows = table_rows((out / "results.md").read_text())
    experiments = [row[0] for row in rows]
    acoustic = next(row for row in rows if row[0].startswith("acoustic generation"))
    generated = report["acoustic"]["asr"]["sphinx"]["generated"]
    assert acoustic[2] == f"{100 * generated['wer']:.1f} % / {100 * generated['cer']:.1f} %"
    assert acoustic[3].endswith(f"{100 * PAPER_ACOUSTIC_CER:.1f} %")
    speaker = next(row for row in rows if row[0] == "speech continuation")
    assert speaker[2] == f"{100 * report['continuation']['generated']['speaker_accuracy']:.1f} %"
    assert speaker[3] == f"{100 * PAPER_SPEAKER_ID:.1f} %"
    bitrates = report["codec"]["bitrates"]
    assert list(bitrates) == ["1", "2", "4"]  # the tiny codec's 4 levels: 1, 2, 4
    assert experiments.count("codec round trip, speech") == 3
    assert f"{bitrates['2']['mel_distance']:.3f} / {bitrates['2']['si_sdr']:.1f} dB" in [row[2] for row in rows]
    assert bitrates["4"]["mel_distance"] == pytest.approx(report["codec"]["means"]["mel_distance"], rel=1e-4)  # all levels
    assert not any("acoustic-only" in e or "detector" in e for e in experiments)  # not given: no row
    compute = (out / "results.md").read_text().split("## Configuration and compute behind ours", 1)[1]
    for stage in ("codec", "semantic LM", "coarse LM", "fine LM"):
        line = next(line for line in compute.splitlines() if line.startswith(f"| {stage} |"))
        assert "| 3 |" in line and "cpu x 1, 32-true" in line, line  # tiny_run: max_steps=3 on the cpu preset


def test_results_md_adds_acoustic_only_and_detector_rows_when_given(tiny_run, tmp_path):
    from audiolm_pl.cli import main
    from audiolm_pl.training import load_stage_config, train_stage

    def train(stage, *overrides):
        config = load_stage_config(stage, "tiny", "cpu", [
            f"trainer.output_dir={tmp_path / 'runs'}", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2", "trainer.limit_val_batches=1", *overrides])
        return train_stage(stage, config)

    train("coarse", f"data.train_shards={tiny_run.train_split('tokens')}", "data.batch_size=4", "layout=acoustic_only",
          f"data.val_shards={tiny_run.root / 'tokens' / 'speech' / 'val'}", "trainer.run_name=coarse_acoustic")
    shards = tiny_run.root / "shards" / "speech"
    train("detector", f"data.real_train_shards={shards / 'train'}", f"data.synthetic_train_shards={shards / 'val'}",
          f"data.real_val_shards={shards / 'val'}", f"data.synthetic_val_shards={shards / 'train'}")
    out = tmp_path / "eval"
    assert main(eval_args(tiny_run, out, "--sections", "continuation", "--acoustic-only-coarse",
                          str(tmp_path / "runs" / "coarse_acoustic"), "--detector", str(tmp_path / "runs" / "detector"))) == 0
    report = json.loads((out / "eval.json").read_text())
    rows = table_rows((out / "results.md").read_text())
    ablation = [row for row in rows if row[0].startswith("acoustic-only ablation")]
    assert [row[1] for row in ablation] == ["speaker-ID accuracy", "ASR words per second"]
    full, only = report["continuation"]["generated"], report["acoustic_only"]["generated"]
    assert ablation[0][2] == f"{100 * only['speaker_accuracy']:.1f} % vs {100 * full['speaker_accuracy']:.1f} %"
    assert report["acoustic_only"]["prompts"] == report["continuation"]["prompts"] == 1  # the same prompt
    detector = report["detector"]
    assert detector["counts"] == {"real": 1, "codec": 1, "generated": 1} and len(report["continuation"]["files"]) == 1
    synthetic = (detector["codec_accuracy"] + detector["generated_accuracy"]) / 2
    assert detector["accuracy"] == pytest.approx((detector["real_accuracy"] + synthetic) / 2)
    (detector_row,) = [row for row in rows if row[0] == "generated-audio detector"]
    assert detector_row[2] == f"{100 * detector['accuracy']:.1f} %" and detector_row[3] == f"{100 * PAPER_DETECTOR:.1f} %"
    experiments = [row[0] for row in rows]
    assert not any(e.startswith(("acoustic generation", "codec round trip")) for e in experiments)  # sections not run
    compute = (out / "results.md").read_text()
    assert "| acoustic-only coarse LM |" in compute and "| detector |" in compute


def test_compute_rows_give_the_step_of_the_checkpoint_the_pipeline_loads(tmp_path):
    """A pipeline naming an earlier step*.ckpt is reported at that step, not at the run's last logged one."""
    import torch

    from audiolm_pl.evaluation.results_table import run_compute

    checkpoints = tmp_path / "coarse" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "coarse" / "config.yaml").write_text("trainer: {accelerator: cpu, devices: 1, precision: 32-true}\n")
    torch.save({"global_step": 250, "state_dict": {}}, checkpoints / "step0000250.ckpt")
    torch.save({"global_step": 759, "state_dict": {}}, checkpoints / "last.ckpt")
    assert run_compute("coarse LM", tmp_path / "coarse", None).steps == 759
    assert run_compute("coarse LM", checkpoints / "step0000250.ckpt", None).steps == 250
    assert run_compute("codec", tmp_path / "exported", None).steps is None  # no checkpoint, no logs: unknown
