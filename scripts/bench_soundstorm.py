"""Generation time of the acoustic stages: the coarse + fine LMs (token by token, KV-cached) vs one SoundStorm
model (parallel decoding, `sampling.iterations` forward passes per level), for the same seconds of audio and the
same RVQ levels, from random-init models of the shipped configs (time does not depend on the weights).

    python scripts/bench_soundstorm.py --size small --seconds 5,10,20 --levels 4,8 --contexts 0,500 --threads 1

Prints one line per (levels, length): both times and their ratio. `--levels`: the RVQ levels made (the fine
LM's `num_levels`, 0 = its config's; the SoundStorm model the same count); `--contexts`: SoundStorm's trained
context in frames (`model.max_seq_len`, 0 = its config's), the window it decodes in; the SoundStorm config has the blocks of one of the two LMs
(same n_layer, d_model, d_ff), so the parallel stage has about half the transformer parameters of the pair.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from audiolm_pl.cli import comma_list
from audiolm_pl.codec.lightning import build_codec
from audiolm_pl.lm.generation import LoadedLM, generate_coarse, generate_fine
from audiolm_pl.lm.stages import make_layout
from audiolm_pl.lm.transformer import TransformerLM
from audiolm_pl.soundstorm.decoding import forward_passes, generate_soundstorm
from audiolm_pl.soundstorm.model import SoundStormModel
from audiolm_pl.throughput import matmul_peak
from audiolm_pl.tokens import TokenSpec
from audiolm_pl.training import load_stage_config

SEMANTIC_VOCAB = {"tiny": 12, "small": 256, "paper": 1024}


def specs_of(size: str) -> dict[str, TokenSpec]:
    """The token specs of `size`: that size's codec config and the semantic vocabulary its LMs are built for."""
    acoustic = build_codec(load_stage_config("codec", size).model).token_spec
    return {"semantic": TokenSpec("semantic", 16000, 25.0, SEMANTIC_VOCAB[size]), "acoustic": acoustic}


def random_lm(stage: str, size: str, specs: dict[str, TokenSpec], overrides: tuple[str, ...] = ()) -> LoadedLM:
    config = load_stage_config(stage, size, None, list(overrides))
    layout = make_layout(stage, config, specs)
    torch.manual_seed(0)
    model = TransformerLM(config.model, layout.vocab_size, layout.condition_vocab).eval()
    return LoadedLM(stage, model, layout, specs, config.sampling, config.data.crop_seconds, Path(f"random {stage}"))


def random_soundstorm(size: str, specs: dict[str, TokenSpec], levels: int, context: int = 0):
    config = load_stage_config("soundstorm", size, None, [f"model.max_seq_len={context}"] if context else [])
    torch.manual_seed(0)
    model = SoundStormModel(config.model, specs["semantic"].vocab_size, specs["acoustic"].vocab_size, levels,
                            specs["acoustic"].whole_frame_ratio(specs["semantic"])).eval()
    return model, config.sampling


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SEMANTIC_VOCAB))
    parser.add_argument("--seconds", type=comma_list, default=["5", "10", "20"])
    parser.add_argument("--levels", type=comma_list, default=["0"], help="RVQ levels made; 0 = the fine config's")
    parser.add_argument("--contexts", type=comma_list, default=["0"], help="SoundStorm windows (frames); 0 = config's")
    parser.add_argument("--iterations", type=comma_list, default=None,
                        help="SoundStorm passes per level, e.g. 4,1 (the last repeats); default: the config's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak(torch.device("cpu"), torch.float32) / 1e9
    print(f"measured fp32 matmul peak on {args.threads} thread(s): {peak:.0f} GFLOP/s (compare times within one run)")
    specs = specs_of(args.size)
    for levels in map(int, args.levels):
        compare(args.size, specs, levels, [float(seconds) for seconds in args.seconds], [int(c) for c in args.contexts],
                args.threads, [int(n) for n in args.iterations] if args.iterations else None)


def compare(size: str, specs: dict[str, TokenSpec], levels: int, lengths: list[float], contexts: list[int],
            threads: int, iterations: list[int] | None = None) -> None:
    """Print the time of both acoustic stages for each length, making `levels` RVQ levels (0: the fine config's),
    SoundStorm decoding in windows of each of `contexts` frames with `iterations` passes per level (None: config's)."""
    coarse = random_lm("coarse", size, specs)
    fine = random_lm("fine", size, specs, (f"num_levels={levels}",) if levels else ())
    levels = fine.layout.num_quantizers  # the levels the pair makes (the fine LM's last + 1)
    parallel = [random_soundstorm(size, specs, levels, context) for context in contexts]
    if iterations:
        parallel = [(model, replace(sampling, iterations=iterations)) for model, sampling in parallel]
    blocks = lambda model: sum(p.numel() for b in model.blocks for p in b.parameters()) / 1e6  # noqa: E731
    print(f"size={size} levels={levels} threads={threads} device=cpu | transformer blocks: coarse "
          f"{blocks(coarse.model):.2f} M + fine {blocks(fine.model):.2f} M, soundstorm {blocks(parallel[0][0]):.2f} M; "
          f"soundstorm iterations {parallel[0][1].iterations}")
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for seconds in lengths:
            frames = specs["acoustic"].frames_covering(seconds)
            semantic = torch.randint(0, specs["semantic"].vocab_size, (1, specs["semantic"].frames_covering(seconds)))
            holder = {}
            t_coarse = timed(lambda: holder.update(c=generate_coarse(coarse, semantic, num_frames=frames, generator=generator)))
            t_fine = timed(lambda: generate_fine(fine, holder["c"], generator=generator))
            autoregressive = t_coarse + t_fine
            print(f"{seconds:5.1f} s audio ({frames} frames x {levels} levels): coarse+fine {autoregressive:7.2f} s "
                  f"(coarse {t_coarse:.2f}, fine {t_fine:.2f})")
            for model, sampling in parallel:
                t_parallel = timed(lambda: generate_soundstorm(model, semantic, frames, sampling=sampling, generator=generator))
                window = model.config.max_seq_len
                passes = forward_passes(frames, window, levels, sampling)
                print(f"      soundstorm, {window}-frame window: {t_parallel:6.3f} s ({passes} forward passes); "
                      f"ratio {autoregressive / t_parallel:6.1f}x")

if __name__ == "__main__":
    main()
