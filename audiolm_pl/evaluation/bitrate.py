"""Codec quality per bitrate: the same held-out audio decoded from its first L RVQ levels, for several L.

A codec trained with quantizer dropout decodes any first L levels (`AcousticCodec.decode` takes (B, T_a, L)),
so one model gives the whole bitrate curve. Signal measures only (mel distance, SI-SDR), which hold for speech
and music alike; STOI and ASR are speech measures and stay in the codec section.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def levels_to_measure(num_quantizers: int) -> list[int]:
    """1, 2, 4, ... and Q itself: Q = 12 -> [1, 2, 4, 8, 12]."""
    levels = [2**power for power in range(int(math.log2(num_quantizers)) + 1)]
    return levels + ([num_quantizers] if levels[-1] != num_quantizers else [])


def kbps(codec, levels: int) -> float:
    """Bits per second of `levels` RVQ levels: levels x frame rate x bits per code."""
    return levels * codec.frame_rate * math.log2(codec.codebook_size) / 1000


@torch.inference_mode()
def quality_by_levels(codec, wavs: list[np.ndarray], device: torch.device | str = "cpu") -> dict[int, dict[str, float]]:
    """wavs (T,) at the codec's rate -> {levels: {"kbps", "mel_distance", "si_sdr"}}, means over the wavs."""
    from audiolm_pl.codec.losses import MultiScaleMelLoss
    from audiolm_pl.codec.metrics import si_sdr

    mel_distance = MultiScaleMelLoss(codec.sample_rate)
    levels = levels_to_measure(codec.num_quantizers)
    figures: dict[int, list[tuple[float, float]]] = {level: [] for level in levels}
    for wav in wavs:
        original = torch.from_numpy(np.asarray(wav, dtype=np.float32))  # (T,)
        codes = codec.encode(original[None].to(device))  # (1, T_a, Q)
        for level in levels:
            decoded = codec.decode(codes[:, :, :level])[0, : len(original)].float().cpu()  # (T',)
            decoded = torch.nn.functional.pad(decoded, (0, len(original) - len(decoded)))  # (T,)
            figures[level].append((float(mel_distance(decoded[None], original[None])), float(si_sdr(decoded[None], original[None]))))
    return {level: {"kbps": round(kbps(codec, level), 3), "mel_distance": float(np.mean([f[0] for f in rows])),
                    "si_sdr": float(np.mean([f[1] for f in rows]))} for level, rows in figures.items()}
