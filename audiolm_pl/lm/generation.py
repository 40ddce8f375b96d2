"""Loading a trained LM stage and generating with it: the API the composite `AudioLM` calls.

    lm = load_lm("runs/coarse")                        # LoadedLM(stage, model, layout, token_specs, ...)
    ids    = generate_semantic(lm, prompt_ids, 250)     # (B, 250) new semantic ids
    coarse = generate_coarse(lm, semantic_ids, prompt_coarse)   # (B, T_a, Q') incl. the prompt frames
    fine   = generate_fine(lm, coarse, prompt_fine)     # (B, T_a, Q - Q') incl. the prompt frames

Every function takes optional `sampling` (default: the stage's `sampling` config, stored in its
checkpoint from its YAML), `use_cache`, `window` (attention span in tokens; default the trained context)
and a torch `generator`. Outputs of any length: how each layout goes past the trained context is
`windows.py`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from audiolm_pl.checkpoint import CheckpointError, load_stage_checkpoint, sub_state_dict
from audiolm_pl.config import from_dict
from audiolm_pl.lm.aligned import AlignedCoarseLayout
from audiolm_pl.lm.interleaved import InterleavedLayout
from audiolm_pl.lm.layouts import Layout, layout_from_dict
from audiolm_pl.lm.sampling import SamplingConfig, generate
from audiolm_pl.lm.stages import RUN_CONFIGS
from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.lm.windows import frame_windows, ids_in_window, semantic_times
from audiolm_pl.shareable import Shareable
from audiolm_pl.tokens import ProducerMismatch, TokenSpec, require_same_spec


PRODUCER_KINDS = {"semantic": "semantic tokenizer", "acoustic": "codec"}  # who makes the tokens of each role


@dataclass
class LoadedLM(Shareable):
    stage: str  # "semantic" | "coarse" | "fine"
    model: TransformerLM  # eval mode
    layout: Layout  # as stored in the checkpoint
    token_specs: dict[str, TokenSpec]  # {"semantic": ..., "acoustic": ...} of the training shards
    sampling: SamplingConfig  # the stage's default sampling: its run config's `sampling` (its YAML)
    chunk_seconds: float  # training crop length (the prefix layouts generate in windows of this length)
    path: Path
    producers: dict[str, str] = field(default_factory=dict)  # role -> identity() of what made its training tokens

    @property
    def crop_frames(self) -> int:
        """Acoustic frames in a training crop: the window the prefix layouts generate in."""
        return self.token_specs["acoustic"].frames_in(self.chunk_seconds)

    def require_specs(self, role: str, spec: TokenSpec, producer: str) -> None:
        """Refuse tokens of `spec` from `producer` unless this LM was trained on them."""
        require_same_spec(self.token_specs[role], spec, consumer=f"{self.stage} LM ({self.path})", producer=producer)

    def require_producer(self, role: str, identity: str, producer: str) -> None:
        """Refuse `role` tokens from `producer` (its `identity()`) unless they made this LM's training tokens.
        An LM that records no identity (trained before they were stored) is not checked."""
        trained_on = self.producers.get(role)
        if trained_on is not None and trained_on != identity:
            raise ProducerMismatch(
                f"{self.stage} LM ({self.path}) was trained on {role} tokens made by a producer of identity "
                f"{trained_on}; {producer} has identity {identity}: same token spec, other ids. Use the "
                f"{PRODUCER_KINDS[role]} its token shards were made with, or set allow_producer_swap: true in "
                "the pipeline YAML (or the override allow_producer_swap=true) if the swap is deliberate")


def load_lm(path: str | Path, expected_stage: Optional[str] = None, device: str | torch.device = "cpu") -> LoadedLM:
    """An LM checkpoint (or run directory) -> `LoadedLM`; weights-only load, no pickled code."""
    checkpoint = load_stage_checkpoint(path, expected_stage)
    if checkpoint.stage not in RUN_CONFIGS:
        raise CheckpointError(f"{checkpoint.path} is a {checkpoint.stage!r} checkpoint, not an LM stage {sorted(RUN_CONFIGS)}")
    run_config = from_dict(RUN_CONFIGS[checkpoint.stage], checkpoint.config)
    if not checkpoint.layout:
        raise CheckpointError(
            f"{checkpoint.path} stores no token layout (hyper_parameters['layout']): it was saved before LM "
            f"checkpoints recorded theirs. Train the {checkpoint.stage} LM again (`audiolm-pl train "
            f"{checkpoint.stage} ...`); its new checkpoints store the layout they were trained with")
    layout = layout_from_dict(checkpoint.layout)  # the layout the stage was trained with, as stored
    model = TransformerLM(run_config.model, layout.vocab_size, layout.condition_vocab)
    model.load_state_dict(sub_state_dict(checkpoint.state_dict, "model"))
    return LoadedLM(checkpoint.stage, model.eval().to(device), layout, checkpoint.token_specs,
                    run_config.sampling, run_config.data.crop_seconds, checkpoint.path, checkpoint.producers)


def _generate_rows(lm: LoadedLM, prefixes: list[np.ndarray], num_tokens: int, allowed, sampling, **options) -> torch.Tensor:
    """Generate after each prefix; one batched call when all prefixes have the same length."""
    device = next(lm.model.parameters()).device
    sampling = sampling or lm.sampling
    if len({len(p) for p in prefixes}) == 1:
        batch = torch.from_numpy(np.stack(prefixes)).to(device)  # (B, T0)
        return generate(lm.model, batch, num_tokens, sampling, allowed, **options)  # (B, num_tokens)
    rows = [generate(lm.model, torch.from_numpy(p)[None].to(device), num_tokens, sampling, allowed, **options)
            for p in prefixes]  # B x (1, num_tokens)
    return torch.cat(rows)  # (B, num_tokens)


def _numpy_rows(tokens: Optional[torch.Tensor], batch: int) -> list[Optional[np.ndarray]]:
    return [None] * batch if tokens is None else [row.cpu().numpy().astype(np.int64) for row in tokens]


def generate_semantic(lm: LoadedLM, prompt_ids: Optional[torch.Tensor], num_tokens: int,
                      sampling: Optional[SamplingConfig] = None, batch_size: int = 1, **options) -> torch.Tensor:
    """prompt_ids (B, T_p) or None (unconditional, `batch_size` rows) -> new semantic ids (B, num_tokens).

    A model trained on deduplicated ids never repeats an id twice in a row.
    """
    _require_stage(lm, "semantic")
    batch = batch_size if prompt_ids is None else prompt_ids.shape[0]
    prefixes = [lm.layout.prefix(p if p is not None else np.zeros(0, np.int64)) for p in _numpy_rows(prompt_ids, batch)]
    return _generate_rows(lm, prefixes, num_tokens, lm.layout.allowed, sampling, **options)


def _generate_blocks(lm: LoadedLM, conditions: torch.Tensor, known: Optional[torch.Tensor], sampling, **options) -> torch.Tensor:
    """Frame-synchronous layouts: conditions (B, n, c) and the first P blocks' targets (B, P, t) (ids)
    -> every block's targets (B, n, t), the given ones first."""
    layout, batch = lm.layout, conditions.shape[0]
    known = conditions.new_zeros(batch, 0, len(layout.target_levels)) if known is None else known
    prefixes = [layout.prompt(c, k) for c, k in zip(_numpy_rows(conditions, batch), _numpy_rows(known, batch))]
    remaining = conditions.shape[1] - known.shape[1]
    if remaining <= 0:
        return known
    allowed = layout.step_rule(conditions, known.shape[1])
    new = _generate_rows(lm, prefixes, remaining * layout.block_size, allowed, sampling, **options)  # (B, m * (c + t))
    return torch.cat([known.to(new.device), layout.generated_targets(new)], dim=1)  # (B, n, t)


def _as_ids(layout, codes: torch.Tensor, first_level: int) -> torch.Tensor:
    """codes (B, T, q) of levels first_level.. -> vocabulary ids (B, T, q) (`AcousticLayout.code_ids` on tensors)."""
    return codes.long() + torch.from_numpy(layout.level_offsets(first_level, codes.shape[2])).to(codes.device)


def _generate_coarse_interleaved(lm: LoadedLM, semantic_ids: torch.Tensor, prompt_coarse, total: int,
                                 sampling, **options) -> torch.Tensor:
    layout = lm.layout
    per_id = layout.frames_per_id
    blocks = -(-total // per_id)  # semantic ids needed to cover `total` frames
    if semantic_ids.shape[1] < blocks:
        raise ValueError(f"{total} coarse frames need {blocks} semantic ids; got {semantic_ids.shape[1]}")
    conditions = semantic_ids[:, :blocks, None].long()  # (B, n, 1): semantic ids are their own vocabulary ids
    known = None
    if prompt_coarse is not None:  # whole blocks only; a prompt frame left over is generated again
        prompt = prompt_coarse[:, : prompt_coarse.shape[1] // per_id * per_id, : layout.num_coarse]  # (B, P * r, Q')
        known = _as_ids(layout, prompt, 0).reshape(prompt.shape[0], -1, per_id * layout.num_coarse)  # (B, P, r * Q')
    targets = _generate_blocks(lm, conditions.to(semantic_ids.device), known, sampling, **options)  # (B, n, r * Q')
    return layout.codes(targets)[:, :total]  # (B, total, Q')


def _generate_coarse_aligned(lm: LoadedLM, semantic_ids: torch.Tensor, prompt_coarse, total: int,
                             sampling, **options) -> torch.Tensor:
    """Aligned layout: BOS + the prompt's codes, then the rest, every position given its semantic ids."""
    layout, device = lm.layout, semantic_ids.device
    known = 0 if prompt_coarse is None else prompt_coarse.shape[1]
    conditions = torch.stack([torch.from_numpy(layout.conditions(row, total))
                              for row in _numpy_rows(semantic_ids, semantic_ids.shape[0])]).to(device)  # (B, total * Q', w)
    prefix = torch.stack([torch.from_numpy(layout.prefix(row)) for row in
                          (_numpy_rows(prompt_coarse, semantic_ids.shape[0]) if known else [None] * semantic_ids.shape[0])])
    masks = [layout.level_mask(level) for level in layout.levels]
    allowed = lambda step, previous: masks[step % layout.num_coarse]  # noqa: E731 the prompt holds whole frames
    sampling = sampling or lm.sampling
    null = layout.null_conditions(conditions) if sampling.guided else None  # classifier-free guidance's other branch
    new = generate(lm.model, prefix.to(device), (total - known) * layout.num_coarse, sampling, allowed,
                   conditions=conditions, null_conditions=null, **options)  # (B, (total - known) * Q')
    new_codes = layout.codes(new)  # (B, total - known, Q')
    return new_codes if not known else torch.cat([prompt_coarse[:, :, : layout.num_coarse].to(device), new_codes], dim=1)


def _coarse_prefix_pass(lm: LoadedLM, semantic_ids: torch.Tensor, prompt_coarse, frames: int, sampling,
                        **options) -> torch.Tensor:
    """Prefix layout, one window: [semantic ids] [SEP] [prompt codes] -> codes (B, frames, Q'), the prompt first."""
    layout = lm.layout
    known = 0 if prompt_coarse is None else prompt_coarse.shape[1]
    prompts = _numpy_rows(prompt_coarse, semantic_ids.shape[0])
    prefixes = [layout.prefix(s, p) for s, p in zip(_numpy_rows(semantic_ids, semantic_ids.shape[0]), prompts)]
    masks = [layout.level_mask(level) for level in layout.levels]
    allowed = lambda step, previous: masks[step % layout.num_coarse]  # noqa: E731 prompt holds whole frames
    new = _generate_rows(lm, prefixes, (frames - known) * layout.num_coarse, allowed, sampling, **options)
    new_codes = layout.codes(new)  # (B, frames - T_p, Q')
    if prompt_coarse is None:
        return new_codes
    return torch.cat([prompt_coarse.to(new_codes.device), new_codes], dim=1)  # (B, frames, Q')


def _generate_coarse_prefix(lm: LoadedLM, semantic_ids: torch.Tensor, prompt_coarse, total: int, timed_ids,
                            sampling, **options) -> torch.Tensor:
    """Prefix layout: in windows of the training crop sliding by half of it (`windows.frame_windows`). Each
    window states the semantic ids of its own span and the previous half window's codes as its prompt."""
    size = max(2, lm.crop_frames)  # a sliding window needs a frame to read and one to make
    if total <= size:  # the whole output in one window: all the ids are its own
        return _coarse_prefix_pass(lm, semantic_ids, prompt_coarse, total, sampling, **options)
    known = 0 if prompt_coarse is None else prompt_coarse.shape[1]
    specs = lm.token_specs
    timed = semantic_ids.shape[1] if timed_ids is None else timed_ids
    times = semantic_times(semantic_ids.shape[1], timed, total, specs["acoustic"].frame_ratio(specs["semantic"]))
    coarse = prompt_coarse  # (B, known, Q') or None
    for window in frame_windows(total, size, known, overlap=size // 2):
        ids = semantic_ids[:, ids_in_window(times, window)]  # (B, n)
        prompt = None if window.known == window.start else coarse[:, window.start : window.known]  # (B, known - start, Q')
        piece = _coarse_prefix_pass(lm, ids, prompt, window.end - window.start, sampling, **options)  # (B, end - start, Q')
        new = piece[:, window.known - window.start :]  # (B, end - known, Q')
        coarse = new if coarse is None else torch.cat([coarse.to(new.device), new], dim=1)  # (B, end, Q')
    return coarse


def generate_coarse(lm: LoadedLM, semantic_ids: torch.Tensor, prompt_coarse: Optional[torch.Tensor] = None,
                    sampling: Optional[SamplingConfig] = None, num_frames: Optional[int] = None,
                    timed_ids: Optional[int] = None, **options) -> torch.Tensor:
    """semantic_ids (B, T_s) (not deduplicated), prompt_coarse (B, T_p, Q') or None
    -> coarse codes (B, T_a, Q'), the prompt frames first; T_a = num_frames or the frames of T_s ids (2 T_s).

    timed_ids: how many leading ids sit at their own time (default all); the rest, generated by a semantic
    LM that deduplicates, are spread evenly over the frames left when the prefix layout picks each
    window's ids. The frame-synchronous layouts read every id at its time.
    """
    _require_stage(lm, "coarse")
    layout, specs = lm.layout, lm.token_specs
    total = num_frames or specs["acoustic"].frames_for(semantic_ids.shape[1], specs["semantic"])
    prompt_frames = 0 if prompt_coarse is None else prompt_coarse.shape[1]
    if prompt_frames > total:
        raise ValueError(f"prompt_coarse has {prompt_frames} frames; only {total} are to be generated")
    if isinstance(layout, InterleavedLayout):  # one pass over any length: the token window slides
        return _generate_coarse_interleaved(lm, semantic_ids, prompt_coarse, total, sampling, **options)
    if isinstance(layout, AlignedCoarseLayout):
        return _generate_coarse_aligned(lm, semantic_ids, prompt_coarse, total, sampling, **options)
    return _generate_coarse_prefix(lm, semantic_ids, prompt_coarse, total, timed_ids, sampling, **options)


def generate_fine(lm: LoadedLM, coarse_codes: torch.Tensor, prompt_fine: Optional[torch.Tensor] = None,
                  sampling: Optional[SamplingConfig] = None, **options) -> torch.Tensor:
    """coarse_codes (B, T, Q'), prompt_fine (B, T_p, Q - Q') or None -> fine codes (B, T, Q - Q').

    With the paper's layout: generated on non-overlapping chunks of `lm.chunk_seconds` (3 s in the
    paper; `windows.frame_windows`); the prompt's fine frames are kept and given as context inside the
    chunk they end in. With the interleaved layout: one pass, the token window sliding.
    """
    _require_stage(lm, "fine")
    layout = lm.layout
    if isinstance(layout, InterleavedLayout):  # one pass over any length: the KV cache slides
        conditions = _as_ids(layout, coarse_codes[:, :, : layout.num_coarse], 0)
        known = None if prompt_fine is None else _as_ids(layout, prompt_fine, layout.num_coarse)
        return layout.codes(_generate_blocks(lm, conditions, known, sampling, **options))  # (B, T, Q - Q')
    batch, frames = coarse_codes.shape[:2]
    known = 0 if prompt_fine is None else prompt_fine.shape[1]
    masks = [layout.level_mask(level) for level in layout.levels]
    allowed = lambda step, previous: masks[step % layout.num_fine]  # noqa: E731
    pieces = [] if not known else [prompt_fine[:, :frames].to(coarse_codes.device)]  # (B, min(T_p, T), Q - Q')
    for window in frame_windows(frames, max(1, lm.crop_frames), known):
        prompt_piece = prompt_fine[:, window.start : window.known] if window.known > window.start else None
        prefixes = [layout.prefix(c, p) for c, p in zip(_numpy_rows(coarse_codes[:, window.start : window.end], batch),
                                                        _numpy_rows(prompt_piece, batch))]
        new = _generate_rows(lm, prefixes, (window.end - window.known) * layout.num_fine, allowed, sampling, **options)
        pieces.append(layout.codes(new))  # (B, end - known, Q - Q')
    return torch.cat(pieces, dim=1)  # (B, T, Q - Q')


def _require_stage(lm: LoadedLM, stage: str) -> None:
    if lm.stage != stage:
        raise ValueError(f"{lm.path} is a {lm.stage} LM; this call needs a {stage} LM")
