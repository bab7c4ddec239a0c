"""attncourse.local against independent oracles.

Oracles: torch SDPA (MATH backend) with a boolean mask written as an explicit loop over (i, j)
(not ``attncourse.masks``), a per-query Python loop over exactly the visible keys, float64
gradients of dense masked attention, the formula ``L·(W - 1) + 1`` against reach measured
from gradients, and the sizes of every tensor the blocked version allocates (a dispatch mode).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention
from torch.utils._python_dispatch import TorchDispatchMode

from attncourse.core import attention
from attncourse.local import gradient_reach, receptive_field, sliding_window_attention
from attncourse.masks import sliding_window_mask
from attncourse.testing import assert_matches


def gen(seed):
    return torch.Generator().manual_seed(seed)


def qkv(shape_q, tk, dv=None, *, seed=0, dtype=torch.float64):
    *lead, tq, d = shape_q
    g = gen(seed)
    q = torch.randn(*lead, tq, d, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, tk, d, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, tk, dv or d, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def loop_window(tq, tk, w, causal=True):
    """The rule of book/conventions.md, one (i, j) at a time; query i at position tk - tq + i."""
    def ok(p, j):
        return 0 <= p - j < w if causal else abs(p - j) < w
    return torch.tensor([[ok(tk - tq + i, j) for j in range(tk)] for i in range(tq)], dtype=torch.bool)


def sdpa_oracle(q, k, v, w, causal=True):
    m = loop_window(q.shape[-2], k.shape[-2], w, causal)
    with sdpa_kernel([SDPBackend.MATH]):
        out = scaled_dot_product_attention(q, k, v, attn_mask=m)
    return torch.where(m.any(-1, keepdim=True), out, torch.zeros_like(out))   # SDPA: NaN/garbage rows -> 0


def per_query_oracle(q, k, v, w, causal=True):
    """Each query against exactly its visible keys (a Python loop), zeros when there are none."""
    tq, tk = q.shape[-2], k.shape[-2]
    rows = []
    for i in range(tq):
        p = tk - tq + i
        lo, hi = max(p - w + 1, 0), min(p + (0 if causal else w - 1) + 1, tk)
        if hi <= lo:
            rows.append(torch.zeros(*q.shape[:-2], v.shape[-1], dtype=q.dtype))
            continue
        s = (q[..., i:i + 1, :] @ k[..., lo:hi, :].transpose(-2, -1)) / math.sqrt(q.shape[-1])
        rows.append((torch.softmax(s, -1) @ v[..., lo:hi, :])[..., 0, :])
    return torch.stack(rows, dim=-2)


# (q shape, Tk, W, block): lengths 1 and 97, not multiples of the block, Tq != Tk both ways, odd D
CASES = [
    ((1, 1, 1, 4), 1, 1, 64), ((2, 3, 6, 5), 6, 2, 4), ((1, 2, 97, 8), 97, 16, 32), ((2, 1, 97, 3), 97, 5, 7),
    ((1, 1, 3, 7), 11, 4, 2), ((2, 2, 1, 6), 40, 9, 64), ((1, 1, 12, 5), 5, 3, 4), ((1, 3, 9, 1), 2, 2, 3),
    ((1, 1, 33, 4), 33, 100, 8), ((3, 20, 4), 20, 6, 5), ((13, 9), 29, 1, 3),
]


def cid(case):
    shape, tk, w, b = case
    return f"q{'x'.join(map(str, shape))}-Tk{tk}-W{w}-b{b}"


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("case", CASES, ids=cid)
def test_matches_sdpa_and_per_query_loop(case, causal):
    shape, tk, w, block = case
    q, k, v = qkv(shape, tk, seed=1)
    out = sliding_window_attention(q, k, v, w, causal=causal, block=block)
    assert_matches(out, sdpa_oracle(q, k, v, w, causal), what="blocked vs SDPA(MATH) with a loop-built mask")
    if shape[-2] <= 40:                                   # the Python loop is slow; the small cases suffice
        assert_matches(out, per_query_oracle(q, k, v, w, causal), what="blocked vs a per-query loop")
    dense = attention(q, k, v, mask=sliding_window_mask(q.shape[-2], tk, w, causal))
    assert_matches(out, dense, what="blocked vs dense attention with sliding_window_mask")


@pytest.mark.parametrize("block", [1, 2, 5, 16, 97, 1000])
def test_block_size_does_not_change_the_result(block):
    q, k, v = qkv((2, 2, 97, 8), 120, seed=2)
    ref = sliding_window_attention(q, k, v, 13, block=97)
    assert_matches(sliding_window_attention(q, k, v, 13, block=block), ref, what=f"block={block}")


def test_value_dim_differs_and_explicit_scale():
    q, k, v = qkv((2, 2, 10, 6), 14, dv=3, seed=3)
    out = sliding_window_attention(q, k, v, 4, block=3, scale=0.3)
    assert out.shape == (2, 2, 10, 3)
    assert_matches(out, attention(q, k, v, mask=sliding_window_mask(10, 14, 4), scale=0.3))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_fully_masked_rows_are_zero_with_finite_gradients(causal):
    tq, tk, w = 12, 4, 3                     # queries 0..7 sit at positions -8..-1 (bidirectional: -8..-3 see nothing)
    q, k, v = (t.requires_grad_(True) for t in qkv((1, 2, tq, 5), tk, seed=4))
    out = sliding_window_attention(q, k, v, w, causal=causal, block=5)
    empty = ~loop_window(tq, tk, w, causal).any(-1)
    assert empty.sum() >= 6 and torch.equal(out[..., empty, :], torch.zeros_like(out[..., empty, :]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[..., empty, :], torch.zeros_like(q.grad[..., empty, :]))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("tq, tk", [(7, 7), (5, 11), (11, 5)])
def test_gradients_match_dense_float64(tq, tk, causal):
    q, k, v = qkv((2, 1, tq, 4), tk, seed=5)
    g = torch.randn(2, 1, tq, 4, generator=gen(6), dtype=torch.float64)
    a = [t.clone().requires_grad_(True) for t in (q, k, v)]
    b = [t.clone().requires_grad_(True) for t in (q, k, v)]
    got = torch.autograd.grad(sliding_window_attention(*a, 3, causal=causal, block=2), a, g)
    want = torch.autograd.grad(attention(*b, mask=sliding_window_mask(tq, tk, 3, causal)), b, g)
    for name, x, y in zip("qkv", got, want):
        assert_matches(x, y, what=f"d out / d {name}")


def test_gradcheck():
    q, k, v = (t.requires_grad_(True) for t in qkv((1, 1, 6, 3), 8, seed=7))
    assert torch.autograd.gradcheck(lambda a, b, c: sliding_window_attention(a, b, c, 3, block=4), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_keeps_dtype(dtype):
    q, k, v = qkv((1, 2, 37, 8), 37, seed=8, dtype=dtype)
    out = sliding_window_attention(q, k, v, 8, block=16)
    assert out.dtype == dtype
    ref = sliding_window_attention(q.double(), k.double(), v.double(), 8, block=16)
    assert_matches(out, ref.to(dtype), what=f"{dtype} vs float64")


def test_keys_no_query_can_see_are_never_read():
    # Tq = 8 queries at positions 92..99 with W = 5 see keys 88..99 only; the rest may hold anything.
    q, k, v = qkv((1, 1, 8, 4), 100, seed=9)
    k[..., :88, :] = float("nan")
    v[..., :88, :] = float("inf")
    out = sliding_window_attention(q, k, v, 5, block=3)
    assert torch.isfinite(out).all()


class _Sizes(TorchDispatchMode):
    """Records the number of elements of every tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_allocates_anything_of_size_t_squared():
    T, W, D, block = 512, 16, 8, 32
    q, k, v = qkv((1, 1, T, D), T, seed=10, dtype=torch.float32)
    with _Sizes() as sizes:
        out = sliding_window_attention(q, k, v, W, block=block)
    assert out.shape == (1, 1, T, D)
    assert sizes.largest <= max(T * D, block * (block + W - 1)), sizes.largest   # the output, or one block's scores
    with _Sizes() as dense:
        attention(q, k, v, mask=sliding_window_mask(T, T, W))
    assert dense.largest >= T * T                                                # the control does build T×T


@pytest.mark.parametrize("window, layers, causal", [(1, 3, True), (2, 2, True), (3, 3, True), (5, 2, True),
                                                    (1, 2, False), (3, 2, False)])
def test_receptive_field_is_measured_reach(window, layers, causal):
    T = receptive_field(window, layers, causal=causal) + 4               # long enough to see where it stops
    reach = gradient_reach(window, layers, T, causal=causal, block=8)
    r = layers * (window - 1)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    band = ((i - j >= 0) & (i - j <= r)) if causal else ((i - j).abs() <= r)
    assert torch.equal(reach, band)
    widest = int(reach.sum(-1).max())                                      # an interior row (causal: the last)
    assert widest == receptive_field(window, layers, causal=causal)


@pytest.mark.parametrize("window, layers", [(2, 6), (4, 4), (8, 3)])
def test_receptive_field_of_the_last_output(window, layers):
    T = receptive_field(window, layers) + 3
    last = gradient_reach(window, layers, T, block=16, rows=[-1])
    assert int(last.sum()) == receptive_field(window, layers)


def test_gradient_reach_rows_are_the_full_matrix_rows():
    full = gradient_reach(3, 2, 12, block=4)
    assert torch.equal(gradient_reach(3, 2, 12, block=4, rows=[-1, 0, 5]), full[[-1, 0, 5]])


def test_receptive_field_values_and_type():
    assert receptive_field(4096, 32) == 131_041 and type(receptive_field(4096, 32)) is int
    assert receptive_field(1, 100) == 1 and receptive_field(7, 1) == 7 and receptive_field(5, 0) == 1
    assert receptive_field(4, 3, causal=False) == 19


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(window=0), ValueError, "window must be >= 1, got 0"),
    (dict(window=-3), ValueError, "got -3"),
    (dict(window=2.5), TypeError, "window must be an integer"),
    (dict(window=4, block=0), ValueError, "block must be >= 1, got 0"),
])
def test_bad_arguments_name_the_numbers(kwargs, err, match):
    q, k, v = qkv((1, 1, 4, 2), 4)
    with pytest.raises(err, match=match):
        sliding_window_attention(q, k, v, **kwargs)


def test_bad_shapes_and_receptive_field_arguments():
    q, k, v = qkv((1, 1, 4, 2), 4)
    with pytest.raises(ValueError, match="at least one key"):
        sliding_window_attention(q, k[..., :0, :], v[..., :0, :], 2)
    with pytest.raises(ValueError, match="same number of keys"):
        sliding_window_attention(q, k, v[..., :3, :], 2)
    with pytest.raises(ValueError, match="layers must be >= 0, got -1"):
        receptive_field(3, -1)
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        receptive_field(0, 2)
