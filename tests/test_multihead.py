"""attncourse.multihead against independent oracles.

Oracles: an explicit loop over heads with plain torch ops, ``torch.nn.MultiheadAttention``
with copied weights, and torch SDPA (MATH backend, ``enable_gqa=True``) for GQA/MQA.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

from attncourse.masks import causal_mask, padding_mask
from attncourse.multihead import (CrossAttention, MultiHeadAttention, SelfAttention, attention_param_count,
                                  merge_heads, param_count, self_attention, split_heads)
from attncourse.testing import assert_matches


def _loop_oracle(x, context, m, *, causal=False, key_keep=None):
    """softmax(Q_h K_gᵀ/√D) V_g per head h with plain ops; g = h // (H // Hkv).

    ``key_keep: (B, Tk)`` bool, True = real key. Returns ``(B, Tq, C)`` and weights ``(B, H, Tq, Tk)``.
    """
    B, Tq, _ = x.shape
    Tk = context.shape[1]
    H, Hkv, D = m.n_heads, m.n_kv_heads, m.d_head
    q = x @ m.w_q.weight.T + (m.w_q.bias if m.w_q.bias is not None else 0)
    k = context @ m.w_k.weight.T + (m.w_k.bias if m.w_k.bias is not None else 0)
    v = context @ m.w_v.weight.T + (m.w_v.bias if m.w_v.bias is not None else 0)
    heads, weights = [], []
    for h in range(H):
        g = h // (H // Hkv)
        qh, kh, vh = q[..., h * D:(h + 1) * D], k[..., g * D:(g + 1) * D], v[..., g * D:(g + 1) * D]
        s = qh @ kh.transpose(1, 2) / math.sqrt(D)  # (B, Tq, Tk)
        if causal:
            i = torch.arange(Tq)[:, None] + (Tk - Tq)
            j = torch.arange(Tk)[None, :]
            s = s.masked_fill(j > i, float("-inf"))
        if key_keep is not None:
            s = s.masked_fill(~key_keep[:, None, :], float("-inf"))
        w = torch.softmax(s, dim=-1)
        heads.append(w @ vh)
        weights.append(w)
    out = torch.cat(heads, dim=-1) @ m.w_o.weight.T + (m.w_o.bias if m.w_o.bias is not None else 0)
    return out, torch.stack(weights, dim=1)


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("B,T,C,H", [(3, 1, 6, 3), (2, 97, 12, 4), (1, 5, 7, 7)])
def test_split_merge_roundtrip_and_layout(B, T, C, H):
    x = _randn(B, T, C)
    s = split_heads(x, H)
    assert s.shape == (B, H, T, C // H)
    # head h holds channels h·D .. (h+1)·D - 1
    assert torch.equal(s[:, 1 % H], x[..., (1 % H) * (C // H):((1 % H) + 1) * (C // H)])
    assert torch.equal(merge_heads(s), x)


def test_split_heads_rejects_indivisible_width():
    with pytest.raises(ValueError, match="C=10.*n_heads=4"):
        split_heads(torch.zeros(1, 2, 10), 4)


# ----------------------------------------------------------------- single-head (ch. 02)
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_function_matches_plain_formula(causal):
    x = _randn(3, 9, 5)
    wq, wk, wv = _randn(5, 4, seed=1), _randn(5, 4, seed=2), _randn(5, 3, seed=3)
    q, k, v = x @ wq, x @ wk, x @ wv
    s = q @ k.transpose(1, 2) / 2.0  # √4
    if causal:
        s = s.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    expected = torch.softmax(s, -1) @ v
    assert_matches(self_attention(x, wq, wk, wv, causal=causal), expected)


def test_self_attention_module_matches_function():
    torch.manual_seed(0)
    m = SelfAttention(6, d_k=4, d_v=2, causal=True).double()
    x = _randn(3, 7, 6)
    out, w = m(x, return_weights=True)
    ref = self_attention(x, m.w_q.weight.T, m.w_k.weight.T, m.w_v.weight.T, causal=True)
    assert out.shape == (3, 7, 2) and w.shape == (3, 7, 7)
    assert_matches(out, ref)
    with pytest.raises(ValueError, match=r"\(B, T, 6\).*\(3, 7, 5\)"):
        m(_randn(3, 7, 5))


# ------------------------------------------------------- multi-head vs the loop oracle
@pytest.mark.parametrize("C,H,Hkv", [(12, 4, 4), (12, 4, 2), (12, 4, 1), (6, 6, 3), (15, 3, 3), (8, 1, 1)])
@pytest.mark.parametrize("T", [1, 97])
@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_loop_over_heads(C, H, Hkv, T, causal):
    torch.manual_seed(C * 100 + H * 10 + Hkv)
    m = MultiHeadAttention(C, H, Hkv, bias=True, causal=causal).double()
    x = _randn(3, T, C, seed=T)
    out, w = m(x, return_weights=True)
    ref_out, ref_w = _loop_oracle(x, x, m, causal=causal)
    assert_matches(out, ref_out, what="output")
    assert_matches(w, ref_w, what="weights")
    assert_matches(w.sum(-1), torch.ones(3, H, T, dtype=torch.float64), what="row sums")


def test_mha_float32_matches_float64_loop():
    torch.manual_seed(1)
    m = MultiHeadAttention(20, 4, 2, causal=True)
    x = torch.randn(3, 31, 20)
    ref, _ = _loop_oracle(x.double(), x.double(), m.double(), causal=True)
    out = m.float()(x)
    assert out.dtype == torch.float32
    assert_matches(out, ref.float())


def test_mha_padding_mask_matches_loop():
    torch.manual_seed(2)
    m = MultiHeadAttention(12, 3).double()
    x = _randn(3, 10, 12)
    lengths = torch.tensor([10, 4, 1])
    keep = padding_mask(lengths, 10)  # (B, 1, 1, T)
    out = m(x, mask=keep)
    ref, _ = _loop_oracle(x, x, m, key_keep=keep[:, 0, 0])
    assert_matches(out, ref)


# ------------------------------------------------- against torch.nn.MultiheadAttention
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("C,H,T", [(16, 4, 97), (9, 3, 1), (6, 6, 13)])
def test_from_torch_matches_torch_mha(bias, C, H, T):
    torch.manual_seed(3)
    ref = torch.nn.MultiheadAttention(C, H, bias=bias, batch_first=True).double().eval()
    m = MultiHeadAttention.from_torch(ref)
    x = _randn(3, T, C)
    expected, expected_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    out, w = m(x, return_weights=True)
    assert_matches(out, expected)
    assert_matches(w, expected_w)


def test_causal_and_key_padding_match_torch_mha():
    torch.manual_seed(4)
    ref = torch.nn.MultiheadAttention(12, 4, batch_first=True).double().eval()
    m = MultiHeadAttention.from_torch(ref, causal=True)
    T = 11
    x = _randn(3, T, 12)
    lengths = torch.tensor([11, 7, 3])
    keep = padding_mask(lengths, T)  # (B, 1, 1, T), True = real token
    # torch's masks say True = IGNORE: the opposite polarity.
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(T), key_padding_mask=~keep[:, 0, 0], need_weights=False)
    out = m(x, mask=keep)
    assert_matches(out, expected)


def test_to_torch_roundtrip():
    torch.manual_seed(5)
    m = MultiHeadAttention(10, 5, bias=True).double()
    x = _randn(2, 6, 10)
    mha = m.to_torch().eval()
    assert_matches(mha(x, x, x, need_weights=False)[0], m(x))
    with pytest.raises(ValueError, match="n_kv_heads=1"):
        MultiHeadAttention(10, 5, 1).to_torch()


def test_cross_attention_matches_torch_mha_with_kdim():
    torch.manual_seed(6)
    ref = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=5, batch_first=True).double().eval()
    m = CrossAttention.from_torch(ref)
    assert m.d_context == 5
    x, ctx = _randn(3, 4, 8), _randn(3, 9, 5, seed=1)
    keep = padding_mask([9, 2, 5], 9)
    expected, _ = ref(x, ctx, ctx, key_padding_mask=~keep[:, 0, 0], need_weights=False)
    assert_matches(m(x, ctx, mask=keep), expected)
    assert_matches(m.to_torch().eval()(x, ctx, ctx, need_weights=False)[0], m(x, ctx))


# ------------------------------------------------------- against SDPA with enable_gqa
@pytest.mark.parametrize("H,Hkv", [(8, 8), (8, 4), (8, 2), (8, 1), (6, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_gqa_mqa_match_sdpa_math(H, Hkv, causal):
    torch.manual_seed(7)
    C, T = 5 * H, 33  # odd head dim 5
    m = MultiHeadAttention(C, H, Hkv, causal=causal).double()
    x = _randn(3, T, C)
    q = split_heads(m.w_q(x), H)
    k, v = split_heads(m.w_k(x), Hkv), split_heads(m.w_v(x), Hkv)
    with sdpa_kernel(SDPBackend.MATH):
        o = scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    assert_matches(m(x), m.w_o(merge_heads(o)))


def test_head_dim_one():
    torch.manual_seed(8)
    m = MultiHeadAttention(4, 4, 2).double()
    x = _randn(3, 5, 4)
    assert_matches(m(x), _loop_oracle(x, x, m)[0])


# --------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("H", [1, 2, 4, 8, 16, 64])
def test_mha_has_4_d_model_squared_parameters_for_every_head_count(H):
    C = 64
    assert param_count(MultiHeadAttention(C, H)) == 4 * C * C == attention_param_count(C, H)


@pytest.mark.parametrize("H,Hkv", [(8, 8), (8, 4), (8, 2), (8, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_gqa_mqa_parameter_counts(H, Hkv, bias):
    C, D = 64, 8
    expected = 2 * C * C + 2 * C * Hkv * D + (2 * C + 2 * Hkv * D if bias else 0)
    m = MultiHeadAttention(C, H, Hkv, bias=bias)
    assert param_count(m) == expected == attention_param_count(C, H, Hkv, bias=bias)
    assert m.w_k.weight.shape == m.w_v.weight.shape == (Hkv * D, C)


def test_cross_attention_parameter_count():
    m = CrossAttention(16, 4, d_context=6, n_kv_heads=2)
    assert param_count(m) == attention_param_count(16, 4, 2, d_context=6) == 2 * 16 * 16 + 2 * 6 * 8


# ------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("args,pattern", [
    ((10, 4), r"d_model=10.*n_heads=4"),
    ((12, 4, 3), r"n_heads=4.*n_kv_heads=3"),
    ((0, 4), r"d_model.*0"),
    ((12, -2), r"n_heads.*-2"),
    ((12, 4, 0), r"n_kv_heads.*0"),
])
def test_bad_configurations_name_the_numbers(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        MultiHeadAttention(*args)


def test_wrong_input_width_names_shapes():
    m = MultiHeadAttention(12, 4)
    with pytest.raises(ValueError, match=r"\(B, T, 12\).*\(2, 5, 10\)"):
        m(torch.zeros(2, 5, 10))
    with pytest.raises(ValueError, match=r"\(B, T, 12\).*\(5, 12\)"):
        m(torch.zeros(5, 12))


def test_cross_attention_mismatched_widths():
    m = CrossAttention(12, 4, d_context=7)
    with pytest.raises(ValueError, match=r"context.*\(B, T, 7\).*\(2, 3, 12\)"):
        m(torch.zeros(2, 5, 12), torch.zeros(2, 3, 12))
    with pytest.raises(ValueError, match=r"queries.*\(B, T, 12\).*\(2, 5, 7\)"):
        m(torch.zeros(2, 5, 7), torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="batch size"):
        m(torch.zeros(2, 5, 12), torch.zeros(3, 3, 7))


# ------------------------------------------------------------------- symmetry properties
def test_self_attention_is_permutation_equivariant_without_positions():
    torch.manual_seed(9)
    m = MultiHeadAttention(12, 3).double()
    x = _randn(3, 17, 12)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(1))
    assert_matches(m(x[:, perm]), m(x)[:, perm])


def test_causal_mask_breaks_permutation_equivariance():
    torch.manual_seed(9)
    m = MultiHeadAttention(12, 3, causal=True).double()
    x = _randn(3, 17, 12)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(1))
    assert (m(x[:, perm]) - m(x)[:, perm]).abs().max() > 1e-3


# --------------------------------------------------------------------- cross-attention
@pytest.mark.parametrize("Tq,Tk", [(1, 97), (13, 5), (7, 1)])
def test_cross_attention_matches_loop(Tq, Tk):
    torch.manual_seed(10)
    m = CrossAttention(12, 4, d_context=9, n_kv_heads=2, bias=True).double()
    x, ctx = _randn(3, Tq, 12), _randn(3, Tk, 9, seed=1)
    out, w = m(x, ctx, return_weights=True)
    ref, ref_w = _loop_oracle(x, ctx, m)
    assert out.shape == (3, Tq, 12) and w.shape == (3, 4, Tq, Tk)
    assert_matches(out, ref)
    assert_matches(w, ref_w)


def test_padded_context_positions_have_no_influence():
    torch.manual_seed(11)
    m = CrossAttention(8, 2, d_context=6).double()
    lengths = torch.tensor([9, 4, 1])
    x, ctx = _randn(3, 5, 8), _randn(3, 9, 6, seed=1)
    keep = padding_mask(lengths, 9)
    out, w = m(x, ctx, mask=keep, return_weights=True)
    noisy = ctx.clone()
    noisy[~keep[:, 0, 0]] = 1e3 * _randn(int((~keep).sum()), 6, seed=2)  # garbage in the padding
    assert_matches(m(x, noisy, mask=keep), out)
    # ...and equals attending to the unpadded context alone
    for b, n in enumerate(lengths.tolist()):
        assert_matches(m(x[b:b + 1], ctx[b:b + 1, :n]), out[b:b + 1])
    assert float(w.detach().masked_select(~keep.expand_as(w)).abs().max()) == 0.0


# -------------------------------------------------------------------------- gradients
def test_gradcheck_mha_gqa_causal():
    torch.manual_seed(12)
    m = MultiHeadAttention(4, 2, 1, bias=True, causal=True).double()
    x = _randn(2, 3, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))


def test_gradcheck_cross_attention_with_padding():
    torch.manual_seed(13)
    m = CrossAttention(4, 2, d_context=3).double()
    x = _randn(2, 3, 4).requires_grad_()
    ctx = _randn(2, 5, 3, seed=1).requires_grad_()
    keep = padding_mask([5, 2], 5)
    assert torch.autograd.gradcheck(lambda a, c: m(a, c, mask=keep), (x, ctx))


def test_gradients_reach_every_parameter():
    torch.manual_seed(14)
    m = MultiHeadAttention(12, 4, 2, bias=True)
    m(torch.randn(3, 7, 12)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_in_training_and_weights_unchanged():
    torch.manual_seed(15)
    m = MultiHeadAttention(12, 4, dropout=0.5)
    x = torch.randn(3, 7, 12)
    m.eval()
    a = m(x)
    assert torch.equal(a, m(x))
    m.train()
    assert (m(x) - a).abs().max() > 1e-3
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(12, 4, dropout=1.0)
