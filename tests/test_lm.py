"""The shared LM transformer: KV cache == full forward, causality, sampling filters, cached generation."""

from __future__ import annotations

import pytest
import torch

from audiolm_pl.lm.sampling import SamplingConfig, filter_logits, generate, sample_categorical, sample_next
from audiolm_pl.lm.transformer import TransformerConfig, TransformerLM

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


def test_activation_checkpointing_gives_same_gradients(monkeypatch):
    from audiolm_pl.lm import transformer

    model = tiny_model("t5").train()
    tokens = torch.randint(0, VOCAB, (2, 16))
    model(tokens).logsumexp(-1).mean().backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.config.activation_checkpointing = True
    checkpointed = []  # the blocks that went through torch's checkpoint

    def recording_checkpoint(block, *args, **kwargs):
        checkpointed.append(block)
        return torch.utils.checkpoint.checkpoint(block, *args, **kwargs)

    monkeypatch.setattr(transformer, "checkpoint", recording_checkpoint)
    model(tokens).logsumexp(-1).mean().backward()
    for expected, param in zip(reference, model.parameters()):
        torch.testing.assert_close(param.grad, expected)
    assert checkpointed == list(model.blocks)
    model.eval()(tokens)  # nothing to recompute without a backward pass
    assert len(checkpointed) == len(model.blocks)


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


def test_categorical_draws_follow_the_probabilities_and_never_draw_a_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]).repeat(20000, 1)
    ids = sample_categorical(probs, torch.Generator().manual_seed(0))  # (40000,)
    first, second = ids[0::2], ids[1::2]
    share = torch.bincount(first, minlength=6).float() / first.numel()
    assert (share - probs[0]).abs().max() < 0.015  # 3 standard deviations of a 0.5 share over 20,000 draws: 0.011
    assert share[[0, 2, 5]].sum() == 0 and torch.all(second == 0)
    again = sample_categorical(probs, torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)  # the generator decides every draw


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


# -- on a GPU (skipped without CUDA) ---------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_bf16_autocast_training_step_on_cuda_tracks_fp32(position):
    """The GPU trainer presets train in bf16-mixed: logits under autocast stay near fp32 and every
    parameter gets a finite fp32 gradient."""
    model = tiny_model(position).cuda().train()
    tokens = torch.randint(0, VOCAB, (4, 48), device="cuda")
    reference = model(tokens)  # (4, 48, V) fp32
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(tokens)  # (4, 48, V)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=3e-2, rtol=3e-2)
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.dtype == torch.float32, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.gpu
@pytest.mark.parametrize("position", ["t5", "rotary"])
def test_kv_cached_decoding_equals_full_forward_on_cuda(position):
    """CUDA attention kernels (flash / memory-efficient) take other paths than the CPU's."""
    model = tiny_model(position).cuda()
    tokens = torch.randint(0, VOCAB, (3, 40), device="cuda")
    with torch.no_grad():
        full = model(tokens)  # (3, 40, V)
        cache = model.new_cache(3, 40)
        pieces = [model(tokens[:, :9], cache)] + [model(tokens[:, t : t + 1], cache) for t in range(9, 40)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-3)
