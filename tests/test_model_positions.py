"""TinyGPT's position schemes (chapters 10-11): RoPE and ALiBi inside attention, with a KV cache."""
from __future__ import annotations

import pytest
import torch

from attncourse.alibi import alibi_bias
from attncourse.core import attention
from attncourse.masks import causal_mask
from attncourse.model import POSITION_SCHEMES, TinyGPT
from attncourse.multihead import MultiHeadAttention, merge_heads, split_heads
from attncourse.rope import apply_rope, pi_frequencies, yarn_frequencies
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def model(pos, **kw):
    torch.manual_seed(0)
    return TinyGPT(11, 40, d_model=24, n_heads=3, n_layers=2, pos=pos, **kw).eval()


@pytest.mark.parametrize("pos,n_kv_heads", [("rope", None), ("rope", 1), ("alibi", None)])
def test_cached_generation_equals_recomputation(pos, n_kv_heads):
    m = model(pos, n_kv_heads=n_kv_heads)
    prompt = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(1))
    cached = m.generate(prompt, 6, use_cache=True)
    full = m.generate(prompt, 6, use_cache=False)
    assert torch.equal(cached, full)
    # and the logits of every decoding step agree with one forward pass over the whole sequence
    caches = m.make_caches(2, cached.shape[1])
    step_logits = [m(cached[:, :7], caches=caches, start_pos=0)]
    for t in range(7, cached.shape[1]):
        step_logits.append(m(cached[:, t:t + 1], caches=caches, start_pos=t))
    assert_matches(torch.cat(step_logits, dim=1), m(cached), rtol=1e-4, atol=1e-5)


def test_rope_layer_matches_manual_rotation():
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, 2, causal=True, rope=True).eval()
    x = torch.randn(2, 5, 16)
    pos = torch.arange(5)
    q, k, v = (split_heads(lin(x), 2) for lin in (mha.w_q, mha.w_k, mha.w_v))    # (B, H, T, D)
    want = mha.w_o(merge_heads(attention(apply_rope(q, pos), apply_rope(k, pos), v, mask=causal_mask(5))))
    assert_matches(mha(x), want)


@pytest.mark.parametrize("causal", [True, False])
def test_alibi_layer_matches_bias(causal):
    torch.manual_seed(3)
    mha = MultiHeadAttention(18, 3, causal=causal, alibi=True).eval()
    x = torch.randn(2, 6, 18)
    q, k, v = (split_heads(lin(x), 3) for lin in (mha.w_q, mha.w_k, mha.w_v))
    bias = alibi_bias(3, 6, 6, symmetric=not causal)
    want = mha.w_o(merge_heads(attention(q, k, v, bias=bias, mask=causal_mask(6) if causal else None)))
    assert_matches(mha(x), want)


def test_relative_schemes_ignore_a_position_shift():
    # RoPE, ALiBi and NoPE see offsets only: tokens at positions 5.. give the logits they give at 0..;
    # the absolute schemes (the control) do not.
    idx = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(4))
    for pos in POSITION_SCHEMES:
        m = model(pos)
        change = (m(idx, start_pos=5) - m(idx)).abs().max().item()
        if pos in ("rope", "alibi", "none"):
            assert change < 1e-5, (pos, change)
        else:
            assert change > 1e-3, (pos, change)


@pytest.mark.parametrize("pos", POSITION_SCHEMES)
def test_every_scheme_runs_and_trains(pos):
    m = model(pos).train()
    idx = torch.randint(0, 11, (3, 10), generator=torch.Generator().manual_seed(5))
    logits = m(idx)
    assert logits.shape == (3, 10, 11)
    logits.sum().backward()
    n_pos = sum(p.numel() for n, p in m.named_parameters() if n.startswith("pos_emb"))
    assert n_pos == (40 * 24 if pos == "learned" else 0)


def test_set_rope_frequencies():
    m = model("rope")
    idx = torch.randint(0, 11, (1, 12), generator=torch.Generator().manual_seed(6))
    plain = m(idx)
    m.set_rope_frequencies(pi_frequencies(8, 4.0))
    assert (m(idx) - plain).abs().max() > 1e-4
    f, a = yarn_frequencies(8, 2.0, 6)
    m.set_rope_frequencies(f, a)
    assert m.blocks[0].attn.rope_attention_factor == a
    m.set_rope_frequencies(None)
    assert_matches(m(idx), plain)
    with pytest.raises(ValueError):
        model("alibi").set_rope_frequencies(None)


def test_bad_configurations():
    with pytest.raises(ValueError):
        TinyGPT(5, 8, pos="relative")
    with pytest.raises(ValueError):
        MultiHeadAttention(15, 3, rope=True)                     # head dim 5 is odd
    with pytest.raises(ValueError):
        MultiHeadAttention(16, 2, rope=True, alibi=True)
