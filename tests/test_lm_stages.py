"""The three LM stages on tiny configs, from token shards made by the real tokenize job (every shipped
LM config is built in tests/test_configs_build.py)."""

from __future__ import annotations

import math

import pytest
import torch

from audiolm_pl import registry
from audiolm_pl.training import build_trainer, load_stage_config, train_stage


STAGES = ["semantic", "coarse", "fine"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(stage, shards, tmp_path, *overrides):
    return load_stage_config(stage, "tiny", "cpu", [
        f"data.train_shards={shards.train}", f"data.val_shards={shards.val}", "data.batch_size=4",
        f"trainer.output_dir={tmp_path}", "trainer.enable_progress_bar=false", *overrides,
    ])


@pytest.mark.parametrize("stage", STAGES)
def test_fast_dev_run_logs_validation_metrics_per_level(stage, token_shards, tmp_path):  # noqa: F811
    config = tiny_config(stage, token_shards, tmp_path, "trainer.fast_dev_run=true")
    module, datamodule = registry.get_stage(stage).build(config)
    trainer = build_trainer(config.trainer, tmp_path)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    levels = {"semantic": [], "coarse": [0, 1], "fine": [2, 3]}[stage]  # tiny: num_coarse 2 of 4 levels
    for name in ["val/ce", "val/acc", "val/ppl", "val/unigram_entropy"] + [f"val/ce_q{q}" for q in levels]:
        assert name in metrics and math.isfinite(float(metrics[name])), name
    assert float(metrics["val/ppl"]) == pytest.approx(math.exp(float(metrics["val/ce"])), rel=1e-4)
    # the one step's loss is a fresh model's: near-uniform logits over the layout's vocabulary, in nats, averaged
    # over the loss positions (tied embeddings lean towards the input id, a few tenths of a nat at most)
    assert abs(float(metrics["train/loss"]) - math.log(module.layout.vocab_size)) < 0.5


@pytest.mark.parametrize("stage", STAGES)
def test_checkpoint_records_specs_and_layout_and_loads_for_generation(stage, token_shards, tmp_path):  # noqa: F811
    from audiolm_pl.lm import generate_coarse, generate_fine, generate_semantic, load_lm

    config = tiny_config(stage, token_shards, tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2",
                         "trainer.checkpoint_every_n_steps=2", "trainer.limit_val_batches=1")
    run = train_stage(stage, config)
    lm = load_lm(run, expected_stage=stage)
    codec, tokenizer = token_shards.codec, token_shards.tokenizer
    assert lm.token_specs == {"semantic": tokenizer.token_spec, "acoustic": codec.token_spec}
    lm.require_specs("acoustic", codec.token_spec, producer="test codec")
    semantic = torch.randint(0, tokenizer.vocab_size, (2, 8))
    if stage == "semantic":
        assert generate_semantic(lm, semantic, 12).shape == (2, 12)
    elif stage == "coarse":
        assert generate_coarse(lm, semantic).shape == (2, 16, 2)
    else:
        coarse = torch.randint(0, codec.codebook_size, (2, 56, 2))  # 1.12 s: a 1 s chunk and a part chunk
        assert generate_fine(lm, coarse).shape == (2, 56, 2)


@pytest.mark.parametrize("layout", ["interleaved", "aligned"])
def test_time_aligned_coarse_layouts_train_save_and_generate(layout, token_shards, tmp_path):  # noqa: F811
    """The coarse layouts that read each semantic id at its time: trained, stored, rebuilt, generated from."""
    from audiolm_pl.lm import generate_coarse, load_lm

    config = tiny_config("coarse", token_shards, tmp_path, f"layout={layout}", "dedup_semantic=false",
                         "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2",
                         "trainer.limit_val_batches=1")
    lm = load_lm(train_stage("coarse", config), expected_stage="coarse")
    assert lm.layout.to_dict()["order"] == layout
    semantic = torch.randint(0, token_shards.tokenizer.vocab_size, (2, 8))
    prompt = torch.randint(0, token_shards.codec.codebook_size, (2, 4, 2))
    codes = generate_coarse(lm, semantic, prompt)
    assert codes.shape == (2, 16, 2) and torch.equal(codes[:, :4], prompt)


def test_fine_stage_can_complete_fewer_levels_than_the_codec_has(token_shards, tmp_path):  # noqa: F811
    """num_levels = 3 of the tiny codec's 4: the fine LM trains and generates level 2 only."""
    from audiolm_pl.lm import generate_fine, load_lm

    config = tiny_config("fine", token_shards, tmp_path, "num_levels=3", "layout=interleaved", "trainer.max_steps=2",
                         "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2", "trainer.limit_val_batches=1")
    lm = load_lm(train_stage("fine", config), expected_stage="fine")
    assert lm.layout.num_quantizers == 3 and lm.layout.levels == [2]
    coarse = torch.randint(0, token_shards.codec.codebook_size, (2, 30, 2))
    fine = generate_fine(lm, coarse)
    assert fine.shape == (2, 30, 1)
    assert token_shards.codec.decode(torch.cat([coarse, fine], dim=2)).shape[0] == 2  # the codec decodes 3 levels
    with pytest.raises(ValueError, match="num_levels=5 must be above num_coarse=2 and at most the 4 levels"):
        registry.get_stage("fine").build(tiny_config("fine", token_shards, tmp_path, "num_levels=5"))


def test_context_too_short_for_the_crop_is_refused(token_shards, tmp_path):  # noqa: F811
    config = tiny_config("coarse", token_shards, tmp_path, "model.max_seq_len=64")
    with pytest.raises(ValueError, match="model.max_seq_len=64 is too short"):
        registry.get_stage("coarse").build(config)
