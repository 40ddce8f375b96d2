"""The SoundStorm-style parallel acoustic stage: its training mask, its parallel decoding, training from real token
shards, and swapping it for the coarse + fine LMs in `AudioLM`."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import soundfile
import torch

from conftest import run_notebook

from audiolm_pl.soundstorm.decoding import SoundStormSampling, decode_level, forward_passes, generate_soundstorm
from audiolm_pl.soundstorm.masking import mask_batch
from audiolm_pl.soundstorm.model import SoundStormConfig, SoundStormModel, align_semantic
from audiolm_pl.training import load_stage_config, train_stage

pytestmark = pytest.mark.usefixtures("one_thread")

C, L = 16, 4  # codebook size (MASK = C), levels


def tiny_model(position: str = "t5", context: int = 40) -> SoundStormModel:
    torch.manual_seed(0)
    return SoundStormModel(SoundStormConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, max_seq_len=context,
                                            position=position), semantic_vocab=12, codebook_size=C, num_levels=L,
                           frames_per_id=2)


# -- the training mask ----------------------------------------------------------------------------------

def test_mask_keeps_prompt_and_lower_levels_masks_higher_levels_and_spares_padding():
    codes = torch.randint(0, C, (64, 30, L))
    frames = torch.ones(64, 30, dtype=torch.bool)
    frames[::2, 22:] = False  # every other row: 22 real frames, then padding
    masked = mask_batch(codes, frames, C, max_prompt_share=0.5, generator=torch.Generator().manual_seed(0))
    is_mask = masked.codes == C  # (B, T, L)
    for row in range(64):
        q, prompt, real = int(masked.level[row]), int(masked.prompt_frames[row]), int(frames[row].sum())
        assert 0 <= prompt <= real // 2
        assert not is_mask[row, :prompt].any()  # prompt frames whole, at every level
        assert not is_mask[row, real:].any() and not masked.loss_mask[row, real:].any()  # padding: no mask, no loss
        assert not is_mask[row, :, :q].any()  # levels below q known
        assert is_mask[row, prompt:real, q + 1:].all()  # levels above q masked after the prompt
        assert torch.equal(is_mask[row, :, q], masked.loss_mask[row])  # the loss is on level q's masked frames
        assert masked.loss_mask[row].sum() >= 1
    assert torch.equal(masked.codes[~is_mask], codes[~is_mask])  # what is not masked is the input itself
    assert set(masked.level.tolist()) == set(range(L))


def test_masked_share_follows_the_cosine_schedule():
    # mean of cos(pi / 2 * u), u ~ U(0, 1), is 2 / pi; a linear schedule would give 0.5, a constant one its value
    rows, frames = 4096, 200
    masked = mask_batch(torch.zeros(rows, frames, L, dtype=torch.long), torch.ones(rows, frames, dtype=torch.bool), C,
                        max_prompt_share=0.0, generator=torch.Generator().manual_seed(1))
    share = masked.loss_mask.float().mean(dim=1)  # (rows,)
    assert abs(share.mean().item() - 2 / math.pi) < 0.015
    # the distribution, not only its mean: share > cos(pi / 2 * x) exactly when u < x, with probability x
    for x in (0.25, 0.5, 0.75):
        assert abs((share > math.cos(math.pi / 2 * x) + 1 / frames).float().mean().item() - x) < 0.03
    counts = torch.bincount(masked.level, minlength=L).float() / rows  # uniform level
    assert (counts - 1 / L).abs().max() < 0.03


# -- the model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_every_frame_sees_every_frame_and_no_frame_sees_padding(position):
    model = tiny_model(position).eval()
    semantic, codes = torch.randint(0, 12, (1, 20)), torch.randint(0, C, (1, 20, L))
    last = codes.clone()
    last[0, -1] = (last[0, -1] + 1) % C
    assert not torch.allclose(model(semantic, codes)[0, 0], model(semantic, last)[0, 0])  # frame 0 reads the last one
    frames = torch.ones(1, 20, dtype=torch.bool)
    frames[0, 15:] = False
    other = codes.clone()
    other[0, 15:] = (other[0, 15:] + 1) % C
    hidden = model(semantic, codes, frames), model(semantic, other, frames)
    assert torch.allclose(hidden[0][0, :15], hidden[1][0, :15], atol=1e-6)
    assert not torch.allclose(model(semantic, codes)[0, :15], model(semantic, other)[0, :15])


@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_a_context_built_once_gives_what_each_forward_builds(position):
    model = tiny_model(position).eval()
    semantic, codes = torch.randint(0, 12, (2, 25)), torch.randint(0, C + 1, (2, 25, L))  # MASK included
    context = model.attention_context(25, codes.device)
    assert context.mask is None or context.mask.is_contiguous()  # attention would copy a permuted bias per layer
    assert torch.equal(model(semantic, codes, context=context), model(semantic, codes))


def test_semantic_ids_are_aligned_to_frames_and_padded_past_their_end():
    aligned = align_semantic(torch.tensor([[5, 7, 9]]), 8, 2, pad_id=12)
    assert aligned.tolist() == [[5, 5, 7, 7, 9, 9, 12, 12]]
    assert align_semantic(torch.zeros(2, 0, dtype=torch.long), 3, 2, pad_id=12).tolist() == [[12] * 3] * 2


# -- decoding -------------------------------------------------------------------------------------------

def test_each_pass_unmasks_along_the_cosine_schedule():
    model = tiny_model().eval()
    codes = torch.full((2, 30, L), C)
    codes[:, :6] = torch.randint(0, C, (2, 6, L))  # a prompt
    codes[:, 6:, 0] = C  # level 0 unknown after the prompt: 24 frames
    seen = []
    forward = model.forward
    model.forward = lambda semantic, codes_in, frames=None, context=None: (
        seen.append((codes_in[:, :, 0] == C).sum(1).tolist()), forward(semantic, codes_in, context=context))[1]
    with torch.no_grad():
        decode_level(model, torch.randint(0, 12, (2, 30)), codes, 0, passes=5, temperature=1.0,
                     generator=torch.Generator().manual_seed(0))
    expected = [24] + [math.floor(math.cos(math.pi / 2 * k / 5) * 24) for k in range(1, 5)]
    assert seen == [[count, count] for count in expected]
    assert not (codes[:, :, 0] == C).any() and (codes[:, 6:, 1:] == C).all()  # only its own level filled


@pytest.mark.parametrize("frames,prompt", [(30, 0), (30, 8), (100, 10)])  # 100 > the 40-frame context: windows
def test_decoding_fills_every_position_and_keeps_the_prompt(frames, prompt):
    model = tiny_model(context=40)
    prompt_codes = torch.randint(0, C, (2, prompt, L + 1)) if prompt else None  # the codec may have more levels
    sampling = SoundStormSampling(iterations=[4, 2, 1], temperature=0.9, level_temperature=0.5)
    made = generate_soundstorm(model, torch.randint(0, 12, (2, frames // 2)), frames, prompt_codes, sampling,
                               torch.Generator().manual_seed(0))
    assert made.shape == (2, frames, L) and made.min() >= 0 and made.max() < C  # no MASK left
    if prompt:
        assert torch.equal(made[:, :prompt], prompt_codes[:, :, :L])
    again = generate_soundstorm(model, torch.randint(0, 12, (2, frames // 2)), frames, prompt_codes, sampling,
                                torch.Generator().manual_seed(0))
    assert not torch.equal(made[:, prompt:], again[:, prompt:])  # other semantic ids: other codes
    assert model.training  # decoding leaves the model's mode as it found it


def test_sampling_window_sets_the_frames_of_each_pass():
    model = tiny_model(context=40).eval()  # trained context: 40 frames
    widths = []
    forward = model.forward
    model.forward = lambda semantic, codes_in, frames=None, context=None: (
        widths.append(codes_in.shape[1]), forward(semantic, codes_in, context=context))[1]
    semantic = torch.randint(0, 12, (1, 50))
    for window, expected in ((0, 40), (100, 100)):  # 0: the trained context, in windows; 100: one pass covers all
        widths.clear()
        sampling = SoundStormSampling(iterations=[3, 1], window=window)
        made = generate_soundstorm(model, semantic, 100, sampling=sampling, generator=torch.Generator().manual_seed(0))
        assert made.shape == (1, 100, L) and made.max() < C
        assert max(widths) == expected and len(widths) == forward_passes(100, expected, L, sampling)
    with pytest.raises(ValueError, match="sampling.window"):
        SoundStormSampling(window=1)


# -- training from token shards and the swap in AudioLM ---------------------------------------------------

def train_tiny(stage, shards, root, *overrides):
    config = load_stage_config(stage, "tiny", "cpu", [
        f"data.train_shards={shards.train}", f"data.val_shards={shards.val}", "data.batch_size=4",
        f"trainer.output_dir={root}", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2", "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1", *overrides])
    return train_stage(stage, config)


@pytest.fixture(scope="module")
def runs(token_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("soundstorm")
    return train_tiny("soundstorm", token_shards, root), train_tiny("semantic", token_shards, root, "dedup=false")


def test_tiny_config_trains_from_token_shards(runs, token_shards):
    from audiolm_pl.jobs.report import last_scalars
    from audiolm_pl.soundstorm import load_soundstorm

    figures = last_scalars(runs[0])
    for tag in ("train/loss", "val/ce", "val/acc"):
        assert math.isfinite(figures[tag]), tag
    assert figures["train/loss"] < math.log(token_shards.codec.codebook_size) + 1  # near chance at step 2, not NaN
    loaded = load_soundstorm(runs[0])
    assert loaded.token_specs == {"semantic": token_shards.tokenizer.token_spec, "acoustic": token_shards.codec.token_spec}
    assert loaded.layout.num_levels == token_shards.codec.num_quantizers
    assert loaded.sampling.iterations == [8, 1, 1, 1]


def soundstorm_pipeline(runs, token_shards, folder):
    """A pipeline YAML with `acoustic_stage: soundstorm` over the tiny runs; coarse_lm / fine_lm name nothing."""
    from audiolm_pl.config import save_yaml
    from audiolm_pl.inference.audiolm import PipelineConfig

    pipeline = folder / "pipeline.yaml"
    save_yaml(PipelineConfig(codec=str(token_shards.codec_path), semantic_tokenizer=str(token_shards.semantic_path),
                             semantic_lm=str(runs[1]), coarse_lm=str(folder / "no_such_run"),
                             fine_lm=str(folder / "no_such_run"), acoustic_stage="soundstorm",
                             soundstorm=str(runs[0])), pipeline)
    return pipeline


def test_audiolm_swaps_coarse_and_fine_for_soundstorm(runs, token_shards, tmp_path):
    from audiolm_pl.cli import main
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.lm import load_lm
    from audiolm_pl.soundstorm import load_soundstorm
    from audiolm_pl.tokens import TokenSpecMismatch

    codec, tokenizer = token_shards.codec, token_shards.tokenizer
    pipeline = soundstorm_pipeline(runs, token_shards, tmp_path)
    model = AudioLM.from_config(pipeline)  # coarse_lm / fine_lm are not loaded
    assert set(model.lms) == {"semantic", "soundstorm"}
    prompt = torch.randn(8000) * 0.1  # 0.5 s
    result = model.continue_audio(prompt, seconds=0.4, seed=0)
    Q = codec.num_quantizers
    assert result.codes.shape == (1, 25 + 20, Q) and (result.codes < codec.codebook_size).all()
    assert torch.equal(result.codes[:, :25], codec.encode(prompt[None])[:, :25])  # the prompt's codes kept
    assert torch.equal(result.wav[0, :8000], prompt) and result.wav.shape[1] >= 8000 + 0.39 * 16000
    acoustics = model.generate_acoustics(semantic_ids=torch.randint(0, tokenizer.vocab_size, (2, 10)), seed=0)
    assert acoustics.codes.shape == (2, 20, Q) and acoustics.wav.shape[0] == 2
    assert model.generate_unconditional(0.2, seed=0).codes.shape == (1, 10, Q)
    # the pipeline's sampling override: passes per level (the last value repeats for the levels after it)
    tuned = AudioLM.from_config(pipeline, overrides=("sampling.soundstorm.iterations=[3,2]",))
    calls, network = [], tuned.soundstorm.model
    forward = network.forward
    network.forward = lambda *args, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    tuned.generate_acoustics(semantic_ids=torch.randint(0, tokenizer.vocab_size, (1, 10)), seed=0)
    assert len(calls) == 3 + 2 * (Q - 1) and tuned.soundstorm.sampling.iterations == [8, 1, 1, 1]
    wav_in, wav_out = tmp_path / "prompt.wav", tmp_path / "out.wav"  # the generate command, through the YAML
    soundfile.write(wav_in, prompt.numpy(), 16000)
    assert main(["generate", "--pipeline", str(pipeline), "--prompt", str(wav_in), "--prompt-seconds", "0.5",
                 "--seconds", "0.4", "--seed", "0", "--out", str(wav_out)]) == 0
    assert len(soundfile.read(wav_out)[0]) >= 8000 + 0.39 * 16000

    semantic, soundstorm = load_lm(runs[1]), load_soundstorm(runs[0])
    with pytest.raises(ValueError, match="either a coarse and a fine LM or a SoundStorm"):
        AudioLM(codec, tokenizer, semantic, None, None)
    other = replace(soundstorm, token_specs={**soundstorm.token_specs,
                                             "acoustic": replace(codec.token_spec, num_quantizers=Q + 1)})
    with pytest.raises(TokenSpecMismatch, match="soundstorm"):
        AudioLM(codec, tokenizer, semantic, None, None, soundstorm=other)
    dedup = replace(semantic, layout=replace(semantic.layout, dedup=True))
    with pytest.raises(TokenSpecMismatch, match="deduplicated"):
        AudioLM(codec, tokenizer, dedup, None, None, soundstorm=soundstorm)


def test_notebook_runs_on_a_soundstorm_pipeline(runs, token_shards, tmp_path):
    """The inference notebook, unchanged, on a pipeline with `acoustic_stage: soundstorm`: its swap cell swaps the
    SoundStorm run (no coarse LM to swap) and its export reloads four stages."""
    pipeline, prompt = soundstorm_pipeline(runs, token_shards, tmp_path), tmp_path / "prompt.wav"
    soundfile.write(prompt, (torch.randn(16000) * 0.1).numpy(), 16000)
    outputs = run_notebook(pipeline, prompt, tmp_path, seconds=0.4)
    assert any("['soundstorm']" in o.get("text", "") for o in outputs)  # the swap cell's acoustic stage
    assert (tmp_path / "notebook_export" / "soundstorm" / "model.safetensors").is_file()
    assert not (tmp_path / "notebook_export" / "coarse_lm").exists()


def test_export_command_writes_a_soundstorm_pipeline(runs, token_shards, tmp_path):
    """`audiolm-pl export` of a pipeline of trained checkpoints with `acoustic_stage: soundstorm`: the folder holds
    a `soundstorm/` stage, and what it loads continues a prompt as the checkpoints do, with the pipeline's
    sampling override."""
    from audiolm_pl.cli import main
    from audiolm_pl.inference.audiolm import AudioLM

    pipeline, out = soundstorm_pipeline(runs, token_shards, tmp_path), tmp_path / "export"
    override = "sampling.soundstorm.iterations=[2,1]"
    assert main(["export", "--pipeline", str(pipeline), str(out), override]) == 0
    assert (out / "soundstorm" / "model.safetensors").is_file() and not (out / "coarse_lm").exists()
    assert "acoustic_stage: soundstorm" in (out / "pipeline.yaml").read_text()
    prompt = torch.randn(8000) * 0.1  # 0.5 s
    first, again = (model.continue_audio(prompt, 0.4, seed=5) for model in (
        AudioLM.from_config(pipeline, overrides=(override,)), AudioLM.from_pretrained(out)))
    assert torch.equal(first.semantic_ids, again.semantic_ids) and torch.equal(first.codes, again.codes)
    torch.testing.assert_close(first.wav, again.wav)
    untuned = AudioLM.from_config(pipeline).continue_audio(prompt, 0.4, seed=5)  # 8 passes on level 0, not 2
    assert not torch.equal(untuned.codes, again.codes)
