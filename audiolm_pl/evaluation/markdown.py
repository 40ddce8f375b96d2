"""report.md of an evaluation: the target table first, then each section's detail."""

from __future__ import annotations

import os
from typing import Optional

from audiolm_pl.evaluation.detection import DetectorSection
from audiolm_pl.evaluation.results import AcousticSection, CodecSection, ContinuationSection, EvalReport, Target

RATE_TARGETS = ("WER", "CER")  # shown as percentages


def _number(value: Optional[float], percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def _verdict(target: Target) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "–"}[target.passed]


def _targets(targets: list[Target]) -> list[str]:
    lines = ["| target | ours | original / real (ceiling) | requirement | result | note |", "|---|---|---|---|---|---|"]
    for target in targets:
        percent = any(word in target.name for word in RATE_TARGETS)
        lines.append(f"| {target.name} | {_number(target.figure, percent)} | {_number(target.reference, percent)} | "
                     f"{target.requirement} | {_verdict(target)} | {target.note} |")
    return lines


def _codec(section: CodecSection) -> list[str]:
    keys = list(section.means)
    lines = [f"## Codec round trip ({section.num_quantizers} quantizers, full-length utterances)", "",
             "Means per speaker group (the speaker name up to its first '-'); WERs pooled within the group.", "",
             "| speakers | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for group, figures in {"all": section.means, **section.group_means}.items():
        lines.append(f"| {group} | " + " | ".join(_number(figures.get(k), k.startswith("wer_")) for k in keys) + " |")
    lines += ["", "ASR of the original and of the round trip against the reference text. WER and CER are pooled "
              "(all edits / all reference words or characters over the utterances); the ratio is pooled WER of "
              "round trips / pooled WER of originals, not a mean of per-utterance ratios.", "",
              "| judge | utterances | WER original | WER round trip | ratio | CER original | CER round trip |",
              "|---|---|---|---|---|---|---|"]
    for judge, rates in section.asr.items():
        original, roundtrip = rates["original"], rates["roundtrip"]
        if original is None:
            lines.append(f"| {judge} | 0 | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {judge} | {original.utterances} | {_number(original.wer, True)} | {_number(roundtrip.wer, True)} | "
                     f"{_number(section.wer_ratio[judge])} | {_number(original.cer, True)} | {_number(roundtrip.cer, True)} |")
    if section.bitrates:
        lines += ["", "Per bitrate (the first L levels decoded):", "", "| levels | kbps | mel distance | SI-SDR (dB) |", "|---|---|---|---|"]
        lines += [f"| {level} | {f['kbps']:g} | {_number(f['mel_distance'])} | {_number(f['si_sdr'])} |"
                  for level, f in section.bitrates.items()]
    return lines + [""]


def _acoustic(section: AcousticSection) -> list[str]:
    lines = ["## Acoustic generation (semantic ids of the utterance -> new acoustic tokens -> audio)", ""]
    if not section.asr:
        return lines + [f"Skipped: {section.skipped}.", ""]
    lines += ["| judge | utterances | WER generated | CER generated | WER original | CER original |", "|---|---|---|---|---|---|"]
    for judge, rates in section.asr.items():
        generated, original = rates["generated"], rates["original"]
        lines.append(f"| {judge} | {generated.utterances} | {_number(generated.wer, True)} | {_number(generated.cer, True)} | "
                     f"{_number(original.wer, True)} | {_number(original.cer, True)} |")
    return lines + ["", "The original audio's figures are each judge's floor on this corpus.", ""]


def _continuation(section: ContinuationSection, out_dir: Optional[str]) -> list[str]:
    lines = ["## Continuation", ""]
    if section.generated is None:
        return lines + [f"Skipped: {section.skipped}.", ""]
    generated, real = section.generated, section.real
    lines += [f"{section.prompts} prompts of {section.num_speakers} speakers. Speaker identification: a continuation is "
              "correct when its cosine to its own speaker's enrollment (mean embedding of that speaker's other prompts) "
              "beats every other evaluated speaker's enrollment (mean of all their prompts)."]
    if section.self_enrolled:
        lines.append(f"Speakers with a single utterance, enrolled on that utterance's own prompt: {', '.join(section.self_enrolled)}.")
    if section.num_speakers < 2:
        lines.append("Only one speaker was evaluated: identification is trivially correct; the cosine is the informative figure.")
    rows = [("seconds judged", generated.seconds, real.seconds), ("speaker-ID accuracy", generated.speaker_accuracy, real.speaker_accuracy),
            ("cosine to own enrollment", generated.speaker_cosine, real.speaker_cosine),
            ("spectral change (dB, 50 ms)", generated.spectral_change_db, real.spectral_change_db),
            ("voiced fraction", generated.voiced_fraction, real.voiced_fraction),
            ("spectral flatness", generated.spectral_flatness, real.spectral_flatness),
            ("ASR words per second", generated.words_per_second, real.words_per_second)]
    rows += [(f"DNSMOS {key}", value, real.dnsmos[key]) for key, value in generated.dnsmos.items()]
    lines += ["", "| measure | generated | real continuation (ceiling) | generated / real |", "|---|---|---|---|"]
    for name, ours, ceiling in rows:
        ratio = ours / ceiling if ours is not None and ceiling else None
        lines.append(f"| {name} | {_number(ours)} | {_number(ceiling)} | {_number(ratio)} |")
    lines += ["", "Files (prompt + continuation; a spectrogram PNG beside each, the prompt's end marked):", ""]
    lines += [f"- {os.path.relpath(path, out_dir) if out_dir else path}" for path in section.files] or ["- (not written)"]
    return lines + [""]


def _acoustic_only(ablation: ContinuationSection, full: ContinuationSection) -> list[str]:
    lines = ["## Acoustic-only ablation (same prompts, same seed; no semantic tokens)", "",
             "| measure | acoustic-only | full pipeline | real continuation |", "|---|---|---|---|"]
    for name, key in (("speaker-ID accuracy", "speaker_accuracy"), ("cosine to own enrollment", "speaker_cosine"),
                      ("ASR words per second", "words_per_second"), ("spectral change (dB, 50 ms)", "spectral_change_db")):
        lines.append(f"| {name} | {_number(getattr(ablation.generated, key))} | {_number(getattr(full.generated, key))} | "
                     f"{_number(getattr(full.real, key))} |")
    return lines + [""]


def _detector(section: DetectorSection) -> list[str]:
    counts = section.counts
    return [f"## Generated-audio detector ({section.checkpoint})", "",
            "| audio | files | accuracy |", "|---|---|---|",
            f"| held-out originals (real) | {counts['real']} | {_number(section.real_accuracy, True)} |",
            f"| their codec round trips (synthetic) | {counts['codec']} | {_number(section.codec_accuracy, True)} |",
            f"| generated continuations (synthetic) | {counts['generated']} | {_number(section.generated_accuracy, True)} |",
            "", f"Balanced accuracy: {_number(section.accuracy, True)}. It detects our codec, not all codecs "
            "(docs/detector.md).", ""]


def report_markdown(report: EvalReport, out_dir: Optional[str] = None) -> str:
    config, speakers = report.config, sorted({u["speaker"] for u in report.utterances})
    lines = ["# audiolm_pl evaluation", "",
             f"{len(report.utterances)} utterances of {len(speakers)} speakers ({config['per_speaker']} per speaker), "
             f"prompts {config['prompt_seconds']:g} s, continuations {config['seconds']:g} s, seed {config['seed']}. "
             f"Wall time {report.wall_seconds['total']:.1f} s.", "",
             "Judges: " + "; ".join(f"{role}: {name}" for role, name in report.judges.items()) + ".", "", "## Targets", ""]
    lines += _targets(report.targets) + [""]
    if report.codec:
        lines += _codec(report.codec)
    if report.acoustic:
        lines += _acoustic(report.acoustic)
    if report.continuation:
        lines += _continuation(report.continuation, out_dir)
    if report.acoustic_only and report.acoustic_only.generated and report.continuation and report.continuation.generated:
        lines += _acoustic_only(report.acoustic_only, report.continuation)
    if report.detector:
        lines += _detector(report.detector)
    lines += ["Per-utterance figures and transcripts: eval.json.", ""]
    return "\n".join(lines)
