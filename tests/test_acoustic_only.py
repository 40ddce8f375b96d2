"""The acoustic-only ablation (the paper's section V-B): a coarse LM over coarse codes alone, trained from real token
shards and used by `AudioLM` with no semantic LM at all."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl.lm.layouts import AcousticOnlyCoarseLayout, layout_from_dict
from audiolm_pl.training import load_stage_config, train_stage

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layout_holds_codes_only():
    layout = AcousticOnlyCoarseLayout(codebook_size=8, num_coarse=2)
    codes = np.arange(12).reshape(6, 2) % 8  # (T, Q)
    example = layout.example(np.array([3, 1, 4]), codes)
    assert len(example.tokens) == layout.sequence_length(3, 6) == 1 + 6 * 2
    assert example.tokens[0] == layout.bos and (example.tokens[1:] >= layout.acoustic_base).all()
    np.testing.assert_array_equal(layout.codes(torch.from_numpy(example.tokens[1:])[None])[0].numpy(), codes)
    assert example.levels.tolist() == [0, 1] * 6  # every target is a code: no position without loss
    other = layout.example(np.array([7, 7, 7, 0, 2]), codes)  # other semantic ids: the same sequence
    np.testing.assert_array_equal(other.tokens, example.tokens)
    assert layout.vocab_size == 1 + 2 * 8
    assert layout_from_dict(layout.to_dict()) == layout and "semantic_vocab" not in layout.to_dict()


def train_tiny(stage, shards, tmp_path, *overrides):
    config = load_stage_config(stage, "tiny", "cpu", [
        f"data.train_shards={shards.train}", f"data.val_shards={shards.val}", "data.batch_size=4",
        f"trainer.output_dir={tmp_path}", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2", "trainer.limit_val_batches=1", *overrides])
    return train_stage(stage, config)


@pytest.fixture(scope="module")
def acoustic_only_runs(token_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("acoustic_only")
    coarse = train_tiny("coarse", token_shards, root, "layout=acoustic_only", "trainer.run_name=coarse_acoustic")
    return coarse, train_tiny("fine", token_shards, root), train_tiny("coarse", token_shards, root)


def test_coarse_trains_on_token_shards_and_generates_without_semantic_ids(acoustic_only_runs, token_shards):
    from audiolm_pl.lm import generate_coarse, load_lm

    lm = load_lm(acoustic_only_runs[0], expected_stage="coarse")
    assert isinstance(lm.layout, AcousticOnlyCoarseLayout) and lm.layout.num_coarse == 2
    prompt = torch.randint(0, token_shards.codec.codebook_size, (1, 5, 2))
    made = [generate_coarse(lm, ids, prompt, num_frames=80, generator=torch.Generator().manual_seed(0))
            for ids in (torch.zeros(1, 0, dtype=torch.long), torch.randint(0, 12, (1, 40)))]
    assert made[0].shape == (1, 80, 2)  # past the 1 s (50 frame) training crop: sliding windows
    assert torch.equal(made[0][:, :5], prompt)
    assert torch.equal(made[0], made[1])  # the semantic ids it is handed change nothing


def test_audiolm_continues_without_a_semantic_lm(acoustic_only_runs, token_shards, tmp_path):
    from audiolm_pl.cli import main
    from audiolm_pl.config import save_yaml
    from audiolm_pl.inference.audiolm import AudioLM, PipelineConfig
    from audiolm_pl.lm import load_lm

    coarse_run, fine_run, prefix_coarse_run = acoustic_only_runs
    codec, tokenizer = token_shards.codec, token_shards.tokenizer
    model = AudioLM(codec, tokenizer, None, load_lm(coarse_run), load_lm(fine_run))
    assert model.acoustic_only and "semantic" not in model.lms
    prompt = torch.from_numpy(next(iter(_audio(token_shards))))[:8000]  # 0.5 s
    result = model.continue_audio(prompt, seconds=0.4, seed=0)
    assert result.semantic_ids.shape == (1, 0) and result.codes.shape[1] == 25 + 20
    assert torch.equal(result.codes[:, :25, :2], codec.encode(prompt[None])[:, :25, :2])  # the prompt's codes kept
    assert result.wav.shape[1] >= 8000 + 0.39 * 16000 and torch.equal(result.wav[0, :8000], prompt)
    with pytest.raises(ValueError, match="acoustic-only"):
        model.generate_acoustics(wav=prompt)
    assert model.generate_unconditional(0.2, seed=0).codes.shape[:2] == (1, 10)  # from BOS alone

    # the command line: the pipeline's semantic LM is not even loaded (it does not exist here)
    pipeline = tmp_path / "pipeline.yaml"
    save_yaml(PipelineConfig(codec=str(token_shards.codec_path), semantic_tokenizer=str(token_shards.semantic_path),
                             semantic_lm=str(tmp_path / "no_such_run"), coarse_lm=str(coarse_run),
                             fine_lm=str(fine_run)), pipeline)
    wav_in, wav_out = tmp_path / "prompt.wav", tmp_path / "out.wav"
    soundfile.write(wav_in, prompt.numpy(), 16000)
    assert main(["generate", "--pipeline", str(pipeline), "--acoustic-only", "--prompt", str(wav_in),
                 "--prompt-seconds", "0.5", "--seconds", "0.4", "--seed", "0", "--out", str(wav_out)]) == 0
    assert len(soundfile.read(wav_out)[0]) >= 8000 + 0.39 * 16000
    # a coarse LM that reads semantic ids cannot go without its semantic LM
    with pytest.raises(ValueError, match="reads semantic ids, so the pipeline needs a semantic LM"):
        AudioLM(codec, tokenizer, None, load_lm(prefix_coarse_run), load_lm(fine_run))


def _audio(token_shards):
    from audiolm_pl.data.shard_io import iter_samples

    for sample in iter_samples(token_shards.audio.val, 16000):
        if len(sample.audio) >= 8000:
            yield sample.audio
