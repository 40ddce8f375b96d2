"""Frame-synchronous (interleaved) layouts: sequences, loss levels, generation with forced conditions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiolm_pl.lm.generation import LoadedLM, generate_coarse, generate_fine
from audiolm_pl.lm.interleaved import InterleavedCoarseLayout, InterleavedFineLayout
from audiolm_pl.lm.layouts import IGNORE, layout_from_dict
from audiolm_pl.lm.sampling import SamplingConfig
from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM
from audiolm_pl.tokens import TokenSpec

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 10),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 8, num_quantizers=3),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_coarse_blocks_put_each_semantic_id_lookahead_blocks_before_its_frames():
    layout = InterleavedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2, frames_per_id=2, lookahead=1)
    semantic = np.array([4, 5, 6])
    acoustic = np.array([[0, 7, 1], [1, 6, 1], [2, 5, 1], [3, 4, 1], [4, 3, 1], [5, 2, 1], [6, 1, 1]])  # 7 frames, Q = 3
    example = layout.example(semantic, acoustic)
    # head: s0; block k: s_{k+1} (END = 10 past the end), then frames 2k, 2k+1 at levels 0 (11 + c), 1 (19 + c)
    assert example.tokens.tolist() == [4, 5, 11, 26, 12, 25, 6, 13, 24, 14, 23, 10, 15, 22, 16, 21]
    assert example.levels.tolist() == [IGNORE, 0, 1, 0, 1, IGNORE, 0, 1, 0, 1, IGNORE, 0, 1, 0, 1]
    assert layout.vocab_size == 10 + 1 + 16 and layout.levels == [0, 1] and layout.block_size == 5
    assert layout_from_dict(layout.to_dict()) == layout


def test_fine_blocks_put_coarse_frame_ahead_of_the_fine_codes():
    layout = InterleavedFineLayout(codebook_size=8, num_coarse=1, num_quantizers=3, lookahead=2)
    acoustic = np.array([[1, 2, 3], [4, 5, 6], [7, 0, 1]])
    example = layout.example(np.zeros(1, np.int64), acoustic)
    # head: coarse frames 0, 1; block t: coarse of t + 2 (END = 24), fine levels 1 (8 + c), 2 (16 + c) of frame t
    assert example.tokens.tolist() == [1, 4, 7, 10, 19, 24, 13, 22, 24, 8, 17]
    assert example.levels.tolist() == [IGNORE, IGNORE, 1, 2, IGNORE, 1, 2, IGNORE, 1, 2]
    assert layout_from_dict(layout.to_dict()) == layout


def loaded(stage: str, layout) -> LoadedLM:
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=24), layout.vocab_size)
    return LoadedLM(stage, model.eval(), layout, SPECS, SamplingConfig(temperature=1.0), 0.5, Path(stage))


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_coarse_forces_the_semantic_ids_and_keeps_the_prompt(use_cache):
    """40 blocks of 5 tokens run far past the 24-token context: the window slides."""
    layout = InterleavedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2, frames_per_id=2, lookahead=2)
    lm = loaded("coarse", layout)
    semantic = torch.randint(0, 10, (2, 40))
    prompt = torch.randint(0, 8, (2, 7, 2))  # 3 whole blocks and a frame left over (generated again)
    codes = generate_coarse(lm, semantic, prompt, SamplingConfig(top_k=3), use_cache=use_cache)
    assert codes.shape == (2, 80, 2) and torch.equal(codes[:, :6], prompt[:, :6])
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    assert generate_coarse(lm, semantic, None, num_frames=15).shape == (2, 15, 2)


def test_generation_sees_the_semantic_ids_it_was_given():
    """The forced condition tokens reach the model: a model that copies the last semantic id it saw
    into every code returns the ids one block early (lookahead 1), two frames per id."""
    layout = InterleavedCoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=1, frames_per_id=2, lookahead=1)
    lm = loaded("coarse", layout)

    class CopyLastSemantic(torch.nn.Module):
        config = lm.model.config

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where generation looks for the device

        def forward(self, tokens, cache=None, conditions=None):
            last = [row[row < 10][-1] % 8 if (row < 10).any() else 0 for row in tokens]
            logits = torch.full((tokens.shape[0], tokens.shape[1], layout.vocab_size), -10.0)
            for index, code in enumerate(last):
                logits[index, :, layout.acoustic_base + int(code)] = 10.0
            return logits

    lm.model = CopyLastSemantic()
    semantic = torch.tensor([[3, 6, 1, 4]])
    codes = generate_coarse(lm, semantic, None, SamplingConfig(temperature=0), use_cache=False)
    assert codes[0, :, 0].tolist() == [6, 6, 1, 1, 4, 4, 4, 4]  # the last block carries END: 4 stays the last id


def test_generate_fine_in_one_pass_keeps_prompt():
    layout = InterleavedFineLayout(codebook_size=8, num_coarse=1, num_quantizers=3, lookahead=2)
    lm = loaded("fine", layout)
    coarse = torch.randint(0, 8, (2, 30, 1))  # 30 blocks of 3 tokens: past the 24-token context
    prompt = torch.randint(0, 8, (2, 4, 2))
    fine = generate_fine(lm, coarse, prompt, SamplingConfig(temperature=0))
    assert fine.shape == (2, 30, 2) and torch.equal(fine[:, :4], prompt)
    assert int(fine.min()) >= 0 and int(fine.max()) < 8


def test_interleaved_coarse_refuses_deduplicated_ids_and_no_lookahead():
    from audiolm_pl.lm.stages import CoarseRunConfig, make_layout

    config = CoarseRunConfig(num_coarse=2, layout="interleaved", dedup_semantic=True)
    with pytest.raises(ValueError, match="dedup_semantic=false"):
        make_layout("coarse", config, SPECS)
    config.dedup_semantic, config.lookahead = False, 0
    with pytest.raises(ValueError, match="lookahead"):
        make_layout("coarse", config, SPECS)
    config.lookahead = 2
    assert make_layout("coarse", config, SPECS).frames_per_id == 2
