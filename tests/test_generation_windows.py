"""Generation past the trained context (lm/windows.py): every stage and layout makes outputs longer than
its model's `max_seq_len`, and the prefix layouts' windows read the condition of their own span."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiolm_pl.lm.aligned import AlignedCoarseLayout
from audiolm_pl.lm.generation import LoadedLM, generate_coarse, generate_fine, generate_semantic
from audiolm_pl.lm.interleaved import InterleavedCoarseLayout, InterleavedFineLayout
from audiolm_pl.lm.layouts import CoarseLayout, FineLayout, SemanticLayout
from audiolm_pl.lm.sampling import SamplingConfig
from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM
from audiolm_pl.lm.windows import FrameWindow, frame_windows, semantic_times
from audiolm_pl.tokens import TokenSpec

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 32),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 32, num_quantizers=3),
}
CONTEXT = 16  # max_seq_len of every model here: all outputs below are longer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_coarse_windows_slide_by_half_a_crop_after_the_prompt():
    assert frame_windows(40, 10, 0, overlap=5) == [
        FrameWindow(0, 0, 10), FrameWindow(5, 10, 15), FrameWindow(10, 15, 20), FrameWindow(15, 20, 25),
        FrameWindow(20, 25, 30), FrameWindow(25, 30, 35), FrameWindow(30, 35, 40)]
    assert frame_windows(23, 10, 13, overlap=5) == [FrameWindow(8, 13, 18), FrameWindow(13, 18, 23)]
    assert frame_windows(9, 10, 4, overlap=5) == [FrameWindow(0, 4, 9)]  # fits one window: reads all of the prompt


def test_fine_chunks_lie_on_a_grid_and_read_the_prompt_inside_them():
    assert frame_windows(23, 10, 13) == [FrameWindow(10, 13, 20), FrameWindow(20, 20, 23)]
    assert frame_windows(23, 10) == [FrameWindow(0, 0, 10), FrameWindow(10, 10, 20), FrameWindow(20, 20, 23)]
    assert frame_windows(23, 10, 30) == []  # all given
    with pytest.raises(ValueError, match="overlap < size"):
        frame_windows(23, 10, overlap=10)


def test_semantic_times_put_prompt_ids_at_their_time_and_spread_the_rest():
    times = semantic_times(num_ids=4 + 3, timed_ids=4, frames=14, frames_per_id=2.0)
    assert times.tolist() == [0, 2, 4, 6, 8, 10, 12]  # 3 generated ids over the 6 frames after the prompt's 8


def model_for(layout) -> TransformerLM:
    torch.manual_seed(0)
    config = TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=CONTEXT)
    return TransformerLM(config, layout.vocab_size, layout.condition_vocab).eval()


def loaded(stage: str, layout, model=None) -> LoadedLM:
    model = model if model is not None else model_for(layout)
    return LoadedLM(stage, model, layout, SPECS, SamplingConfig(temperature=1.0, top_k=4), 0.2, Path(stage))  # 10-frame crops


ACOUSTIC_LAYOUTS = {
    "coarse-prefix": ("coarse", CoarseLayout(32, 32, 2, dedup_semantic=False)),
    "coarse-aligned": ("coarse", AlignedCoarseLayout(32, 32, 2)),
    "coarse-interleaved": ("coarse", InterleavedCoarseLayout(32, 32, 2)),
    "fine-prefix": ("fine", FineLayout(32, 1, 3)),
    "fine-interleaved": ("fine", InterleavedFineLayout(32, 1, 3)),
}


@pytest.mark.parametrize("use_cache", [True, False])
def test_semantic_stage_generates_past_its_context(use_cache):
    lm = loaded("semantic", SemanticLayout(32, dedup=True))
    ids = generate_semantic(lm, torch.randint(0, 32, (2, 5)), 3 * CONTEXT, use_cache=use_cache)
    assert ids.shape == (2, 3 * CONTEXT) and int(ids.max()) < 32
    assert torch.all(ids[:, 1:] != ids[:, :-1])  # the dedup rule holds in every window


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("name", sorted(ACOUSTIC_LAYOUTS))
def test_acoustic_stages_generate_past_their_context(name, use_cache):
    """30 frames of 2 codes each = 60 generated codes, ~4 times the 16-token context, after a kept prompt."""
    stage, layout = ACOUSTIC_LAYOUTS[name]
    lm = loaded(stage, layout)
    if stage == "coarse":
        prompt = torch.randint(0, 32, (2, 4, 2))
        codes = generate_coarse(lm, torch.randint(0, 32, (2, 15)), prompt, use_cache=use_cache)  # 2 frames an id
    else:
        prompt = torch.randint(0, 32, (2, 4, 2))
        codes = generate_fine(lm, torch.randint(0, 32, (2, 30, 1)), prompt, use_cache=use_cache)
    assert codes.shape == (2, 30, 2) and torch.equal(codes[:, :4], prompt)
    assert 0 <= int(codes.min()) and int(codes.max()) < 32


class CopyFirstToken(torch.nn.Module):
    """Predicts, at every position, the code (level `level`) equal to the first token it is shown, mod C:
    which condition a window reads shows in the codes it makes."""

    def __init__(self, layout, level: int, context: int = CONTEXT):
        super().__init__()
        self.layout, self.level = layout, level
        self.config = TransformerConfig(max_seq_len=context)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # where generation looks for the device

    def forward(self, tokens, cache=None, conditions=None):
        ids = self.layout.acoustic_base + self.level * self.layout.codebook_size + tokens[:, :1] % 32  # (B, 1)
        logits = torch.full((*tokens.shape, self.layout.vocab_size), -10.0)
        return logits.scatter(2, ids[:, :, None].expand(-1, tokens.shape[1], 1), 10.0)


def test_prefix_coarse_windows_state_the_semantic_ids_of_their_own_span():
    layout = CoarseLayout(32, 32, 1, dedup_semantic=False)
    lm = loaded("coarse", layout, CopyFirstToken(layout, 0))
    semantic = torch.arange(20)[None]  # id i starts at frame 2 i; 40 frames, windows of 10 sliding by 5
    codes = generate_coarse(lm, semantic, None, SamplingConfig(temperature=0), use_cache=False)  # (1, 40, 1)
    # each window makes the frames after its first half with the first id of its span: 10..14 from [5, 15) -> id 3 ...
    expected = [0] * 10 + [3] * 5 + [5] * 5 + [8] * 5 + [10] * 5 + [13] * 5 + [15] * 5
    assert codes[0, :, 0].tolist() == expected


def test_prefix_fine_chunks_read_their_own_coarse_frames():
    layout = FineLayout(32, 1, 2)
    lm = loaded("fine", layout, CopyFirstToken(layout, 1, context=32))  # a chunk's 21 tokens fit
    coarse = torch.arange(25)[None, :, None]  # (1, 25, 1): chunks of 10 frames
    fine = generate_fine(lm, coarse, None, SamplingConfig(temperature=0), use_cache=False)  # (1, 25, 1)
    assert fine[0, :, 0].tolist() == [0] * 10 + [10] * 10 + [20] * 5  # each chunk: its first coarse frame
