"""`audiolm-pl data piano OUT_DIR --hours H`: piano music rendered offline.

Scores come from music21's bundled corpus; every part is set to acoustic grand piano (MIDI
program 0), written as MIDI and rendered by fluidsynth at 16 kHz, soundfonts alternating
(FluidR3_GM, TimGM6mb) for timbre variety. The first `clip_seconds` of each work, silence
trimmed, becomes `OUT_DIR/{train,val}/<composer>/<work>.wav` (+ `.txt` title); the composers
in `VAL_COMPOSERS` are held out for validation.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile

from audiolm_pl.corpus.rounds import make_in_rounds, write_summary
from audiolm_pl.fileio import atomic_output, atomic_write_text

SAMPLE_RATE = 16000
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")
VAL_COMPOSERS = ("joplin", "chopin", "schumann_clara", "haydn")
MAX_SCORE_BYTES = 120_000  # music21 takes minutes to parse the largest scores; a 30 s clip needs no more


def composer_of(path: Path) -> str:
    parts = path.parts
    return parts[parts.index("corpus") + 1] if "corpus" in parts else path.parent.name


def score_paths(seed: int) -> list[Path]:
    """music21 corpus works, interleaved across composers (so a small corpus is still varied)."""
    from music21 import corpus

    by_composer: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(Path(p) for p in corpus.getPaths()):
        if path.stat().st_size > MAX_SCORE_BYTES:
            continue
        by_composer[composer_of(path)].append(path)
    rng = random.Random(seed)
    for works in by_composer.values():
        rng.shuffle(works)
    ordered, depth = [], 0
    while any(depth < len(works) for works in by_composer.values()):
        ordered += [works[depth] for _, works in sorted(by_composer.items()) if depth < len(works)]
        depth += 1
    return ordered


def _as_piano_midi(score_path: Path, midi_path: Path) -> str:
    from music21 import converter, instrument

    score = converter.parse(str(score_path))
    for part in score.parts if hasattr(score, "parts") and score.parts else [score]:
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            part.remove(old, recurse=True)
        part.insert(0, instrument.Piano())
    score.write("midi", fp=str(midi_path))
    title = score.metadata.title if score.metadata and score.metadata.title else score_path.stem
    return str(title)


def render_work(job: tuple[str, str, str, float]) -> float | str:
    """One score -> a trimmed 16 kHz piano clip; returns its seconds or why it was skipped."""
    score_path, soundfont, target, clip_seconds = Path(job[0]), job[1], Path(job[2]), job[3]
    if target.exists():
        return soundfile.info(str(target)).duration
    with tempfile.TemporaryDirectory() as tmp:
        midi, wav = Path(tmp) / "score.mid", Path(tmp) / "render.wav"
        try:
            title = _as_piano_midi(score_path, midi)
            subprocess.run(["fluidsynth", "-ni", "-g", "0.7", "-F", str(wav), "-r", str(SAMPLE_RATE), soundfont, str(midi)],
                           capture_output=True, timeout=300, check=True)
            audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        except Exception as err:  # music21 raises many kinds of parse errors; fluidsynth may fail
            return f"{score_path.name}: {type(err).__name__}: {str(err)[:120]}"
    mono = audio.mean(axis=1)
    loud = np.flatnonzero(np.abs(mono) > 1e-3)
    if rate != SAMPLE_RATE or len(loud) < SAMPLE_RATE:
        return f"{score_path.name}: rendered less than a second of sound"
    clip = mono[loud[0] : loud[-1] + 1][: int(clip_seconds * SAMPLE_RATE)]
    clip = clip / max(1.0, float(np.abs(clip).max()) / 0.95)
    atomic_write_text(target.with_suffix(".txt"), title + "\n")
    with atomic_output(target) as temporary:  # the wav appears last: a work with a wav is whole
        soundfile.write(str(temporary), clip, SAMPLE_RATE, format="WAV")
    return len(clip) / SAMPLE_RATE


def make_piano_corpus(out_dir: str | Path, hours: float, seed: int = 0, workers: int = 2,
                      clip_seconds: float = 30.0, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth not found: install the Debian packages fluidsynth fluid-soundfont-gm "
                                "timgm6mb-soundfont (bash scripts/install_system_deps.sh)")
    soundfonts = [font for font in SOUNDFONTS if Path(font).exists()]
    if not soundfonts:
        raise FileNotFoundError(f"no soundfont at {SOUNDFONTS}: install fluid-soundfont-gm / timgm6mb-soundfont")
    paths = score_paths(seed)
    round_size = max(4, 2 * workers)

    def rounds():
        for start in range(0, len(paths), round_size):
            jobs = []
            for index, path in enumerate(paths[start : start + round_size], start):
                split = "val" if composer_of(path) in VAL_COMPOSERS else "train"
                target = out_dir / split / composer_of(path) / f"{index:05d}-{path.stem.replace('.', '_')}.wav"
                jobs.append((str(path), soundfonts[index % len(soundfonts)], str(target), clip_seconds))
            yield jobs

    tally = make_in_rounds(rounds(), render_work, hours * 3600, workers, f"piano -> {out_dir}", progress)
    return write_summary(out_dir, tally, seed)


def add_command(data_commands) -> None:
    parser = data_commands.add_parser("piano", help="render piano music from music21's corpus with fluidsynth",
                                      description="Writes OUT_DIR/{train,val}/<composer>/<work>.wav + .txt (title).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hours", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clip-seconds", type=float, default=30.0, help="keep the first S seconds of each work")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    summary = make_piano_corpus(args.out_dir, args.hours, seed=args.seed, workers=args.workers, clip_seconds=args.clip_seconds)
    print(f"piano corpus {args.out_dir}: {summary['clips']} clips, {summary['hours']:.3f} h, {summary['failures']} works skipped")
    return 0
