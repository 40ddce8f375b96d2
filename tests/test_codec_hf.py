"""Pretrained transformers codecs as `hf:DIR` (audiolm_pl/codec/hf.py): tiny random-init EnCodec, DAC, Mimi and
X-Codec models saved with `save_pretrained`, then the wrapper's contract against the models' own encode/decode,
the tokenize job through each, and EnCodec (24 kHz, 75 Hz: resampled and 3 frames per semantic id) through LM
training and `AudioLM` continuation from a pipeline YAML. Nothing is downloaded."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import make_semantic_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["encodec", "dac", "mimi", "xcodec"]
# native rate, frame rate, RVQ levels of the tiny models below (codebooks of 32 codes)
NATIVE = {"encodec": (24000, 75.0, 8), "dac": (16000, 50.0, 4), "mimi": (24000, 12.5, 4), "xcodec": (16000, 50.0, 4)}


def tiny_model(kind: str):
    """A random-init transformers codec of `kind`, a few tens of thousands of parameters."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "encodec":  # hop 320 at 24 kHz = 75 Hz; 3 kbps / (75 Hz x 5 bits) = 8 levels
        return tf.EncodecModel(tf.EncodecConfig(num_filters=4, hidden_size=16, codebook_size=32, codebook_dim=16,
                                                num_lstm_layers=1, target_bandwidths=[1.5, 3.0]))
    dac = dict(encoder_hidden_size=4, decoder_hidden_size=16, hidden_size=16, n_codebooks=4, codebook_size=32,
               codebook_dim=4, downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2], sampling_rate=16000)
    if kind == "dac":
        return tf.DacModel(tf.DacConfig(**dac))
    if kind == "mimi":
        return tf.MimiModel(tf.MimiConfig(num_filters=4, hidden_size=16, codebook_size=32, codebook_dim=16,
                                          vector_quantization_hidden_dimension=16, num_quantizers=4, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=2, head_dim=8, intermediate_size=32,
                                          upsample_groups=16))
    # X-Codec: a DAC acoustic half and a HuBERT semantic half with the real 400-sample receptive field, hop 320
    hubert = dict(model_type="hubert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  conv_dim=[8] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    return tf.XcodecModel(tf.XcodecConfig(acoustic_model_config={"model_type": "dac", **dac}, semantic_model_config=hubert,
                                          codebook_size=32, codebook_dim=32, target_bandwidths=[0.5, 1.0]))


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """kind -> a `save_pretrained` folder of its tiny model (config.json + model.safetensors)."""
    root = tmp_path_factory.mktemp("hf_codecs")
    for kind in KINDS:
        tiny_model(kind).eval().save_pretrained(root / kind)
    return {kind: root / kind for kind in KINDS}


def voice(seconds: float, rate: int, batch: int = 2) -> torch.Tensor:
    from conftest import synthetic_voice

    return torch.stack([torch.from_numpy(synthetic_voice(120.0 + 60 * row, seconds, rate, seed=row)) for row in range(batch)])


@pytest.mark.parametrize("kind", KINDS)
def test_codes_and_audio_are_the_models_own_in_our_layout(kind, hf_dirs):
    """At the native rate the wrapper gives the model's own codes, (B, Q, T_a) turned into (B, T_a, Q), and decodes
    the first q levels as the model does; at the pipeline's 16 kHz its TokenSpec and lengths follow the contract."""
    from transformers import AutoModel

    from audiolm_pl.codec import load_codec

    native_rate, frame_rate, levels = NATIVE[kind]
    native = load_codec(f"hf:{hf_dirs[kind]}?sample_rate={native_rate}")
    model = AutoModel.from_pretrained(hf_dirs[kind], local_files_only=True).eval()
    hop = int(native_rate / frame_rate)
    wav = voice(8 * hop / native_rate, native_rate)  # (2, 8 hops)
    codes = native.encode(wav)  # (2, 8, Q)
    with torch.no_grad():
        if kind == "encodec":
            own = model.encode(wav[:, None], bandwidth=3.0).audio_codes[0]  # (B, Q, T_a)
            own_wav = model.decode(own[None, :, :2], [None]).audio_values
        elif kind == "dac":
            own = model.encode(wav[:, None]).audio_codes
            own_wav = model.decode(audio_codes=own[:, :2]).audio_values
        else:
            own = model.encode(wav[:, None]).audio_codes
            own_wav = model.decode(own[:, :2]).audio_values
    assert codes.dtype == torch.int64 and torch.equal(codes, own.transpose(1, 2)[:, :8])
    own_wav = own_wav.reshape(2, -1)[:, : 8 * hop]
    torch.testing.assert_close(native.decode(codes[:, :, :2])[:, : own_wav.shape[1]], own_wav)

    codec = load_codec(f"hf:{hf_dirs[kind]}")  # at 16 kHz: resampled inside
    assert codec.token_spec.to_dict() == {"kind": "acoustic", "sample_rate": 16000, "frame_rate": frame_rate,
                                          "vocab_size": 32, "num_quantizers": levels}
    wav16 = voice(1.03, 16000)  # not a whole number of frames
    codes16 = codec.encode(wav16)
    assert codes16.shape == (2, math.ceil(1.03 * frame_rate), levels) and 0 <= codes16.min() and codes16.max() < 32
    assert codec.decode(codes16[:, :, :1]).shape == (2, codec.token_spec.samples_for(codes16.shape[1]))
    fewer = load_codec(f"hf:{hf_dirs[kind]}?num_quantizers=2")
    assert fewer.num_quantizers == 2 and torch.equal(fewer.encode(wav16), codes16[:, :, :2])  # RVQ: a prefix
    with pytest.raises(ValueError, match="expected codes"):
        fewer.decode(codes16)  # 4+ levels into a 2-level codec


def test_options_map_to_levels_and_bad_ones_are_refused(hf_dirs):
    from audiolm_pl.codec import load_codec

    assert load_codec(f"hf:{hf_dirs['encodec']}?bandwidth=1.5").num_quantizers == 4  # 1.5 kbps / (75 Hz x 5 bits)
    for name, message in [
        (f"hf:{hf_dirs['encodec']}?bandwidth=2", r"bandwidth 2 kbps is not one of the model's target_bandwidths \[1.5, 3.0\]"),
        (f"hf:{hf_dirs['dac']}?bandwidth=1.5", "bandwidth is an EnCodec / X-Codec option"),
        (f"hf:{hf_dirs['mimi']}?num_quantizers=5", "5 levels asked; this mimi model has 1..4"),
        (f"hf:{hf_dirs['dac']}?quantizers=2", r"unknown option\(s\) \['quantizers'\]"),
        (f"hf:{hf_dirs['dac']}?num_quantizers=2&bandwidth=1", "not both"),
        (f"hf:{hf_dirs['dac'].parent / 'missing'}", "has no config.json"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_codec(name)


def test_identity_and_hash_follow_the_weights_not_the_folder(hf_dirs, tmp_path):
    """A copied folder keeps its identity and codec_hash; other weights or other levels change them."""
    from safetensors.torch import load_file, save_file

    from audiolm_pl.codec import codec_hash, load_codec

    copy = shutil.copytree(hf_dirs["dac"], tmp_path / "copy")
    original, copied = load_codec(f"hf:{hf_dirs['dac']}"), load_codec(f"hf:{copy}")
    assert original.identity() == copied.identity() and codec_hash(f"hf:{hf_dirs['dac']}") == codec_hash(f"hf:{copy}")
    assert load_codec(f"hf:{copy}?num_quantizers=2").identity() != original.identity()
    weights = load_file(copy / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert load_codec(f"hf:{copy}").identity() != original.identity()
    assert codec_hash(f"hf:{copy}") != codec_hash(f"hf:{hf_dirs['dac']}")


@pytest.fixture(scope="module")
def semantic_files(audio_shards, tmp_path_factory):
    """MFCC k-means tokenizer files at 25 Hz (the usual) and 12.5 Hz (Mimi's frame rate)."""
    from audiolm_pl.semantic.cli import fit_kmeans, parse_source

    root = tmp_path_factory.mktemp("hf_semantic")
    make_semantic_tokenizer(audio_shards.train, root / "s25.safetensors")
    fit_kmeans(parse_source("mfcc", 0, 16000), [audio_shards.train], root / "s12.safetensors", clusters=12,
               frame_rate=12.5, epochs=3, batch_size=256, device="cpu")
    return {25.0: root / "s25.safetensors", 12.5: root / "s12.safetensors"}


@pytest.mark.parametrize("kind", ["dac", "mimi", "xcodec"])
def test_tokenize_job_through_a_pretrained_codec(kind, hf_dirs, semantic_files, audio_shards, tmp_path):
    """`tokenize --codec hf:DIR`: the shards hold the codec's own codes of each clip, its spec, identity and folder
    hash. Mimi's 12.5 Hz against 25 Hz semantic ids is refused by name; against 12.5 Hz ids it tokenizes."""
    from audiolm_pl.codec import codec_hash, load_codec
    from audiolm_pl.data.manifest import read_manifest
    from audiolm_pl.data.shard_io import iter_samples
    from audiolm_pl.jobs.cli import tokenize_with_checkpoints
    from audiolm_pl.jobs.tokenize_shards import TokenizeError

    name = f"hf:{hf_dirs[kind]}"
    semantic = semantic_files[12.5 if kind == "mimi" else 25.0]
    if kind == "mimi":
        with pytest.raises(TokenizeError, match="acoustic frame rate 12.5 Hz is not a whole multiple of the semantic"):
            tokenize_with_checkpoints(name, semantic_files[25.0], audio_shards.val, tmp_path / "refused")
    tokenize_with_checkpoints(name, semantic, audio_shards.val, tmp_path / "tokens")
    codec = load_codec(name)
    manifest = read_manifest(tmp_path / "tokens")
    assert manifest.token_specs["acoustic"] == codec.token_spec.to_dict()
    assert manifest.producers["acoustic"] == codec.identity() and manifest.codec_hash == codec_hash(name)
    audio = {sample.key: sample.audio for sample in iter_samples(audio_shards.val, 16000)}
    tokens = list(iter_samples(tmp_path / "tokens"))
    assert sorted(sample.key for sample in tokens) == sorted(audio)
    for sample in tokens[:2]:
        alone = codec.encode(torch.from_numpy(audio[sample.key])[None])[0].numpy()  # (T_a', Q)
        frames = codec.token_spec.num_frames(len(audio[sample.key]))
        assert sample.acoustic.shape == (frames, codec.num_quantizers)
        np.testing.assert_array_equal(sample.acoustic, alone[:frames])


def test_encodec_through_lm_training_and_audiolm_continuation(hf_dirs, semantic_files, audio_shards, tmp_path):
    """EnCodec at 24 kHz (resampled inside, 75 Hz = 3 frames per 25 Hz semantic id), 4 of its 8 levels: tokenized
    by the job, three LMs trained 2 steps on its tokens, and a pipeline YAML naming it `hf:` relative to the YAML
    continues a prompt, keeping the prompt's codes verbatim."""
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.jobs.cli import tokenize_with_checkpoints
    from audiolm_pl.training import load_stage_config, train_stage

    shutil.copytree(hf_dirs["encodec"], tmp_path / "encodec")
    name = f"hf:{tmp_path / 'encodec'}?num_quantizers=4"
    for split in ("train", "val"):
        tokenize_with_checkpoints(name, semantic_files[25.0], getattr(audio_shards, split), tmp_path / "tokens" / split)
    runs = {}
    for stage in ("semantic", "coarse", "fine"):
        config = load_stage_config(stage, "tiny", "cpu", [
            f"data.train_shards={tmp_path / 'tokens' / 'train'}", f"data.val_shards={tmp_path / 'tokens' / 'val'}",
            "data.batch_size=4", f"trainer.output_dir={tmp_path / 'runs'}", "trainer.enable_progress_bar=false",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2",
            "trainer.limit_val_batches=1"])
        runs[stage] = train_stage(stage, config)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "codec": "hf:encodec?num_quantizers=4", "semantic_tokenizer": str(semantic_files[25.0]),
        **{f"{stage}_lm": str(run) for stage, run in runs.items()}}))
    model = AudioLM.from_config(pipeline)
    assert model.codec.token_spec.frame_rate == 75.0 and model.codec.num_quantizers == 4
    prompt = voice(0.4, 16000, batch=1)[0]  # (6400,) = 30 frames
    result = model.continue_audio(prompt, 0.2, seed=0)
    assert result.codes.shape == (1, 30 + 15, 4)
    assert torch.equal(result.codes[:, :30], model.codec.encode(prompt[None]))  # the prompt's codes, verbatim
    assert result.wav.shape == (1, model.codec.token_spec.samples_for(45))
    assert torch.equal(result.wav[:, :6400], prompt[None])
