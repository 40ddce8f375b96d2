"""Offline TTS engines as speakers: espeak-ng, flite and festival (the last with phone timings).

A `Speaker` is an engine + voice + rate/pitch setting; `synthesize(speaker, text, wav_path)`
writes a wav (any rate) and returns phone timings [[start_s, end_s, phone], ...] or None.
Engines crash or hang on some inputs: a failure raises `TTSFailure` and the caller skips it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}


class TTSFailure(RuntimeError):
    pass


@dataclass(frozen=True)
class Speaker:
    engine: str  # "espeak-ng" | "flite" | "festival"
    voice: str
    rate: float = 1.0  # speaking-rate factor (1 = engine default)
    pitch: int = 0  # espeak-ng pitch 0-99, festival mean F0 in Hz (diphone voices); 0 = default

    @property
    def name(self) -> str:
        voice = self.voice.replace("+", "_").replace("_diphone", "").replace("cmu_us_", "").replace("_arctic_hts", "")
        return f"{self.engine}-{voice}-r{round(self.rate * 100)}-p{self.pitch}"

    @property
    def has_phones(self) -> bool:
        return self.engine == "festival"


def speakers() -> list[Speaker]:
    """The fixed roster (53 speakers): order matters, it decides names and the val split."""
    roster: list[Speaker] = []
    for voice in ("kal_diphone", "ked_diphone"):
        for rate in (0.85, 1.0, 1.2):
            for pitch in (95, 130):
                roster.append(Speaker("festival", voice, rate, pitch))
    roster.append(Speaker("festival", "cmu_us_slt_arctic_hts"))  # HTS ignores Duration_Stretch: one setting
    roster += [Speaker("flite", voice, rate) for voice in ("slt", "awb", "rms", "kal16") for rate in (0.9, 1.1)]
    accents = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
    variants = ("m1", "m3", "f2", "f4")
    for index, accent in enumerate(accents):
        for offset, variant in enumerate(variants):
            step = (index * len(variants) + offset) % 5
            roster.append(Speaker("espeak-ng", f"{accent}+{variant}", 0.85 + 0.075 * step, 30 + 10 * step))
    return roster


def require_engines(engines: set[str]) -> None:
    missing = sorted(engine for engine in engines if shutil.which(engine) is None)
    if missing:
        packages = " ".join(ENGINE_PACKAGES[engine] for engine in missing)
        raise FileNotFoundError(
            f"TTS engine(s) {missing} not found; install the Debian packages: {packages} "
            "(bash scripts/install_system_deps.sh does it)"
        )


def _run(command: list[str], timeout: float = 60.0) -> None:
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TTSFailure(f"{command[0]} timed out after {timeout:.0f} s") from None
    if result.returncode != 0:
        raise TTSFailure(f"{command[0]} exited with {result.returncode}: {result.stderr.decode(errors='replace')[:200]}")


def _festival(speaker: Speaker, text: str, wav_path: Path) -> list[list]:
    quoted = text.replace("\\", " ").replace('"', "'")
    with tempfile.TemporaryDirectory() as tmp:
        segs = Path(tmp) / "out.segs"
        intonation = ""
        if speaker.pitch and "diphone" in speaker.voice:
            intonation = f"(set! int_lr_params '((target_f0_mean {speaker.pitch}) (target_f0_std 12) (model_f0_mean 170) (model_f0_std 34)))\n"
        script = Path(tmp) / "say.scm"
        script.write_text(
            f"(voice_{speaker.voice})\n{intonation}(Parameter.set 'Duration_Stretch {1 / speaker.rate:.3f})\n"
            f'(set! utt (utt.synth (Utterance Text "{quoted}")))\n'
            f'(utt.save.wave utt "{wav_path}" \'riff)\n(utt.save.segs utt "{segs}")\n'
        )
        _run(["festival", "-b", str(script)])
        return _read_segs(segs)


def _read_segs(path: Path) -> list[list]:
    """Festival's xlabel segment file (`end_time 100 phone` after a `#` line) -> [[start, end, phone]]."""
    if not path.exists():
        raise TTSFailure("festival wrote no segment timings")
    lines = path.read_text().split("#", 1)[-1].split("\n")
    phones, start = [], 0.0
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            end = float(parts[0])
            phones.append([round(start, 4), round(end, 4), parts[2]])
            start = end
    return phones


def synthesize(speaker: Speaker, text: str, wav_path: Path) -> list[list] | None:
    if speaker.engine == "festival":
        return _festival(speaker, text, wav_path)
    if speaker.engine == "espeak-ng":
        _run(["espeak-ng", "-v", speaker.voice, "-s", str(round(165 * speaker.rate)), "-p", str(speaker.pitch),
              "-w", str(wav_path), text])
    elif speaker.engine == "flite":
        stretch = f"{1 / speaker.rate:.3f}"
        _run(["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={stretch}", "-t", text, "-o", str(wav_path)])
    else:
        raise ValueError(f"unknown TTS engine {speaker.engine!r}")
    return None
