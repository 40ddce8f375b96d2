"""`audiolm-pl data shards IN_DIR OUT_DIR`: audio folders -> WebDataset audio shards.

Plan, then write. Planning reads only headers: bad files are found and listed, every good
file gets its number of segments (at most `max_seconds` each, 30 s unless told otherwise, so a
two-hour recording never becomes one sample), and segments are dealt into
shards of `samples_per_shard` in sorted order. The plan is a pure function of the inputs
and the options, so a rerun makes the same shards; a shard counts as done when its tar and
its `.progress/<shard>.json` both exist, and each is written under a temporary name and
renamed when whole, so an interrupted job leaves no half shard and a rerun finishes the rest.

`report.json` lists every input that was skipped (`skipped`: unreadable, empty, a folder named
`x.wav`, a symlink loop, ...) and every input that was kept with a warning (`notes`: a truncated
file whose header promises more audio than it holds), each with its reason.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from audiolm_pl.data.audio import BadAudio, load_mono, probe
from audiolm_pl.data.inputs import InputFile, describe, find_audio, phones_in, unique_keys
from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
from audiolm_pl.data.shard_io import ShardWriter, encode_sample
from audiolm_pl.fileio import atomic_write_json

DEFAULT_MAX_SECONDS = 30.0


@dataclass
class ShardReport:
    out_dir: Path
    shards: int
    samples: int
    hours: float
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong with a file that was kept)


@dataclass(frozen=True)
class PlannedFile:
    item: InputFile
    segments: int


def plan(inputs: list[InputFile], max_seconds: float | None, progress: bool) -> tuple[list[PlannedFile], list, list]:
    """Header pass: (files with their segment counts, [(path, reason) skipped], [(path, note) kept with a note])."""
    planned, skipped, notes = [], [], []
    for item in tqdm(inputs, desc="probing", unit="file", disable=not progress):
        try:
            info = probe(item.path)
        except BadAudio as err:
            skipped.append((str(item.path), str(err)))
            continue
        if info.damage:
            notes.append((str(item.path), f"{item.path}: {info.damage}"))
        segments = max(1, math.ceil(info.seconds / max_seconds)) if max_seconds else 1
        planned.append(PlannedFile(item, segments))
    return planned, skipped, notes


def deal(planned: list[PlannedFile], samples_per_shard: int) -> list[list[PlannedFile]]:
    """Files -> shards of about `samples_per_shard` segments (a file never spans two shards)."""
    shards, current, count = [], [], 0
    for entry in planned:
        if current and count + entry.segments > samples_per_shard:
            shards.append(current)
            current, count = [], 0
        current.append(entry)
        count += entry.segments
    if current:
        shards.append(current)
    return shards


def encode_file(job: tuple[PlannedFile, int]) -> list[dict] | str:
    """One file -> its encoded samples (`shard_io.encode_sample`), or the reason it was skipped."""
    entry, sample_rate = job
    item = entry.item
    try:
        audio = load_mono(item.path, sample_rate)  # (T,)
    except BadAudio as err:
        return str(err)
    samples, offset = [], 0
    for index, piece in enumerate(np.array_split(audio, entry.segments)):
        start_s, end_s = offset / sample_rate, (offset + len(piece)) / sample_rate
        offset += len(piece)
        meta = {
            "duration": round(len(piece) / sample_rate, 4), "sample_rate": sample_rate,
            "speaker": item.speaker, "text": item.text, "source": str(item.path), "offset": round(start_s, 4),
        }
        if item.phones:
            meta["phones"] = phones_in(item.phones, start_s, end_s)
        key = item.key if entry.segments == 1 else f"{item.key}-seg{index:03d}"
        samples.append(encode_sample(key, meta, audio=piece, sample_rate=sample_rate))
    return samples


def _encoded(files: list[PlannedFile], sample_rate: int, pool) -> Iterator[tuple[PlannedFile, list | str]]:
    jobs = [(entry, sample_rate) for entry in files]
    results = pool.map(encode_file, jobs) if pool else map(encode_file, jobs)
    yield from zip(files, results)


def write_one_shard(path: Path, record_path: Path, files: list[PlannedFile], sample_rate: int, pool, bar) -> dict:
    """Write the shard `path` and its progress record; the tar is renamed into place last, so a shard whose tar
    exists is whole and recorded. Returns the record."""
    record = {"name": path.name, "samples": 0, "seconds": 0.0, "speakers": [], "skipped": []}
    with ShardWriter(path) as shard:
        for entry, result in _encoded(files, sample_rate, pool):
            bar.update(1)
            if isinstance(result, str):
                record["skipped"].append([str(entry.item.path), result])
                continue
            for sample in result:
                shard.write(sample)
                record["samples"] += 1
                record["seconds"] += json.loads(sample["json"])["duration"]
            record["speakers"] = sorted(set(record["speakers"]) | {entry.item.speaker})
            bar.set_postfix(hours=f"{bar.hours + record['seconds'] / 3600:.3f}")
        atomic_write_json(record_path, record)
    return record


def write_shards(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    sample_rate: int = 16000,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    samples_per_shard: int = 256,
    workers: int = 1,
    progress: bool = True,
    name: str = "audio",
) -> ShardReport:
    """Turn every audio file under `in_dir` into shards `out_dir/<name>-%06d.tar` + manifest + report.
    Files longer than `max_seconds` become equal segments (None: never cut)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if samples_per_shard < 1 or sample_rate < 1 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"need samples_per_shard >= 1, sample_rate >= 1, max_seconds > 0; got "
                         f"{samples_per_shard}, {sample_rate}, {max_seconds}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1; got {workers}")
    audio_paths, passed_over = find_audio(in_dir)
    inputs = unique_keys([describe(path, in_dir) for path in audio_paths])
    planned, skipped, notes = plan(inputs, max_seconds, progress)
    skipped = passed_over + skipped
    shard_plan = deal(planned, samples_per_shard)
    progress_dir = out_dir / ".progress"
    progress_dir.mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(total=len(planned), desc=f"shards -> {out_dir}", unit="file", disable=not progress)
    bar.hours = 0.0
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for index, files in enumerate(shard_plan):
            shard_path = out_dir / f"{name}-{index:06d}.tar"
            record_path = progress_dir / f"{shard_path.name}.json"
            if shard_path.exists() and record_path.exists():  # done by an earlier run
                record = json.loads(record_path.read_text())
                bar.update(len(files))
            else:
                record = write_one_shard(shard_path, record_path, files, sample_rate, pool, bar)
            bar.hours += record["seconds"] / 3600
            records.append(record)
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    return _finish(out_dir, in_dir, records, skipped, notes, sample_rate, max_seconds, samples_per_shard)


def _finish(out_dir, in_dir, records, skipped, notes, sample_rate, max_seconds, samples_per_shard) -> ShardReport:
    skipped = skipped + [tuple(item) for record in records for item in record["skipped"]]
    manifest = ShardManifest(
        content="audio", sample_rate=sample_rate,
        shards=[ShardEntry(r["name"], r["samples"], round(r["seconds"], 3)) for r in records],
        speakers=sorted({speaker for record in records for speaker in record["speakers"]}),
        made_by={"command": "audiolm-pl data shards", "input_dir": str(in_dir), "max_seconds": max_seconds,
                 "samples_per_shard": samples_per_shard},
    )
    write_manifest(out_dir, manifest)
    report = {"skipped": [{"path": path, "reason": reason} for path, reason in sorted(skipped)], "num_skipped": len(skipped),
              "notes": [{"path": path, "note": note} for path, note in sorted(notes)], "num_notes": len(notes),
              "max_seconds": max_seconds}
    atomic_write_json(out_dir / "report.json", report)
    return ShardReport(out_dir, len(records), manifest.total_samples, manifest.total_seconds / 3600, sorted(skipped),
                       sorted(notes))


def add_command(data_commands) -> None:
    parser = data_commands.add_parser(
        "shards", help="audio folder -> WebDataset shards (mono, resampled, segmented)",
        description="Read every audio file under IN_DIR (LibriSpeech/LibriTTS layout or speaker folders) "
                    "and write OUT_DIR/audio-%%06d.tar + manifest.json + report.json. Resumable.",
    )
    parser.add_argument("in_dir", type=Path, help="folder of audio files")
    parser.add_argument("out_dir", type=Path, help="where shards, manifest.json and report.json go")
    parser.add_argument("--sample-rate", type=int, default=16000, help="target rate in Hz (default 16000)")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"cut longer files into equal segments of at most S s (default {DEFAULT_MAX_SECONDS:g}; "
                             "0 keeps every file whole)")
    parser.add_argument("--samples-per-shard", type=int, default=256, help="segments per shard (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    max_seconds = None if args.max_seconds == 0 else args.max_seconds
    report = write_shards(args.in_dir, args.out_dir, sample_rate=args.sample_rate, max_seconds=max_seconds,
                          samples_per_shard=args.samples_per_shard, workers=args.workers)
    cut = f"files over {max_seconds:g} s cut into segments" if max_seconds else "files kept whole"
    print(f"wrote {report.samples} samples ({report.hours:.3f} h) in {report.shards} shards to {args.out_dir} ({cut}); "
          f"skipped {len(report.skipped)} file(s), {len(report.notes)} kept with a note"
          f"{' (see report.json)' if report.skipped or report.notes else ''}")
    for path, reason in report.skipped[:10]:
        print(f"  skipped {reason}")
    for path, note in report.notes[:10]:
        print(f"  note {note}")
    return 0
