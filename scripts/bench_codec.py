"""Codec quality benchmark: train a config for a fixed time, then measure it on held-out speakers.

    python scripts/bench_codec.py --train-shards outputs/main/shards/speech/train \
        --val-shards outputs/main/shards/speech/val --config small --minutes 60 [--out bench.json] [--compare ref.json]

Prints, for 1, 3, 6 and Q quantizers and for the unquantized latents (the autoencoder's ceiling): mel
distance, SI-SDR, STOI, PESQ (wide band) and the latent error left after quantization; codebook usage
and perplexity per RVQ level; encode and decode real-time factors on this CPU; and whether any
training step was skipped for a non-finite loss. With --checkpoint it only measures.

    python scripts/bench_codec.py --throughput --config small --synthetic-shards /tmp/bench_audio [--compile]

--throughput measures training speed instead (audiolm_pl/throughput.py): model FLOPs per second of audio of a
generator + discriminator step (counted; the mel/STFT losses' FFTs are not), achieved FLOP/s and MFU against
a matmul peak measured here, step time from audio shards through the codec's DataModule vs from one batch in
memory, and peak memory. `loss.discriminator_start=0` is set so every timed step is the full GAN step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def measure(codec, val_shards: str, clips: int, levels: list[int]) -> dict:
    """Quality at each number of quantizers in `levels` and without quantization (the autoencoder's
    own ceiling), latent error left after each level, codebook health, and real-time factors."""
    from audiolm_pl.codec.losses import MultiScaleMelLoss
    from audiolm_pl.codec.metrics import CodebookUsage, optional_perceptual_metrics, si_sdr
    from audiolm_pl.data.shard_io import iter_samples

    mel = MultiScaleMelLoss(codec.sample_rate)
    usage = CodebookUsage(codec.num_quantizers, codec.codebook_size)
    rows = [*levels, "unquantized"]
    sums = {n: {"mel_distance": 0.0, "si_sdr": 0.0, "stoi": 0.0, "pesq": 0.0, "latent_error": 0.0} for n in rows}
    seconds = encode_time = decode_time = 0.0
    count = 0
    for sample in iter_samples(val_shards, codec.sample_rate):
        wav = torch.from_numpy(sample.audio)[None]  # (1, T)
        started = time.perf_counter()
        latents = codec.encode_latents(wav)  # (1, T_a, D)
        codes = codec.quantizer.encode(latents)  # (1, T_a, Q); the two together are codec.encode
        encode_time += time.perf_counter() - started
        usage.update(codes)
        for n in rows:
            started = time.perf_counter()
            quantized = latents if n == "unquantized" else codec.quantizer.decode(codes[:, :, :n])  # (1, T_a, D)
            recon = codec.decode_latents(quantized)[:, : wav.shape[1]]  # (1, T)
            decode_time += (time.perf_counter() - started) if n == max(levels) else 0.0
            figures = {"mel_distance": float(mel(recon, wav)), "si_sdr": float(si_sdr(recon, wav)),
                       "latent_error": float((latents - quantized).norm() / latents.norm()),
                       **optional_perceptual_metrics(recon, wav, codec.sample_rate)}
            for key, value in figures.items():
                sums[n][key] += value
        seconds += wav.shape[1] / codec.sample_rate
        count += 1
        if count == clips:
            break
    return {
        "clips": count, "seconds": round(seconds, 1),
        "by_quantizers": {n: {k: round(v / count, 4) for k, v in sums[n].items()} for n in rows},
        "codebook_usage": [round(float(u), 3) for u in usage.compute().usage],
        "codebook_perplexity": [round(float(p), 1) for p in usage.compute().perplexity],
        "encode_rtf": round(encode_time / seconds, 4), "decode_rtf": round(decode_time / seconds, 4),
    }


def bench_throughput(args) -> None:
    """Training step time and MFU of the codec config `args.config` (see the module docstring)."""
    from audiolm_pl import registry
    from audiolm_pl.throughput import OneBatch, first_batch, matmul_peak, measure_steps, write_audio_shards
    from audiolm_pl.training import load_stage_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the precision training runs in
    peak = matmul_peak(device, dtype)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}; "
          f"peak {str(dtype).removeprefix('torch.')} matmul {peak / 1e9:.1f} GFLOP/s", flush=True)
    config = load_stage_config("codec", args.config, None, ["loss.discriminator_start=0", *args.overrides])
    shards = args.train_shards
    if args.synthetic_shards:
        shards = str(write_audio_shards(args.synthetic_shards, config.data.sample_rate))
    config.data.train_shards = config.data.val_shards = shards

    def build():
        torch.manual_seed(0)
        return registry.get_stage("codec").build(config)

    module, datamodule = build()
    batch = first_batch(datamodule)
    audio_seconds = batch["wav"].numel() / config.data.sample_rate  # (B, T) samples per step
    flops, best = None, {}  # mode -> fastest median step seconds: other processes only ever slow one down
    for repeat in range(args.repeats):
        for mode in ("shards", "memory"):
            module, datamodule = build()
            data = datamodule if mode == "shards" else OneBatch(batch, args.warmup + args.steps + 1)
            measure = measure_steps(module, data, args.steps, args.warmup, device, count_flops=flops is None)
            flops = flops or measure.flops
            if mode not in best or measure.seconds < best[mode].seconds:
                best[mode] = measure
    from_shards, from_memory = best["shards"], best["memory"]
    print(f"codec  {args.config}: batch {tuple(batch['wav'].shape)} = {audio_seconds:.1f} s of audio per step, "
          f"{flops / audio_seconds / 1e9:.2f} GFLOP per second of audio (fwd + bwd, generator + discriminators)")
    for name, measure in (("shards", from_shards), ("memory", from_memory)):
        achieved = flops / measure.seconds
        print(f"       {name:7s} {measure.seconds * 1000:8.1f} ms/step  {audio_seconds / measure.seconds:7.2f} s of audio/s  "
              f"{achieved / 1e9:7.2f} GFLOP/s  MFU={achieved / peak:6.1%}  peak_mem={measure.peak_memory_mb:7.0f} MB")
    print(f"       shards / memory step time = {from_shards.seconds / from_memory.seconds:.3f}")
    print(f"# peak after: {matmul_peak(device, dtype) / 1e9:.1f} GFLOP/s (the machine may be shared)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-shards", default="outputs/main/shards/speech/train")
    parser.add_argument("--val-shards", default="outputs/main/shards/speech/val")
    parser.add_argument("--config", default="small")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--checkpoint", default=None, help="measure this codec instead of training one")
    parser.add_argument("--run-dir", default="runs/bench_codec")
    parser.add_argument("--clips", type=int, default=50, help="held-out clips to measure")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None, help="a previous --out file to print beside")
    parser.add_argument("--throughput", action="store_true", help="measure training speed and MFU, not quality")
    parser.add_argument("--synthetic-shards", type=Path, default=None,
                        help="--throughput: write synthetic voice-like audio shards here (once) and train from them")
    parser.add_argument("--steps", type=int, default=5, help="--throughput: timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="--throughput: untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="--throughput: alternate shards and memory this often")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.throughput:
        return bench_throughput(args)

    from audiolm_pl.checkpoint import load_raw
    from audiolm_pl.codec import load_codec
    from audiolm_pl.fileio import atomic_write_json
    from audiolm_pl.training import load_stage_config, train_stage

    started = time.time()
    checkpoint = args.checkpoint
    if checkpoint is None:
        total = int(args.minutes * 60)
        run_dir = Path(args.run_dir)
        config = load_stage_config("codec", args.config, "cpu", [
            f"data.train_shards={args.train_shards}", f"data.val_shards={args.val_shards}",
            f"trainer.output_dir={run_dir.parent}", f"trainer.run_name={run_dir.name}",
            f"trainer.max_time=00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}", *args.overrides])
        checkpoint = str(train_stage("codec", config))
    codec = load_codec(checkpoint)
    raw = load_raw(checkpoint)  # weights-only; a run directory means its checkpoints/last.ckpt
    q = codec.num_quantizers
    levels = sorted({1, min(3, q), min(6, q), q})
    result = measure(codec, args.val_shards, args.clips, levels)
    result.update({"config": args.config, "train_minutes": round((time.time() - started) / 60, 1),
                   "generator_steps": int(raw["state_dict"]["generator_steps"]),
                   "skipped_steps": int(raw["state_dict"]["skipped_steps"]), "torch_threads": torch.get_num_threads()})
    print(json.dumps(result, indent=1))
    mel = [result["by_quantizers"][n]["mel_distance"] for n in levels]
    monotone, gain = all(a > b for a, b in zip(mel, mel[1:])), mel[0] - mel[-1]
    print(f"mel distance falls with every added quantizer: {monotone} (by {gain:.4f} from {levels[0]} to {levels[-1]}); "
          f"lowest codebook usage: {min(result['codebook_usage']):.2f}; skipped steps: {result['skipped_steps']}")
    if args.compare and args.compare.exists():
        print("reference:", args.compare.read_text())
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
