"""Benchmarks of the three LM stages: training throughput (model FLOPs per token, achieved FLOP/s, MFU
against a matmul peak measured here, step time from token shards vs from one batch in memory, peak memory,
`torch.compile` on vs off) and generation tokens/s with and without the KV cache. One line per measurement.

    python scripts/bench_lm.py --synthetic-shards /tmp/bench_tokens           # small configs, CPU, 1 thread
    python scripts/bench_lm.py --train-shards outputs/main/tokens/speech/train --compile
    python scripts/bench_lm.py --size paper --stages coarse --gen-stages       # a GPU: bf16, paper shapes

Training runs through the stage's own module, DataModule and a Lightning Trainer (audiolm_pl/throughput.py).
Shards: the config's `data.train_shards`, `--train-shards`, or `--synthetic-shards DIR`: random ids written
there in the real token-shard format at the reference specs (semantic 1024 ids @ 25 Hz, codec 12 x 1024 codes
@ 50 Hz, as in the paper), which cost the data path what real tokens do.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from audiolm_pl import registry
from audiolm_pl.lm.layouts import CoarseLayout, FineLayout, SemanticLayout
from audiolm_pl.lm.sampling import SamplingConfig, generate
from audiolm_pl.lm.stages import make_layout
from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.throughput import (OneBatch, StepMeasure, first_batch, matmul_peak, measure_steps, peak_memory_mb,
                                   synchronize, write_token_shards)
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import load_stage_config

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 1024),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 1024, num_quantizers=12),
}
STAGES = ("semantic", "coarse", "fine")


def stage_config(stage: str, size: str, shards: str | None, overrides: list[str]):
    data = [f"data.train_shards={shards}", f"data.val_shards={shards}"] if shards else []
    return load_stage_config(stage, size, None, [*data, *overrides])


def build(config, stage: str):
    torch.manual_seed(0)
    return registry.get_stage(stage).build(config)


def analytic_flops_per_token(module, length: int) -> float:
    """6 N + 12 L d T (PaLM's model FLOPs, fwd + bwd): N the matmul weights (blocks + output head), attention
    over the full T x T scores. The counter agrees exactly where SDPA runs its math kernel (bmm), as it does on
    CPU for the T5 bias (a mask that needs a gradient); where a fused kernel runs (rotary), it counts the
    backward's recomputed scores too: 2 L d T more per token."""
    model = module.model
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))  # head included
    c = model.config
    return 6 * linear + 12 * c.n_layer * c.d_model * length


def bench_training(stage: str, args, device: torch.device, peak: float) -> None:
    """One stage, eager from shards (FLOPs counted once) and from memory, and compiled from memory with
    --compile; the modes alternate `--repeats` times and each keeps its fastest median, since other processes
    on a shared machine only ever slow a measurement down."""
    config = stage_config(stage, args.size, args.shards, [f"data.batch_size={args.batch}", *args.overrides])
    module, datamodule = build(config, stage)
    batch = first_batch(datamodule)
    tokens = batch["inputs"].numel()  # (B, T) model inputs per step
    analytic = analytic_flops_per_token(module, batch["inputs"].shape[1])
    params = module.model.num_parameters() / 1e6
    best: dict[str, StepMeasure] = {}
    for repeat in range(args.repeats):
        for mode in ("shards", "memory", "compiled") if args.compile else ("shards", "memory"):
            config.model.compile = mode == "compiled"
            module, datamodule = build(config, stage)
            data = datamodule if mode == "shards" else OneBatch(batch, args.warmup + args.steps + 1)
            measure = measure_steps(module, data, args.steps, args.warmup, device, count_flops=not best)
            flops = measure.flops if measure.flops is not None else best["shards"].flops
            first = best[mode].first_seconds if mode in best else measure.first_seconds  # the compiling step
            if mode not in best or measure.seconds < best[mode].seconds:
                best[mode] = replace(measure, flops=flops, first_seconds=first)
    flops = best["shards"].flops
    print(f"train  {stage:8s} {args.size:5s} params={params:6.1f}M  B x T={batch['inputs'].shape[0]} x "
          f"{batch['inputs'].shape[1]}  FLOPs/token={flops / tokens / 1e6:8.2f} M (analytic 6N+12LdT "
          f"{analytic / 1e6:.2f} M, x{flops / tokens / analytic:.3f})", flush=True)
    for mode, measure in best.items():
        achieved = flops / measure.seconds
        print(f"       {stage:8s} {mode:8s} {measure.seconds * 1000:8.1f} ms/step  {tokens / measure.seconds:9.0f} tokens/s  "
              f"{achieved / 1e9:7.2f} GFLOP/s  MFU={achieved / peak:6.1%}  peak_mem={measure.peak_memory_mb:7.0f} MB"
              + (f"  (first step, compiling: {measure.first_seconds:.0f} s)" if mode == "compiled" else ""), flush=True)
    print(f"       {stage:8s} shards / memory step time = {best['shards'].seconds / best['memory'].seconds:.3f} "
          f"(> 1: the data path costs that share on top of the step)", flush=True)
    if args.compile:
        print(f"       {stage:8s} eager / compiled step time = {best['memory'].seconds / best['compiled'].seconds:.3f}",
              flush=True)


def _prefix_and_rule(layout, config):
    """A representative prompt and allowed-id rule for generation in `layout`."""
    if isinstance(layout, SemanticLayout):
        return torch.tensor([[layout.bos]]), None
    if isinstance(layout, CoarseLayout):
        semantic = torch.randint(0, layout.semantic_vocab, (1, 75))  # 3 s of semantic ids
        prefix = torch.cat([semantic, torch.tensor([[layout.sep]])], dim=1)  # (1, 76)
        masks = [layout.level_mask(q) for q in range(layout.num_coarse)]
        return prefix, lambda step, previous: masks[step % layout.num_coarse]
    assert isinstance(layout, FineLayout)
    frames = int(config.data.crop_seconds * SPECS["acoustic"].frame_rate)
    coarse = torch.randint(0, layout.codebook_size, (frames, layout.num_coarse)).numpy()
    prefix = torch.from_numpy(layout.prefix(coarse))[None]  # (1, frames * Q' + 1)
    masks = [layout.level_mask(q) for q in layout.levels]
    return prefix, lambda step, previous: masks[step % layout.num_fine]


def bench_generation(stage: str, size: str, tokens: int, use_cache: bool, device: torch.device) -> float:
    # the prefix layout (the paper's), whatever the config trains: its prompt is a plain token prefix
    config = load_stage_config(stage, size, None, [] if stage == "semantic" else ["layout=prefix"])
    layout = make_layout(stage, config, SPECS)
    torch.manual_seed(0)
    model = TransformerLM(config.model, layout.vocab_size).to(device).eval()
    prefix, rule = _prefix_and_rule(layout, config)
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    generate(model, prefix.to(device), tokens, SamplingConfig(temperature=1.0, top_k=50), rule,
             use_cache=use_cache, generator=generator)
    synchronize(device)
    seconds = time.perf_counter() - started
    print(f"gen    {stage:8s} {size:5s} prefix={prefix.shape[1]:4d} new={tokens:5d} window={config.model.max_seq_len:5d} "
          f"cache={'yes' if use_cache else 'no ':3s} {seconds:8.2f} s  {tokens / seconds:9.1f} tokens/s  "
          f"peak_mem={peak_memory_mb(device):8.0f} MB  ({device.type})", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, compilation)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the modes this often; keep each one's fastest")
    parser.add_argument("--train-shards", default=None, help="token shards (default: the config's data.train_shards)")
    parser.add_argument("--synthetic-shards", type=Path, default=None,
                        help="write random token shards at the reference specs here (once) and train from them")
    parser.add_argument("--compile", action="store_true", help="also time model.compile=true (from memory)")
    parser.add_argument("--gen-tokens", type=int, nargs="+", default=[250])
    parser.add_argument("--gen-stages", nargs="*", default=["coarse"], choices=STAGES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default); 1 avoids OpenMP spin on a shared CPU")
    parser.add_argument("overrides", nargs="*", help="config overrides for every stage, e.g. model.n_layer=6")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.shards = str(write_token_shards(args.synthetic_shards, SPECS)) if args.synthetic_shards else args.train_shards
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{'bf16-mixed' if device.type == 'cuda' else 'fp32'} training", flush=True)
    peaks = print_peaks(device)
    peak = peaks[torch.bfloat16] if device.type == "cuda" else peaks[torch.float32]  # the precision training runs in
    for stage in args.stages:
        bench_training(stage, args, device, peak)
    for stage in args.gen_stages:
        for tokens in args.gen_tokens:
            cached = bench_generation(stage, args.size, tokens, True, device)
            uncached = bench_generation(stage, args.size, tokens, False, device)
            print(f"speedup {stage:8s} {args.size:5s} new={tokens:5d}  KV cache {uncached / cached:6.1f}x faster", flush=True)
    print_peaks(device, "after")


def print_peaks(device: torch.device, when: str = "before") -> dict:
    """The matmul peaks MFU is taken against, measured here (before and after: the machine may be shared)."""
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    peaks = {dtype: matmul_peak(device, dtype) for dtype in dtypes}
    print(f"peak   {when}: " + "  ".join(f"{str(d).removeprefix('torch.')} matmul {f / 1e9:.1f} GFLOP/s"
                                        for d, f in peaks.items()) + f"  ({device}, {torch.get_num_threads()} threads)",
          flush=True)
    return peaks


if __name__ == "__main__":
    main()
