"""FSDP2 on 2 CPU processes (`--trainer fsdp_cpu`) for our SSL model: it trains from real audio shards with its
conv feature encoder and every transformer layer `fully_shard`-ed (activation checkpointing on), saves a sharded
checkpoint, resumes from it, and is consolidated into the single file that the `ssl:` feature source reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_semantic_tokenizer, synthetic_voice

from audiolm_pl.checkpoint import CheckpointError, is_sharded, load_raw
from audiolm_pl.cli import main
from audiolm_pl.semantic.ssl_model import SSLModel, SSLModelConfig, load_ssl_model

FSDP_SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from torch.distributed.fsdp import FSDPModule
    from audiolm_pl.semantic import ssl_lightning
    from audiolm_pl.training import fit_stage, load_stage_config

    units = []
    configure_model = ssl_lightning.SSLLightning.configure_model

    def recording_configure_model(self):  # the real method, then a note of the FSDP units it made
        configure_model(self)
        units[:] = [name for name, module in self.model.named_modules() if isinstance(module, FSDPModule)]

    ssl_lightning.SSLLightning.configure_model = recording_configure_model

    def config(steps):
        return load_stage_config("ssl", "tiny", "fsdp_cpu", [
            "targets.tokenizer={tokenizer}", "data.train_shards={train}", "data.val_shards={val}",
            "data.batch_size=2", "data.val_samples=2", "data.num_workers=0", "model.activation_checkpointing=true",
            "trainer.output_dir={root}", "trainer.run_name=ssl", "trainer.enable_progress_bar=false",
            f"trainer.max_steps={{steps}}", "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=0",
            "trainer.limit_val_batches=1"])

    first = fit_stage("ssl", config(2))
    report = {{"first": {{"step": first.step, "loss": first.metrics["train/loss"], "units": list(units)}}}}
    # resume from the sharded last.ckpt: one more step, not three from scratch
    resumed = fit_stage("ssl", config(3))
    report["resumed"] = {{"step": resumed.step, "val_loss": resumed.metrics["val/loss"]}}
    if torch.distributed.get_rank() == 0:
        with open("{root}/report.json", "w") as handle:
            json.dump(report, handle)
    """
)


@pytest.fixture(scope="module")
def ssl_fsdp_run(audio_shards, tmp_path_factory):
    """One 2-process launch: the tiny SSL model trains 2 steps under fsdp_cpu, then resumes for a third."""
    root = tmp_path_factory.mktemp("ssl_fsdp")
    make_semantic_tokenizer(audio_shards.train, root / "mfcc.safetensors")  # iteration-1 targets: MFCC k-means
    script = root / "ssl_fsdp_run.py"
    script.write_text(FSDP_SCRIPT.format(tokenizer=root / "mfcc.safetensors", train=audio_shards.train,
                                         val=audio_shards.val, root=root))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400, env=env,
                            cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return root, json.loads((root / "report.json").read_text())


def test_ssl_model_is_sharded_per_layer_then_as_a_whole(ssl_fsdp_run):
    from audiolm_pl.checkpoint import _metadata_checked_reader

    root, report = ssl_fsdp_run
    assert report["first"]["units"] == ["", "encoder.feature_extractor", "encoder.encoder.layers.0",
                                        "encoder.encoder.layers.1"]
    assert torch.isfinite(torch.tensor(report["first"]["loss"]))
    # each rank wrote its own half of a layer's weight: a module left unsharded would be written whole by rank 0
    metadata = _metadata_checked_reader(root / "ssl" / "checkpoints" / "last.ckpt").read_metadata()
    weight = metadata.state_dict_metadata["state_dict.model.encoder.encoder.layers.0.attention.q_proj.weight"]
    assert [tuple(chunk.offsets) for chunk in weight.chunks] == [(0, 0), (32, 0)]


def test_resume_from_sharded_checkpoint_continues_the_step_count(ssl_fsdp_run):
    root, report = ssl_fsdp_run
    last = root / "ssl" / "checkpoints" / "last.ckpt"
    assert report["first"]["step"] == 2 and is_sharded(last)
    metadata = torch.load(last / "meta.pt", weights_only=True)
    # 2 restored + 1 more: a resume that lost the step count would run 3 afresh
    assert metadata["global_step"] == 3 and report["resumed"]["step"] > report["first"]["step"]
    assert metadata["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 3


def test_consolidated_ssl_run_is_a_feature_source(ssl_fsdp_run, audio_shards):
    from audiolm_pl.config import from_dict
    from audiolm_pl.semantic import load_tokenizer
    from audiolm_pl.semantic.ssl_lightning import SSLRunConfig, build

    root, report = ssl_fsdp_run
    run = root / "ssl"
    with pytest.raises(CheckpointError, match="checkpoint consolidate"):
        load_ssl_model(run)  # the sharded directory is not read as if it were a file
    assert main(["checkpoint", "consolidate", str(run)]) == 0
    raw = load_raw(run / "checkpoints" / "consolidated.ckpt")
    # the keys and shapes of a single-process module of this config: `model.` prefix, full tensors, no targets
    config = raw["hyper_parameters"]["config"]
    single, _ = build(from_dict(SSLRunConfig, config))  # the run's own config, built in one process
    assert {k: tuple(v.shape) for k, v in raw["state_dict"].items()} == \
           {k: tuple(v.shape) for k, v in single.state_dict().items()}
    assert raw["hyper_parameters"]["stage"] == "ssl" and raw["global_step"] == 3
    assert "optimizer_states" not in raw  # inference only: resume reads the sharded directory
    assert config["model"]["activation_checkpointing"] is True

    # the command a user runs next: k-means on the consolidated model's layer-1 features, then encode at 25 Hz
    out = root / "ssl_v1.safetensors"
    assert main(["semantic", "kmeans", "--source", f"ssl:{run}", "--layer", "1", "--shards", str(audio_shards.train),
                 "--clusters", "4", "--epochs", "2", "--batch-size", "256", "--device", "cpu",
                 "--out", str(out)]) == 0
    tokenizer = load_tokenizer(out)
    wav = torch.from_numpy(synthetic_voice(140, 1.0, 16000, seed=7))[None]  # (1, 16000)
    ids = tokenizer.encode(wav)
    assert ids.shape == (1, 25) and int(ids.max()) < 4
    model = load_ssl_model(run)  # the run directory resolves to consolidated.ckpt
    assert torch.equal(model.head.weight, raw["state_dict"]["model.head.weight"])


def _saved_bytes_and_grads(activation_checkpointing: bool) -> tuple[int, dict[str, torch.Tensor]]:
    """One masked-prediction step of a 2-layer SSL model: bytes autograd keeps for backward, and the gradients."""
    torch.manual_seed(0)
    model = SSLModel(SSLModelConfig(num_targets=8, dropout=0.0, activation_checkpointing=activation_checkpointing))
    model.train()
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))  # (B, T)
    masked = torch.zeros(2, int(model.num_frames(8000)), dtype=torch.bool)  # (B, T_f)
    masked[:, 5:15] = True
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(wav, mask_time_indices=masked).logits  # (B, T_f, 8)
    logits.logsumexp(-1).mean().backward()
    return sum(saved), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_keeps_less_for_backward_and_the_same_gradients():
    full_bytes, full_grads = _saved_bytes_and_grads(False)
    checkpointed_bytes, checkpointed_grads = _saved_bytes_and_grads(True)
    assert checkpointed_bytes < 0.7 * full_bytes  # the layers' inner activations are recomputed, not kept
    assert full_grads.keys() == checkpointed_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)
