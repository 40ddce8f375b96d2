"""`audiolm-pl data real OUT_DIR`: real human speech from Debian's Asterisk voice prompts.

One voice = one speaker = one Debian package of telephone prompts read by a person. Prompts are
decoded (PyAV), made 16 kHz mono 16-bit, their edges' digital silence trimmed, and consecutive
prompts (sorted by name) joined with `PAUSE_SECONDS` of silence into utterances of about
`join_seconds`. Val holds out prompts, not speakers: a prompt goes to val when a hash of the seed
and its name falls below `val_fraction` (the same names for every voice); an utterance never mixes
speakers or splits. Writes `OUT_DIR/{train,val}/<speaker>/<utt>.wav` + `<utt>.transcript.<lang>.txt`
(the original text; deliberately not `<utt>.txt`, which the shard writer would hand to English ASR
judges as the reference) + `sources.json` (the prompts in each utterance) + `corpus.json` (clips,
hours per speaker and split, skipped prompts, the licence of each package). Deterministic;
existing clips are kept, so a rerun resumes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from audiolm_pl.data.audio import BadAudio
from audiolm_pl.corpus.rounds import CorpusTally, write_summary
from audiolm_pl.fileio import atomic_output, atomic_write_json, atomic_write_text

SOUNDS_ROOT, DOC_ROOT = Path("/usr/share/asterisk/sounds"), Path("/usr/share/doc")
SAMPLE_RATE = 16000
PAUSE_SECONDS = 0.25
SILENCE_DBFS = -50.0  # G.722's idle noise sits near -70 dBFS, speech peaks near -4 dBFS
EDGE_KEEP_SECONDS = 0.1  # quiet kept before the first and after the last loud sample of a prompt
# Asterisk's prompts that are not speech (tones, beeps, a recording of monkeys); `silence/` too
NON_SPEECH = frozenset({"ascending-2tone", "descending-2tone", "beep", "beeperr", "confbridge-join",
                        "confbridge-leave", "tt-monkeys"})
CONTAINERS = {"g722": "g722", "gsm": "gsm", "wav": None}  # G.722 and GSM files are raw: name the format


@dataclass(frozen=True)
class Voice:
    key: str  # what `--packages` takes
    package: str  # the Debian package holding the recordings
    folder: str  # under the sounds root
    extension: str  # "g722" | "gsm" | "wav"
    speaker: str
    language: str  # ISO 639-1
    sex: str  # from the folder name (it_IT_m_..., ru_RU_f_...) or the credited voice actor
    licence: str  # what /usr/share/doc/<package>/copyright says; checked on every run
    licence_files: str = "*"  # the DEP-5 `Files:` pattern that covers these recordings
    licence_phrase: str = ""  # for a copyright file that is not DEP-5: a sentence of its licence
    transcripts: str = ""  # `name: text` lines under the doc root; its first folder is the package


VOICES = {voice.key: voice for voice in (
    Voice("it", "asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "g722", "asterisk-it-carlo", "it", "male",
          "CC-BY-3.0", "it-*", transcripts="asterisk-core-sounds-it/core-sounds-it.txt.gz"),
    Voice("ru", "asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "g722", "asterisk-ru-ivrvoice", "ru", "female",
          "CC-BY-3.0", "ru-*", transcripts="asterisk-core-sounds-ru/core-sounds-ru.txt.gz"),
    # 8 kHz voices (optional packages): upsampled, so nothing above 4 kHz
    Voice("it-menardi", "asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "wav", "asterisk-it-menardi", "it",
          "female", "CC-SA-BY-3.0"),
    Voice("fr", "asterisk-prompt-fr-armelle", "fr", "gsm", "asterisk-fr-armelle", "fr", "female", "BSD-style",
          licence_phrase="Redistribution and use, with or without modification, are permitted"),
    Voice("es", "asterisk-prompt-es-co", "es", "gsm", "asterisk-es-july", "es", "female", "GPL-2",
          licence_phrase="the Free Software Foundation; version 2 dated June, 1991"),
)}


def voices_for(keys) -> list[Voice]:
    unknown = [key for key in keys if key not in VOICES]
    if unknown or not keys:
        raise ValueError(f"unknown or no real-speech package(s) {unknown}; choose from {sorted(VOICES)}")
    return [VOICES[key] for key in dict.fromkeys(keys)]


def require_packages(voices: list[Voice], sounds_root: Path, doc_root: Path) -> None:
    missing = []
    for voice in voices:
        if not (sounds_root / voice.folder).is_dir() or not (doc_root / voice.package / "copyright").exists():
            missing.append(voice.package)
        if voice.transcripts and not (doc_root / voice.transcripts).exists():
            missing.append(voice.transcripts.split("/")[0])
    if missing:
        packages = " ".join(dict.fromkeys(missing))
        raise FileNotFoundError(f"real speech needs the Debian package(s) {packages} (looked under {sounds_root} and "
                                f"{doc_root}); install them: sudo apt-get install {packages} "
                                "(bash scripts/install_system_deps.sh installs the default it + ru ones)")


def read_licence(voice: Voice, doc_root: Path) -> dict:
    """The licence block of `voice`'s package, as its copyright file states it; ValueError if it changed."""
    path = doc_root / voice.package / "copyright"
    text = path.read_text(errors="replace")
    if text.startswith("Format:"):  # machine-readable (DEP-5): the paragraph whose Files covers the voice
        paragraphs = _dep5_paragraphs(text)
        stanza = next((p for p in paragraphs if voice.licence_files in p.get("Files", "").split()), {})
        licence, source = stanza.get("License", "").split("\n")[0], paragraphs[0].get("Source", "")
        holder, credits = stanza.get("Copyright", ""), stanza.get("Comment", "")
    else:
        licence = voice.licence if voice.licence_phrase in " ".join(text.split()) else "not recognised"
        urls = re.findall(r"https?://[^\s>]+", text)
        source = urls[0] if urls else ""
        holder = "\n".join(line.strip() for line in text.splitlines()
                           if re.match(r"\s*(copyright \(c\)|voice actor|upstream author)", line, re.I))
        credits = ""
    if licence != voice.licence:
        raise ValueError(f"{path} gives the licence {licence!r} for {voice.speaker}, not {voice.licence!r} as "
                         "reviewed: read the new terms, then update VOICES in audiolm_pl/corpus/real.py")
    return {"package": voice.package, "version": package_version(voice.package), "licence": licence,
            "copyright": holder, "credits": credits, "source": source, "copyright_file": str(path),
            "speaker": voice.speaker, "language": voice.language, "sex": voice.sex}


def _dep5_paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            field = re.match(r"([A-Za-z][A-Za-z0-9-]*):\s*(.*)", line)
            if field:
                key = field.group(1)
                fields[key] = field.group(2).strip()
            elif key and line[:1] in (" ", "\t"):
                fields[key] += "\n" + ("" if line.strip() == "." else line.strip())
        paragraphs.append({name: value.strip() for name, value in fields.items()})
    return paragraphs


def package_version(package: str) -> str | None:
    """`dpkg-query`'s version of an installed package; None where there is no dpkg or no such package."""
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return None
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else None


def read_transcripts(path: Path) -> dict[str, str]:
    """`name: text` lines (`;` comments) -> {name: text}; names may hold a folder (`digits/1`)."""
    opener = gzip.open if path.suffix == ".gz" else open
    texts = {}
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as lines:
        for line in lines:
            name, colon, text = line.strip().partition(":")
            if colon and not name.startswith(";"):
                texts[name.strip()] = text.strip()
    return texts


def decode_prompt(path: Path) -> tuple[np.ndarray, int]:
    """One prompt -> (float32 (T,) mono at 16 kHz, the file's own rate); BadAudio if undecodable or empty."""
    import av

    try:
        with av.open(str(path), format=CONTAINERS[path.suffix[1:]]) as container:
            stream = container.streams.audio[0]
            rate, channels = stream.rate, stream.codec_context.layout.nb_channels
            frames = [frame.to_ndarray() for frame in container.decode(audio=0)]  # each (1, n) s16
    except (av.error.FFmpegError, IndexError) as err:
        raise BadAudio(f"{path}: undecodable ({str(err)[:120]})") from None
    if not frames or sum(frame.shape[-1] for frame in frames) == 0:
        raise BadAudio(f"{path}: zero-length (0 samples decoded)")
    if channels != 1 or frames[0].dtype != np.int16:
        raise BadAudio(f"{path}: expected mono 16-bit samples, got {channels} channel(s) of {frames[0].dtype}")
    audio = np.concatenate(frames, axis=1)[0].astype(np.float32) / 32768  # (T,)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        audio /= max(1.0, float(np.abs(audio).max()))  # resampling overshoot: scale, never clip
    return audio, rate


def trim_edges(audio: np.ndarray) -> np.ndarray:
    """Cut quiet (below SILENCE_DBFS) beyond EDGE_KEEP_SECONDS at both ends; BadAudio if all is quiet."""
    loud = np.flatnonzero(np.abs(audio) > 10 ** (SILENCE_DBFS / 20))
    if len(loud) == 0:
        raise BadAudio(f"silent (no sample above {SILENCE_DBFS:.0f} dBFS)")
    keep = int(EDGE_KEEP_SECONDS * SAMPLE_RATE)
    return audio[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def split_of(name: str, val_fraction: float, seed: int) -> str:
    digest = hashlib.sha1(f"{seed}:{name}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def group_prompts(seconds: list[float], join_seconds: float, pause_seconds: float = PAUSE_SECONDS) -> list[list[int]]:
    """Consecutive prompts -> index groups of about `join_seconds`.

    A group closes before the next prompt when it holds at least half the target and closing is
    nearer the target than growing; a last group under half the target joins the one before.
    A prompt longer than the target stays whole (the shard writer cuts long files)."""
    groups, current, length = [], [], 0.0
    for index, prompt_seconds in enumerate(seconds):
        grown = length + (pause_seconds if current else 0.0) + prompt_seconds
        if current and length >= join_seconds / 2 and abs(length - join_seconds) <= abs(grown - join_seconds):
            groups.append(current)
            current, grown = [], prompt_seconds
        current.append(index)
        length = grown
    if current and groups and length < join_seconds / 2:
        groups[-1] += current
    elif current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class Prompt:
    name: str  # relative to the voice's folder, no extension: "digits/1"
    audio: np.ndarray  # (T,) float32 at 16 kHz, edges trimmed
    text: str  # "" where the package has no transcript for it


def load_prompts(voice: Voice, sounds_root: Path, texts: dict[str, str], tally: CorpusTally,
                 progress: bool) -> tuple[list[Prompt], list[str], set[int]]:
    """Every speech prompt of `voice`, sorted by name; (prompts, names excluded as non-speech, source rates)."""
    folder = sounds_root / voice.folder
    names = sorted(path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob(f"*.{voice.extension}"))
    lowered = {name.lower(): text for name, text in texts.items()}  # `letters/O` is the file letters/o.g722
    prompts, excluded, rates = [], [], set()
    for name in tqdm(names, desc=f"decoding {voice.speaker}", unit="prompt", disable=not progress):
        if name in NON_SPEECH or name.startswith("silence/"):
            excluded.append(name)
            continue
        path = folder / f"{name}.{voice.extension}"
        try:
            audio, rate = decode_prompt(path)
            audio = trim_edges(audio)
        except BadAudio as err:
            tally.failures.append(f"{voice.speaker}/{name}.{voice.extension}: {str(err).removeprefix(f'{path}: ')}")
            continue
        rates.add(rate)
        prompts.append(Prompt(name, audio, texts.get(name, lowered.get(name.lower(), ""))))
    return prompts, excluded, rates


def write_utterance(target: Path, parts: list[Prompt], language: str) -> float:
    """Join `parts` with pauses into `target` (temporary name, then rename); returns its seconds."""
    if target.exists():  # made by an earlier run: the wav is renamed into place last
        return soundfile.info(str(target)).frames / SAMPLE_RATE
    pause = np.zeros(round(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces = [piece for index, part in enumerate(parts) for piece in ([pause] if index else []) + [part.audio]]
    audio = np.concatenate(pieces)  # (T,) = parts and pauses in order
    text = " ".join(part.text for part in parts if part.text)
    target.parent.mkdir(parents=True, exist_ok=True)
    if text:
        atomic_write_text(target.with_name(f"{target.stem}.transcript.{language}.txt"), text + "\n")
    # 16-bit PCM: the G.722 and GSM prompts decode to 16-bit samples anyway, and a float wav's PEAK
    # chunk carries a write time, which would make reruns differ byte for byte
    with atomic_output(target) as tmp:
        soundfile.write(str(tmp), audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return len(audio) / SAMPLE_RATE


def make_voice(voice: Voice, out_dir: Path, sounds_root: Path, doc_root: Path, val_fraction: float,
               join_seconds: float, seed: int, tally: CorpusTally, sources: dict, progress: bool) -> dict:
    """All utterances of one voice; returns its entry of corpus.json's `speakers`."""
    texts = read_transcripts(doc_root / voice.transcripts) if voice.transcripts else {}
    failures_before = len(tally.failures)
    prompts, excluded, rates = load_prompts(voice, sounds_root, texts, tally, progress)
    entry = {"package": voice.package, "language": voice.language, "sex": voice.sex,
             "source_rate": min(rates, default=None),
             "band_limit_hz": min(rates) // 2 if rates and min(rates) < SAMPLE_RATE else None,
             "transcripts": str(doc_root / voice.transcripts) if voice.transcripts else None,
             "excluded_non_speech": excluded, "failed": len(tally.failures) - failures_before,
             "missing_transcripts": [p.name for p in prompts if not p.text] if voice.transcripts else None}
    for split in ("train", "val"):
        held = [prompt for prompt in prompts if split_of(prompt.name, val_fraction, seed) == split]
        groups = group_prompts([len(prompt.audio) / SAMPLE_RATE for prompt in held], join_seconds)
        seconds = 0.0
        for index, group in enumerate(groups):
            target = out_dir / split / voice.speaker / f"{voice.speaker}-{split}-{index:04d}.wav"
            seconds += write_utterance(target, [held[i] for i in group], voice.language)
            sources[target.relative_to(out_dir).as_posix()] = [held[i].name for i in group]
        entry[split] = {"clips": len(groups), "prompts": len(held), "hours": round(seconds / 3600, 4)}
        tally.clips += len(groups)
        tally.seconds += seconds
    return entry


def make_real_corpus(out_dir: str | Path, packages=("it", "ru"), val_fraction: float = 0.1, join_seconds: float = 10.0,
                     seed: int = 0, progress: bool = True, sounds_root: str | Path = SOUNDS_ROOT,
                     doc_root: str | Path = DOC_ROOT) -> dict:
    """Real speech of the Asterisk voices `packages` (keys of VOICES); returns the corpus.json summary."""
    out_dir, sounds_root, doc_root = Path(out_dir), Path(sounds_root), Path(doc_root)
    if not 0.0 <= val_fraction < 1.0 or join_seconds <= 0:
        raise ValueError(f"need 0 <= val_fraction < 1 and join_seconds > 0; got {val_fraction}, {join_seconds}")
    voices = voices_for(list(packages))
    require_packages(voices, sounds_root, doc_root)
    try:
        import av  # noqa: F401  (decodes the G.722 and GSM prompts)
    except ImportError:
        raise FileNotFoundError("PyAV decodes the prompts: pip install 'audiolm_pl[corpus]' (or: pip install av)") from None
    licences = {voice.package: read_licence(voice, doc_root) for voice in voices}
    options = {"packages": [voice.key for voice in voices], "val_fraction": val_fraction,
               "join_seconds": join_seconds, "seed": seed}
    _claim(out_dir, options)
    tally, sources, speakers = CorpusTally(), {}, {}
    for voice in voices:
        speakers[voice.speaker] = make_voice(voice, out_dir, sounds_root, doc_root, val_fraction, join_seconds,
                                             seed, tally, sources, progress)
    atomic_write_json(out_dir / "sources.json", sources)
    return write_summary(out_dir, tally, seed, options=options, speakers=speakers, licence=licences,
                         failure_reasons=tally.failures)


def _claim(out_dir: Path, options: dict) -> None:
    """Refuse a folder made with other options (same clip names, other contents); mark it as ours."""
    summary_path = out_dir / "corpus.json"
    if summary_path.exists():
        made_with = json.loads(summary_path.read_text()).get("options")
        if made_with != options:
            raise ValueError(f"{out_dir} holds a corpus made with {made_with}, not {options}: use another folder")
    else:
        atomic_write_json(summary_path, {"options": options, "complete": False})


def add_command(data_commands) -> None:
    parser = data_commands.add_parser(
        "real", help="real human speech from Debian's Asterisk voice prompts (Italian man, Russian woman)",
        description="Writes OUT_DIR/{train,val}/<speaker>/<utt>.wav + <utt>.transcript.<lang>.txt + corpus.json.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--packages", default="it,ru",
                        help=f"comma-separated voices from {','.join(VOICES)} (default it,ru; the others are 8 kHz)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of prompts held out (default 0.1)")
    parser.add_argument("--join-seconds", type=float, default=10.0, help="utterance length to aim at (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="picks the held-out prompts")
    parser.add_argument("--sounds-root", type=Path, default=SOUNDS_ROOT, help=f"default {SOUNDS_ROOT}")
    parser.add_argument("--doc-root", type=Path, default=DOC_ROOT, help=f"default {DOC_ROOT}")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from audiolm_pl.cli import comma_list

    keys = comma_list(args.packages)
    summary = make_real_corpus(args.out_dir, keys, args.val_fraction, args.join_seconds, args.seed,
                               sounds_root=args.sounds_root, doc_root=args.doc_root)
    print(f"real speech corpus {args.out_dir}: {summary['clips']} clips, {summary['hours']:.3f} h, "
          f"{summary['failures']} prompt(s) skipped (see corpus.json)")
    for speaker, entry in summary["speakers"].items():
        print(f"  {speaker}: " + ", ".join(f"{split} {entry[split]['clips']} clips {60 * entry[split]['hours']:.1f} min"
                                          for split in ("train", "val")))
    return 0
