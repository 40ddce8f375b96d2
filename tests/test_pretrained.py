"""Stages and whole pipelines as folders (audiolm_pl/pretrained.py, `AudioLM.save_pretrained` /
`from_pretrained`, `audiolm-pl export`): what comes back generates what went in, the SSL folder is a real
transformers directory, a hand-edited TokenSpec is refused, and nothing in a folder is a pickle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import synthetic_voice

from audiolm_pl.pretrained import from_pretrained, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny LMs decode token by token


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Untrained tiny stages (no training needed to compare outputs): our SSL model saved as a folder and used
    as the semantic tokenizer's feature source, the tiny codec, three tiny LMs built on their specs; the
    `AudioLM` they make and its exported folder, moved after writing (nothing may point outside it)."""
    from audiolm_pl.codec.lightning import build_codec
    from audiolm_pl.semantic import FeatureSource, FramePipeline, KMeansConfig, fit_tokenizer
    from audiolm_pl.semantic.ssl_model import SSLModel, SSLModelConfig
    from audiolm_pl.training import load_stage_config

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    ssl = SSLModel(SSLModelConfig(num_targets=8)).eval()
    ssl_folder = save_pretrained(ssl, root / "ssl")
    voices = [torch.from_numpy(synthetic_voice(f0, 1.0, 16000, seed=s)) for s, f0 in enumerate((120.0, 180.0, 230.0))]
    frames = FramePipeline(FeatureSource(kind="ssl", path=str(ssl_folder), layer=1), 25.0)
    tokenizer = fit_tokenizer(frames, voices, KMeansConfig(num_clusters=8, batch_size=64, epochs=2))
    codec = build_codec(load_stage_config("codec", "tiny").model).eval()
    with torch.no_grad():
        codec.encode(voices[0][None])  # the quantizer's data-dependent init
    model = audiolm_of(codec, tokenizer)
    model.save_pretrained(root / "written")
    folder = (root / "written").rename(root / "moved")
    return SimpleNamespace(model=model, ssl=ssl, ssl_folder=ssl_folder, folder=folder, voices=voices, root=root)


def audiolm_of(codec, tokenizer):
    """`AudioLM` of this codec and tokenizer with three untrained tiny LMs made for their specs and identities."""
    from audiolm_pl.inference.audiolm import AudioLM, PipelineSampling, SamplingOverride
    from audiolm_pl.lm import LoadedLM, TransformerLM
    from audiolm_pl.lm.stages import make_layout
    from audiolm_pl.training import load_stage_config

    specs = {"semantic": tokenizer.token_spec, "acoustic": codec.token_spec}
    producers = {"semantic": tokenizer.identity(), "acoustic": codec.identity()}
    lms = {}
    for stage in ("semantic", "coarse", "fine"):
        run_config = load_stage_config(stage, "tiny")
        layout = make_layout(stage, run_config, specs)
        model = TransformerLM(run_config.model, layout.vocab_size, layout.condition_vocab).eval()
        lms[stage] = LoadedLM(stage, model, layout, specs, run_config.sampling, run_config.data.crop_seconds,
                              Path(f"<{stage} LM>"), producers)
    return AudioLM(codec, tokenizer, lms["semantic"], lms["coarse"], lms["fine"],
                   sampling=PipelineSampling(coarse=SamplingOverride(top_k=5)), dedup_density=0.5, prompt_seconds=1.5)


def soundstorm_audiolm_of(codec, tokenizer):
    """`AudioLM` of this codec and tokenizer with an untrained tiny SoundStorm in place of coarse + fine, a semantic
    LM that keeps every id at its time (what SoundStorm reads) and a SoundStorm sampling override."""
    from dataclasses import replace

    from audiolm_pl.inference.audiolm import AudioLM, PipelineSampling
    from audiolm_pl.lm import LoadedLM, TransformerLM
    from audiolm_pl.lm.stages import make_layout
    from audiolm_pl.soundstorm import LoadedSoundStorm
    from audiolm_pl.soundstorm.decoding import SoundStormSamplingOverride
    from audiolm_pl.soundstorm.model import SoundStormModel
    from audiolm_pl.soundstorm.stage import make_frames
    from audiolm_pl.training import load_stage_config

    specs = {"semantic": tokenizer.token_spec, "acoustic": codec.token_spec}
    producers = {"semantic": tokenizer.identity(), "acoustic": codec.identity()}
    semantic_config = replace(load_stage_config("semantic", "tiny"), dedup=False)
    layout = make_layout("semantic", semantic_config, specs)
    semantic = LoadedLM("semantic", TransformerLM(semantic_config.model, layout.vocab_size, layout.condition_vocab).eval(),
                        layout, specs, semantic_config.sampling, semantic_config.data.crop_seconds,
                        Path("<semantic LM>"), producers)
    run_config = load_stage_config("soundstorm", "tiny")
    frames = make_frames(run_config, specs)
    network = SoundStormModel(run_config.model, frames.semantic_vocab, frames.codebook_size, frames.num_levels,
                              frames.frames_per_id).eval()
    soundstorm = LoadedSoundStorm(network, frames, specs, run_config.sampling, Path("<soundstorm>"), producers)
    sampling = PipelineSampling(soundstorm=SoundStormSamplingOverride(iterations=[3, 2], temperature=0.9))
    return AudioLM(codec, tokenizer, semantic, None, None, soundstorm=soundstorm, sampling=sampling,
                   dedup_density=0.5, prompt_seconds=1.5)


def same_continuation(model, reloaded, prompt: torch.Tensor, seed: int = 3):
    """Both continue `prompt` with `seed` to the same ids, codes and audio; returns the reloaded one's result."""
    first, again = (each.continue_audio(prompt, 0.2, seed=seed) for each in (model, reloaded))
    assert torch.equal(first.semantic_ids, again.semantic_ids) and torch.equal(first.codes, again.codes)
    torch.testing.assert_close(first.wav, again.wav)
    return again


def test_pipeline_folder_generates_what_the_model_did(stages):
    from audiolm_pl.inference.audiolm import AudioLM

    reloaded = AudioLM.from_pretrained(stages.folder)
    assert reloaded.codec.identity() == stages.model.codec.identity()
    assert reloaded.semantic_tokenizer.identity() == stages.model.semantic_tokenizer.identity()
    assert reloaded.semantic_tokenizer.source.kind == "ssl"  # read from the folder's own features/
    for stage in ("semantic", "coarse", "fine"):
        assert reloaded.stage_sampling(stage) == stages.model.stage_sampling(stage)
    assert (reloaded.prompt_seconds, reloaded.dedup_density) == (1.5, 0.5)
    prompt = stages.voices[1][:6400]  # 0.4 s
    again = same_continuation(stages.model, reloaded, prompt)
    other_seed = reloaded.continue_audio(prompt, 0.2, seed=4)
    assert not torch.equal(other_seed.codes, again.codes)  # the comparison can tell outputs apart


def test_a_soundstorm_pipeline_folder_generates_what_the_model_did(stages, tmp_path):
    """`acoustic_stage: soundstorm` round trip: a `soundstorm/` folder in place of `coarse_lm/` + `fine_lm/`, the
    pipeline.yaml names it, and the reloaded model continues a prompt to the same ids, codes and audio."""
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.lm import LoadedLM, load_lm
    from audiolm_pl.soundstorm import LoadedSoundStorm, load_soundstorm

    model = soundstorm_audiolm_of(stages.model.codec, stages.model.semantic_tokenizer)
    model.save_pretrained(tmp_path / "written")
    folder = (tmp_path / "written").rename(tmp_path / "moved")  # nothing in it may point outside it
    assert sorted(path.name for path in folder.iterdir() if path.is_dir()) == [
        "codec", "semantic_lm", "semantic_tokenizer", "soundstorm"]
    reloaded = AudioLM.from_pretrained(folder)
    assert set(reloaded.lms) == {"semantic", "soundstorm"} and reloaded.coarse_lm is None
    assert reloaded.sampling.soundstorm == model.sampling.soundstorm  # the pipeline's override, kept
    stage = reloaded.soundstorm
    assert (stage.layout, stage.sampling, stage.producers) == (model.soundstorm.layout, model.soundstorm.sampling,
                                                               model.soundstorm.producers)
    prompt = stages.voices[1][:6400]  # 0.4 s
    again = same_continuation(model, reloaded, prompt)
    assert not torch.equal(reloaded.continue_audio(prompt, 0.2, seed=4).codes, again.codes)

    alone = LoadedSoundStorm.from_pretrained(folder / "soundstorm")  # the stage folder on its own, and its loader
    assert torch.equal(alone.model.heads, load_soundstorm(folder / "soundstorm").model.heads)
    with pytest.raises(TypeError, match="holds a LoadedSoundStorm, not a LoadedLM"):
        LoadedLM.from_pretrained(folder / "soundstorm")
    with pytest.raises(ValueError, match="'soundstorm' checkpoint, not an LM stage"):
        load_lm(folder / "soundstorm")
    with pytest.raises(ValueError, match="expected a 'soundstorm' stage"):
        load_soundstorm(stages.folder / "coarse_lm")
    _edit(folder / "soundstorm", lambda specs: specs["acoustic"].update(num_quantizers=2))  # fewer than its 4 levels
    with pytest.raises(ValueError, match="layout.num_levels = 4 but token_specs.acoustic has 2 quantizers"):
        AudioLM.from_pretrained(folder)


def test_a_transformers_codec_is_exported_as_it_is(stages):
    """A pipeline whose codec is hf:DIR (a tiny DAC: 16 kHz, 50 Hz, like ours) keeps its files byte for byte,
    so its identity, which its LMs recorded, holds after the round trip."""
    import transformers

    from audiolm_pl.codec import load_codec
    from audiolm_pl.inference.audiolm import AudioLM

    torch.manual_seed(0)
    transformers.DacModel(transformers.DacConfig(
        encoder_hidden_size=4, decoder_hidden_size=16, hidden_size=16, n_codebooks=4, codebook_size=32, codebook_dim=4,
        downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2], sampling_rate=16000,
    )).eval().save_pretrained(stages.root / "dac")
    model = audiolm_of(load_codec(f"hf:{stages.root / 'dac'}?num_quantizers=3"), stages.model.semantic_tokenizer)
    folder = model.save_pretrained(stages.root / "with_dac")
    assert "codec: hf:codec?num_quantizers=3&sample_rate=16000" in (folder / "pipeline.yaml").read_text()
    reloaded = AudioLM.from_pretrained(folder)
    assert reloaded.codec.identity() == model.codec.identity() and reloaded.codec.num_quantizers == 3
    same_continuation(model, reloaded, stages.voices[0][:6400])


def test_folders_hold_no_pickle(stages):
    files = [path for path in stages.folder.rglob("*") if path.is_file()]
    assert {path.suffix for path in files} == {".json", ".safetensors", ".yaml"}
    for path in files:
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", path  # a pickle stream, a torch.save zip
    names = {str(path.relative_to(stages.folder)) for path in files}
    assert {"pipeline.yaml", "codec/model.safetensors", "semantic_tokenizer/tokenizer.safetensors",
            "semantic_tokenizer/features/config.json", "fine_lm/model.safetensors"} <= names


def test_ssl_folder_is_a_transformers_directory(stages):
    from transformers import AutoModel

    from audiolm_pl.semantic import FramePipeline, KMeansConfig, fit_tokenizer
    from audiolm_pl.semantic.features import FeatureSource, SSLLayerFeatures, build_features

    for folder in (stages.ssl_folder, stages.folder / "semantic_tokenizer" / "features"):
        assert type(AutoModel.from_pretrained(folder, local_files_only=True)).__name__ == "HubertModel"
    wav = stages.voices[2][None]  # (1, T)
    ours = SSLLayerFeatures(stages.ssl_folder, layer=1)(wav)  # (1, T_f, D)
    theirs = build_features(FeatureSource(kind="hf", path=str(stages.ssl_folder), layer=1))(wav)
    # the same up to how the two normalise the clip (biased / unbiased std, epsilon), which LayerNorm absorbs
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ours[:, :-1], ours[:, 1:], atol=1e-3)  # frames differ: a real comparison
    hf_tokenizer = stages.root / "hf_tokenizer"  # a tokenizer on an hf:DIR source copies that model into features/
    tokenizer = fit_tokenizer(FramePipeline(FeatureSource(kind="hf", path=str(stages.ssl_folder), layer=1), 25.0),
                              stages.voices, KMeansConfig(num_clusters=8, batch_size=64, epochs=1))
    copied = from_pretrained(save_pretrained(tokenizer, hf_tokenizer))
    assert copied.source.path == "features" and copied.identity() == tokenizer.identity()
    assert torch.equal(copied.encode(wav), tokenizer.encode(wav))
    reloaded = from_pretrained(stages.ssl_folder)
    original = stages.ssl.state_dict()
    assert reloaded.state_dict().keys() == original.keys()
    assert all(torch.equal(value, original[name]) for name, value in reloaded.state_dict().items())


def _edit(folder: Path, change) -> None:
    metadata = json.loads((folder / "audiolm_pl.json").read_text())
    change(metadata["token_specs"])
    (folder / "audiolm_pl.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize("stage, change, words", [
    ("coarse_lm", lambda specs: specs["acoustic"].update(vocab_size=specs["acoustic"]["vocab_size"] + 1),
     "layout.codebook_size"),
    ("codec", lambda specs: specs["acoustic"].update(num_quantizers=1), "codec checkpoint"),
    (".", lambda specs: specs["semantic"].update(frame_rate=50.0), "pipeline folder"),
])
def test_a_tampered_token_spec_is_refused(stages, tmp_path, stage, change, words):
    from audiolm_pl.inference.audiolm import AudioLM

    folder = Path(shutil.copytree(stages.folder, tmp_path / "copy"))
    _edit(folder / stage, change)
    with pytest.raises(ValueError) as err:  # CheckpointError / TokenSpecMismatch: exit code 2 from the CLI
        AudioLM.from_pretrained(folder)
    assert words in str(err.value) and str(folder) in str(err.value)


def test_stage_folders_load_where_checkpoints_do(stages, tmp_path):
    from audiolm_pl.codec import load_codec
    from audiolm_pl.lm import load_lm

    codec = load_codec(stages.folder / "codec")
    wav = stages.voices[0][None]
    assert torch.equal(codec.encode(wav), stages.model.codec.encode(wav))
    fine = load_lm(stages.folder / "fine_lm", expected_stage="fine")
    assert fine.layout == stages.model.fine_lm.layout and fine.producers == stages.model.fine_lm.producers
    tokenizer = from_pretrained(stages.folder / "semantic_tokenizer")
    assert torch.equal(tokenizer.encode(wav), stages.model.semantic_tokenizer.encode(wav))
    with pytest.raises(ValueError, match="expected a 'coarse' stage"):
        load_lm(stages.folder / "fine_lm", expected_stage="coarse")
    with pytest.raises(ValueError, match="exists and is not empty"):
        save_pretrained(codec, stages.folder / "fine_lm")
    save_pretrained(codec, tmp_path / "codec")
    save_pretrained(fine, tmp_path / "codec", overwrite=True)  # an earlier export is replaced whole
    assert load_lm(tmp_path / "codec").stage == "fine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    with pytest.raises(ValueError, match="left alone"):
        save_pretrained(codec, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_export_command_writes_the_main_jobs_pipeline(tiny_run, tmp_path):
    import soundfile

    from audiolm_pl.cli import main
    from audiolm_pl.inference.audiolm import AudioLM

    pipeline, out = tiny_run.root / "pipeline.yaml", tmp_path / "export"
    assert main(["export", "--pipeline", str(pipeline), str(out)]) == 0
    assert main(["export", "--pipeline", str(pipeline), str(out)]) == 2  # not over an earlier export (unless --overwrite)
    wav, _ = soundfile.read(next((tiny_run.root / "generated" / "prompts").glob("*.wav")), dtype="float32")
    prompt = torch.from_numpy(wav[:8000])
    first, again = (model.continue_audio(prompt, 0.5, seed=5)
                    for model in (AudioLM.from_config(pipeline), AudioLM.from_pretrained(out)))
    assert torch.equal(first.codes, again.codes)
    torch.testing.assert_close(first.wav, again.wav)


def test_every_stage_class_saves_and_loads_itself(stages, tmp_path):
    """The method spelling: `stage.save_pretrained(dir)` and `Class.from_pretrained(dir)` for the codec, the
    tokenizer, our SSL model and an LM; a folder of another kind of stage is refused by the class."""
    from audiolm_pl.codec.frame_model import FrameCodec
    from audiolm_pl.lm import LoadedLM
    from audiolm_pl.semantic.ssl_model import SSLModel
    from audiolm_pl.semantic.tokenizer import KMeansSemanticTokenizer
    from audiolm_pl.tokens import AcousticCodec

    model, wav = stages.model, stages.voices[0][None]
    codec = type(model.codec).from_pretrained(model.codec.save_pretrained(tmp_path / "codec"))
    assert torch.equal(codec.encode(wav), model.codec.encode(wav)) and isinstance(codec, AcousticCodec)
    tokenizer = KMeansSemanticTokenizer.from_pretrained(model.semantic_tokenizer.save_pretrained(tmp_path / "tok"))
    assert torch.equal(tokenizer.encode(wav), model.semantic_tokenizer.encode(wav))
    coarse = LoadedLM.from_pretrained(model.coarse_lm.save_pretrained(tmp_path / "coarse"))
    assert coarse.stage == "coarse" and coarse.layout == model.coarse_lm.layout
    ssl = SSLModel.from_pretrained(stages.ssl.save_pretrained(tmp_path / "ssl"))
    for name, tensor in stages.ssl.state_dict().items():
        assert torch.equal(ssl.state_dict()[name], tensor), name
    with pytest.raises(TypeError, match="holds a LoadedLM, not a FrameCodec"):
        FrameCodec.from_pretrained(tmp_path / "coarse")


def test_tokenize_takes_exported_folders(stages, audio_shards, tmp_path):
    """`tokenize --codec FOLDER --semantic FOLDER`: the codes and ids are those of the stages that were exported,
    and the shards record the folders' hashes."""
    from audiolm_pl.data.shard_io import iter_samples
    from audiolm_pl.jobs.cli import tokenize_with_checkpoints
    from audiolm_pl.pretrained import folder_hash

    report = tokenize_with_checkpoints(stages.folder / "codec", stages.folder / "semantic_tokenizer", audio_shards.val,
                                       tmp_path / "tokens")
    assert report.samples > 0
    audio = {s.key: s.audio for s in iter_samples(audio_shards.val, 16000)}
    for sample in iter_samples(tmp_path / "tokens"):
        wav = torch.from_numpy(audio[sample.key])[None]
        assert torch.equal(torch.from_numpy(sample.acoustic), stages.model.codec.encode(wav)[0])
        assert torch.equal(torch.from_numpy(sample.semantic), stages.model.semantic_tokenizer.encode(wav)[0])
    header = json.loads(next((tmp_path / "tokens").glob("*.json")).read_text())
    assert header["codec_hash"] == folder_hash(stages.folder / "codec")
