"""Generating past the trained context: the one module that knows how.

An LM is trained on crops of at most `max_seq_len` tokens. Outputs longer than that are made in one of
two ways, by what the layout needs to see:

- a token window (`TokenWindow`), for the semantic LM and the frame-synchronous coarse / fine layouts
  (`aligned.py`, `interleaved.py`), whose every position finds its condition a few positions back: one
  pass, attending over the last `window` tokens. With the KV cache, a full cache drops its oldest quarter
  (positions are absolute and both position schemes only read query - key distances); without, the
  model reruns the last `window` tokens each step.
- frame windows (`frame_windows`), for the paper's prefix layouts, whose condition (the semantic ids, the
  coarse codes) stands before the first code and must be stated again for every stretch of time: the
  output is made window by window of one training crop each. The coarse stage slides its windows by half
  a crop, each reading the previous half as its prompt and the semantic ids of its own span
  (`semantic_times`); the fine stage works on non-overlapping chunks (the paper's 3 s), a chunk reading
  the prompt's frames inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiolm_pl.lm.kv_cache import KVCache


class TokenWindow:
    """The last `window` positions a model attends over while generating token by token."""

    def __init__(self, window: int):
        self.window = window
        # trimming drops a quarter window at once, so the cache's buffer copy happens every window/4 steps
        self.keep = max(1, window - max(1, window // 4))

    def start(self, length: int) -> int:
        """First position the model reads of a sequence of `length` positions."""
        return max(0, length - self.window)

    def make_room(self, cache: KVCache) -> None:
        """Before a cached step: a full cache keeps only its newest `keep` positions."""
        if cache.length >= self.window:
            cache.trim(self.keep)


@dataclass(frozen=True)
class FrameWindow:
    start: int  # first frame the window reads
    known: int  # frames start..known-1 are already made (its prompt); known..end-1 it generates
    end: int


def frame_windows(total: int, size: int, known: int = 0, overlap: int = 0) -> list[FrameWindow]:
    """Windows of at most `size` frames that make frames known..total-1 (the first `known` are given).

    overlap > 0 (sliding windows): a window starts `overlap` frames before the first frame it makes and reads
    them as its prompt. overlap == 0 (chunks): a fixed grid of chunks from frame 0; a chunk in which the given
    frames end reads them as its prompt. An output that fits in one window is one window from frame 0.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"frame windows need size >= 1 and 0 <= overlap < size; got size {size}, overlap {overlap}")
    known = min(known, total)
    if known == total:
        return []
    if total <= size:
        return [FrameWindow(0, known, total)]
    windows = []
    while known < total:
        start = max(0, known - overlap) if overlap else known - known % size
        end = min(total, start + size)
        windows.append(FrameWindow(start, known, end))
        known = end
    return windows


def semantic_times(num_ids: int, timed_ids: int, frames: int, frames_per_id: float) -> np.ndarray:
    """The acoustic frame at which each of `num_ids` semantic ids starts (num_ids,).

    The first `timed_ids` (a prompt's raw ids) sit at their own time, `frames_per_id` frames apart (2 at
    25 / 50 Hz); the others, deduplicated by a dedup LM, have lost their timing and are spread evenly over
    the frames that are left (issue #8).
    """
    prompt_end = min(frames, round(timed_ids * frames_per_id))
    generated = num_ids - timed_ids
    spread = prompt_end + np.arange(generated) * (frames - prompt_end) / max(1, generated)
    return np.concatenate([np.arange(timed_ids) * frames_per_id, spread])


def ids_in_window(times: np.ndarray, window: FrameWindow) -> slice:
    """The semantic ids (by their `semantic_times`) that start inside `window`; the last id if none does."""
    inside = np.flatnonzero((times >= window.start) & (times < window.end))
    return slice(int(inside.min()), int(inside.max()) + 1) if len(inside) else slice(-1, None)
