"""Stage layouts (flattening, vocab offsets, loss levels), aligned crops and the generation API."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from audiolm_pl.lm.generation import LoadedLM, generate_coarse, generate_fine, generate_semantic
from audiolm_pl.lm.layouts import CoarseLayout, FineLayout, SemanticLayout, dedup_consecutive, layout_from_dict
from audiolm_pl.lm.sampling import SamplingConfig
from audiolm_pl.lm.token_data import TokenCropper, TokenDataConfig, collate_examples
from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM
from audiolm_pl.tokens import TokenSpec

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 10),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 8, num_quantizers=4),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dedup_removes_only_consecutive_repeats():
    assert dedup_consecutive(np.array([3, 3, 1, 1, 1, 3, 2, 2])).tolist() == [3, 1, 3, 2]


def test_semantic_layout_bos_dedup_and_levels():
    layout = SemanticLayout(semantic_vocab=10, dedup=True)
    example = layout.example(np.array([4, 4, 5, 5, 4]), np.zeros((10, 4), np.int64))
    assert example.tokens.tolist() == [10, 4, 5, 4] and example.levels.tolist() == [0, 0, 0]
    assert layout.vocab_size == 11
    mask = layout.allowed(0, torch.tensor([4]))  # (1, V): no BOS, no repeat of 4
    assert mask[0].tolist() == [True] * 4 + [False] + [True] * 5 + [False]


def test_coarse_layout_offsets_levels_and_round_trip():
    layout = CoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2, dedup_semantic=False)
    semantic = np.array([1, 2, 3])
    acoustic = np.array([[0, 7, 5, 5], [1, 6, 5, 5], [2, 5, 5, 5], [3, 4, 5, 5], [4, 3, 5, 5], [5, 2, 5, 5]])
    example = layout.example(semantic, acoustic)
    # semantic ids, SEP=10, then frame by frame: level 0 at 11 + c, level 1 at 19 + c
    assert example.tokens.tolist() == [1, 2, 3, 10, 11, 26, 12, 25, 13, 24, 14, 23, 15, 22, 16, 21]
    assert example.levels.tolist() == [-1, -1, -1] + [0, 1] * 6
    assert layout.vocab_size == 10 + 1 + 16
    flat = torch.from_numpy(example.tokens[4:])[None]  # (1, 12)
    assert torch.equal(layout.codes(flat)[0], torch.from_numpy(acoustic[:, :2]))
    assert layout.level_mask(1).nonzero().flatten().tolist() == list(range(19, 27))
    assert layout_from_dict(layout.to_dict()) == layout


def test_fine_layout_offsets_levels_and_round_trip():
    layout = FineLayout(codebook_size=8, num_coarse=1, num_quantizers=3)
    acoustic = np.array([[1, 2, 3], [4, 5, 6]])
    example = layout.example(np.zeros(1, np.int64), acoustic)
    # coarse level 0 at c, SEP = 24, fine levels 1, 2 at 8 + c, 16 + c
    assert example.tokens.tolist() == [1, 4, 24, 10, 19, 13, 22]
    assert example.levels.tolist() == [-1, -1, 1, 2, 1, 2]
    assert torch.equal(layout.codes(torch.tensor([[10, 19, 13, 22]]))[0], torch.from_numpy(acoustic[:, 1:]))


def test_crops_align_semantic_and_acoustic_frames():
    """Codes that encode their own frame time must come out of a random crop aligned."""
    layout = CoarseLayout(semantic_vocab=1000, codebook_size=1000, num_coarse=1, dedup_semantic=False)
    cropper = TokenCropper(TokenDataConfig(crop_seconds=0.4), SPECS, layout, train=True)
    semantic = np.arange(100)  # semantic frame index
    acoustic = np.repeat(np.arange(200)[:, None] // 2, 4, axis=1)  # acoustic frame -> semantic frame index
    import io

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    rng = random.Random(0)
    starts = set()
    for _ in range(20):
        example = cropper({"semantic.npy": npy(semantic), "acoustic.npy": npy(acoustic)}, rng)
        sem, codes = example.tokens[:10], example.tokens[11:] - 1001  # 10 semantic frames, 20 acoustic
        assert len(codes) == 20 and codes.tolist() == np.repeat(sem, 2).tolist()
        starts.add(int(sem[0]))
    assert len(starts) > 5  # crops are random


def test_packed_semantic_crops_join_clips_in_stream_order():
    """data.pack: every crop is whole, the crops are the clips' ids end to end, and a new pass (a new rng,
    as a resumed stream makes) starts without the previous pass's leftover."""
    import io

    def sample(ids):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(ids))
        return {"semantic.npy": buffer.getvalue(), "acoustic.npy": buffer.getvalue()}

    layout = SemanticLayout(semantic_vocab=100, dedup=False)
    cropper = TokenCropper(TokenDataConfig(crop_seconds=0.2, pack=True), SPECS, layout, train=True)  # 5 ids a crop
    clips = [np.arange(0, 3), np.arange(10, 17), np.arange(20, 22), np.arange(30, 34)]  # 3 + 7 + 2 + 4 = 16 ids
    rng = random.Random(0)
    crops = [cropper(sample(clip), rng) for clip in clips]
    made = [example.tokens[1:].tolist() for example in crops if example is not None]  # without BOS
    assert [len(crop) for crop in made] == [5, 5, 5]
    assert sum(made, []) == np.concatenate(clips)[:15].tolist()
    fresh = cropper(sample(np.arange(40, 45)), random.Random(0))  # a new pass: the leftover id 33 is not carried
    assert fresh.tokens[1:].tolist() == list(range(40, 45))
    with pytest.raises(ValueError, match="data.pack=true joins clips of semantic ids only"):
        TokenCropper(TokenDataConfig(pack=True), SPECS, CoarseLayout(10, 8, 1, False), train=True)


def test_collate_pads_right_and_masks_padding():
    layout = SemanticLayout(semantic_vocab=10, dedup=False)
    batch = collate_examples([layout.example(np.array([1, 2, 3]), None), layout.example(np.array([4]), None)])
    assert batch["inputs"].tolist() == [[10, 1, 2], [10, 4, 0]]
    assert batch["targets"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["levels"].tolist() == [[0, 0, 0], [0, -1, -1]]


def loaded(stage: str, layout, chunk_seconds: float = 0.2) -> LoadedLM:
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, max_seq_len=64), layout.vocab_size)
    return LoadedLM(stage, model.eval(), layout, SPECS, SamplingConfig(temperature=1.0), chunk_seconds, Path(stage))


def test_generate_semantic_never_repeats_when_trained_deduplicated():
    lm = loaded("semantic", SemanticLayout(semantic_vocab=10, dedup=True))
    ids = generate_semantic(lm, torch.tensor([[1, 1, 2], [3, 4, 5]]), 40)  # prompts dedup to different lengths
    assert ids.shape == (2, 40) and int(ids.max()) < 10
    assert torch.all(ids[:, 1:] != ids[:, :-1])
    assert generate_semantic(lm, None, 5, batch_size=3).shape == (3, 5)


def test_generate_coarse_keeps_prompt_and_gives_codes_per_level():
    lm = loaded("coarse", CoarseLayout(semantic_vocab=10, codebook_size=8, num_coarse=2))
    prompt = torch.randint(0, 8, (2, 3, 2))
    codes = generate_coarse(lm, torch.randint(0, 10, (2, 6)), prompt, SamplingConfig(top_k=3))
    assert codes.shape == (2, 12, 2) and torch.equal(codes[:, :3], prompt)
    assert int(codes.min()) >= 0 and int(codes.max()) < 8


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_fine_on_chunks_keeps_prompt(use_cache):
    lm = loaded("fine", FineLayout(codebook_size=8, num_coarse=2, num_quantizers=4), chunk_seconds=0.2)  # 10 frames
    coarse = torch.randint(0, 8, (2, 23, 2))
    prompt = torch.randint(0, 8, (2, 13, 2))  # one whole chunk and 3 frames of the next
    fine = generate_fine(lm, coarse, prompt, SamplingConfig(temperature=0), use_cache=use_cache)
    assert fine.shape == (2, 23, 2) and torch.equal(fine[:, :13], prompt)
    assert int(fine.min()) >= 0 and int(fine.max()) < 8


def test_generate_refuses_the_wrong_stage():
    lm = loaded("fine", FineLayout(codebook_size=8, num_coarse=2, num_quantizers=4))
    with pytest.raises(ValueError, match="needs a coarse LM"):
        generate_coarse(lm, torch.zeros(1, 4, dtype=torch.long))
