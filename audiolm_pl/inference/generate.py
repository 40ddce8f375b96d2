"""Generation into files: an `AudioLM`, a task and an output path -> wavs + a spectrogram PNG beside each.

What `audiolm-pl generate` runs once its arguments are checked, and what the main job calls:

    model = AudioLM.from_config("outputs/main/pipeline.yaml")
    (written,) = generate_files(model, "continue", Path("out.wav"), prompt=Path("prompt.wav"), seconds=7,
                                prompt_seconds=3, seed=0)
    written.path, written.spectrogram, written.seconds

Each wav is written under a temporary name and renamed when whole, so finished audio is never half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from audiolm_pl.inference.audiolm import AudioLM, GenerationResult

TASKS = ("continue", "acoustic", "unconditional")


@dataclass
class GeneratedFile:
    path: Path  # the audio file
    spectrogram: Path  # the PNG beside it
    seconds: float  # its length, prompt included


def run_task(model: AudioLM, task: str, prompt: Optional[Path] = None, seconds: float = 7.0, num_samples: int = 1,
             seed: Optional[int] = None, prompt_seconds: float = 3.0) -> GenerationResult:
    """continue: the first `prompt_seconds` of `prompt` + `seconds` more; acoustic: new acoustics for the semantic
    ids of `prompt`; unconditional: `seconds` from nothing. Returns `num_samples` results."""
    import torch

    from audiolm_pl.data.audio import load_mono

    if task not in TASKS:
        raise ValueError(f"unknown generation task {task!r}; choose from {TASKS}")
    if task == "unconditional":
        return model.generate_unconditional(seconds, num_samples, seed)
    if prompt is None:
        raise FileNotFoundError(f"task {task} needs a prompt audio file")
    wav = torch.from_numpy(load_mono(prompt, model.sample_rate))  # (T,)
    if task == "continue":
        return model.continue_audio(wav[: int(prompt_seconds * model.sample_rate)], seconds, num_samples, seed)
    return model.generate_acoustics(wav=wav, num_samples=num_samples, seed=seed)


def save_generation(result: GenerationResult, sample_rate: int, out: Path, task: str) -> list[GeneratedFile]:
    """`result.wav` (B, T) -> `out` (B = 1) or `out-<i>.suffix`, each with a spectrogram PNG that marks the prompt."""
    import soundfile

    from audiolm_pl.fileio import atomic_output
    from audiolm_pl.plotting import save_spectrogram_png

    out = Path(out)
    prompt_marker = result.prompt_samples / sample_rate or None
    count = result.wav.shape[0]
    written = []
    for index, wav in enumerate(result.wav.cpu()):
        path = out if count == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
        with atomic_output(path) as tmp:
            soundfile.write(tmp, wav.numpy(), sample_rate, format=audio_format(path))
        png = save_spectrogram_png(wav, sample_rate, path.with_suffix(".png"), title=f"{task}: {path.name}",
                                   prompt_seconds=prompt_marker)
        written.append(GeneratedFile(path, png, len(wav) / sample_rate))
    return written


def generate_files(model: AudioLM, task: str, out: Path, prompt: Optional[Path] = None, seconds: float = 7.0,
                   num_samples: int = 1, seed: Optional[int] = None, prompt_seconds: float = 3.0,
                   progress: bool = False) -> list[GeneratedFile]:
    """`run_task` then `save_generation`: the files written, in sample order; `progress` shows a bar per stage."""
    from audiolm_pl.lm.sampling import show_progress

    with show_progress(progress):
        result = run_task(model, task, prompt, seconds, num_samples, seed, prompt_seconds)
    return save_generation(result, model.sample_rate, out, task)


def audio_format(path: Path) -> str:
    """The soundfile format a path's suffix names (`.wav` -> WAV); the temporary name has no usable suffix."""
    return path.suffix.lstrip(".").upper()
