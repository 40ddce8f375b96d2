"""What makes a killed training resume as if it had never stopped: checkpoint files that are whole or absent,
the random state saved with them, and checkpoints on a clock as well as every N steps.

- `AtomicCheckpointIO`: Lightning writes `.ckpt` files through fsspec, which stages them in the system's temporary
  folder and *moves* them into place: across file systems (a local /tmp, checkpoints on a network file system) the
  move is a copy into the final name, and a kill during it leaves a torn `last.ckpt` where a good one was. Here the
  temporary sits beside the target, is flushed to disk, then renamed over it.
- `RandomStateCheckpoint`: Lightning keeps no random state in its checkpoints, so a resumed run would draw the
  dropout masks of step 1 again (from `seed_everything`) instead of those of the step it resumes at; each rank's
  state is kept, since ranks draw differently.
- `TimedCheckpoint`: `last.ckpt` every `trainer.checkpoint_every_minutes`, for every stage (Lightning's
  `ModelCheckpoint(train_time_interval=...)` never fires for manual-optimisation stages such as the codec's GAN).
- `AtomicShardedStrategy`: FSDP2's sharded checkpoints are directories, which torch.distributed.checkpoint would
  overwrite file by file (only its `.metadata` goes through a rename): a kill mid-save could leave shards of two
  steps, or a torn Lightning `meta.pt`, where a whole checkpoint was. Here every rank
  writes into `.NAME.partial` beside the target, which then takes the target's place in one rename.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy

from audiolm_pl.fileio import atomic_output, replace_directory, stale_temporaries

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose files appear under their name only when whole (local paths)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):  # object stores: Lightning's own upload
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_output(path, durable=True) as tmp:
            torch.save(checkpoint, tmp)


class AtomicShardedStrategy(ModelParallelStrategy):
    """`ModelParallelStrategy` whose sharded checkpoint directories are whole or absent (`replace_directory`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Optional[Any] = None) -> None:
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(filepath))
        staging = path.with_name(f".{path.name}{PARTIAL}")
        if self.global_rank == 0 and staging.exists():
            shutil.rmtree(staging)  # a save that was killed
        self.barrier("sharded checkpoint: staging")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("sharded checkpoint: written")  # every rank's shards are on disk before the swap
        if self.global_rank == 0:
            replace_directory(staging, path)
        self.barrier("sharded checkpoint: in place")


PARTIAL = ".partial"  # a sharded checkpoint being written: `.last.ckpt.partial`


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the half-written checkpoints a killed run left in `folder` (one checkpoint's size each): files of
    `AtomicCheckpointIO` whose writer is dead, and sharded directories (called before this run saves any)."""
    for tmp in stale_temporaries(folder, "*.ckpt"):
        log.info("removing %s, a checkpoint its killed writer left half-written", tmp)
        tmp.unlink(missing_ok=True)
    for partial in [*folder.glob(f".*.ckpt{PARTIAL}"), *folder.glob(".*.ckpt.old")]:
        log.info("removing %s, a sharded checkpoint a killed run left half-written or half-replaced", partial)
        shutil.rmtree(partial, ignore_errors=True)


def collect_random_state() -> dict:
    """The torch (and CUDA), numpy and Python generators' states, in types `torch.load(weights_only=True)` reads."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position,
                                                       has_gauss, gauss], "python": random.getstate()}
    if torch.cuda.is_available():  # this rank's device only: `_all` would open a context on every visible GPU
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value):
    """random.setstate wants the tuples that a checkpoint may hand back as lists."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


class RandomStateCheckpoint(Callback):
    """Saves every rank's random state with each checkpoint and gives each rank its own back when training resumes.

    Per rank, because ranks draw differently (Lightning's spawned DDP workers start from different states): a DDP
    run restored with rank 0's state on every rank trained on to other weights than the uninterrupted run.
    A run resumed on another number of ranks keeps its fresh state, and says so."""

    KEY = "random_states"  # in the checkpoint: [rank 0's state, rank 1's, ...]

    def __init__(self):
        self._restored: Optional[dict] = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[self.KEY] = _gathered(collect_random_state(), trainer.world_size)  # every rank saves together

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get(self.KEY)
        if states is not None and len(states) != trainer.world_size:
            log.warning("the checkpoint holds the random state of %d ranks, this run has %d: dropout masks and "
                        "other random draws will not repeat those of an uninterrupted run", len(states),
                        trainer.world_size)
        elif states is not None:
            self._restored = states[trainer.global_rank]  # applied at train start: after restoring, before step 1

    def on_train_start(self, trainer, pl_module) -> None:
        if self._restored is not None:
            restore_random_state(self._restored)
            self._restored = None


def _gathered(state: dict, world_size: int) -> list[dict]:
    """[state of rank 0, rank 1, ...]: a collective when the run is distributed."""
    if world_size == 1:
        return [state]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


class TimedCheckpoint(Callback):
    """Writes `path` (the run's `last.ckpt`) when `minutes` have passed since training started or since its last
    write: a long run killed between step checkpoints loses at most that much."""

    def __init__(self, path: Path, minutes: float):
        if minutes <= 0:
            raise ValueError(f"trainer.checkpoint_every_minutes must be > 0 minutes (or null for none); got {minutes}")
        self.path = Path(path)
        self.seconds = 60.0 * minutes
        self._since = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._since = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        due = time.monotonic() - self._since >= self.seconds
        # rank 0's clock decides for all: a save is collective, and ranks that disagreed would hang in it
        if trainer.strategy.broadcast(due) and not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)
            self._since = time.monotonic()


class FinalCheckpoint(Callback):
    """Writes `path` (the run's `last.ckpt`) when training ends, so a run stopped by `max_steps` or `max_time`
    between checkpoint intervals keeps its last steps. Inside the training processes: under `ddp_spawn` the
    process that called `fit` never holds the trained state, so a save after `fit` returns would lose them."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path, weights_only=False)  # full state (optimizers, loops) for resuming
