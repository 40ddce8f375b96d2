"""Every shipped stage YAML (conf/codec, conf/ssl, conf/lm/*) built through the registry, as training builds it.

`tiny` configs are built for real and run a forward pass; the others are built on the meta device (shapes and
parameter counts, no memory, no time). The parameter counts are the figures docs/ and the YAMLs' comments give;
the LM configs are built on token shards whose specs are those of the codec config of the same size, so a
codec config and the LMs that claim to model it cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiolm_pl import registry
from audiolm_pl.config import CONF_DIR
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import load_stage_config

# (low, high) parameters as documented: docs/codec.md (generator only), docs/semantic.md, docs/lm.md
CODEC_PARAMETERS = {"small": (1.65e6, 1.75e6), "soundstream_small": (2.55e6, 2.65e6), "paper": (10.4e6, 10.6e6)}
CODEC_CODES = {"tiny": (4, 64), "soundstream_tiny": (4, 64), "small": (8, 1024), "soundstream_small": (12, 1024),
               "paper": (12, 1024)}  # (Q, codebook size) of the docs/codec.md table
SSL_PARAMETERS = {"tiny": (0.11e6, 0.13e6), "paper": (0.28e9, 0.33e9)}
LM_PARAMETERS = {"paper": (150e6, 165e6)}  # tied embeddings; the paper's own "~0.3B" is not what this config builds
LM_BLOCK_PARAMETERS = {"small": (0.75e6, 0.85e6)}  # "0.8 M transformer parameters + embeddings"
SEMANTIC_VOCAB = {"tiny": 12, "small": 256, "paper": 1024}  # test tokenizer, `main` job's clusters, the paper's K


def shipped(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(stage: str, config, real: bool):
    """`registry` build of `stage` on CPU (real) or on the meta device."""
    with torch.device("cpu" if real else "meta"):
        return registry.get_stage(stage).build(config)


# -- codecs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", shipped("codec"))
def test_codec_config_builds_with_documented_codes_rate_and_size(name, one_thread):
    config = load_stage_config("codec", name, "cpu")
    # the frame codec's FSQ (vector-quantize-pytorch) reads its level product with .item(), which a meta
    # tensor cannot give: built for real, ~6 M parameters with its discriminators
    module, datamodule = build("codec", config, real=name.endswith("tiny") or config.model.kind == "frame")
    codec = module.model
    assert codec.token_spec == TokenSpec("acoustic", 16000, 50.0, CODEC_CODES[name][1], CODEC_CODES[name][0])
    assert datamodule.config.sample_rate == codec.sample_rate
    if name in CODEC_PARAMETERS:
        low, high = CODEC_PARAMETERS[name]
        assert low <= parameters(codec) <= high, parameters(codec)
    if name.endswith("tiny"):  # a training crop goes through the model it trains
        crop = torch.randn(2, int(config.data.crop_seconds * codec.sample_rate)) * 0.1
        out = codec.train()(crop)
        assert out.wav.shape == crop.shape and out.codes.shape == (2, round(config.data.crop_seconds * 50), CODEC_CODES[name][0])


# -- our SSL model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ssl_targets(tmp_path_factory):
    """A 100-id target tokenizer file at 50 Hz (as `semantic kmeans --frame-rate 50` writes), random centroids."""
    from audiolm_pl.semantic.features import FeatureSource
    from audiolm_pl.semantic.tokenizer import FramePipeline, KMeansSemanticTokenizer

    frames = FramePipeline(FeatureSource(kind="mel"), 50.0)
    torch.manual_seed(0)
    tokenizer = KMeansSemanticTokenizer(frames, torch.randn(100, frames.dim), torch.zeros(frames.dim), torch.ones(frames.dim))
    return tokenizer.save(tmp_path_factory.mktemp("ssl_targets") / "mfcc.safetensors")


@pytest.mark.parametrize("name", shipped("ssl"))
def test_ssl_config_builds_at_50_hz_with_its_targets_vocabulary(name, ssl_targets, monkeypatch):
    from audiolm_pl.semantic import ssl_lightning
    from audiolm_pl.semantic.tokenizer import load_tokenizer

    config = load_stage_config("ssl", name, "cpu", [f"targets.tokenizer={ssl_targets}"])
    real = name == "tiny"
    if not real:  # the target tokenizer is read from its file, which cannot happen on the meta device
        targets = load_tokenizer(ssl_targets)
        monkeypatch.setattr(ssl_lightning, "load_tokenizer", lambda path: targets)
    module, _ = build("ssl", config, real)
    assert module.model.frame_rate == 50.0 and config.model.num_targets == 100  # 0 in the YAML: the tokenizer's
    if name in SSL_PARAMETERS:
        low, high = SSL_PARAMETERS[name]
        assert low <= parameters(module.model) <= high, parameters(module.model)


# -- the three LMs -------------------------------------------------------------------------------

LM_CONFIGS = [(stage, name) for stage in ("semantic", "coarse", "fine") for name in shipped(f"lm/{stage}")]


@pytest.fixture(scope="module")
def token_manifests(tmp_path_factory):
    """size -> a token shard directory whose manifest holds the specs of that size's codec config and semantic
    vocabulary (one empty tar: building reads the manifest, never the samples)."""
    from audiolm_pl.codec.lightning import build_codec
    from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest

    directories = {}
    for size in ("tiny", "small", "paper"):
        acoustic = build_codec(load_stage_config("codec", size).model).token_spec
        semantic = TokenSpec("semantic", 16000, 25.0, SEMANTIC_VOCAB[size])
        directory = tmp_path_factory.mktemp(f"tokens_{size}")
        (directory / "tokens-000000.tar").touch()
        write_manifest(directory, ShardManifest("tokens", 16000, [ShardEntry("tokens-000000.tar", 0)],
                                                token_specs={"semantic": semantic.to_dict(), "acoustic": acoustic.to_dict()}))
        directories[size] = (directory, semantic, acoustic)
    return directories


def longest_crop(config, semantic: TokenSpec, acoustic: TokenSpec) -> tuple[np.ndarray, np.ndarray]:
    """Random ids (T_s,) and codes (T_a, Q) of a `data.crop_seconds` crop, holding the largest id and code."""
    rng = np.random.default_rng(0)
    frames = int(config.data.crop_seconds * semantic.frame_rate)
    ids = rng.integers(0, semantic.vocab_size, frames)
    ids[-1] = semantic.vocab_size - 1
    codes = rng.integers(0, acoustic.vocab_size, (round(frames * acoustic.frame_rate / semantic.frame_rate), acoustic.num_quantizers))
    codes[-1] = acoustic.vocab_size - 1
    return ids, codes


@pytest.mark.parametrize("stage,name", LM_CONFIGS, ids=[f"{stage}-{name}" for stage, name in LM_CONFIGS])
def test_lm_config_builds_for_its_codec_and_fits_its_longest_crop(stage, name, token_manifests, one_thread):
    directory, semantic, acoustic = token_manifests[name]
    config = load_stage_config(stage, name, "cpu", [f"data.train_shards={directory}", f"data.val_shards={directory}"])
    module, _ = build(stage, config, real=name == "tiny")
    model, layout = module.model, module.layout
    assert module.hparams["token_specs"] == {"semantic": semantic.to_dict(), "acoustic": acoustic.to_dict()}
    if stage != "semantic":
        assert layout.codebook_size == acoustic.vocab_size and max(layout.levels) < acoustic.num_quantizers
    # a crop of the largest ids and codes: every token is in the vocabulary, the sequence within the context
    example = layout.example(*longest_crop(config, semantic, acoustic))
    tokens = torch.from_numpy(example.tokens)[None, :-1]  # (1, T)
    assert int(tokens.max()) < model.vocab_size == layout.vocab_size
    assert tokens.shape[1] <= config.model.max_seq_len
    conditions = None if example.conditions is None else torch.from_numpy(example.conditions)[None]  # (1, T, w)
    if conditions is not None:
        assert int(conditions.max()) < layout.condition_vocab
    device = "cpu" if name == "tiny" else "meta"
    logits = model(tokens.to(device), conditions=None if conditions is None else conditions.to(device))
    assert logits.shape == (1, tokens.shape[1], layout.vocab_size)
    if name in LM_PARAMETERS:
        low, high = LM_PARAMETERS[name]
        assert low <= parameters(model) <= high, parameters(model)
    if name in LM_BLOCK_PARAMETERS:
        low, high = LM_BLOCK_PARAMETERS[name]
        assert low <= sum(parameters(block) for block in model.blocks) <= high
    if name == "tiny":
        assert torch.isfinite(logits).all()


SOUNDSTORM_PARAMETERS = {"small": (2.85e6, 3.0e6), "paper": (175e6, 180e6)}  # docs/soundstorm.md


@pytest.mark.parametrize("name", shipped("soundstorm"))
def test_soundstorm_config_builds_for_its_codec_and_fits_its_crop(name, token_manifests, one_thread):
    directory, semantic, acoustic = token_manifests[name]
    config = load_stage_config("soundstorm", name, "cpu", [f"data.train_shards={directory}", f"data.val_shards={directory}"])
    module, _ = build("soundstorm", config, real=name == "tiny")
    model, frames = module.model, module.layout
    assert module.hparams["token_specs"] == {"semantic": semantic.to_dict(), "acoustic": acoustic.to_dict()}
    assert (model.codebook_size, model.num_levels) == (acoustic.vocab_size, acoustic.num_quantizers)
    crop = frames.example(*longest_crop(config, semantic, acoustic))
    assert len(crop.semantic) <= config.model.max_seq_len
    device = "cpu" if name == "tiny" else "meta"
    hidden = model(torch.from_numpy(crop.semantic)[None].to(device), torch.from_numpy(crop.codes)[None].to(device))
    assert model.level_logits(hidden, 0).shape == (1, len(crop.semantic), acoustic.vocab_size)
    if name in SOUNDSTORM_PARAMETERS:
        low, high = SOUNDSTORM_PARAMETERS[name]
        assert low <= parameters(model) <= high, parameters(model)


def test_every_shipped_stage_yaml_is_built_here():
    built = {CONF_DIR / "codec" / f"{name}.yaml" for name in shipped("codec")}
    built |= {CONF_DIR / "ssl" / f"{name}.yaml" for name in shipped("ssl")}
    built |= {CONF_DIR / "lm" / stage / f"{name}.yaml" for stage, name in LM_CONFIGS}
    built |= set((CONF_DIR / "detector").glob("*.yaml"))  # built in tests/test_detector.py
    built |= {CONF_DIR / "soundstorm" / f"{name}.yaml" for name in shipped("soundstorm")}
    stage_groups = {entry.conf_group for entry in registry.STAGES.values()}
    shipped_stage_yamls = {path for group in stage_groups for path in (CONF_DIR / group).glob("*.yaml")}
    assert stage_groups == {"codec", "ssl", "lm/semantic", "lm/coarse", "lm/fine", "detector",
                            "soundstorm"}, "a new stage needs its build test here"
    assert shipped_stage_yamls == built
