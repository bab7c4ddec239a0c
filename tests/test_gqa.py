"""attncourse.gqa against independent oracles.

Oracles: ``attention`` on K/V repeated with ``repeat_interleave`` (the conventions' grouping),
torch SDPA (MATH backend) with ``enable_gqa=True``, explicit loops over heads, and a model whose
K/V heads are already equal within each group (so mean-pooling must change nothing).
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

from attncourse.bench import peak_memory
from attncourse.core import attention
from attncourse.gqa import convert_to_gqa, decode_attention_cost, grouped_attention, mean_pool_kv_heads
from attncourse.masks import causal_mask, padding_mask
from attncourse.model import TinyGPT
from attncourse.multihead import MultiHeadAttention
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _copying(q, k, v, **kw):
    g = q.shape[-3] // k.shape[-3]
    return attention(q, k.repeat_interleave(g, -3), v.repeat_interleave(g, -3), **kw)


@pytest.mark.parametrize("H,Hkv", [(1, 1), (4, 4), (4, 2), (6, 3), (8, 1), (6, 2)])
@pytest.mark.parametrize("Tq,Tk", [(1, 1), (1, 97), (5, 9), (9, 5)])
def test_grouped_equals_copying_and_sdpa(H, Hkv, Tq, Tk):
    B, D = 2, 7
    q, k, v = _randn(B, H, Tq, D, seed=1), _randn(B, Hkv, Tk, D, seed=2), _randn(B, Hkv, Tk, 3, seed=3)
    mask = causal_mask(Tq, Tk)
    got = grouped_attention(q, k, v, mask=mask)
    assert_matches(got, _copying(q, k, v, mask=mask))
    with sdpa_kernel([SDPBackend.MATH]):
        want = scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    rows = mask.any(-1)                                              # SDPA gives NaN on fully masked rows
    assert_matches(got[..., rows, :], want[..., rows, :])
    assert float(got[..., ~rows, :].abs().sum()) == 0.0              # the course gives zeros


def test_grouping_convention_is_consecutive_heads():
    # K/V head g is all g's: query head h must read h // (H // Hkv), never h % Hkv (the `repeat` order).
    H, Hkv, T = 6, 2, 3
    q = torch.zeros(1, H, 1, 4)
    k = torch.zeros(1, Hkv, T, 4)
    v = torch.arange(Hkv, dtype=torch.float32).view(1, Hkv, 1, 1).expand(1, Hkv, T, 4).contiguous()
    out = grouped_attention(q, k, v)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_per_head_mask_and_bias_fold_correctly():
    B, H, Hkv, Tq, Tk, D = 2, 6, 2, 4, 7, 5
    q, k, v = _randn(B, H, Tq, D, seed=4), _randn(B, Hkv, Tk, D, seed=5), _randn(B, Hkv, Tk, D, seed=6)
    mask = torch.rand(B, H, Tq, Tk, generator=torch.Generator().manual_seed(7)) > 0.3
    bias = _randn(1, H, Tq, Tk, seed=8) * 3
    got, w = grouped_attention(q, k, v, mask=mask, bias=bias, return_weights=True)
    want, ww = _copying(q, k, v, mask=mask, bias=bias, return_weights=True)
    assert_matches(got, want)
    assert_matches(w, ww)
    pad = padding_mask([7, 3], Tk)                                   # (B, 1, 1, Tk)
    assert_matches(grouped_attention(q, k, v, mask=pad, scale=0.3), _copying(q, k, v, mask=pad, scale=0.3))


def test_grouped_gradients_match_copying():
    q, k, v = _randn(2, 4, 3, 5, seed=9), _randn(2, 2, 6, 5, seed=10), _randn(2, 2, 6, 5, seed=11)
    ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
    g = _randn(2, 4, 3, 5, seed=12)
    got = torch.autograd.grad(grouped_attention(*ins, mask=causal_mask(3, 6)), ins, g)
    want = torch.autograd.grad(_copying(*ref, mask=causal_mask(3, 6)), ref, g)
    for a, b in zip(got, want):
        assert_matches(a, b)
    assert torch.autograd.gradcheck(lambda *t: grouped_attention(*t, mask=causal_mask(3, 6)), ins)


def test_grouped_does_not_copy_kv():
    # A decode step against a long cache: the copying version materialises G copies of K and V.
    H, Hkv, T, D = 8, 1, 2048, 64
    q, k, v = (torch.randn(1, h, t, D) for h, t in ((H, 1), (Hkv, T), (Hkv, T)))
    one_copy = (H // Hkv) * k.nbytes                                 # K repeated to H heads
    assert peak_memory(grouped_attention, q, k, v) < one_copy / 4
    assert peak_memory(_copying, q, k, v) >= 2 * one_copy


def test_grouped_errors():
    q = torch.zeros(1, 6, 2, 4)
    with pytest.raises(ValueError, match="6 query heads cannot be grouped over 4"):
        grouped_attention(q, torch.zeros(1, 4, 3, 4), torch.zeros(1, 4, 3, 4))
    with pytest.raises(ValueError, match="same number of K/V heads"):
        grouped_attention(q, torch.zeros(1, 2, 3, 4), torch.zeros(1, 3, 3, 4))
    with pytest.raises(ValueError, match="must be"):
        grouped_attention(torch.zeros(2, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))


# ------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("Hkv,new", [(8, 4), (8, 1), (6, 3), (4, 4)])
def test_mean_pool_matches_loop(Hkv, new):
    D, C = 3, 5
    w = _randn(Hkv * D, C)
    r = Hkv // new
    want = torch.cat([sum(w[(g * r + j) * D:(g * r + j + 1) * D] for j in range(r)) / r for g in range(new)])
    assert_matches(mean_pool_kv_heads(w, Hkv, new), want)
    b = _randn(Hkv * D, seed=1)
    want_b = torch.cat([sum(b[(g * r + j) * D:(g * r + j + 1) * D] for j in range(r)) / r for g in range(new)])
    assert_matches(mean_pool_kv_heads(b, Hkv, new), want_b)
    with pytest.raises(ValueError, match="cannot be grouped"):
        mean_pool_kv_heads(w, Hkv, Hkv + 1)


def test_convert_is_exact_when_group_heads_are_equal():
    torch.manual_seed(0)
    H, G, D, C = 6, 3, 4, 24
    m = TinyGPT(11, 20, d_model=C, n_heads=H, n_layers=2).double().eval()
    with torch.no_grad():                                            # make K/V heads equal within each group
        for blk in m.blocks:
            for lin in (blk.attn.w_k, blk.attn.w_v):
                heads = lin.weight.view(H, D, C)
                lin.weight.copy_(heads[::G].repeat_interleave(G, 0).reshape(H * D, C))
    gqa = convert_to_gqa(m, 2)
    x = torch.randint(0, 11, (3, 20), generator=torch.Generator().manual_seed(1))
    assert all(b.attn.n_kv_heads == 2 and b.attn.w_k.weight.shape == (2 * D, C) for b in gqa.blocks)
    assert all(b.attn.n_kv_heads == H for b in m.blocks)             # the original is untouched
    assert_matches(gqa(x), m(x))
    assert torch.equal(gqa.generate(x[:, :4], 10), gqa.generate(x[:, :4], 10, use_cache=False))


def test_convert_pools_bias_and_keeps_other_weights():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 4, bias=True, causal=True)
    wrapper = torch.nn.Sequential(mha)
    out = convert_to_gqa(wrapper, 1)[0]
    assert torch.equal(out.w_k.bias, mha.w_k.bias.view(4, 3).mean(0))
    assert torch.equal(out.w_q.weight, mha.w_q.weight) and torch.equal(out.w_o.weight, mha.w_o.weight)
    with pytest.raises(ValueError, match="cannot be grouped"):
        convert_to_gqa(wrapper, 3)


def test_decode_cost_formula():
    c = decode_attention_cost(32, 8, 128, 4096)
    assert c["flops"] == 4 * 32 * 128 * 4096
    assert c["bytes"] == 2 * (2 * 8 * 128 * 4096 + 2 * 32 * 128)
    mha, mqa = decode_attention_cost(32, 32, 128, 4096), decode_attention_cost(32, 1, 128, 4096)
    assert 0.99 < mha["intensity"] < 1.0 and 31 < mqa["intensity"] < 32


# ------------------------------------------------------------------ the chapter 09 task
def test_lookback_targets_are_the_looked_up_tuples():
    from attncourse.data import IGNORE, lookback, lookback_vocab
    b = lookback(5, 12, lags=(1, 3, 5), vocab_size=4, seed=3)
    assert b.x.shape == b.y.shape == (5, 12) and lookback_vocab(4, 3) == 68
    assert (b.y[:, :5] == IGNORE).all() and int(b.x.max()) < 4
    for i in range(5):
        for t in range(5, 12):
            a, c, d = (int(b.x[i, t - lag]) for lag in (1, 3, 5))
            assert int(b.y[i, t]) == 4 + 16 * a + 4 * c + d
    assert torch.equal(lookback(2, 12, seed=1).x, lookback(2, 12, seed=1).x)
    with pytest.raises(ValueError, match="lags must be in 1..length-1=11"):
        lookback(2, 12, lags=(0, 3))
