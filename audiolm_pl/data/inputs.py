"""Finding audio under a folder and the speaker/text/phones that go with each file.

Understood layouts:
- LibriSpeech: `<spk>/<chapter>/<spk>-<chapter>-<utt>.flac` + `<spk>-<chapter>.trans.txt`
- LibriTTS:    `<spk>/<chapter>/<spk>_<chapter>_..._<utt>.wav` + `<stem>.normalized.txt`
- plain:       `<speaker>/<utt>.wav` (+ `<utt>.txt` text, `<utt>.phones.json` [[start_s, end_s, phone], ...])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from audiolm_pl.data.audio import is_audio_path


@dataclass(frozen=True)
class InputFile:
    path: Path
    key: str  # webdataset-safe (no dots), unique within the job
    speaker: str
    text: str = ""
    phones: tuple = field(default=())  # ((start_s, end_s, phone), ...)


def find_audio(in_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(audio files under `in_dir`, sorted; [(path, reason)] for what looks like audio or a folder but is not
    read: a folder named `x.wav`, a broken link or a symlink loop, a symlinked folder, which is not followed)."""
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input directory {in_dir} does not exist or is not a directory")
    files, passed_over = [], []
    for path in sorted(in_dir.rglob("*")):
        if path.is_symlink() and path.is_dir():
            passed_over.append((str(path), f"{path}: symlinked folder, not followed (it may loop); link its files instead"))
        elif is_audio_path(path) and path.is_file():
            files.append(path)
        elif is_audio_path(path):
            passed_over.append((str(path), f"{path}: {_not_a_file(path)}, not read"))
    if not files:
        raise FileNotFoundError(f"no audio files (wav, flac, ogg, mp3, ...) under {in_dir}")
    return files, passed_over


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        return "a folder with an audio file's name"
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # "Symlink loop" (Python 3.11)
            return "a symlink loop"
        except OSError as err:
            return "a symlink loop" if "loop" in str(err).lower() else "a broken symlink"
        return "a symlink to something that is not a file"
    return "not a regular file"


@lru_cache(maxsize=4096)
def _librispeech_transcripts(directory: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for trans in directory.glob("*.trans.txt"):
        for line in trans.read_text(errors="replace").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                texts[utt] = text
    return texts


def _read_phones(path: Path) -> tuple:
    if not path.exists():
        return ()
    try:
        phones = json.loads(path.read_text())
        return tuple((float(start), float(end), str(phone)) for start, end, phone in phones)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: expected a JSON list of [start_s, end_s, phone], got an error: {err}") from None


def describe(path: Path, in_dir: Path) -> InputFile:
    """Speaker, text and phone timings of one audio file, by its layout."""
    stem = path.name[: -len(path.suffix)]
    transcripts = _librispeech_transcripts(path.parent)
    normalized = path.with_name(f"{stem}.normalized.txt")
    if stem in transcripts:  # LibriSpeech
        speaker, text = stem.split("-")[0], transcripts[stem]
    elif normalized.exists():  # LibriTTS
        speaker, text = stem.split("_")[0], normalized.read_text(errors="replace").strip()
    else:  # plain folder: speaker = parent folder
        sidecar = path.with_name(f"{stem}.txt")
        speaker = path.parent.name if path.parent != in_dir else "unknown"
        text = sidecar.read_text(errors="replace").strip() if sidecar.exists() else ""
    relative = path.relative_to(in_dir).with_suffix("").as_posix()
    return InputFile(
        path=path,
        key=relative.replace(".", "_"),
        speaker=speaker,
        text=text,
        phones=_read_phones(path.with_name(f"{stem}.phones.json")),
    )


def unique_keys(inputs: list[InputFile]) -> list[InputFile]:
    """Make keys unique (`a.b.wav` and `a_b.wav` would otherwise both be `a_b`)."""
    seen: dict[str, int] = {}
    result = []
    for item in inputs:
        count = seen.get(item.key, 0)
        seen[item.key] = count + 1
        result.append(item if count == 0 else InputFile(item.path, f"{item.key}_dup{count}", item.speaker, item.text, item.phones))
    return result


def phones_in(phones: tuple, start_s: float, end_s: float) -> list[list]:
    """Phones overlapping [start_s, end_s), clipped and shifted to the segment's time."""
    inside = []
    for begin, end, phone in phones:
        if end <= start_s or begin >= end_s:
            continue
        inside.append([round(max(begin, start_s) - start_s, 4), round(min(end, end_s) - start_s, 4), phone])
    return inside
