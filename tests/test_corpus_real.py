"""`audiolm-pl data real`: Asterisk voice prompts -> joined real-speech utterances, split by prompt."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audiolm_pl.data.audio import BadAudio
from audiolm_pl.corpus.real import (
    DOC_ROOT, PAUSE_SECONDS, SAMPLE_RATE, SOUNDS_ROOT, VOICES, Prompt, decode_prompt, group_prompts, make_real_corpus,
    read_licence, read_transcripts, split_of, trim_edges, write_utterance,
)

av = pytest.importorskip("av")

JOIN_SECONDS, VAL_FRACTION = 4.0, 0.3
SPEECH = ["agent-pass", "auth-thankyou", "call-waiting", "calling", "cancelled", "conf-full", "digits/1", "digits/2",
          "digits/3", "invalid", "letters/o", "pbx-invalid", "vm-intro", "vm-saved"]
TEXTS = {name: f"testo {index}" for index, name in enumerate(SPEECH) if name != "digits/2"}  # digits/2: no text
TEXTS["letters/O"] = TEXTS.pop("letters/o")  # the real Italian list spells it so; the file is letters/o.g722


def _write_g722(path: Path, seconds: float, f0: float, lead_seconds: float = 0.0) -> None:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.4 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    samples = (np.concatenate([np.zeros(int(lead_seconds * SAMPLE_RATE)), tone]) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="g722") as container:
        stream = container.add_stream("g722", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")  # (1, T)
        frame.rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


COPYRIGHT = """Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Source: https://example.org/asterisk-sounds/

Files: *
Copyright: 2003-2010, Allison Smith
License: CC-BY-SA-3.0

Files: ru-*
Copyright: 2010, Maxim
License: {ru}

Files: it-*
Copyright: 2012 Carlo Flora
Comment: CREDITS file:
 Recorded by: Carlo Flora
License: CC-BY-3.0
"""


def _fake_docs(docs: Path, ru_licence: str = "CC-BY-3.0") -> Path:
    for voice in (VOICES["it"], VOICES["ru"]):
        (docs / voice.package).mkdir(parents=True)
        (docs / voice.package / "copyright").write_text(COPYRIGHT.format(ru=ru_licence))
        (docs / voice.transcripts).parent.mkdir(parents=True)
        lines = ["\ufeff; Core Asterisk Sounds (test)", ""] + [f"{name}: {text}" for name, text in TEXTS.items()]
        (docs / voice.transcripts).write_bytes(gzip.compress("\n".join(lines).encode()))
    return docs


def _fake_sounds(sounds: Path) -> Path:
    """Folders shaped like Debian's it + ru G.722 packages: speech, a tone, silence and (ru) a 0-byte file."""
    for voice, f0, stretch in ((VOICES["it"], 120.0, 1.0), (VOICES["ru"], 210.0, 1.3)):
        folder = sounds / voice.folder
        for index, name in enumerate(SPEECH):  # the voices' prompt lengths differ: a mixed-up voice shows
            _write_g722(folder / f"{name}.g722", stretch * (0.8 + 0.4 * (index % 4)), f0 + 10 * index,
                        lead_seconds=1.0 if name == "calling" else 0.0)
        _write_g722(folder / "beep.g722", 0.4, 1000.0)
        _write_g722(folder / "silence" / "1.g722", 0.0, 0.0, lead_seconds=1.0)
    (sounds / VOICES["ru"].folder / "is.g722").write_bytes(b"")  # as in the real Russian package
    return sounds


@pytest.fixture(scope="module")
def fake_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    sounds, docs = _fake_sounds(root / "sounds"), _fake_docs(root / "doc")
    summary = make_real_corpus(root / "corpus", val_fraction=VAL_FRACTION, join_seconds=JOIN_SECONDS,
                               progress=False, sounds_root=sounds, doc_root=docs)
    return root, sounds, docs, summary


def test_group_prompts_aims_at_join_seconds_and_keeps_order():
    assert group_prompts([3, 3, 3, 3, 3, 1], 7.0, 0.25) == [[0, 1], [2, 3], [4, 5]]
    assert group_prompts([3, 3, 3, 3, 0.5], 7.0, 0.25) == [[0, 1], [2, 3, 4]]  # a short tail joins the last group
    assert group_prompts([1, 20, 3, 3], 7.0, 0.25) == [[0, 1], [2, 3]]  # under half the target: never alone
    assert group_prompts([], 7.0) == []


def test_trim_edges_keeps_a_tenth_of_a_second_of_quiet():
    tone = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 8000, dtype=np.float32)) + 0.5  # loud from first to last sample
    audio = np.concatenate([np.zeros(16000), tone, np.full(8000, 1e-4)]).astype(np.float32)
    assert len(trim_edges(audio)) == 8000 + 2 * 1600
    with pytest.raises(BadAudio, match="silent"):
        trim_edges(np.full(16000, 1e-4, dtype=np.float32))


def test_utterance_without_any_text_has_no_transcript(tmp_path):
    parts = [Prompt("a", np.full(800, 0.1, dtype=np.float32), ""), Prompt("b", np.full(400, 0.2, dtype=np.float32), "")]
    target = tmp_path / "train" / "spk" / "spk-train-0000.wav"
    assert write_utterance(target, parts, "fr") == (800 + 400) / SAMPLE_RATE + PAUSE_SECONDS
    audio, _ = soundfile.read(str(target), dtype="float32")
    assert np.abs(audio[800 : 800 + 4000]).max() == 0 and audio[-1] == pytest.approx(0.2, abs=1e-4)
    assert sorted(path.name for path in target.parent.iterdir()) == ["spk-train-0000.wav"]  # no temporary left


def test_split_is_seeded_by_prompt_name():
    names = [f"prompt-{index}" for index in range(4000)]
    val = {name for name in names if split_of(name, 0.1, seed=0) == "val"}
    assert abs(len(val) / len(names) - 0.1) < 0.02
    assert val == {name for name in names if split_of(name, 0.1, seed=0) == "val"}
    assert val != {name for name in names if split_of(name, 0.1, seed=1) == "val"}


def test_fake_packages_make_joined_utterances_split_by_prompt(fake_corpus):
    root, sounds, docs, summary = fake_corpus
    out = root / "corpus"
    sources = json.loads((out / "sources.json").read_text())
    texts = {name.lower(): text for name, text in TEXTS.items()}
    for key, speaker in (("it", "asterisk-it-carlo"), ("ru", "asterisk-ru-ivrvoice")):
        folder = sounds / VOICES[key].folder
        seconds = {}
        for name in SPEECH:
            if (folder / f"{name}.g722").stat().st_size:
                seconds[name] = len(trim_edges(decode_prompt(folder / f"{name}.g722")[0])) / SAMPLE_RATE
        raw_seconds = len(decode_prompt(folder / "calling.g722")[0]) / SAMPLE_RATE
        assert seconds["calling"] < raw_seconds - 0.85  # its 1 s of leading digital silence is gone
        held = {"train": [], "val": []}
        for relative, parts in sources.items():
            split, folder_speaker, _ = relative.split("/")
            if folder_speaker != speaker:
                continue
            assert {split_of(name, VAL_FRACTION, 0) for name in parts} == {split}  # never mixes splits
            held[split] += parts
            wav = out / relative
            expected = sum(seconds[name] for name in parts) + PAUSE_SECONDS * (len(parts) - 1)
            assert soundfile.info(str(wav)).frames / SAMPLE_RATE == pytest.approx(expected, abs=1e-3)  # this voice's parts
            assert JOIN_SECONDS / 2 <= expected <= 2 * JOIN_SECONDS + PAUSE_SECONDS  # a short tail may join the last
            transcript = wav.with_name(f"{wav.stem}.transcript.{VOICES[key].language}.txt")
            assert transcript.read_text() == " ".join(texts[name] for name in parts if name in texts) + "\n"
            assert not wav.with_suffix(".txt").exists()  # an English judge must never score it
        assert held["train"] == sorted(held["train"]) and held["val"] and held["train"]
        assert sorted(held["train"] + held["val"]) == sorted(seconds)  # every speech prompt, once
        entry = summary["speakers"][speaker]
        assert entry["excluded_non_speech"] == ["beep", "silence/1"]
        assert entry["missing_transcripts"] == ["digits/2"]
        assert entry["language"] == VOICES[key].language and entry["band_limit_hz"] is None
        assert summary["licence"][VOICES[key].package]["licence"] == "CC-BY-3.0"  # its own paragraph, not `*`
        assert summary["licence"][VOICES[key].package]["source"] == "https://example.org/asterisk-sounds/"
    assert summary["failures"] == 1
    assert summary["failure_reasons"] == ["asterisk-ru-ivrvoice/is.g722: zero-length (0 samples decoded)"]
    assert summary["clips"] == len(sources)


def test_shards_of_real_corpus_have_speakers_and_no_text(fake_corpus):
    from audiolm_pl.data.shards import write_shards

    root = fake_corpus[0]
    report = write_shards(root / "corpus" / "train", root / "shards", progress=False)
    wavs = sorted((root / "corpus" / "train").rglob("*.wav"))
    metas = []
    with tarfile.open(report.out_dir / "audio-000000.tar") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".json"):
                metas.append((member.name, json.loads(tar.extractfile(member).read())))
    assert len(metas) == len(wavs) and not report.skipped
    for name, meta in metas:
        assert meta["text"] == "" and name.startswith(meta["speaker"] + "/")
    assert {meta["speaker"] for _, meta in metas} == {"asterisk-it-carlo", "asterisk-ru-ivrvoice"}


def test_rerun_changes_nothing_and_a_fresh_run_is_byte_identical(fake_corpus, tmp_path):
    root, sounds, docs, _ = fake_corpus
    out = root / "corpus"

    def snapshot(folder: Path) -> dict:
        return {path.relative_to(folder): (path.read_bytes(), path.stat().st_mtime_ns)
                for path in sorted(folder.rglob("*")) if path.is_file()}

    before = snapshot(out)
    options = dict(val_fraction=VAL_FRACTION, join_seconds=JOIN_SECONDS, progress=False, sounds_root=sounds, doc_root=docs)
    make_real_corpus(out, **options)
    after = snapshot(out)
    assert {path: data for path, (data, _) in after.items()} == {path: data for path, (data, _) in before.items()}
    assert all(after[path][1] == before[path][1] for path in after if path.suffix == ".wav")  # kept, not rewritten
    make_real_corpus(tmp_path / "again", **options)
    assert {path: data for path, (data, _) in snapshot(tmp_path / "again").items()} == \
           {path: data for path, (data, _) in before.items()}
    with pytest.raises(ValueError, match="use another folder"):  # other options would reuse the clip names
        make_real_corpus(out, **{**options, "join_seconds": 6.0})


def test_missing_package_exits_2_naming_it_and_a_changed_licence_stops(tmp_path, capsys):
    from audiolm_pl.cli import main

    code = main(["data", "real", str(tmp_path / "out"), "--packages", "ru", "--sounds-root", str(tmp_path / "none")])
    assert code == 2
    assert "apt-get install asterisk-core-sounds-ru-g722" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    docs = _fake_docs(tmp_path / "doc", ru_licence="CC-BY-NC-3.0")
    with pytest.raises(ValueError, match="CC-BY-NC-3.0"):
        read_licence(VOICES["ru"], docs)


@pytest.mark.skipif(not all((SOUNDS_ROOT / VOICES[key].folder).is_dir() for key in ("it", "ru")),
                    reason="Debian asterisk-core-sounds-{it,ru}-g722 not installed (bash scripts/install_system_deps.sh)")
def test_installed_packages_decode_to_16k_speech():
    for key, names in (("it", ["auth-thankyou", "digits/1", "vm-goodbye"]), ("ru", ["auth-thankyou", "digits/1", "vm-goodbye"])):
        voice = VOICES[key]
        for name in names:
            audio, rate = decode_prompt(SOUNDS_ROOT / voice.folder / f"{name}.g722")
            assert rate == 16000 and audio.dtype == np.float32 and len(audio) > 0.3 * SAMPLE_RATE
            assert np.sqrt(np.mean(audio**2)) > 0.02  # speech, not the -70 dBFS of the silence prompts
        licence = read_licence(voice, DOC_ROOT)
        assert licence["licence"] == "CC-BY-3.0" and licence["source"].startswith("http")
    assert read_transcripts(DOC_ROOT / VOICES["it"].transcripts)["digits/1"] == "uno"
    with pytest.raises(BadAudio, match="zero-length"):
        decode_prompt(SOUNDS_ROOT / VOICES["ru"].folder / "is.g722")


@pytest.mark.skipif(not (SOUNDS_ROOT / VOICES["it-menardi"].folder).is_dir(), reason="asterisk-prompt-it-menardi-wav not installed")
def test_8khz_voice_is_upsampled_and_band_limited():
    path = SOUNDS_ROOT / VOICES["it-menardi"].folder / "auth-thankyou.wav"
    audio, rate = decode_prompt(path)
    assert rate == 8000 and len(audio) == 2 * soundfile.info(str(path)).frames
    power = np.abs(np.fft.rfft(audio)) ** 2
    above = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE) > 4100
    assert power[above].sum() < 1e-3 * power.sum()  # nothing above the source's 4 kHz
