"""AudioDataModule: crops, masks, determinism, exact resume, DDP splitting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from audiolm_pl.data.datamodule import AudioDataConfig, AudioDataModule, AudioDecodeError


def make_config(shards, **changes) -> AudioDataConfig:
    values = dict(
        train_shards=str(shards.train),
        val_shards=str(shards.val),
        crop_seconds=1.0,
        batch_size=2,
        samples_per_epoch=8,
        val_samples=5,
        shuffle_buffer=4,
    )
    values.update(changes)
    return AudioDataConfig(**values)


def test_batches_have_fixed_shape_and_mask_marks_padding(audio_shards):
    datamodule = AudioDataModule(make_config(audio_shards, crop_seconds=1.5))
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 4  # samples_per_epoch // batch_size
    for batch in batches:
        assert batch["wav"].shape == (2, 24000) and batch["wav"].dtype == torch.float32
        assert batch["mask"].shape == (2, 24000) and batch["mask"].dtype == torch.bool
        # padding is silent, and clips shorter than the crop (0.8 s, 1.2 s) are padded
        assert torch.all(batch["wav"][~batch["mask"]] == 0)
    real_fraction = torch.cat([b["mask"].float().mean(1) for b in batches])
    assert real_fraction.min() < 1.0


def test_epochs_differ_but_runs_repeat(audio_shards):
    def two_epochs():
        loader = AudioDataModule(make_config(audio_shards)).train_dataloader()
        return [[key for batch in loader for key in batch["key"]] for _ in range(2)]

    first, second = two_epochs(), two_epochs()
    assert first == second  # same seed, same stream
    assert first[0] != first[1]  # a new epoch draws new shards/crops


def test_validation_has_fixed_length_and_start_crops(audio_shards):
    datamodule = AudioDataModule(make_config(audio_shards, num_workers=0))
    loader = datamodule.val_dataloader()
    batches = list(loader)
    assert sum(len(b["key"]) for b in batches) == 5 and len(loader) == len(batches) == 3
    assert [b["key"] for b in batches] == [b["key"] for b in datamodule.val_dataloader()]


def test_more_workers_than_shards_is_refused(audio_shards):
    datamodule = AudioDataModule(make_config(audio_shards, num_workers=5))
    with pytest.raises(ValueError, match="4 training shards cannot be split"):
        next(iter(datamodule.train_dataloader()))


def test_wrong_sample_rate_names_the_setting(audio_shards):
    datamodule = AudioDataModule(make_config(audio_shards, sample_rate=24000))
    with pytest.raises(AudioDecodeError, match="16000 Hz.*data.sample_rate is 24000"):
        datamodule.setup("fit")


class KeyRecorder(L.LightningModule):
    """Trains a scalar on the batches and remembers which sample keys it saw, in order."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[str] = []

    def training_step(self, batch, batch_index):
        self.seen.extend(batch["key"])
        return (self.scale * batch["wav"].mean() - 1).pow(2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(shards, root: Path, max_steps: int, ckpt_path=None, checkpoint_every: int | None = None) -> list[str]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = KeyRecorder()
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=checkpoint_every, save_top_k=-1,
                                 filename="step{step}", auto_insert_metric_name=False)] if checkpoint_every else []
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, default_root_dir=root, logger=False, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        enable_checkpointing=bool(checkpoint_every),
    )
    trainer.fit(model, datamodule=AudioDataModule(make_config(shards)), ckpt_path=ckpt_path, weights_only=True)
    trainer.save_checkpoint(root / "end.ckpt")
    return model.seen


@pytest.mark.parametrize("checkpoint", ["step6.ckpt", "end.ckpt"])
def test_resume_continues_the_exact_data_stream(audio_shards, tmp_path, checkpoint):
    # 4 batches an epoch. "step6": a checkpoint taken mid-run inside the 2nd epoch (the run
    # then went on, as if killed later); "end": the run stopped at max_steps=6.
    straight = fit(audio_shards, tmp_path / "straight", max_steps=10)
    first = fit(audio_shards, tmp_path / "first", max_steps=6 if checkpoint == "end.ckpt" else 7, checkpoint_every=3)
    resumed = fit(audio_shards, tmp_path / "resumed", max_steps=10, ckpt_path=tmp_path / "first" / checkpoint)
    assert len(straight) == 20 and len(resumed) == 8
    assert first[:12] + resumed == straight
    # the position travels as the loader's state_dict in Lightning's loop state: epoch 1, 2 of its 4 batches done
    saved = torch.load(tmp_path / "first" / checkpoint, weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]


def test_loader_state_at_an_epoch_end_continues_with_the_next_epoch(audio_shards):
    """A checkpoint taken after an epoch's last batch resumes at the next epoch's start, as a straight run does."""
    module = AudioDataModule(make_config(audio_shards))
    straight = module.train_dataloader()
    epochs = [[key for batch in straight for key in batch["key"]] for _ in range(2)]
    resumed = module.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 4})
    assert [key for batch in resumed for key in batch["key"]] == epochs[1]
    assert resumed.state_dict() == {"epoch": 1, "batches": 4}


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L, torch
    sys.path.insert(0, {tests_dir!r})
    from test_datamodule import KeyRecorder, make_config
    from types import SimpleNamespace
    from audiolm_pl.data.datamodule import AudioDataModule

    shards = SimpleNamespace(train={train!r}, val={val!r})
    model = KeyRecorder()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir={root!r})
    trainer.fit(model, datamodule=AudioDataModule(make_config(shards)))
    with open({root!r} + f"/rank{{trainer.global_rank}}.json", "w") as handle:
        json.dump(model.seen, handle)
    """
)


def test_ddp_ranks_read_disjoint_shards_in_step(audio_shards, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(
        tests_dir=str(Path(__file__).parent), train=str(audio_shards.train), val=str(audio_shards.val), root=str(tmp_path)
    ))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 12  # both ranks ran 6 steps of 2 samples
    assert not set(seen[0]) & set(seen[1])  # split_by_node: no sample is read by both ranks
