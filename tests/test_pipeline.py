"""End to end: the main job's stage steps on tiny configs, the composite AudioLM, the generate
command, spec checking, and the notebook — all on checkpoints this module trains in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import TINY_RUN_STEPS, run_notebook

from audiolm_pl.jobs.main import run_main_job


def test_main_job_leaves_a_continuation_that_starts_with_the_prompt(tiny_run):
    root = tiny_run.root
    report = json.loads((root / "report.json").read_text())
    assert list(report["steps"]) == TINY_RUN_STEPS
    assert "val/ce" in " ".join(report["steps"]["semantic_lm"])  # validation figures were read back
    (continuation,) = report["steps"]["generate"]["continuations"]
    wav, rate = soundfile.read(continuation, dtype="float32")
    prompt_path = next((root / "generated" / "prompts").glob("*.wav"))
    prompt, _ = soundfile.read(prompt_path, dtype="float32")
    assert rate == 16000 and abs(len(wav) - 2 * rate) <= 320  # 1 s prompt + 1 s continuation
    np.testing.assert_allclose(wav[:rate], prompt[:rate], atol=1e-4)  # the first second is the prompt
    assert np.sqrt(np.mean(wav[rate:] ** 2)) > 1e-4  # the continuation is not silent
    assert Path(continuation).with_suffix(".png").stat().st_size > 10_000
    assert "| codec |" in (root / "report.md").read_text()


def test_rerun_skips_finished_steps(tiny_run):
    before = (tiny_run.root / "report.json").read_text()
    run_main_job(tiny_run)
    assert (tiny_run.root / "report.json").read_text() == before


def test_composite_refuses_a_stage_trained_on_other_tokens(tiny_run, audio_shards):
    from audiolm_pl.cli import main
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.tokens import TokenSpecMismatch

    other = tiny_run.root / "semantic" / "other.safetensors"
    assert main(["semantic", "kmeans", "--source", "mfcc", "--shards", str(audio_shards.train), "--clusters", "6",
                 "--frame-rate", "25", "--out", str(other)]) == 0
    with pytest.raises(TokenSpecMismatch) as err:
        AudioLM.from_config(tiny_run.root / "pipeline.yaml", overrides=(f"semantic_tokenizer={other}",))
    message = str(err.value)
    assert "semantic LM (" in message and "8 ids" in message and f"semantic tokenizer ({other}) gives 6 ids" in message


@pytest.mark.parametrize("task", ["acoustic", "unconditional"])
def test_generate_command_tasks(tiny_run, tmp_path, task):
    from audiolm_pl.cli import main

    prompt = next((tiny_run.root / "generated" / "prompts").glob("*.wav"))
    out = tmp_path / f"{task}.wav"
    code = main(["generate", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--task", task, "--prompt", str(prompt),
                 "--seconds", "0.5", "--num-samples", "2", "--seed", "3", "--out", str(out)])
    assert code == 0
    for index in (0, 1):
        wav, rate = soundfile.read(tmp_path / f"{task}-{index}.wav")
        assert rate == 16000 and len(wav) >= 0.4 * rate
        assert (tmp_path / f"{task}-{index}.png").exists()


def test_continuation_keeps_the_prompt_tokens_and_repeats_with_its_seed(tiny_run):
    from audiolm_pl.inference.audiolm import AudioLM

    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    wav, _ = soundfile.read(next((tiny_run.root / "generated" / "prompts").glob("*.wav")), dtype="float32")
    prompt = torch.from_numpy(wav[:8000])  # (T_p,) 0.5 s
    first, again = (model.continue_audio(prompt, 0.5, seed=3) for _ in range(2))
    prompt_codes = model.codec.encode(prompt[None])  # (1, 25, Q)
    levels = first.codes.shape[2]
    assert first.codes.shape == (1, 50, levels)
    assert torch.equal(first.codes[:, :25], prompt_codes[:, :, :levels])  # the prompt's codes, verbatim
    assert torch.equal(first.semantic_ids[:, :12], model.semantic_tokenizer.encode(prompt[None]))  # 0.5 s at 25 Hz
    assert torch.equal(first.codes, again.codes) and torch.equal(first.wav, again.wav)  # the seed decides


def test_long_outputs_go_past_the_coarse_context(tiny_run):
    from audiolm_pl.inference.audiolm import AudioLM

    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    seconds = 3 * model.coarse_lm.chunk_seconds  # three trained crops
    result = model.generate_unconditional(seconds, seed=0)
    assert result.codes.shape[1] == round(seconds * 50) and result.wav.shape[1] == result.codes.shape[1] * 320


def test_notebook_runs(tiny_run):
    prompt = next((tiny_run.root / "generated" / "prompts").glob("*.wav"))
    outputs = run_notebook(tiny_run.root / "pipeline.yaml", prompt, tiny_run.root)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # spectrogram figures
    assert any("text/html" in o.get("data", {}) for o in outputs)  # audio players
    assert any("['coarse', 'fine']" in o.get("text", "") for o in outputs)  # the swap cell swapped the coarse LM


def test_continuation_ids_are_placed_at_their_times():
    """Issue #8: a prompt's raw ids cover 2 frames each (25 Hz ids, 50 Hz frames); the generated
    (deduplicated) ids share the frames that are left, not the whole output."""
    from audiolm_pl.lm.windows import semantic_times

    times = semantic_times(num_ids=75 + 100, timed_ids=75, frames=500, frames_per_id=2.0)  # 3 s prompt, 10 s out
    np.testing.assert_allclose(times[:75], np.arange(75) * 2.0)  # the prompt: frames 0, 2, ..., 148
    assert times[75] == 150  # the first generated id starts where the prompt ends
    np.testing.assert_allclose(np.diff(times[75:]), 350 / 100)  # 100 ids over the 350 frames left
    assert times[-1] < 500
