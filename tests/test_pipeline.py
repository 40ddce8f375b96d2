"""End to end: the main job's stage steps on tiny configs, the composite AudioLM, the generate
command, spec checking, and the notebook — all on checkpoints this module trains in seconds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl.main_job import MainJobConfig, run_main_job

STAGE_STEPS = ["codec", "semantic_tokenizer", "tokenize", "semantic_lm", "coarse_lm", "fine_lm", "generate"]


@pytest.fixture(scope="session")
def tiny_run(audio_shards, tmp_path_factory) -> MainJobConfig:
    """The main job after its corpus steps, on the synthetic shards: every stage trains 3 steps."""
    root = tmp_path_factory.mktemp("main_job")
    for split in ("train", "val"):
        shutil.copytree(getattr(audio_shards, split), root / "shards" / "speech" / split)
    config = MainJobConfig(workdir=str(root), steps=STAGE_STEPS, max_steps=3, semantic_clusters=8, prompts=1,
                           prompt_seconds=1.0, continuation_seconds=1.0, workers=1)
    run_main_job(config)
    return config


def test_main_job_leaves_a_continuation_that_starts_with_the_prompt(tiny_run):
    root = tiny_run.root
    report = json.loads((root / "report.json").read_text())
    assert list(report["steps"]) == STAGE_STEPS
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
    from audiolm_pl.pipeline import AudioLM
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


def test_seeded_generation_repeats(tiny_run):
    from audiolm_pl.pipeline import AudioLM

    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    first = model.generate_unconditional(0.5, num_samples=1, seed=7)
    second = model.generate_unconditional(0.5, num_samples=1, seed=7)
    assert torch.equal(first.codes, second.codes) and first.codes.shape[1] == 25


def test_long_outputs_go_past_the_coarse_context(tiny_run):
    from audiolm_pl.pipeline import AudioLM

    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    seconds = 3 * model.coarse_lm.chunk_seconds  # three trained crops
    result = model.generate_unconditional(seconds, seed=0)
    assert result.codes.shape[1] == round(seconds * 50) and result.wav.shape[1] == result.codes.shape[1] * 320


def test_notebook_runs(tiny_run):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "audiolm_inference.ipynb", as_version=4)
    prompt = next((tiny_run.root / "generated" / "prompts").glob("*.wav"))
    env = {"AUDIOLM_PIPELINE": str(tiny_run.root / "pipeline.yaml"), "AUDIOLM_PROMPT": str(prompt), "AUDIOLM_SECONDS": "0.5"}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tiny_run.root)}}).execute()
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # spectrogram figures
    assert any("text/html" in o.get("data", {}) for o in outputs)  # audio players


def test_eval_reports_speaker_similarity_codec_figures_and_asr(tiny_run, tmp_path):
    """Tiny random x-vector and CTC models saved locally stand in for real ones (no downloads)."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor, WavLMConfig, WavLMForXVector)

    from audiolm_pl.cli import main

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                 conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000)
    speaker_dir, asr_dir = tmp_path / "xvector", tmp_path / "asr"
    WavLMForXVector(WavLMConfig(**small, tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8)).save_pretrained(speaker_dir)
    extractor.save_pretrained(speaker_dir)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "|": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|")
    Wav2Vec2ForCTC(Wav2Vec2Config(**small, vocab_size=30)).save_pretrained(asr_dir)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(asr_dir)
    prompts = tiny_run.root / "generated" / "prompts"
    for wav in prompts.glob("*.wav"):
        wav.with_suffix(".txt").write_text("utterance of a speaker")
    out = tmp_path / "eval.json"
    assert main(["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--prompts", str(prompts), "--seconds", "0.5",
                 "--prompt-seconds", "1", "--speaker-model", str(speaker_dir), "--asr-model", str(asr_dir), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert -1.0 <= summary["speaker_similarity"] <= 1.0 and summary["speaker_embedding"].startswith("x-vector")
    assert summary["acoustic_generation_wer"] >= 0 and summary["acoustic_generation_cer"] >= 0
    assert summary["codec_mel_distance_q1"] > 0 and "codec_si_sdr_q4" in summary
    assert main(["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--prompts", str(prompts), "--seconds", "0.5",
                 "--prompt-seconds", "1", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["speaker_embedding"].startswith("mfcc-statistics") and summary["asr"].startswith("skipped")
    assert main(["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--prompts", str(prompts),
                 "--asr-model", str(tmp_path / "absent")]) == 2
