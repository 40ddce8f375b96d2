"""One way to train every stage: a `TrainerConfig` preset + a stage config -> `lightning.Trainer`.

Each stage module (see `registry.STAGES`) provides a run-config dataclass with a
`trainer: TrainerConfig` field and a `build(config) -> (LightningModule, LightningDataModule)`
function. `train_stage` turns that into a run directory holding TensorBoard logs,
`checkpoints/last.ckpt` (resumed exactly on a rerun, random state included; the newest readable `step*.ckpt`
when it is torn), and the resolved `config.yaml`, locked against a second training (run_directory.py).
Checkpoints are written every `checkpoint_every_n_steps` and every `checkpoint_every_minutes`, each file whole or
not at all (resumable.py).
`fit_stage` does the same and also returns the run's final figures (`TrainResult`), so a job
reads them from the call rather than back from the TensorBoard logs.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from audiolm_pl import config as config_lib
from audiolm_pl import registry
from audiolm_pl.run_directory import resume_checkpoint, run_lock

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Maps onto `lightning.Trainer` arguments; presets live in `conf/trainer/*.yaml`."""

    accelerator: str = "auto"
    devices: Any = 1  # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "auto" | "ddp" | "ddp_spawn" | "fsdp" (FSDP2: `ModelParallelStrategy`) | ...
    precision: str = "32-true"  # "bf16-mixed" on GPU
    max_steps: int = 1000
    max_time: Optional[str] = None  # "DD:HH:MM:SS": stop (and checkpoint) after this long
    val_check_interval: int = 200  # optimizer steps between validations
    limit_val_batches: int = 8
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = 1.0  # ignored by manual-optimisation stages
    checkpoint_every_n_steps: int = 200  # step*.ckpt (kept) and last.ckpt; 0: none
    checkpoint_every_minutes: Optional[float] = None  # also last.ckpt after this many minutes of training; null: off
    fast_dev_run: bool = False
    enable_progress_bar: bool = True
    deterministic: bool = False
    seed: int = 0
    output_dir: str = "runs"
    run_name: Optional[str] = None  # defaults to the stage name
    resume: bool = True  # continue from <run>/checkpoints/last.ckpt when it exists

    def __post_init__(self) -> None:
        # Lightning's -1 ("no limit") has no place here: the learning-rate schedule decays over max_steps
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"trainer.max_steps must be a positive number of optimizer steps; got {self.max_steps}")
        if self.checkpoint_every_minutes is not None and not self.checkpoint_every_minutes > 0:
            raise ValueError("trainer.checkpoint_every_minutes must be a positive number of minutes, or null for no "
                             f"checkpoints on the clock; got {self.checkpoint_every_minutes}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_with_schedule(parameters, optim: OptimConfig, total_steps: int, weight_decay: float | None = None):
    """(AdamW, LambdaLR warm-up + cosine) stepped once per optimizer step.

    The fused AdamW does the update in one kernel: on a CPU 5x faster than the per-tensor loop (1.5 vs 7.6 ms a step
    for the small codec's 1.7 M parameters, docs/results/codec_speed_2026-12-08.md)."""
    import torch

    optimizer = torch.optim.AdamW(parameters, lr=optim.lr, betas=tuple(optim.betas), fused=True,
                                  weight_decay=optim.weight_decay if weight_decay is None else weight_decay)
    total = max(total_steps, optim.warmup_steps + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, optim.warmup_steps, total, optim.min_lr_ratio)
    )
    return optimizer, scheduler


def transformer_optimizers(model, optim: OptimConfig, total_steps: int) -> dict:
    """Lightning's `configure_optimizers` answer for a transformer: AdamW (warm-up + cosine, stepped per optimizer
    step) with weight decay on matrices only; norms, biases and other vectors are not decayed."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": optim.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    optimizer, scheduler = adamw_with_schedule(groups, optim, total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def log_level_metrics(module, sums, names: list[str]) -> None:
    """Validation figures per token level from summed (ce, correct, count) rows (rank-reduced): `val/ce{name}`,
    `val/acc{name}`, `val/ppl{name}`; the first name ("", all levels) goes to the progress bar."""
    import math

    for name, (ce_sum, correct, count) in zip(names, sums.tolist()):
        if count:
            module.log(f"val/ce{name}", ce_sum / count, prog_bar=not name, sync_dist=False)
            module.log(f"val/acc{name}", correct / count, sync_dist=False)
            module.log(f"val/ppl{name}", math.exp(min(ce_sum / count, 50.0)), sync_dist=False)


def run_dir(trainer_config: TrainerConfig, stage: str) -> Path:
    return Path(trainer_config.output_dir) / (trainer_config.run_name or stage)


def build_strategy(tc: TrainerConfig):
    """`tc.strategy` as Lightning takes it; "fsdp" means FSDP2: a `ModelParallelStrategy` whose whole mesh is data
    parallel (the modules shard themselves in `configure_model`), saving sharded checkpoints (directories, each
    written beside its name and swapped in whole: resumable.py)."""
    if tc.strategy != "fsdp":
        return tc.strategy
    from audiolm_pl.resumable import AtomicShardedStrategy

    return AtomicShardedStrategy(data_parallel_size=tc.num_nodes * _devices_per_node(tc), tensor_parallel_size=1,
                                 save_distributed_checkpoint=True)


def _devices_per_node(tc: TrainerConfig) -> int:
    """How many processes each node runs: the mesh must be sized before Lightning counts them itself."""
    if isinstance(tc.devices, int) and tc.devices > 0:
        return tc.devices
    if isinstance(tc.devices, (list, tuple)):
        return len(tc.devices)
    if tc.devices == "auto" and tc.accelerator in ("gpu", "cuda"):
        import torch

        if torch.cuda.device_count():
            return torch.cuda.device_count()
    raise ValueError(f"trainer.devices={tc.devices!r} with trainer.strategy=fsdp: give a number of devices per node "
                     f"(\"auto\" counts the GPUs of accelerator gpu, and found none)")


def checkpoint_callbacks(tc: TrainerConfig, folder: Path) -> list:
    """`step*.ckpt` and `last.ckpt` every `checkpoint_every_n_steps`, `last.ckpt` every `checkpoint_every_minutes`
    too and when training ends, and the random state inside each. All write one `last.ckpt`: Lightning's version
    counter, which would have a second writer make `last-v1.ckpt` beside the first's, is off."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from audiolm_pl.resumable import FinalCheckpoint, RandomStateCheckpoint, TimedCheckpoint

    every_steps = ModelCheckpoint(
        dirpath=folder,
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=tc.checkpoint_every_n_steps,
        save_last=True,
        save_top_k=-1 if tc.checkpoint_every_n_steps else 0,
        enable_version_counter=False,
    )
    callbacks = [every_steps, RandomStateCheckpoint(), FinalCheckpoint(folder / "last.ckpt")]
    if tc.checkpoint_every_minutes is not None:
        callbacks.append(TimedCheckpoint(folder / "last.ckpt", tc.checkpoint_every_minutes))
    return callbacks


def build_trainer(trainer_config: TrainerConfig, directory: Path, manual_clip: bool = False):
    """A `lightning.Trainer` with TensorBoard logging and checkpoints written whole or not at all."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    from audiolm_pl.data.stream import BadSampleProgress
    from audiolm_pl.resumable import AtomicCheckpointIO

    tc = trainer_config
    logger = TensorBoardLogger(save_dir=str(directory), name="tb", version="")
    return L.Trainer(
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=build_strategy(tc),
        precision=tc.precision,
        max_steps=tc.max_steps,
        max_time=tc.max_time,
        val_check_interval=tc.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=tc.limit_val_batches,
        log_every_n_steps=tc.log_every_n_steps,
        accumulate_grad_batches=1 if manual_clip else tc.accumulate_grad_batches,
        gradient_clip_val=None if manual_clip else tc.gradient_clip_val,
        fast_dev_run=tc.fast_dev_run,
        enable_progress_bar=tc.enable_progress_bar,
        deterministic=tc.deterministic,
        callbacks=[*checkpoint_callbacks(tc, directory / "checkpoints"), LearningRateMonitor(logging_interval="step"),
                   BadSampleProgress()],
        plugins=[AtomicCheckpointIO()],
        logger=logger,
        default_root_dir=str(directory),
    )


def load_stage_config(
    stage: str,
    config: str | Path,
    trainer_preset: str | Path | None = None,
    overrides: Sequence[str] = (),
):
    """Resolve `config` (a name under conf/<stage group>/ or a path) into the stage's dataclass."""
    spec = registry.get_stage(stage)
    path = config_lib.resolve_config_path(spec.conf_group, config)
    at = {"trainer": config_lib.resolve_config_path("trainer", trainer_preset)} if trainer_preset else None
    return config_lib.load_config(spec.config_class(), path, overrides=overrides, at=at)


@dataclass
class TrainResult:
    """What `fit_stage` leaves: the run directory and the figures the run logged last."""

    directory: Path  # config.yaml, tb/ (TensorBoard), checkpoints/last.ckpt
    step: int  # the step of the last logged figures: batches that stepped the optimisers (TensorBoard's x axis)
    metrics: dict[str, float]  # each logged metric's last value: train/* of the last step, val/* of the last validation


def train_stage(stage: str, run_config: Any) -> Path:
    """Train `stage` with a resolved run config; returns the run directory."""
    return fit_stage(stage, run_config).directory


def fit_stage(stage: str, run_config: Any) -> TrainResult:
    """Train `stage` with a resolved run config; returns the run directory and the final figures."""
    import lightning as L

    spec = registry.get_stage(stage)
    tc: TrainerConfig = run_config.trainer
    L.seed_everything(tc.seed, workers=True)
    directory = run_dir(tc, stage)
    directory.mkdir(parents=True, exist_ok=True)
    with run_lock(directory):  # before anything is written: a second training is refused here
        step, metrics = _fit(stage, spec, run_config, directory)
    return TrainResult(directory, step, metrics)


def _fit(stage: str, spec, run_config: Any, directory: Path) -> tuple[int, dict[str, float]]:
    """Fit, save `last.ckpt`, validate once more; returns (logged step, last value of every logged metric)."""
    from audiolm_pl.resumable import remove_stale_temporaries

    tc: TrainerConfig = run_config.trainer
    config_lib.save_yaml(run_config, directory / "config.yaml")
    module, datamodule = spec.build(run_config)
    trainer = build_trainer(tc, directory, manual_clip=not module.automatic_optimization)
    remove_stale_temporaries(directory / "checkpoints")  # a killed run's half-written files (none of this run's yet)
    resume_from = resume_checkpoint(directory) if (tc.resume and not tc.fast_dev_run) else None
    ckpt_path = str(resume_from) if resume_from else None
    if resume_from:
        log.info("resuming %s from %s", stage, resume_from)
    with warnings.catch_warnings():
        # our training streams have a length on purpose: fixed-length epochs keep DDP ranks in step, and a loader
        # of known length is not prefetched, so its state_dict counts the batches trained on (data/stream.py)
        warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
        # the codec's manual optimisation: a checkpoint holds the state after its step, which is what resume wants
        warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        # each `validate` starts callback_metrics afresh, so keep fit's (train/*, earlier val/*) first
        metrics = _floats(trainer.callback_metrics)
        # last.ckpt holds the final step already (`FinalCheckpoint`); under ddp_spawn this process has no trained
        # state to validate, so the end-of-training figures are the last validation's
        if not tc.fast_dev_run and "spawn" not in str(tc.strategy) and tc.limit_val_batches:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # end-of-training figures
            metrics.update(_floats(trainer.callback_metrics))
    # the logger's step, not global_step: a GAN's two optimizers make global_step count each batch twice
    return trainer.fit_loop.epoch_loop._batches_that_stepped, metrics


def _floats(metrics: dict) -> dict[str, float]:
    """Lightning's metric tensors -> plain floats."""
    return {name: float(value) for name, value in metrics.items()}
