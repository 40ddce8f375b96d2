"""The shared LM transformer: KV cache == full forward, causality, sampling filters, cached generation."""

from __future__ import annotations

import pytest
import torch

from audiolm_pl.lm.sampling import SamplingConfig, filter_logits, generate, sample_next
from audiolm_pl.lm.transformer import Block, TransformerConfig, TransformerLM

VOCAB = 37


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(position: str, max_seq_len: int = 64, dropout: float = 0.0) -> TransformerLM:
    torch.manual_seed(0)
    config = TransformerConfig(n_layer=2, n_head=4, d_model=32, d_ff=64, dropout=dropout,
                               position=position, rel_buckets=8, rel_max_distance=16, max_seq_len=max_seq_len)
    return TransformerLM(config, VOCAB).eval()


@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_kv_cached_decoding_equals_full_forward(position):
    model = tiny_model(position)
    tokens = torch.randint(0, VOCAB, (3, 40))
    full = model(tokens)  # (3, 40, V)
    cache = model.new_cache(3, 48)
    pieces = [model(tokens[:, :9], cache), model(tokens[:, 9:12], cache)]  # prefill, then a chunk
    pieces += [model(tokens[:, t : t + 1], cache) for t in range(12, 40)]  # one token at a time
    cached = torch.cat(pieces, dim=1)  # (3, 40, V)
    assert cache.length == 40
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_causality_no_gradient_from_future_tokens(position):
    model = tiny_model(position, dropout=0.1).train()  # dropout on: masks must hold in training too
    tokens = torch.randint(0, VOCAB, (2, 24))
    embedded = model.tok_emb(tokens).detach().requires_grad_(True)  # (2, 24, C)
    t = 10
    hidden = model.backbone(embedded)  # (2, 24, C)
    # a random projection: a plain sum of LayerNorm outputs is constant, its gradient zero up to rounding
    (hidden[:, t] * torch.randn_like(hidden[:, t])).sum().backward()
    grad_per_position = embedded.grad.abs().sum(dim=(0, 2))  # (24,)
    assert torch.all(grad_per_position[t + 1 :] == 0), "future tokens leak into position t"
    assert torch.all(grad_per_position[: t + 1] > 0), "past tokens must influence position t"


def test_activation_checkpointing_gives_same_gradients():
    model = tiny_model("t5").train()
    tokens = torch.randint(0, VOCAB, (2, 16))
    model(tokens).logsumexp(-1).mean().backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.config.activation_checkpointing = True
    model(tokens).logsumexp(-1).mean().backward()
    for expected, param in zip(reference, model.parameters()):
        torch.testing.assert_close(param.grad, expected)
    assert sum(isinstance(m, Block) for m in model.modules()) == 2


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept_k = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept_k.tolist() == [[True, True, False, False]]
    kept_p = torch.isfinite(filter_logits(logits, top_p=0.7))  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    assert kept_p.tolist() == [[True, True, False, False]]
    kept_p = torch.isfinite(filter_logits(logits, top_p=0.9))
    assert kept_p.tolist() == [[True, True, True, False]]
    assert sample_next(logits, SamplingConfig(temperature=0)).tolist() == [0]
    draws = torch.stack([sample_next(logits, SamplingConfig(top_k=1)) for _ in range(20)])
    assert torch.all(draws == 0)


@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_cached_generation_matches_uncached_within_context(position):
    model = tiny_model(position, max_seq_len=64)
    prefix = torch.randint(0, VOCAB, (2, 5))
    greedy = SamplingConfig(temperature=0)
    cached = generate(model, prefix, 30, greedy, use_cache=True)
    uncached = generate(model, prefix, 30, greedy, use_cache=False)
    assert cached.shape == (2, 30)
    assert torch.equal(cached, uncached)


def test_generation_runs_past_the_trained_context_and_obeys_allowed_ids():
    model = tiny_model("t5", max_seq_len=16)
    prefix = torch.randint(0, VOCAB, (1, 20))  # longer than the window: cropped
    only_low_ids = torch.arange(VOCAB) < 5
    out = generate(model, prefix, 50, SamplingConfig(temperature=1.0, top_p=0.9), allowed=lambda step, prev: only_low_ids)
    assert out.shape == (1, 50) and int(out.max()) < 5
    out = generate(model, prefix, 40, SamplingConfig(), use_cache=False, allowed=lambda step, prev: only_low_ids)
    assert out.shape == (1, 40) and int(out.max()) < 5
