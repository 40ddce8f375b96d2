"""Training throughput that can be compared across machines: model FLOPs per step, step time, MFU, memory.

- FLOPs: counted on one real training step (forward, backward, optimiser) with
  `torch.utils.flop_counter.FlopCounterMode`, which counts matmuls, convolutions and attention (not FFTs,
  norms or element-wise work). Attention is counted over the full T x T score matrix, causal or not.
- Step time: through the real Lightning loop, either from the stage's own DataModule (shards on disk) or
  from one of its batches held in memory; their ratio says whether the data path is the bottleneck.
- MFU: achieved FLOP/s over a peak this module measures itself (a large matmul on the same device and thread
  count), so it compares across machines where vendor peaks would not.
`scripts/bench_lm.py` and `scripts/bench_codec.py` call these.
"""

from __future__ import annotations

import logging
import math
import resource
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU one that SDPA runs here; without
    this, attention would count as zero FLOPs on CPU."""
    from torch.utils.flop_counter import flop_registry

    forward, backward = (_aten._scaled_dot_product_flash_attention_for_cpu,
                         _aten._scaled_dot_product_flash_attention_for_cpu_backward)
    if forward in flop_registry:
        return

    @register_flop_formula(forward)
    def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    @register_flop_formula(backward)
    def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)


_register_cpu_attention_flops()


def matmul_peak(device: torch.device, dtype: torch.dtype, size: Optional[int] = None, repeats: int = 10) -> float:
    """FLOP/s of the best of `repeats` (size x size) @ (size x size) matmuls on `device` at the current thread
    count: the ceiling a dense model can reach here. Best, not mean: other processes only ever slow it down."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: library initialisation, kernel choice
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held since the last reset. CPU: the process's peak resident set so far
    (it only grows, so it bounds the latest measurement from above)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class StepClock(L.Callback):
    """Stamps the start of every training batch (after the device is idle) and counts the FLOPs of one."""

    def __init__(self, device: torch.device, count_flops_at: Optional[int]):
        self.device, self.count_flops_at = device, count_flops_at
        self.starts: list[float] = []
        self.flops: Optional[int] = None
        self._counter: Optional[FlopCounterMode] = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        synchronize(self.device)
        self.starts.append(time.perf_counter())
        if batch_idx == self.count_flops_at:
            self._counter = FlopCounterMode(display=False)
            # totals only: its per-module tracker hooks autograd on each module's inputs and fails on modules
            # that run under no_grad inside a training step (the codec's FSQ statistics)
            self._counter.mod_tracker = _GlobalOnly()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = self._counter.get_total_flops(), None


class _GlobalOnly:
    """A stand-in for FlopCounterMode's ModuleTracker that files every FLOP under "Global"."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


class OneBatch(L.LightningDataModule):
    """The same batch `steps` times from memory: a step time with no data path in it."""

    def __init__(self, batch: dict, steps: int):
        super().__init__()
        self.batch, self.steps = batch, steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.batch] * self.steps, batch_size=None)  # batch_size=None: items are whole batches


@dataclass
class StepMeasure:
    seconds: float  # median wall time of one training step after warm-up (loading the next batch included)
    first_seconds: float  # the first step: allocation, and compilation when compiled
    flops: Optional[int]  # counted FLOPs of one step (forward + backward + optimiser); None when not counted
    peak_memory_mb: float


def measure_steps(module: L.LightningModule, datamodule: L.LightningDataModule, steps: int, warmup: int,
                  device: torch.device, count_flops: bool) -> StepMeasure:
    """Train `module` for warmup + steps + 1 steps with a plain Lightning Trainer (no logger, checkpoints or
    validation) and time the steps after the warm-up. FLOPs are counted on step 0 (not timed): a compiled
    step runs fused kernels the counter cannot see, so count on an eager module."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = StepClock(device, 0 if count_flops else None)
    manual = not module.automatic_optimization
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per measurement: no banners
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_steps=warmup + steps + 1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
        gradient_clip_val=None if manual else getattr(module.run_config.trainer, "gradient_clip_val", None),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(IterableDataset|LeafSpec|val_dataloader|max_steps=).*")
        trainer.fit(module, datamodule=datamodule)
    intervals = np.diff(clock.starts)  # (steps,): start of one batch to the start of the next
    if len(intervals) < warmup + steps:
        raise RuntimeError(f"the loop ran {len(clock.starts)} batches, not {warmup + steps + 1}: "
                           "the data module's epoch is shorter than the benchmark (raise data.samples_per_epoch)")
    return StepMeasure(float(statistics.median(intervals[warmup:])), float(intervals[0]), clock.flops,
                       peak_memory_mb(device))


def first_batch(datamodule: L.LightningDataModule) -> dict:
    """The first training batch the stage's own DataModule makes."""
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


# -- synthetic shards: the real on-disk formats, random contents (throughput does not depend on them) ---------

def write_token_shards(directory: Path, specs: dict, clips: int = 64, seconds: float = 12.0, shards: int = 8,
                       seed: int = 0) -> Path:
    """`shards` token shards (enough to split over ranks and workers) of `clips` random clips of `seconds` in
    all, at `specs` ({"semantic", "acoustic"} TokenSpecs), written with the real `ShardWriter` and manifest;
    returns `directory` (kept as it is if it already has a manifest)."""
    from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
    from audiolm_pl.data.shard_io import ShardWriter

    if (directory / "manifest.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    semantic, acoustic = specs["semantic"], specs["acoustic"]
    entries = []
    for index, keys in enumerate(np.array_split(np.arange(clips), shards)):
        shard = directory / f"tokens-{index:06d}.tar"
        with ShardWriter(shard) as writer:
            for clip in keys:
                ids = rng.integers(0, semantic.vocab_size, semantic.frames_in(seconds))  # (T_s,)
                codes = rng.integers(0, acoustic.vocab_size, (acoustic.frames_in(seconds), acoustic.num_quantizers))
                writer.write_sample(f"clip{clip:05d}", {"duration": seconds}, semantic=ids.astype(np.int16),
                                    acoustic=codes.astype(np.int16))  # (T_a, Q)
        entries.append(ShardEntry(shard.name, len(keys), len(keys) * seconds))
    write_manifest(directory, ShardManifest(
        content="tokens", sample_rate=acoustic.sample_rate, shards=entries,
        made_by={"command": "audiolm_pl.throughput.write_token_shards (random ids)"},
        token_specs={role: spec.to_dict() for role, spec in specs.items()}))
    return directory


def write_audio_shards(directory: Path, sample_rate: int, clips: int = 32, seconds: float = 4.0, seed: int = 0) -> Path:
    """One audio shard of `clips` voice-like tones (harmonics with vibrato, and noise) of `seconds`, written with
    the real `ShardWriter` (FLAC) and manifest; returns `directory` (kept if it already has a manifest)."""
    from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
    from audiolm_pl.data.shard_io import ShardWriter

    if (directory / "manifest.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate  # (T,)
    shard = directory / "audio-000000.tar"
    with ShardWriter(shard) as writer:
        for clip in range(clips):
            pitch = rng.uniform(100, 250) * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))  # (T,) Hz
            phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
            wav = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.01 * rng.standard_normal(len(t))
            writer.write_sample(f"clip{clip:05d}", {"duration": seconds, "sample_rate": sample_rate, "speaker": "s"},
                                audio=wav.astype(np.float32), sample_rate=sample_rate)
    write_manifest(directory, ShardManifest(
        content="audio", sample_rate=sample_rate, shards=[ShardEntry(shard.name, clips, clips * seconds)],
        speakers=["s"], made_by={"command": "audiolm_pl.throughput.write_audio_shards (synthetic tones)"}))
    return directory
