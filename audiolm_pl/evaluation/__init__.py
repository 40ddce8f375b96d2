"""Evaluation of an `AudioLM` pipeline on held-out utterances, with offline judges (`audiolm-pl eval`).

    from audiolm_pl.evaluation import EvalConfig, evaluate_pipeline, load_eval_utterances
    utterances = load_eval_utterances(val_shards, model.sample_rate, per_speaker=2, min_seconds=4.0)
    report = evaluate_pipeline(model, utterances, EvalConfig(), out_dir="outputs/main/eval")
    report = evaluate_music(model, works, EvalConfig(prompt_seconds=4, music=True))  # piano: music.py measures

Judges load lazily: importing this package imports none of faster-whisper, pocketsphinx,
resemblyzer or speechmos (the `eval` extra). docs/evaluation.md says what each figure means.
"""

from audiolm_pl.evaluation.judges import Judges, load_judges
from audiolm_pl.evaluation.music_eval import MusicReport, evaluate_music
from audiolm_pl.evaluation.packages import MissingEvalPackage
from audiolm_pl.evaluation.results import EvalReport, Target
from audiolm_pl.evaluation.runner import EvalConfig, evaluate_pipeline, write_eval_outputs
from audiolm_pl.evaluation.selection import load_eval_utterances, select_utterances

__all__ = ["EvalConfig", "EvalReport", "Judges", "MissingEvalPackage", "MusicReport", "Target", "evaluate_music",
           "evaluate_pipeline", "load_eval_utterances", "load_judges", "select_utterances", "write_eval_outputs"]
