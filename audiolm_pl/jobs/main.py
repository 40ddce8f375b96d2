"""`audiolm-pl main`: the whole pipeline on the embedded default corpus, end to end.

`audiolm-pl main` trains on speech (synthetic voices + Asterisk prompts); `audiolm-pl main corpus=piano` runs the
same steps on piano music rendered from music21's scores (docs/piano.md): log-mel semantic tokens, 4 s prompts of
held-out composers' works, and `eval --music` measures in place of the speech judges. `acoustic_stage=soundstorm`
trains one parallel SoundStorm model in place of the coarse and fine LMs (docs/soundstorm.md).

Steps run in order; each one records `<workdir>/steps/<name>.done` when it finishes, so an
interrupted job picks up at the first unfinished step (and each step is itself resumable).
Steps call the library functions that the sub-commands call (`training.fit_stage`,
`semantic.cli.fit_kmeans`, `jobs.cli.tokenize_with_checkpoints`, `inference.generate.generate_files`,
`evaluation.cli.evaluate_pipeline_files`) and take their figures from what those return.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from audiolm_pl.fileio import atomic_write_json
from audiolm_pl.jobs.report import export_prompts, write_markdown_report

log = logging.getLogger(__name__)


SEMANTIC_SOURCES = ("whisper", "ssl", "mfcc", "logmel")
# the steps that make each acoustic stage (PipelineConfig.acoustic_stage); a job runs its own and skips the other's
ACOUSTIC_STEPS = {"coarse_fine": ("coarse_lm", "fine_lm"), "soundstorm": ("soundstorm",)}
# steps whose result depends on the acoustic stage: a workdir where one is done cannot switch to the other stage
ACOUSTIC_DEPENDENT = ("semantic_lm", "coarse_lm", "fine_lm", "soundstorm", "generate", "eval")
CORPUS_DEFAULTS = {  # what "" means for workdir / semantic_source / prompt_seconds, and piano_hours when 0
    # speech: Whisper's encoder (an ASR model: its features follow phones and words)
    "speech": {"workdir": "outputs/main", "semantic_source": "whisper", "prompt_seconds": 3.0},
    # piano: Whisper and MFCCs are built for speech (MFCCs smooth away the partials that carry pitch); 80 log-mel bands
    # keep them, so k-means ids follow notes and chords. ssl (our model trained on the piano corpus) is the option.
    "piano": {"workdir": "outputs/piano", "semantic_source": "logmel", "prompt_seconds": 4.0, "piano_hours": 0.25},
}


@dataclass
class MainJobConfig:
    corpus: str = "speech"  # speech | piano: the corpus every stage trains and is judged on (docs/piano.md)
    workdir: str = ""  # "": outputs/main (speech), outputs/piano (piano)
    speech_hours: float = 1.0  # synthetic voices (data speech)
    real_speech: list[str] = field(default_factory=lambda: ["it", "ru"])  # Asterisk voices (data real); [] = none
    piano_hours: float = 0.0  # synthetic piano (data piano); 0: none for speech, 0.25 h for corpus=piano
    size: str = "small"  # config size for every stage: tiny (tests) | small (CPU minutes) | paper
    seed: int = 0
    workers: int = 2
    samples_per_shard: int = 200
    max_seconds: float = 12.0  # audio longer than this is cut into segments
    # training budgets in minutes (each stage also stops at its config's max_steps); measured split:
    # docs/results/main_job_2026-11-25.md
    codec_minutes: float = 9.0
    # semantic_source=ssl only. On 2 CPU cores 4 minutes are ~50 steps, inside the 2,000-step warm-up: ids of an almost
    # untrained model (semantic_sources_end_to_end_2026-11-25.md); its PNMI passes MFCC's after ~30 CPU minutes
    ssl_minutes: float = 4.0
    semantic_lm_minutes: float = 2.5
    coarse_lm_minutes: float = 5.0
    fine_lm_minutes: float = 4.5  # 2.5 gave ~500 steps; ~1,000 voice the continuations more (fine_lm_steps_2026-11-25.md)
    # what makes the acoustic codes: coarse_fine (the paper's coarse + fine LMs) | soundstorm (one parallel model,
    # docs/soundstorm.md; the semantic LM then keeps every id at its time, dedup=false, as SoundStorm reads them)
    acoustic_stage: str = "coarse_fine"
    soundstorm_minutes: float = 0.0  # 0: coarse_lm_minutes + fine_lm_minutes, the budget of the pair it replaces
    semantic_source: str = ""  # whisper (tiny.en encoder) | ssl (our HuBERT-style model) | mfcc | logmel; "": the corpus'
    semantic_clusters: int = 256
    prompts: int = 3  # held-out prompts to continue in `generate`
    prompt_seconds: float = 0.0  # 0: the corpus' (3 s speech, 4 s piano)
    continuation_seconds: float = 7.0
    eval_per_speaker: int = 2  # held-out utterances per speaker judged by `eval`
    trainer: str = "cpu"  # trainer preset for every stage
    max_steps: Optional[int] = None  # cap every stage's steps (smoke tests); None = the configs' own
    steps: list[str] = field(default_factory=lambda: list(STEP_NAMES))

    def __post_init__(self) -> None:
        if self.corpus not in CORPUS_DEFAULTS:
            raise ValueError(f"corpus must be one of {list(CORPUS_DEFAULTS)}, got {self.corpus!r}")
        defaults = CORPUS_DEFAULTS[self.corpus]
        self.workdir = self.workdir or defaults["workdir"]
        self.semantic_source = self.semantic_source or defaults["semantic_source"]
        self.prompt_seconds = self.prompt_seconds or defaults["prompt_seconds"]
        self.piano_hours = self.piano_hours or defaults.get("piano_hours", 0.0)
        if self.semantic_source not in SEMANTIC_SOURCES:
            raise ValueError(f"semantic_source must be one of {SEMANTIC_SOURCES}, got {self.semantic_source!r}")
        if self.acoustic_stage not in ACOUSTIC_STEPS:
            raise ValueError(f"acoustic_stage must be one of {list(ACOUSTIC_STEPS)}, got {self.acoustic_stage!r}")

    def minutes(self, budget: str) -> float:
        """The minutes of the budget key `budget` (codec_minutes, ...); soundstorm_minutes 0: the pair's it replaces."""
        if budget == "soundstorm_minutes" and not self.soundstorm_minutes:
            return self.coarse_lm_minutes + self.fine_lm_minutes
        return getattr(self, budget)

    def skips(self, step: str) -> bool:
        """True for the steps of the acoustic stage this job does not use (coarse_lm and fine_lm with soundstorm)."""
        return any(step in steps for stage, steps in ACOUSTIC_STEPS.items() if stage != self.acoustic_stage)

    @property
    def root(self) -> Path:
        return Path(self.workdir)

    @property
    def corpora(self) -> list[str]:
        """Corpora this job trains on (each under corpus/, shards/ and tokens/); the first one is `corpus`."""
        if self.corpus == "piano":
            return ["piano"]
        return ["speech"] + (["real"] if self.real_speech else []) + (["piano"] if self.piano_hours > 0 else [])

    def val_split(self, kind: str) -> Path:
        """'shards' | 'tokens' -> the held-out split every stage validates on and `generate` / `eval` read."""
        return self.root / kind / self.corpus / "val"

    def train_split(self, kind: str) -> str:
        """'shards' | 'tokens' -> the brace pattern over every corpus' train split."""
        names = self.corpora
        return str(self.root / kind / (f"{{{','.join(names)}}}" if len(names) > 1 else names[0]) / "train")


def step_speech_corpus(config: MainJobConfig) -> dict:
    from audiolm_pl.corpus.speech import make_speech_corpus

    if config.corpus == "piano":
        return {}
    make_speech_corpus(config.root / "corpus" / "speech", hours=config.speech_hours, seed=config.seed, workers=config.workers)
    return {}


def step_real_corpus(config: MainJobConfig) -> dict:
    """Real voices from Debian packages (scripts/install_system_deps.sh); held-out utterances go to val."""
    from audiolm_pl.corpus.real import make_real_corpus

    if not config.real_speech or config.corpus == "piano":
        return {}
    summary = make_real_corpus(config.root / "corpus" / "real", config.real_speech, seed=config.seed, progress=False)
    return {"clips": summary["clips"], "hours": round(summary["hours"], 3)}


def step_piano_corpus(config: MainJobConfig) -> dict:
    from audiolm_pl.corpus.piano import make_piano_corpus

    if config.piano_hours <= 0:
        return {}
    make_piano_corpus(config.root / "corpus" / "piano", hours=config.piano_hours, seed=config.seed, workers=config.workers)
    return {}


def step_shards(config: MainJobConfig) -> dict:
    from audiolm_pl.data.shards import write_shards

    figures = {}
    for corpus in config.corpora:
        for split in ("train", "val"):
            source = config.root / "corpus" / corpus / split
            if not source.exists():
                continue
            report = write_shards(
                source, config.root / "shards" / corpus / split, sample_rate=16000,
                max_seconds=config.max_seconds, samples_per_shard=config.samples_per_shard, workers=config.workers,
            )
            figures[f"{corpus}/{split}"] = {"samples": report.samples, "hours": round(report.hours, 3), "skipped": len(report.skipped)}
    return figures


def _max_time(minutes: float) -> str:
    total = int(minutes * 60)
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _train(config: MainJobConfig, stage: str, budget: str, *overrides: str) -> dict:
    """Train `stage` at the job's size into runs/<stage> for the minutes of the config key `budget`; returns the run's
    last val/ and train/ figures, its step and max_steps, and `stopped_by`: `budget` when its minutes ran out first
    (a slower machine: fewer steps), else "max_steps"."""
    from audiolm_pl.training import fit_stage, load_stage_config

    minutes = config.minutes(budget)
    overrides = (f"trainer.output_dir={config.root / 'runs'}", f"trainer.run_name={stage}",
                 f"trainer.max_time={_max_time(minutes)}", f"trainer.seed={config.seed}", *overrides,
                 *([f"trainer.max_steps={config.max_steps}"] if config.max_steps else []))
    run_config = load_stage_config(stage, config.size, config.trainer, overrides)
    result = fit_stage(stage, run_config)
    figures = {name: round(value, 4) for name, value in sorted(result.metrics.items()) if name.startswith(("val/", "train/"))}
    max_steps = run_config.trainer.max_steps
    stopped_by = "max_steps" if result.step >= max_steps else budget
    if stopped_by != "max_steps":
        log.info("main job: %s stopped by its %.1f-minute budget (%s) at step %d of max_steps %d", stage, minutes,
                 stopped_by, result.step, max_steps)
    return {**figures, "step": result.step, "max_steps": max_steps, "stopped_by": stopped_by}


def step_codec(config: MainJobConfig) -> dict:
    return _train(config, "codec", "codec_minutes", f"data.train_shards={config.train_split('shards')}",
                  f"data.val_shards={config.val_split('shards')}")


def _kmeans(config: MainJobConfig, source: str, shards: list[Path], out: Path, frame_rate: float, max_frames: int,
            layer: int = 6) -> None:
    """`semantic kmeans`: a tokenizer file at `out`. source: mfcc | whisper | ssl:RUN_DIR; layer: ssl sources only."""
    from audiolm_pl.semantic.cli import fit_kmeans, parse_source

    fit_kmeans(parse_source(source, layer, sample_rate=16000), shards, out, clusters=config.semantic_clusters,
               frame_rate=frame_rate, max_frames=max_frames, seed=config.seed)


def step_semantic_tokenizer(config: MainJobConfig) -> dict:
    """k-means over frame features of the training audio: Whisper's encoder, our SSL model or MFCC."""
    out = config.root / "semantic" / "tokenizer.safetensors"
    if config.semantic_source == "ssl":
        return _ssl_tokenizer(config, out)
    shards = [config.root / "shards" / corpus / "train" for corpus in config.corpora]  # drawn from in turn
    _kmeans(config, config.semantic_source, shards, out, frame_rate=25, max_frames=60000)
    return {}


def _ssl_tokenizer(config: MainJobConfig, out: Path) -> dict:
    """HuBERT-style iteration: MFCC (log-mel for piano) k-means targets -> our SSL model -> k-means on its features."""
    shards = config.root / "shards" / config.corpus
    if config.trainer.startswith("cpu") and config.ssl_minutes < 30:
        log.warning("semantic_source=ssl with ssl_minutes=%g on a CPU: the SSL model stays near its random start "
                    "(~50 steps in 4 minutes on 2 cores) and its ids carry little; give it 30+ minutes or a GPU "
                    "(docs/results/semantic_sources_end_to_end_2026-11-25.md)", config.ssl_minutes)
    first = "logmel" if config.corpus == "piano" else "mfcc"  # MFCCs blur pitch (CORPUS_DEFAULTS)
    targets = out.parent / f"{first}_50hz.safetensors"
    _kmeans(config, first, [shards / "train"], targets, frame_rate=50, max_frames=200000)
    figures = _train(config, "ssl", "ssl_minutes", f"targets.tokenizer={targets}",
                     f"data.train_shards={shards / 'train'}", f"data.val_shards={shards / 'val'}")
    _kmeans(config, f"ssl:{config.root / 'runs' / 'ssl'}", [shards / "train"], out, frame_rate=25, max_frames=200000,
            layer=1)
    return figures


def step_tokenize(config: MainJobConfig) -> dict:
    from audiolm_pl.jobs.cli import tokenize_with_checkpoints

    splits = [(corpus, "train") for corpus in config.corpora] + [(config.corpus, "val")]
    for corpus, split in splits:
        tokenize_with_checkpoints(config.root / "runs" / "codec", config.root / "semantic" / "tokenizer.safetensors",
                                  config.root / "shards" / corpus / split, config.root / "tokens" / corpus / split,
                                  trainer=config.trainer)
    return {}


def _lm_step(stage: str):
    def step(config: MainJobConfig) -> dict:
        # SoundStorm reads each semantic id at its frame: a semantic LM that deduplicates them would lose the timing
        timed = ("dedup=false",) if stage == "semantic" and config.acoustic_stage == "soundstorm" else ()
        return _train(config, stage, f"{stage}_lm_minutes", f"data.train_shards={config.train_split('tokens')}",
                      f"data.val_shards={config.val_split('tokens')}", *timed)

    step.__name__ = f"step_{stage}_lm"
    return step


def step_soundstorm(config: MainJobConfig) -> dict:
    """The parallel acoustic stage on the same token shards, with the coarse + fine LMs' minutes unless set."""
    return _train(config, "soundstorm", "soundstorm_minutes", f"data.train_shards={config.train_split('tokens')}",
                  f"data.val_shards={config.val_split('tokens')}")


def write_pipeline_yaml(config: MainJobConfig) -> Path:
    from audiolm_pl.config import save_yaml
    from audiolm_pl.inference.audiolm import PipelineConfig

    # paths relative to the YAML (config.py): the workdir can be moved or read from any directory
    parallel = config.acoustic_stage == "soundstorm"
    pipeline = PipelineConfig(codec="runs/codec", semantic_tokenizer="semantic/tokenizer.safetensors",
                              semantic_lm="runs/semantic", coarse_lm="" if parallel else "runs/coarse",
                              fine_lm="" if parallel else "runs/fine", acoustic_stage=config.acoustic_stage,
                              soundstorm="runs/soundstorm" if parallel else "", prompt_seconds=config.prompt_seconds)
    path = config.root / "pipeline.yaml"
    save_yaml(pipeline, path)
    return path


def step_generate(config: MainJobConfig) -> dict:
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.inference.generate import generate_files

    pipeline = write_pipeline_yaml(config)
    out = config.root / "generated"
    prompts = export_prompts(config.val_split("shards"), out / "prompts", config.prompts,
                             min_seconds=config.prompt_seconds + 0.5)
    model = AudioLM.from_config(pipeline)
    made = []
    for index, prompt in enumerate(prompts):
        (written,) = generate_files(model, "continue", out / f"{prompt.stem}-continuation.wav", prompt=prompt,
                                    seconds=config.continuation_seconds, seed=config.seed + index,
                                    prompt_seconds=config.prompt_seconds)
        made.append(str(written.path))
    return {"continuations": made, "pipeline": str(pipeline)}


def step_eval(config: MainJobConfig) -> dict:
    """The `audiolm-pl eval` figures on the held-out speakers (or composers): codec round trip, acoustic generation,
    continuations; `eval --music` measures for piano. Also writes eval/results.md (ours beside the paper's)."""
    from audiolm_pl.evaluation.cli import evaluate_pipeline_files
    from audiolm_pl.evaluation.runner import EvalConfig

    out = config.root / "eval"
    eval_config = EvalConfig(per_speaker=config.eval_per_speaker, prompt_seconds=config.prompt_seconds,
                             seconds=config.continuation_seconds, seed=config.seed, music=config.corpus == "piano")
    report = evaluate_pipeline_files(write_pipeline_yaml(config), config.val_split("shards"), eval_config, out)
    if eval_config.music:
        sides = {kind: getattr(report, kind) for kind in ("generated", "real")}
        return {"report": str(out / "report.md"), "results": str(out / "results.md"),
                "continuation": {kind: None if side is None else {"onset_rate_ratio": round(side.onset_rate_ratio, 3),
                                                                  "pitch_class_l1": round(side.pitch_class_l1, 3)}
                                 for kind, side in sides.items()}}
    targets = report.to_dict()["targets"]  # as eval.json holds them
    return {"report": str(out / "report.md"), "results": str(out / "results.md"),
            "targets": {t["name"]: {"figure": t["figure"], "passed": t["passed"]} for t in targets}}


STEPS: dict[str, Callable[[MainJobConfig], dict]] = {
    "speech_corpus": step_speech_corpus,
    "real_corpus": step_real_corpus,
    "piano_corpus": step_piano_corpus,
    "shards": step_shards,
    "codec": step_codec,
    "semantic_tokenizer": step_semantic_tokenizer,
    "tokenize": step_tokenize,
    "semantic_lm": _lm_step("semantic"),
    "coarse_lm": _lm_step("coarse"),
    "fine_lm": _lm_step("fine"),
    "soundstorm": step_soundstorm,  # acoustic_stage=soundstorm, in place of coarse_lm and fine_lm
    "generate": step_generate,
    "eval": step_eval,
}
STEP_NAMES = tuple(STEPS)


def run_main_job(config: MainJobConfig) -> dict:
    """Run every step not yet done; returns the report (also written to <workdir>/report.json)."""
    steps_dir = config.root / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    report_path = config.root / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"steps": {}}
    _require_same_acoustic_stage(config, report)
    report["acoustic_stage"] = config.acoustic_stage
    report["corpus"], report["prompt_seconds"] = config.corpus, config.prompt_seconds  # what report.md says of them
    for name in config.steps:
        if name not in STEPS:
            raise ValueError(f"unknown main-job step {name!r}; steps: {list(STEPS)}")
        if config.skips(name):  # no marker, and no figures of an earlier run with the other stage in the report
            log.info("main job: step %s is not used with acoustic_stage=%s", name, config.acoustic_stage)
            report["steps"].pop(name, None)
            continue
        marker = steps_dir / f"{name}.done"
        if marker.exists():
            log.info("main job: step %s already done (%s)", name, marker)
            continue
        log.info("main job: step %s", name)
        started = time.time()
        figures = STEPS[name](config)
        report["steps"][name] = {"seconds": round(time.time() - started, 1), **figures}
        atomic_write_json(report_path, report, indent=2)
        write_markdown_report(report, config.root / "report.md")
        atomic_write_json(marker, report["steps"][name])
    return report


def _require_same_acoustic_stage(config: MainJobConfig, report: dict) -> None:
    """A workdir whose semantic LM, generations or evaluation were made for the other acoustic stage would be
    reused as done (their step markers): refuse, naming the way out. Reports from before the option: coarse_fine."""
    before = report.get("acoustic_stage", "coarse_fine")
    done = [name for name in ACOUSTIC_DEPENDENT if (config.root / "steps" / f"{name}.done").exists()]
    if before != config.acoustic_stage and done:
        raise ValueError(f"{config.root} was run with acoustic_stage={before} (steps done: {', '.join(done)}); "
                         f"for acoustic_stage={config.acoustic_stage} give another workdir=..., or delete those "
                         f"steps' markers in {config.root / 'steps'} to redo them")
