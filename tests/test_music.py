"""Music measures (evaluation/music.py) on synthetic signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from audiolm_pl.evaluation.music import (PITCH_CLASSES, compare_clips, music_measures, onset_rate, onset_times,
                                         pitch_centroid, pitch_class_histogram)

RATE = 16000


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def piano_note(pitch: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A struck note: 6 harmonics, amplitude 1/k, exponential decay (time constant 0.3 s)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * k * midi_hz(pitch) * t) / k for k in range(1, 7))
    return 0.2 * tone * np.exp(-t / 0.3)


def notes(pitches: list[float], per_second: float, seconds: float) -> np.ndarray:
    """Notes struck every 1 / per_second s, cycling through `pitches`."""
    step = int(RATE / per_second)
    wav = np.zeros(int(seconds * RATE))
    for index, start in enumerate(range(0, len(wav), step)):
        note = piano_note(pitches[index % len(pitches)], step / RATE)
        wav[start : start + len(note)] += note[: len(wav) - start]
    return wav


@pytest.mark.parametrize("per_second", [2.0, 4.0, 8.0])
def test_click_train_onset_rate(per_second):
    wav = 0.01 * np.random.default_rng(0).standard_normal(4 * RATE)  # a quiet noise floor
    wav[:: int(RATE / per_second)] += 0.8
    assert onset_rate(wav, RATE) == pytest.approx(per_second, abs=0.26)  # 4 s: at most one onset off


def test_onsets_land_on_the_notes():
    wav = notes([60, 64, 67], per_second=3.0, seconds=3.0)
    times = onset_times(wav, RATE)  # the clip starts from silence: the note at 0 s is an onset
    assert len(times) == 9
    assert np.abs(times - np.arange(9) / 3.0).max() <= 0.03


def test_held_tone_and_silence_have_no_onsets():
    t = np.arange(3 * RATE) / RATE
    assert onset_times(0.3 * np.sin(2 * np.pi * 261.63 * t), RATE).tolist() == [0.0]  # its start, from silence
    assert onset_rate(np.zeros(3 * RATE), RATE) == 0.0


def test_c_major_chord_peaks_at_c_e_g():
    t = np.arange(2 * RATE) / RATE
    chord = sum(np.sin(2 * np.pi * midi_hz(p) * t) for p in (60, 64, 67))  # C4 E4 G4
    histogram = pitch_class_histogram(chord, RATE)
    top = {PITCH_CLASSES[i] for i in np.argsort(histogram)[-3:]}
    assert top == {"C", "E", "G"} and histogram.sum() == pytest.approx(1.0)
    assert histogram[[0, 4, 7]].sum() > 0.9


def test_struck_notes_keep_their_pitch_classes_through_harmonics():
    """Harmonics 3 and 5 of C are G and E: a C-major arpeggio of struck notes still peaks at C, E, G."""
    histogram = pitch_class_histogram(notes([48, 52, 55, 60], 4.0, 4.0), RATE)
    assert {PITCH_CLASSES[i] for i in np.argsort(histogram)[-3:]} == {"C", "E", "G"}


def test_pitch_centroid_of_a4_is_midi_69():
    t = np.arange(RATE) / RATE
    assert pitch_centroid(np.sin(2 * np.pi * 440.0 * t), RATE) == pytest.approx(69.0, abs=0.2)


def test_a_note_held_over_the_boundary_is_not_a_continuation_onset():
    from audiolm_pl.evaluation.music import continuation_onset_rates

    wav = notes([60, 64, 67], per_second=2.0, seconds=3.0)  # onsets at 0, 0.5, ..., 2.5 s
    prompt_rate, continuation_rate = continuation_onset_rates(wav, int(1.25 * RATE), RATE)  # cut mid-note
    assert prompt_rate == pytest.approx(3 / 1.25) and continuation_rate == pytest.approx(3 / 1.75)


def test_compare_clips_tells_a_faithful_continuation_from_a_changed_one():
    prompt = notes([60, 64, 67], 4.0, 4.0)  # C major, 4 notes/s, around C4
    same = compare_clips(prompt, notes([64, 67, 60], 4.0, 4.0), RATE)
    other = compare_clips(prompt, notes([61, 66, 70], 1.0, 4.0), RATE)  # C# F# A#, 1 note/s
    up = compare_clips(prompt, notes([72, 76, 79], 4.0, 4.0), RATE)  # the same chord an octave higher
    assert same.onset_rate_ratio == pytest.approx(1.0, abs=0.1) and same.pitch_class_l1 < 0.2
    assert other.onset_rate_ratio == pytest.approx(0.25, abs=0.1) and other.pitch_class_l1 > 1.0
    assert up.pitch_shift_semitones == pytest.approx(12.0, abs=1.5) and up.pitch_class_l1 < 0.3


def test_silence_measures_nothing():
    measures = music_measures(np.zeros(RATE), RATE)
    assert measures.onset_rate == 0.0 and sum(measures.pitch_classes) == 0.0 and np.isnan(measures.pitch_centroid)


# -- the piano main job ------------------------------------------------------------------

PIANO_STEPS = ["shards", "codec", "semantic_tokenizer", "tokenize", "semantic_lm", "coarse_lm", "fine_lm", "generate", "eval"]


def write_piano_folders(root, composers: dict[str, list[list[float]]], seconds: float = 6.0) -> None:
    """`data piano`'s layout, <root>/<composer>/<work>.wav + .txt, with struck-note works instead of fluidsynth renders."""
    import soundfile

    for composer, works in composers.items():
        (root / composer).mkdir(parents=True)
        for index, pitches in enumerate(works):
            soundfile.write(root / composer / f"{index:05d}-work.wav", notes(pitches, 2.0 + index, seconds).astype(np.float32), RATE)
            (root / composer / f"{index:05d}-work.txt").write_text(f"work {index} of {composer}\n")


def test_piano_main_job_end_to_end(tmp_path):
    """`audiolm-pl main corpus=piano` after its rendering step, every stage 2 steps: shards of the piano folders,
    log-mel semantic ids, three LMs, 4 s prompts of held-out composers continued, `eval --music` with results.md."""
    import json

    from audiolm_pl.jobs.main import MainJobConfig, run_main_job
    from audiolm_pl.semantic import load_tokenizer

    write_piano_folders(tmp_path / "corpus" / "piano" / "train", {"bach": [[60, 64, 67], [62, 65, 69]], "mozart": [[55, 59, 62]]})
    write_piano_folders(tmp_path / "corpus" / "piano" / "val", {"chopin": [[57, 60, 64]], "joplin": [[53, 57, 60]]})
    config = MainJobConfig(corpus="piano", workdir=str(tmp_path), size="tiny", steps=PIANO_STEPS, max_steps=2,
                           semantic_clusters=8, prompts=1, continuation_seconds=1.5, workers=1)
    assert (config.semantic_source, config.prompt_seconds, config.corpora) == ("logmel", 4.0, ["piano"])
    report = run_main_job(config)["steps"]
    assert not (tmp_path / "shards" / "speech").exists() and (tmp_path / "tokens" / "piano" / "val").is_dir()
    assert load_tokenizer(tmp_path / "semantic" / "tokenizer.safetensors").vocab_size == 8
    (continuation,) = report["generate"]["continuations"]
    assert "chopin" in continuation or "joplin" in continuation  # a held-out composer's prompt
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [work["composer"] for work in evaluation["works"]] == ["chopin", "joplin"]
    assert evaluation["config"]["music"] and evaluation["config"]["prompt_seconds"] == 4.0
    for row in evaluation["continuations"]:
        assert row["prompt"]["onset_rate"] == pytest.approx(2.0, abs=0.3)  # the works strike 2 notes a second
        assert row["real"]["pitch_class_l1"] < 0.3  # the real continuation plays the same three notes (once each)
    assert set(report["eval"]["continuation"]) == {"generated", "real"}
    results = (tmp_path / "eval" / "results.md").read_text()
    assert "| piano continuation | onset rate / prompt's |" in results and "codec round trip, piano" in results
    assert "acoustic generation" not in results and "speaker-ID" not in results  # speech rows: not measured here
    assert "| coarse LM |" in results and "cpu x 1" in results


def test_main_job_report_names_the_corpus_prompt_and_held_out_set(tmp_path):
    """report.md says what this job held out and how long its prompts are (4 s works for piano, 3 s speakers)."""
    from audiolm_pl.jobs.report import write_markdown_report

    evaluation = tmp_path / "eval.md"
    evaluation.write_text("# eval\n\nfigures\n")
    steps = {"generate": {"seconds": 6.0, "continuations": ["generated/a.wav"]}, "eval": {"seconds": 6.0, "report": str(evaluation)}}
    write_markdown_report({"corpus": "piano", "prompt_seconds": 4.0, "steps": steps}, tmp_path / "piano.md")
    text = (tmp_path / "piano.md").read_text()
    assert "first 4 s = the held-out prompt" in text and "Evaluation on held-out works" in text
    write_markdown_report({"steps": steps}, tmp_path / "speech.md")  # a report from before these keys: speech, 3 s
    text = (tmp_path / "speech.md").read_text()
    assert "first 3 s = the held-out prompt" in text and "Evaluation on held-out speakers" in text
