"""Reading back what runs measured (TensorBoard scalars) and writing the main job's report."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile

from audiolm_pl.data.shard_io import iter_samples
from audiolm_pl.fileio import atomic_output, atomic_write_text


def last_scalars(run_dir: Path, prefixes: tuple[str, ...] = ("val/", "train/")) -> dict[str, float]:
    """The last logged value of every scalar tag under `prefixes` in a run's TensorBoard logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    figures: dict[str, float] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith(prefixes):
                last = accumulator.Scalars(tag)[-1]
                figures[tag] = round(float(last.value), 4)
                figures["step"] = max(figures.get("step", 0), int(last.step))
    return figures


def export_prompts(shard_dir: Path, out_dir: Path, count: int, min_seconds: float) -> list[Path]:
    """The first clips of at least `min_seconds` by `count` different speakers (the first folder of
    a key) in a shard directory, written as wav files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts: list[Path] = []
    speakers: set[str] = set()
    for sample in iter_samples(shard_dir):
        speaker = sample.key.split("/")[0]
        if sample.audio is None or len(sample.audio) < min_seconds * sample.sample_rate or speaker in speakers:
            continue
        speakers.add(speaker)
        path = out_dir / (sample.key.replace("/", "__") + ".wav")
        with atomic_output(path) as temporary:
            soundfile.write(temporary, sample.audio, sample.sample_rate, format="WAV")
        prompts.append(path)
        if len(prompts) == count:
            return prompts
    if not prompts:
        raise FileNotFoundError(f"no clip of at least {min_seconds} s in {shard_dir} to use as a prompt")
    return prompts


def write_markdown_report(report: dict, path: Path) -> None:
    lines = ["# audiolm_pl main job report", ""]
    lines += ["| step | minutes | figures |", "|---|---|---|"]
    for name, step in report["steps"].items():
        figures = {k: v for k, v in step.items() if k not in ("seconds", "targets")}  # eval's targets: below
        text = ", ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (list, dict)))
        nested = {k: v for k, v in figures.items() if isinstance(v, dict)}
        text += "".join(f"; {k}: {json.dumps(v)}" for k, v in nested.items())
        lines.append(f"| {name} | {step['seconds'] / 60:.1f} | {text} |")
    lines += ["", f"Total: {sum(s['seconds'] for s in report['steps'].values()) / 60:.1f} minutes.", ""]
    clocked = [(name, step) for name, step in report["steps"].items() if step.get("stopped_by", "max_steps") != "max_steps"]
    if clocked:  # the budgets are minutes: a slower machine gives these stages fewer steps and lower figures
        lines += ["Stopped by their time budget before `max_steps`: " + "; ".join(
            f"{name} at step {step['step']:,} of {step['max_steps']:,} (`{step['stopped_by']}=`)" for name, step in clocked)
            + ". A slower machine gives them fewer steps, and lower figures than the README's; give more minutes "
            "with the key named.", ""]
    generated = report["steps"].get("generate", {}).get("continuations", [])
    if generated:
        lines += [f"Continuations (first {report.get('prompt_seconds', 3):g} s = the held-out prompt; a spectrogram PNG "
                  "beside each):", ""]
        lines += [f"- `{item}`" for item in generated]
    evaluation = Path(report["steps"].get("eval", {}).get("report", ""))
    if evaluation.is_file():  # the eval step's own report, one heading level down
        body = evaluation.read_text().splitlines()
        held_out = "works" if report.get("corpus") == "piano" else "speakers"
        lines += ["", f"## Evaluation on held-out {held_out} (`audiolm-pl eval`)", ""]
        lines += ["#" + line if line.startswith("#") else line for line in body if not line.startswith("# ")]
    atomic_write_text(path, "\n".join(lines) + "\n")
