"""`audiolm-pl eval`: how a pipeline does on held-out prompts, as in the paper's evaluations.

For each prompt wav (with its transcript in `<stem>.txt` when known):
- speaker similarity: cosine between speaker embeddings of the prompt and of the generated
  continuation. Embeddings come from a local x-vector model directory (`--speaker-model`, e.g. a
  WavLM/UniSpeech-SAT `...ForXVector` saved with save_pretrained), or else from MFCC statistics
  (mean and std per coefficient), a weak stand-in that the output names as such;
- WER / CER of acoustic generation (semantic ids of the whole source -> new acoustics) against the
  source's transcript, with a local ASR model directory (`--asr-model`, anything transformers'
  speech-recognition pipeline loads: Whisper, wav2vec 2.0 CTC, ...); skipped with a message otherwise;
- codec: mel distance and SI-SDR of the prompt's codec round trip at every quantizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

Embedder = Callable[[torch.Tensor], torch.Tensor]  # wav (T,) -> embedding (D,)


def mfcc_statistics_embedder(sample_rate: int) -> tuple[str, Embedder]:
    from audiolm_pl.semantic.features import MelConfig, MelFeatures

    features = MelFeatures(MelConfig(kind="mfcc", deltas=False), sample_rate)

    def embed(wav: torch.Tensor) -> torch.Tensor:
        frames = features(wav[None])[0]  # (T_f, D)
        return torch.cat([frames.mean(0), frames.std(0)])  # (2 D,)

    return "mfcc-statistics (no speaker model given: a weak stand-in)", embed


def xvector_embedder(directory: Path, sample_rate: int) -> tuple[str, Embedder]:
    from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"--speaker-model {directory} is not a directory (expected a local save_pretrained x-vector model)")
    extractor = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True)
    model = AutoModelForAudioXVector.from_pretrained(directory, local_files_only=True).eval()

    @torch.no_grad()
    def embed(wav: torch.Tensor) -> torch.Tensor:
        inputs = extractor(wav.numpy(), sampling_rate=sample_rate, return_tensors="pt")
        return model(**inputs).embeddings[0]  # (D,)

    return f"x-vector model {directory}", embed


def asr_transcriber(directory: Path | None, sample_rate: int) -> Callable[[torch.Tensor], str] | None:
    if directory is None:
        return None
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"--asr-model {directory} is not a directory (expected a local speech-recognition model)")
    from transformers import pipeline

    recognizer = pipeline("automatic-speech-recognition", model=str(directory), device="cpu")
    return lambda wav: recognizer({"raw": wav.numpy(), "sampling_rate": sample_rate})["text"]


def evaluate(model, prompts: list[Path], seconds: float, prompt_seconds: float, speaker_model: Path | None = None,
             asr_model: Path | None = None, seed: int = 0) -> dict:
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    from audiolm_pl.codec.losses import MultiScaleMelLoss
    from audiolm_pl.codec.metrics import si_sdr
    from audiolm_pl.data.audio import load_mono

    rate = model.sample_rate
    embedder_name, embed = xvector_embedder(speaker_model, rate) if speaker_model else mfcc_statistics_embedder(rate)
    transcribe = asr_transcriber(asr_model, rate)
    mel = MultiScaleMelLoss(rate)
    rows, hypotheses, references = [], [], []
    for index, path in enumerate(prompts):
        source = torch.from_numpy(load_mono(path, rate))  # (T,)
        prompt = source[: int(prompt_seconds * rate)]
        result = model.continue_audio(prompt, seconds, seed=seed + index)
        continuation = result.wav[0, result.prompt_samples :]
        row = {"prompt": str(path), "speaker_similarity": float(torch.cosine_similarity(embed(prompt), embed(continuation), dim=0))}
        codes = model.codec.encode(prompt[None])  # (1, T_a, Q)
        for n in range(1, model.codec.num_quantizers + 1):
            recon = model.codec.decode(codes[:, :, :n])[:, : len(prompt)]  # (1, T)
            row[f"codec_mel_distance_q{n}"] = float(mel(recon, prompt[None]))
            row[f"codec_si_sdr_q{n}"] = float(si_sdr(recon, prompt[None]))
        transcript = path.with_suffix(".txt")
        if transcribe and transcript.exists():
            generated = model.generate_acoustics(wav=source, seed=seed + index).wav[0]
            hypotheses.append(transcribe(generated).lower().strip())
            references.append(transcript.read_text().lower().strip())
        rows.append(row)
    summary = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key != "prompt"}
    summary["speaker_embedding"] = embedder_name
    if hypotheses:
        summary["acoustic_generation_wer"] = float(word_error_rate(hypotheses, references))
        summary["acoustic_generation_cer"] = float(char_error_rate(hypotheses, references))
    else:
        summary["asr"] = ("skipped: pass --asr-model DIR (a local Whisper or CTC model) and prompts with .txt transcripts"
                          if transcribe is None else "skipped: no prompt has a .txt transcript")
    return {"summary": summary, "prompts": rows}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="speaker similarity, WER/CER of acoustic generation, codec figures on held-out prompts")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--prompts", type=Path, required=True, help="folder of held-out wavs (+ <stem>.txt transcripts)")
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--num-prompts", type=int, default=10)
    parser.add_argument("--speaker-model", type=Path, default=None, help="local x-vector model directory")
    parser.add_argument("--asr-model", type=Path, default=None, help="local speech-recognition model directory")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from audiolm_pl.pipeline import AudioLM

    prompts = sorted(args.prompts.glob("*.wav"))[: args.num_prompts]
    if not prompts:
        raise FileNotFoundError(f"no .wav prompts in {args.prompts}")
    figures = evaluate(AudioLM.from_config(args.pipeline), prompts, args.seconds, args.prompt_seconds,
                       args.speaker_model, args.asr_model, args.seed)
    print(json.dumps(figures["summary"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))
    return 0
