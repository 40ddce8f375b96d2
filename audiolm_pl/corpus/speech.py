"""`audiolm-pl data speech OUT_DIR --hours H`: a multi-speaker English TTS corpus, made offline.

Writes `OUT_DIR/{train,val}/<speaker>/<utt>.wav` (16 kHz mono) + `<utt>.txt` (+ `<utt>.phones.json`
for festival voices, which report phone timings). Val holds every 8th speaker of the roster
(two of them festival voices, so held-out speakers have phone alignments), never seen in train. Sentence i goes to speaker i mod S, clips are made in fixed-size rounds
and the job stops after the round that reaches H hours, so a seed gives the same corpus;
existing clips are kept, so a rerun resumes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import soundfile
import soxr

from audiolm_pl.corpus.rounds import make_in_rounds, write_summary
from audiolm_pl.corpus.text import load_sentences
from audiolm_pl.corpus.tts import Speaker, TTSFailure, require_engines, speakers, synthesize
from audiolm_pl.fileio import atomic_output, atomic_write_text

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
VAL_EVERY, VAL_OFFSET = 8, 3


def clip_path(out_dir: Path, roster_index: int, speaker: Speaker, utterance: int) -> Path:
    split = "val" if roster_index % VAL_EVERY == VAL_OFFSET else "train"
    return out_dir / split / speaker.name / f"{speaker.name}-{utterance:06d}.wav"


def make_clip(job: tuple[Speaker, str, str]) -> float | str:
    """Synthesize one clip (temp name, then rename); returns its seconds or why it failed."""
    speaker, text, target = job
    target = Path(target)
    if target.exists():
        return soundfile.info(str(target)).duration
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name(f".{target.stem}.raw.wav")
    try:
        phones = synthesize(speaker, text, raw)
        audio, rate = soundfile.read(str(raw), dtype="float32", always_2d=True)
    except (TTSFailure, RuntimeError, OSError) as err:
        return f"{speaker.name}: {err}"
    finally:
        raw.unlink(missing_ok=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    if len(mono) < SAMPLE_RATE // 4 or not np.isfinite(mono).all() or np.abs(mono).max() < 1e-4:
        return f"{speaker.name}: engine produced no usable audio for {text!r}"
    atomic_write_text(target.with_suffix(".txt"), text + "\n")
    if phones:
        atomic_write_text(target.with_name(f"{target.stem}.phones.json"), json.dumps(phones))
    with atomic_output(target) as temporary:  # the wav appears last: a clip with a wav is whole
        soundfile.write(str(temporary), mono, SAMPLE_RATE, format="WAV")
    return len(mono) / SAMPLE_RATE


def make_speech_corpus(out_dir: str | Path, hours: float, seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Synthesize about `hours` of speech; returns {"clips", "hours", "failures", "speakers"}."""
    out_dir = Path(out_dir)
    roster = speakers()
    require_engines({speaker.engine for speaker in roster})
    sentences = load_sentences(seed)
    round_size = max(8, 4 * workers)

    def rounds():
        for start in range(0, len(sentences), round_size):
            jobs = []
            for utterance in range(start, min(start + round_size, len(sentences))):
                index = utterance % len(roster)
                jobs.append((roster[index], sentences[utterance], str(clip_path(out_dir, index, roster[index], utterance))))
            yield jobs

    tally = make_in_rounds(rounds(), make_clip, hours * 3600, workers, f"speech -> {out_dir}", progress)
    if tally.exhausted:
        log.warning("ran out of sentences after %.2f h of speech", tally.seconds / 3600)
    return write_summary(out_dir, tally, seed, speakers={"train": _count(out_dir / "train"), "val": _count(out_dir / "val")})


def _count(split_dir: Path) -> int:
    return sum(1 for path in split_dir.iterdir() if path.is_dir()) if split_dir.exists() else 0


def add_command(data_commands) -> None:
    parser = data_commands.add_parser(
        "speech", help="synthesize the embedded multi-speaker English speech corpus (espeak-ng, flite, festival)",
        description="Writes OUT_DIR/{train,val}/<speaker>/<utt>.wav + .txt (+ .phones.json for festival voices).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hours", type=float, default=1.0, help="hours of audio to make (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    summary = make_speech_corpus(args.out_dir, args.hours, seed=args.seed, workers=args.workers)
    print(f"speech corpus {args.out_dir}: {summary['clips']} clips, {summary['hours']:.3f} h, "
          f"{summary['speakers']['train']} train + {summary['speakers']['val']} val speakers, "
          f"{summary['failures']} engine failures skipped")
    return 0
