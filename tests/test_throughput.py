"""audiolm_pl/throughput.py: the FLOPs the benchmarks divide by are those of a whole training step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from audiolm_pl import registry
from audiolm_pl.throughput import OneBatch, first_batch, matmul_peak, measure_steps
from audiolm_pl.training import load_stage_config


def test_fused_cpu_attention_is_counted():
    """Without the CPU kernel's registration, attention counts as 0 FLOPs on CPU."""
    query = torch.randn(2, 4, 50, 32, requires_grad=True)  # (B, nh, T, hs)
    counter = FlopCounterMode(display=False)
    with counter:
        F.scaled_dot_product_attention(query, query, query, is_causal=True).sum().backward()
    forward = 2 * (2 * 2 * 4 * 50 * 50 * 32)  # Q K^T and P V, over the full T x T scores
    assert counter.get_total_flops() == forward + 5 * forward // 2  # the backward recomputes the scores


def test_a_measured_step_counts_forward_backward_of_every_matmul(token_shards, one_thread):
    """One step through the Lightning loop counts 6 N + 12 L d T per input token (N: matmul weights, the output
    head included): what a count of the forward alone (2 N + 4 L d T) or of the head alone would miss."""
    config = load_stage_config("semantic", "tiny", "cpu", [f"data.train_shards={token_shards.train}",
                                                           f"data.val_shards={token_shards.val}", "data.batch_size=2"])
    module, datamodule = registry.get_stage("semantic").build(config)
    batch = first_batch(datamodule)
    B, T = batch["inputs"].shape
    measure = measure_steps(module, OneBatch(batch, 4), steps=2, warmup=1, device=torch.device("cpu"), count_flops=True)
    linear = sum(m.weight.numel() for m in module.model.modules() if isinstance(m, torch.nn.Linear))
    c = config.model
    assert measure.flops == B * T * (6 * linear + 12 * c.n_layer * c.d_model * T)
    assert measure.seconds > 0 and measure.peak_memory_mb > 0
    assert matmul_peak(torch.device("cpu"), torch.float32, size=128, repeats=2) > 1e6
