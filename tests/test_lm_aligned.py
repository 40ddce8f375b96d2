"""The aligned coarse layout: codes alone in the sequence, semantic ids added to each position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiolm_pl.lm.aligned import AlignedCoarseLayout
from audiolm_pl.lm.generation import LoadedLM, generate_coarse
from audiolm_pl.lm.layouts import layout_from_dict
from audiolm_pl.lm.sampling import SamplingConfig, generate
from audiolm_pl.lm.token_data import collate_examples
from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM
from audiolm_pl.tokens import TokenSpec

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 10),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 8, num_quantizers=3),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_example_holds_codes_and_the_conditions_of_what_each_position_predicts():
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2, frames_per_id=2, lookahead=1, context=1)
    semantic = np.array([4, 5, 6])
    acoustic = np.array([[0, 7, 1], [1, 6, 1], [2, 5, 1], [3, 4, 1], [4, 3, 1], [5, 2, 1]])  # 6 frames, Q = 3
    example = layout.example(semantic, acoustic)
    assert example.tokens.tolist() == [16, 0, 15, 1, 14, 2, 13, 3, 12, 4, 11, 5, 10]  # BOS = 16, level 1 at 8 + c
    assert example.levels.tolist() == [0, 1] * 6
    conditions = example.conditions  # (12, 3 + 2): ids at offsets -1, 0, +1 (slices of 11), level, phase
    assert conditions.shape == (12, 5)
    # position 0 predicts frame 0 level 0: ids (PAD, 4, 5), level 0, phase 0
    assert conditions[0].tolist() == [10, 11 + 4, 22 + 5, 33 + 0, 33 + 2 + 0]
    # position 3 predicts frame 1 level 1: same ids, level 1, phase 1
    assert conditions[3].tolist() == [10, 11 + 4, 22 + 5, 33 + 1, 33 + 2 + 1]
    # position 11 predicts frame 5 (id index 2) level 1: ids (5, 6, PAD)
    assert conditions[11].tolist() == [5, 11 + 6, 22 + 10, 33 + 1, 33 + 2 + 1]
    assert int(conditions.max()) < layout.condition_vocab == 3 * 11 + 2 + 2
    assert layout_from_dict(layout.to_dict()) == layout


def test_collate_pads_conditions_and_the_model_reads_them():
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2)
    examples = [layout.example(np.arange(3), np.zeros((6, 3), np.int64)),
                layout.example(np.arange(2), np.zeros((4, 3), np.int64))]
    batch = collate_examples(examples)
    assert batch["conditions"].shape == (2, 12, 6) and batch["inputs"].shape == (2, 12)
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=24),
                          layout.vocab_size, layout.condition_vocab)
    with_ids = model(batch["inputs"], conditions=batch["conditions"])
    other = batch["conditions"].clone()
    other[:, :, 1] = 10 + 11 * 1  # PAD in the frame's own id slot: the output must change
    assert with_ids.shape == (2, 12, layout.vocab_size)
    assert not torch.allclose(with_ids, model(batch["inputs"], conditions=other))
    with pytest.raises(ValueError, match="condition embeddings"):
        model(batch["inputs"])


def test_cached_generation_with_conditions_equals_uncached():
    """The KV cache path gives each new position its own condition: same samples as the full forward."""
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2)
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(n_layer=2, n_head=2, d_model=16, d_ff=32, max_seq_len=64),
                          layout.vocab_size, layout.condition_vocab).eval()
    conditions = torch.from_numpy(np.stack([layout.conditions(np.array([1, 2, 3, 4, 5]), 10)] * 2))  # (2, 20, 6)
    prefix = torch.full((2, 1), layout.bos)
    greedy = SamplingConfig(temperature=0)
    cached = generate(model, prefix, 20, greedy, conditions=conditions, use_cache=True)
    uncached = generate(model, prefix, 20, greedy, conditions=conditions, use_cache=False)
    assert torch.equal(cached, uncached)
    with pytest.raises(ValueError, match="conditions cover 20 positions"):
        generate(model, prefix, 21, greedy, conditions=conditions)


def test_generate_coarse_follows_the_semantic_ids_past_the_context():
    """A model that copies the frame's own semantic id into its code: generation must reproduce the ids,
    two frames each, far past the trained context (the window slides), after the kept prompt."""
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=1, frames_per_id=2)
    config = TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=8)

    class CopyOwnSemantic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = config
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where generation looks for the device

        def new_cache(self, batch, capacity, device=None, dtype=None):
            return TransformerLM(config, layout.vocab_size, layout.condition_vocab).new_cache(batch, capacity)

        def forward(self, tokens, cache=None, conditions=None):
            if cache is not None:
                cache.advance(tokens.shape[1])
            own = conditions[:, :, 1] - (layout.semantic_vocab + 1)  # (B, T) the frame's own id (slot 1)
            logits = torch.full((*tokens.shape, layout.vocab_size), -10.0)
            return logits.scatter(2, (own % 8)[..., None], 10.0)

    lm = LoadedLM("coarse", CopyOwnSemantic(), layout, SPECS, SamplingConfig(temperature=0), 0.2, Path("coarse"))
    semantic = torch.tensor([[3, 6, 1, 4, 5, 2, 7, 0, 1, 3, 6, 2]])  # 24 frames: 3 times the context
    prompt = torch.tensor([[[5], [5], [1]]])
    for use_cache in (True, False):
        codes = generate_coarse(lm, semantic, prompt, use_cache=use_cache)  # (1, 24, 1)
        assert codes[0, :3, 0].tolist() == [5, 5, 1]
        assert codes[0, 3:, 0].tolist() == np.repeat(semantic[0].numpy(), 2)[3:].tolist()


def test_aligned_layout_from_config():
    from audiolm_pl.lm.stages import CoarseRunConfig, longest_sequence, make_layout

    config = CoarseRunConfig(num_coarse=2, layout="aligned", dedup_semantic=True)
    with pytest.raises(ValueError, match="dedup_semantic=false"):
        make_layout("coarse", config, SPECS)
    config.dedup_semantic = False
    layout = make_layout("coarse", config, SPECS)
    assert isinstance(layout, AlignedCoarseLayout) and layout.frames_per_id == 2 and layout.lookahead == 2
    assert longest_sequence(layout, SPECS, 1.0) == 1 + 50 * 2
    with pytest.raises(ValueError, match="layout must be one of"):
        make_layout("fine", type("C", (), {"layout": "aligned", "num_coarse": 1})(), SPECS)


def test_null_conditions_pad_every_semantic_slot_and_keep_level_and_phase():
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2, frames_per_id=2, lookahead=1, context=1)
    conditions = torch.from_numpy(layout.conditions(np.array([4, 5, 6]), 6))[None]  # (1, 12, 5)
    null = layout.null_conditions(conditions)
    assert null.shape == conditions.shape
    assert null[0, :, :3].tolist() == [[10, 21, 32]] * 12  # PAD (id K) of each of the 3 offsets' slices
    assert torch.equal(null[..., 3:], conditions[..., 3:])  # level and phase untouched


def test_guide_mixes_log_probabilities():
    from audiolm_pl.lm.sampling import guide

    conditioned, null = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    logits = torch.cat([conditioned, null])  # (2B, V)
    assert torch.allclose(guide(logits, 1.0), conditioned.log_softmax(-1))
    assert torch.allclose(guide(logits, 0.0), null.log_softmax(-1))
    expected = null.log_softmax(-1) + 3 * (conditioned.log_softmax(-1) - null.log_softmax(-1))
    assert torch.allclose(guide(logits, 3.0), expected)


def test_guided_generation_samples_from_the_guided_mix_cached_and_uncached():
    """Greedy guided decoding picks, at every step, the argmax of null + g (cond - null) computed by hand."""
    layout = AlignedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2)
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(n_layer=2, n_head=2, d_model=16, d_ff=32, max_seq_len=64),
                          layout.vocab_size, layout.condition_vocab).eval()
    conditions = torch.from_numpy(np.stack([layout.conditions(np.array([1, 2, 3, 4, 5]), 8),
                                            layout.conditions(np.array([6, 7, 8, 9, 0]), 8)]))  # (2, 16, 6)
    null = layout.null_conditions(conditions)
    prefix = torch.full((2, 1), layout.bos)
    guided = SamplingConfig(temperature=0, guidance=3.0)
    tokens = prefix
    with torch.no_grad():
        for _ in range(12):  # the reference: both branches run in full every step
            n = tokens.shape[1]
            cond = model(tokens, conditions=conditions[:, :n])[:, -1].log_softmax(-1)
            uncond = model(tokens, conditions=null[:, :n])[:, -1].log_softmax(-1)
            tokens = torch.cat([tokens, (uncond + 3.0 * (cond - uncond)).argmax(-1, keepdim=True)], 1)
    for use_cache in (True, False):
        out = generate(model, prefix, 12, guided, conditions=conditions, null_conditions=null, use_cache=use_cache)
        assert torch.equal(out, tokens[:, 1:])
    plain = generate(model, prefix, 12, SamplingConfig(temperature=0), conditions=conditions)
    assert not torch.equal(plain, tokens[:, 1:])  # guidance changed the decode (else the test shows nothing)
    with pytest.raises(ValueError, match="guidance=3.0 needs a model conditioned per position"):
        generate(model, prefix, 12, guided, conditions=conditions)


def test_condition_dropout_trains_the_null_branch_and_only_on_the_aligned_layout():
    from audiolm_pl.lm.lightning_module import TokenLMModule
    from audiolm_pl.lm.stages import CoarseRunConfig, make_layout

    config = CoarseRunConfig(num_coarse=2, layout="aligned", dedup_semantic=False, condition_dropout=0.5)
    config.model = TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=256)
    layout = make_layout("coarse", config, SPECS)
    module = TokenLMModule("coarse", config, layout, SPECS)
    conditions = torch.from_numpy(np.stack([layout.conditions(np.arange(3), 6)] * 400))  # (400, 12, 6)
    torch.manual_seed(0)
    dropped = module._dropped_conditions(conditions)
    null = layout.null_conditions(conditions)
    is_null = (dropped == null).all(-1).all(-1)  # (400,) whole examples, never part of one
    assert ((dropped == conditions).all(-1).all(-1) | is_null).all()
    assert 150 < int(is_null.sum()) < 250  # about half
    config.condition_dropout = 0.0
    assert module._dropped_conditions(conditions) is conditions
    from audiolm_pl.lm.stages import _without_guidance_unless_aligned

    # another layout has no per-position ids to drop: both keys are set off, so `small layout=acoustic_only` trains
    prefix = CoarseRunConfig(num_coarse=2, layout="acoustic_only", condition_dropout=0.2,
                             sampling=SamplingConfig(temperature=0.8, guidance=3.0))
    plain = _without_guidance_unless_aligned(prefix)
    assert plain.condition_dropout == 0.0 and plain.sampling == SamplingConfig(temperature=0.8)
    assert _without_guidance_unless_aligned(config) is config
    with pytest.raises(ValueError, match=r"condition_dropout must be in \[0, 1\), got 1.0"):
        make_layout("coarse", CoarseRunConfig(num_coarse=2, layout="aligned", dedup_semantic=False, condition_dropout=1.0), SPECS)
