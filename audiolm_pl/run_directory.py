"""Protecting a run directory: one training at a time, and a resume that survives a torn `last.ckpt`.

`run_lock(directory)` holds `<run>/train.lock` while a training runs: a second training started
into the same directory is refused with a one-line `RunDirectoryBusy` naming the holder (pid,
host). The lock is an `flock`, which the kernel drops when its holder dies, so a lock left by a
killed run is taken over, with a note; the file only records who holds it, for the messages.

`resume_checkpoint(directory)` picks the checkpoint to resume from: `last.ckpt`, or when it
cannot be read (a run killed while writing it) the newest readable `step*.ckpt`, saying so.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from audiolm_pl.checkpoint import CheckpointError, unreadable_reason

log = logging.getLogger(__name__)
LOCK_NAME = "train.lock"
# set (and not 0) in the processes a distributed launcher starts beside the first one, which holds the lock
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


class RunDirectoryBusy(ValueError):
    """Another training is writing into this run directory."""


def _first_process() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the run directory's lock for the `with` block; `RunDirectoryBusy` if another process holds it."""
    import fcntl

    if not _first_process():
        yield
        return
    path = Path(directory) / LOCK_NAME
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "a process that has not written its pid yet"
        handle.close()
        raise RunDirectoryBusy(f"run directory {directory} is in use by another training ({holder}; lock {path}); "
                               "wait for it to end, or train into another trainer.run_name / trainer.output_dir") from None
    previous = handle.read().strip()
    if previous:  # a holder that released cleanly empties the file
        log.warning("run directory %s: took over the lock of %s, which ended without releasing it", directory, previous)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        handle.close()  # closing drops the flock


def _step_of(path: Path) -> int:
    match = re.search(r"step(\d+)", path.name)
    return int(match.group(1)) if match else -1


def resume_checkpoint(directory: Path) -> Optional[Path]:
    """`<run>/checkpoints/last.ckpt`, else the newest readable `step*.ckpt`; None when there is none.
    Raises `CheckpointError` when checkpoints exist but none can be read (resuming would lose them)."""
    folder = Path(directory) / "checkpoints"
    steps = sorted(folder.glob("step*.ckpt"), key=lambda p: (_step_of(p), p.stat().st_mtime), reverse=True)
    candidates = [path for path in [folder / "last.ckpt", *steps] if path.exists()]
    unreadable = []
    for candidate in candidates:
        reason = unreadable_reason(candidate)
        if reason is None:
            if unreadable:
                log.warning("%s cannot be read (%s); resuming from %s, the newest readable checkpoint",
                            unreadable[0][0], unreadable[0][1], candidate.name)
            return candidate
        unreadable.append((candidate, reason))
    if unreadable:
        raise CheckpointError(f"cannot resume {directory}: none of its {len(unreadable)} checkpoints can be read "
                              f"({unreadable[0][0].name}: {unreadable[0][1]}); move them away or set trainer.resume=false "
                              "to start over")
    return None
