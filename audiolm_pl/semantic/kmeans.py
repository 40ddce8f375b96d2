"""Mini-batch k-means in torch: k-means++ init, per-centre running means, empty-cluster reseeding.

Runs wherever its tensors are (CPU or GPU). Under DDP (`torch.distributed` initialised) every
rank passes its own frames; the per-batch sums and counts are all-reduced and the random
choices (init, reseeding) are made on rank 0 and broadcast, so all ranks hold the same centres.

    km = MiniBatchKMeans(KMeansConfig(num_clusters=1024))
    centroids = km.fit(frames)          # frames (N, D) float -> centroids (K, D)
    ids = assign(frames, centroids)     # (N,) int64
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class KMeansConfig:
    num_clusters: int = 1024
    batch_size: int = 10000  # frames per mini-batch (per rank)
    epochs: int = 10  # passes over the frames
    init_samples: int = 50000  # frames used by k-means++ (per rank, gathered on rank 0)
    reseed_min_count: int = 1  # a centre with fewer assignments in an epoch is reseeded
    seed: int = 0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def squared_distances(frames: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """frames (N, D), centroids (K, D) -> squared euclidean distances (N, K)."""
    frames = frames.float()
    centroids = centroids.float()
    cross = frames @ centroids.T  # (N, K)
    return (frames.pow(2).sum(1, keepdim=True) - 2 * cross + centroids.pow(2).sum(1)).clamp_min(0)


@torch.no_grad()
def assign(frames: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """frames (N, D) -> index of the nearest centroid (N,) int64, in chunks to bound memory."""
    if frames.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"frames have dimension {frames.shape[-1]}; centroids have {centroids.shape[-1]}")
    parts = [squared_distances(part, centroids).argmin(1) for part in frames.split(chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=frames.device)


@torch.no_grad()
def kmeans_plus_plus(frames: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (as in scikit-learn): frames (N, D) -> centres (K, D).

    Each step draws 2 + log(K) candidates with p ~ D(x)^2 and keeps the one that lowers the
    total squared distance most, which avoids most of plain k-means++'s bad seedings.
    """
    count = frames.shape[0]
    if count < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} frames to seed {num_clusters} clusters; got {count}")
    frames = frames.float()
    trials = 2 + int(math.log(num_clusters))
    first = torch.randint(count, (1,), generator=generator).item()
    chosen = [first]
    closest = squared_distances(frames, frames[first : first + 1]).squeeze(1)  # (N,)
    for _ in range(num_clusters - 1):
        weights = closest.double().cpu()
        if float(weights.sum()) <= 0:  # every frame already sits on a centre
            candidates = torch.randint(count, (trials,), generator=generator)
        else:
            candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidate_distances = squared_distances(frames, frames[candidates.to(frames.device)])  # (N, trials)
        updated = torch.minimum(closest[:, None], candidate_distances)  # (N, trials)
        best = int(updated.sum(0).argmin())
        chosen.append(int(candidates[best]))
        closest = updated[:, best]
    return frames[torch.tensor(chosen, device=frames.device)]  # (K, D)


class MiniBatchKMeans:
    """Sculley-style mini-batch k-means: each centre moves by 1/count towards its new members."""

    def __init__(self, config: KMeansConfig):
        self.config = config
        self.centroids: torch.Tensor | None = None  # (K, D)
        self.counts: torch.Tensor | None = None  # (K,) assignments seen so far
        self.inertia_history: list[float] = []  # mean squared distance per epoch

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        if _distributed():
            dist.broadcast(tensor, src=0)
        return tensor

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if _distributed():
            dist.all_reduce(tensor)
        return tensor

    @torch.no_grad()
    def initialise(self, frames: torch.Tensor, generator: torch.Generator) -> None:
        k = self.config.num_clusters
        size = torch.tensor([min(self.config.init_samples, frames.shape[0])], device=frames.device)
        if _distributed():  # all_gather needs the same sample size on every rank
            dist.all_reduce(size, op=dist.ReduceOp.MIN)
        pick = torch.randperm(frames.shape[0], generator=generator)[: int(size.item())]
        sample = frames[pick.to(frames.device)].float()  # (S, D)
        if _distributed():  # seed from every rank's frames, on rank 0
            gathered = [torch.zeros_like(sample) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, sample)
            sample = torch.cat(gathered)  # (world * S, D)
        centroids = kmeans_plus_plus(sample, k, generator) if dist_rank() == 0 else sample.new_zeros(k, sample.shape[1])
        self.centroids = self._broadcast(centroids.contiguous())
        self.counts = torch.zeros(k, device=frames.device, dtype=torch.float64)

    @torch.no_grad()
    def partial_fit(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One update from batch (B, D); returns (per-centre counts in this batch (K,), summed sq. distance)."""
        batch = batch.float()
        distances = squared_distances(batch, self.centroids)  # (B, K)
        nearest = distances.argmin(1)  # (B,)
        sums = torch.zeros_like(self.centroids).index_add_(0, nearest, batch)  # (K, D)
        counts = torch.bincount(nearest, minlength=self.centroids.shape[0]).to(torch.float64)  # (K,)
        inertia = distances.gather(1, nearest[:, None]).sum().to(torch.float64).reshape(1)
        self._all_reduce(sums)
        self._all_reduce(counts)
        self._all_reduce(inertia)
        self.counts += counts
        hit = counts > 0
        # running mean: c <- c + (sum - n c) / N_total for the centres hit by this batch
        step = (sums[hit] - counts[hit, None].float() * self.centroids[hit]) / self.counts[hit, None].float()
        self.centroids[hit] += step
        return counts, float(inertia)

    @torch.no_grad()
    def reseed(self, epoch_counts: torch.Tensor, frames: torch.Tensor, generator: torch.Generator) -> int:
        """Move centres with too few members onto frames far from their centre; returns how many moved."""
        dead = (epoch_counts < self.config.reseed_min_count).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        if dist_rank() == 0:
            pick = torch.randperm(frames.shape[0], generator=generator)[: max(self.config.batch_size, dead.numel())]
            candidates = frames[pick.to(frames.device)].float()  # (C, D)
            far = squared_distances(candidates, self.centroids).min(1).values.double().cpu()  # (C,)
            chosen = torch.multinomial(far + 1e-12, dead.numel(), replacement=dead.numel() > len(far), generator=generator)
            self.centroids[dead] = candidates[chosen.to(frames.device)]
        self._broadcast(self.centroids)
        self.counts[dead] = 0
        return int(dead.numel())

    def _batches_per_epoch(self, num_frames: int) -> int:
        batches = torch.tensor([-(-num_frames // self.config.batch_size)])
        if _distributed():
            batches = batches.to(self.centroids.device)
            dist.all_reduce(batches, op=dist.ReduceOp.MAX)
        return int(batches.item())

    @torch.no_grad()
    def fit(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, D) on any device -> centroids (K, D) float32 on the same device."""
        generator = torch.Generator().manual_seed(self.config.seed + dist_rank())
        self.initialise(frames, generator)
        for epoch in range(self.config.epochs):
            order = torch.randperm(frames.shape[0], generator=generator).to(frames.device)
            epoch_counts = torch.zeros_like(self.counts)
            total, seen = 0.0, 0
            for index in range(self._batches_per_epoch(frames.shape[0])):
                # ranks with fewer frames wrap around, so every rank joins every all-reduce
                start, end = index * self.config.batch_size, (index + 1) * self.config.batch_size
                positions = torch.arange(start, end if _distributed() else min(end, frames.shape[0]))
                batch = frames[order[positions.to(frames.device) % frames.shape[0]]]
                counts, inertia = self.partial_fit(batch)
                epoch_counts += counts
                total, seen = total + inertia, seen + int(counts.sum())
            self.inertia_history.append(total / max(seen, 1))
            last = epoch == self.config.epochs - 1
            moved = 0 if last else self.reseed(epoch_counts, frames, generator)
            log.info("k-means epoch %d: mean sq. distance %.4f, %d centres reseeded", epoch, self.inertia_history[-1], moved)
        return self.centroids


def dist_rank() -> int:
    return dist.get_rank() if _distributed() else 0
