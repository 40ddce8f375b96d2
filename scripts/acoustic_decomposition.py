"""Where does acoustic generation lose the words? CER of decodes that swap generated codes for true ones.

    python scripts/acoustic_decomposition.py outputs/main    # a finished main job (pipeline.yaml, shards/speech/val)

For each held-out utterance with a text: the true codes at 8 / L / Q' levels, true coarse + generated fine,
generated coarse alone, and generated coarse + generated fine (= `eval`'s acoustic generation), each decoded and
judged by every ASR judge of `eval`. `--coarse RUN` judges another coarse LM trained on the same tokens (sampled as
the pipeline samples its coarse stage; `--guidance G` sets the classifier-free guidance scale).
Prints pooled CERs as JSON (docs/results/main_job_2026-11-25.md, coarse_levers_2026-11-25.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from audiolm_pl.evaluation.judges import load_judges
from audiolm_pl.evaluation.runner import EvalConfig
from audiolm_pl.evaluation.sections import has_reference_text
from audiolm_pl.evaluation.selection import load_eval_utterances
from audiolm_pl.evaluation.text import error_rates
from audiolm_pl.lm import generate_coarse, generate_fine, load_lm
from audiolm_pl.inference.audiolm import AudioLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="a main job's work directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coarse", default=None, help="another coarse LM (checkpoint or run directory) to judge")
    parser.add_argument("--guidance", type=float, default=None,
                        help="the coarse LM's classifier-free guidance scale (default: its own sampling's; 1 = off)")
    parser.add_argument("--fine-temperature", type=float, default=None,
                        help="the fine LM's sampling temperature (default: the pipeline's)")
    args = parser.parse_args()
    model = AudioLM.from_config(f"{args.workdir}/pipeline.yaml")
    coarse_lm = load_lm(args.coarse, expected_stage="coarse") if args.coarse else model.coarse_lm
    coarse_sampling, fine_sampling = model.stage_sampling("coarse"), model.stage_sampling("fine")
    if args.guidance is not None:
        coarse_sampling = replace(coarse_sampling, guidance=args.guidance)
    if args.fine_temperature is not None:
        fine_sampling = replace(fine_sampling, temperature=args.fine_temperature)
    config = EvalConfig()
    utterances = [u for u in load_eval_utterances(f"{args.workdir}/shards/speech/val", model.sample_rate, config.per_speaker,
                                                  config.min_utterance_seconds, config.seed) if has_reference_text(u)]
    judges = load_judges(config, model.sample_rate)
    levels, coarse_levels = model.fine_lm.layout.num_quantizers, coarse_lm.layout.num_coarse
    generator = torch.Generator().manual_seed(args.seed)
    transcripts: dict[str, dict[str, list[str]]] = {}
    with torch.inference_mode():
        for utterance in utterances:
            wav = torch.from_numpy(utterance.wav)[None]  # (1, T)
            codes, semantic = model.codec.encode(wav), model.semantic_tokenizer.encode(wav)  # (1, T_a, Q), (1, T_s)
            coarse = codes[:, :, :coarse_levels]  # (1, T_a, Q')
            with_fine = coarse_levels < levels  # a coarse LM of every level the fine stage makes needs none
            if with_fine:  # drawn first, so a seed gives the figures recorded in docs/results before this branch
                fine_given_true = generate_fine(model.fine_lm, coarse, None, fine_sampling, generator=generator)
            coarse_generated = generate_coarse(coarse_lm, semantic, None, coarse_sampling,
                                               num_frames=codes.shape[1], generator=generator)
            decodes = {"original": wav, f"true {codes.shape[2]} levels": codes, f"true {levels} levels": codes[:, :, :levels],
                       f"true {coarse_levels} levels": coarse, "generated coarse (no fine)": coarse_generated}
            if with_fine:
                fine_generated = generate_fine(model.fine_lm, coarse_generated, None, fine_sampling, generator=generator)
                decodes.update({"true coarse + generated fine": torch.cat([coarse, fine_given_true], 2),
                                "generated coarse + generated fine": torch.cat([coarse_generated, fine_generated], 2)})
            for name, value in decodes.items():
                audio = (value if name == "original" else model.codec.decode(value))[0].numpy()  # (T,)
                for spec, judge in judges.asr.items():
                    transcripts.setdefault(name, {}).setdefault(spec, []).append(judge.transcribe(audio, model.sample_rate))
    references = [u.text for u in utterances]
    cer = {name: {spec: round(error_rates(texts, references).cer, 3) for spec, texts in by_judge.items()}
           for name, by_judge in transcripts.items()}
    print(json.dumps({"utterances": len(utterances), "cer": cer}, indent=1))


if __name__ == "__main__":
    main()
