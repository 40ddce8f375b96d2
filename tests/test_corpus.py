"""The embedded corpus: sentences, TTS speakers with phone timings, the speech and piano folders."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile

from audiolm_pl.corpus.text import split_sentences
from audiolm_pl.corpus.tts import speakers

needs_tts = pytest.mark.skipif(
    any(shutil.which(engine) is None for engine in ("espeak-ng", "flite", "festival")),
    reason="TTS engines not installed (bash scripts/install_system_deps.sh)",
)


def test_sentence_splitter_keeps_clean_sentences_only():
    text = ("Time flies like an arrow. Fruit flies like a banana!\n\t\t-- Groucho Marx\n%\n"
            "Visit http://example.com now. It costs 42 dollars, they say. Ok.\n%\n"
            "Never put off until tomorrow what you can do today.\n")
    assert split_sentences(text) == [
        "Time flies like an arrow.", "Fruit flies like a banana!", "Never put off until tomorrow what you can do today.",
    ]


def test_roster_has_distinct_speakers_and_phone_aligned_val_speakers():
    roster = speakers()
    names = [speaker.name for speaker in roster]
    assert len(set(names)) == len(names) >= 40
    val = [speaker for index, speaker in enumerate(roster) if index % 8 == 3]
    assert sum(speaker.has_phones for speaker in val) >= 2


@needs_tts
def test_speech_corpus_layout_audio_text_and_phones(tmp_path):
    from audiolm_pl.cli import main

    out = tmp_path / "speech"
    assert main(["data", "speech", str(out), "--hours", "0.004", "--workers", "1"]) == 0
    train = {p.name for p in (out / "train").iterdir()}
    val = {p.name for p in (out / "val").iterdir()}
    assert train and val and not train & val  # held-out speakers
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) >= 4
    for wav in wavs:
        info = soundfile.info(str(wav))
        assert info.samplerate == 16000 and info.channels == 1
        assert wav.with_suffix(".txt").read_text().strip()
    phone_files = sorted(out.rglob("*.phones.json"))
    assert phone_files  # festival speakers come first in the roster
    for path in phone_files:
        phones = json.loads(path.read_text())
        duration = soundfile.info(str(path.with_name(path.name.replace(".phones.json", ".wav")))).duration
        assert all(a <= b for (a, b, _) in phones) and all(p[1] <= q[0] + 1e-6 for p, q in zip(phones, phones[1:]))
        assert abs(phones[-1][1] - duration) < 0.1
    mtimes = {wav: wav.stat().st_mtime_ns for wav in wavs}
    from audiolm_pl.corpus.speech import make_speech_corpus

    make_speech_corpus(out, 0.004, workers=1, progress=False)  # resume: nothing is made again
    assert {wav: wav.stat().st_mtime_ns for wav in sorted(out.rglob("*.wav"))} == mtimes


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_piano_render_of_one_score(tmp_path):
    pytest.importorskip("music21")
    from music21 import corpus

    from audiolm_pl.corpus.piano import render_work

    score = corpus.getWork("bwv66.6")
    target = tmp_path / "train" / "bach" / "bwv66_6.wav"
    seconds = render_work((str(score), "/usr/share/sounds/sf2/TimGM6mb.sf2", str(target), 5.0))
    assert isinstance(seconds, float) and 4.0 < seconds <= 5.0
    info = soundfile.info(str(target))
    assert info.samplerate == 16000 and info.channels == 1
    assert target.with_suffix(".txt").read_text().strip()
