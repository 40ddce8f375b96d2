"""Benchmarks of the three LM stages: training tokens/s, generation tokens/s with and without the
KV cache, peak memory. Prints one line per measurement.

    python scripts/bench_lm.py                       # small configs, CPU
    python scripts/bench_lm.py --size tiny --gen-tokens 250
    python scripts/bench_lm.py --paper-step          # also one training step at the paper shapes

Shapes come from the stage configs and reference token specs (semantic 1024 ids @ 25 Hz,
codec 12 x 1024 codes @ 50 Hz, as in the paper): a training sequence is the longest one
that `data.crop_seconds` makes in that stage's layout.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from audiolm_pl.lm.layouts import CoarseLayout, FineLayout, SemanticLayout
from audiolm_pl.lm.lightning_module import TokenLMModule
from audiolm_pl.lm.sampling import SamplingConfig, generate
from audiolm_pl.lm.stages import longest_sequence, make_layout
from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import load_stage_config

SPECS = {
    "semantic": TokenSpec("semantic", 16000, 25.0, 1024),
    "acoustic": TokenSpec("acoustic", 16000, 50.0, 1024, num_quantizers=12),
}
STAGES = ("semantic", "coarse", "fine")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def stage_setup(stage: str, size: str):
    config = load_stage_config(stage, size)
    layout = make_layout(stage, config, SPECS)
    return config, layout


def bench_training(stage: str, size: str, batch: int, steps: int, device: torch.device, precision: str) -> None:
    config, layout = stage_setup(stage, size)
    length = longest_sequence(layout, SPECS, config.data.crop_seconds) - 1  # model input length
    module = TokenLMModule(stage, config, layout, SPECS).to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    inputs = torch.randint(0, layout.vocab_size, (batch, length), device=device)  # (B, T)
    levels = torch.zeros(batch, length, dtype=torch.long, device=device)  # (B, T) loss everywhere
    batch_dict = {"inputs": inputs, "targets": inputs.roll(-1, dims=1), "levels": levels}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            ce, _, _ = module._loss_terms(batch_dict)
        ce.mean().backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernels)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - started) / steps
    params = module.model.num_parameters() / 1e6
    print(f"train  {stage:8s} {size:5s} params={params:7.1f}M  batch={batch} x T={length:5d}  "
          f"{seconds * 1000:9.1f} ms/step  {batch * length / seconds:10.0f} tokens/s  "
          f"peak_mem={peak_memory_mb(device):8.0f} MB  ({device.type}, {precision})", flush=True)


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
    config, layout = stage_setup(stage, size)
    torch.manual_seed(0)
    model = TransformerLM(config.model, layout.vocab_size).to(device).eval()
    prefix, rule = _prefix_and_rule(layout, config)
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    generate(model, prefix.to(device), tokens, SamplingConfig(temperature=1.0, top_k=50), rule,
             use_cache=use_cache, generator=generator)
    _sync(device)
    seconds = time.perf_counter() - started
    print(f"gen    {stage:8s} {size:5s} prefix={prefix.shape[1]:4d} new={tokens:5d} window={config.model.max_seq_len:5d} "
          f"cache={'yes' if use_cache else 'no ':3s} {seconds:8.2f} s  {tokens / seconds:9.1f} tokens/s  "
          f"peak_mem={peak_memory_mb(device):8.0f} MB  ({device.type})", flush=True)
    return seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gen-tokens", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--gen-stages", nargs="*", default=["coarse"], choices=STAGES)
    parser.add_argument("--paper-step", action="store_true", help="also time one training step at the paper shapes (batch 1)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default); 1 avoids OpenMP spin on a shared CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}", flush=True)
    if not args.skip_train:
        for stage in args.stages:
            bench_training(stage, args.size, args.batch, args.steps, device, precision)
    if args.paper_step:
        for stage in args.stages:
            bench_training(stage, "paper", 1, 1, device, precision)
    for stage in args.gen_stages:
        for tokens in args.gen_tokens:
            cached = bench_generation(stage, args.size, tokens, True, device)
            uncached = bench_generation(stage, args.size, tokens, False, device)
            print(f"speedup {stage:8s} {args.size:5s} new={tokens:5d}  KV cache {uncached / cached:6.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
