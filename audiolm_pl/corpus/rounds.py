"""Making a corpus clip by clip until it holds enough audio: shared by the speech and piano corpora.

Jobs come in fixed rounds; a round runs in a process pool (results in job order) and the
corpus stops after the first round that reaches the target. Rounds are fixed, so a seed gives
the same clips whatever the workers' timing; workers skip clips that already exist (resume).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from audiolm_pl.fileio import atomic_write_json

# make_one(job) -> seconds of audio made (or found), or why the job was skipped
MakeOne = Callable[[tuple], "float | str"]


@dataclass
class CorpusTally:
    seconds: float = 0.0
    clips: int = 0
    failures: list[str] = field(default_factory=list)
    exhausted: bool = False  # every job ran before the target was reached


def make_in_rounds(rounds: Iterator[list[tuple]], make_one: MakeOne, target_seconds: float, workers: int,
                   description: str, progress: bool = True) -> CorpusTally:
    tally = CorpusTally()
    bar = tqdm(total=round(target_seconds), desc=description, unit="s audio", disable=not progress)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for jobs in rounds:
            if tally.seconds >= target_seconds:
                return tally
            for result in (pool.map(make_one, jobs) if pool else map(make_one, jobs)):
                if isinstance(result, str):
                    tally.failures.append(result)
                    continue
                tally.seconds += result
                tally.clips += 1
                bar.update(round(result))
        tally.exhausted = tally.seconds < target_seconds
        return tally
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)


def write_summary(out_dir: Path, tally: CorpusTally, seed: int, **extra) -> dict:
    """`corpus.json` beside the clips; returns the summary (without the failure examples)."""
    summary = {"clips": tally.clips, "hours": round(tally.seconds / 3600, 4), "failures": len(tally.failures), **extra}
    atomic_write_json(Path(out_dir) / "corpus.json", {**summary, "failure_examples": tally.failures[:20], "seed": seed})
    return summary
