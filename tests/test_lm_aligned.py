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
