"""A preallocated key/value cache for decoding, with a sliding window.

Keys and values of every layer live in buffers of `capacity` positions. `update` writes the
new positions of one layer and returns everything cached so far; `advance` commits them once
all layers have run. `trim(keep)` drops all but the newest `keep` positions, which lets
decoding continue past the trained context: positions are tracked as absolute numbers
(`offset` = absolute position of the first cached entry), and both position schemes of
`TransformerLM` only look at query - key distances.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, capacity: int, device, dtype):
        shape = (n_layer, batch, n_head, capacity, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, capacity, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, capacity, hs)
        self.capacity = capacity
        self.length = 0  # committed positions in the buffers
        self.offset = 0  # absolute position of buffer slot 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, nh, T, hs) of the new positions -> all cached k, v (B, nh, length + T, hs)."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(
                f"KV cache holds {self.capacity} positions; {self.length} cached + {k.shape[2]} new do not fit "
                "(trim the cache first, or make it larger)"
            )
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def trim(self, keep: int) -> None:
        """Keep only the newest `keep` cached positions (the sliding window)."""
        drop = self.length - keep
        if drop <= 0:
            return
        self.keys[:, :, :, :keep] = self.keys[:, :, :, drop : self.length].clone()
        self.values[:, :, :, :keep] = self.values[:, :, :, drop : self.length].clone()
        self.length = keep
        self.offset += drop
