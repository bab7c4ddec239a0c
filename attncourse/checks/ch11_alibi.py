"""Public checks for chapter 11 (ALiBi).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse.alibi`` through :func:`attncourse.testing.compare`. When the result is wrong, the
cases test it against the classic mistakes (slopes 1, 2, 4, ...; ``2^(-8k/n)`` used for an ``n``
that is not a power of two; the first slopes of the next power of two; a bias with the wrong sign
or aligned top-left; a top-left causal mask; no ``1/√D``) and name the one that fits. The hidden
autograder tests (``tests/autograder/test_11_alibi.py``) use larger and odder grids.
"""
from __future__ import annotations

import math

import torch

from attncourse.alibi import alibi_attention, alibi_bias, alibi_slopes
from attncourse.checks import case
from attncourse.core import attention
from attncourse.testing import compare


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(out, want) -> bool:
    return isinstance(out, torch.Tensor) and out.shape == want.shape and compare(out, want, check_dtype=False) is None


# ------------------------------------------------------------------------- alibi_slopes
def _slopes_case(fn, n):
    out = fn(n)
    want = alibi_slopes(n)
    what = f"alibi_slopes({n})"
    msg = compare(out, want, what=what)
    if msg is None or not isinstance(out, torch.Tensor) or out.shape != want.shape:
        return msg
    k = torch.arange(1, n + 1, dtype=torch.float64)
    p = 2 ** math.floor(math.log2(n))
    hints = [
        (2.0 ** (k - 1), "the slopes are not 1, 2, 4, ...: they are fixed fractions 2^(-8k/n), "
                         "1/2 ... 1/256 for 8 heads"),
        (2.0 ** (-8 * k / n), f"{n} is not a power of two: the paper does not use 2^(-8k/{n}); take the {p} "
                              f"slopes of {p} heads, then every other slope of {2 * p} heads"),
        (2.0 ** (-8 * k / (2 * p)), f"these are the first {n} slopes of {2 * p} heads; the paper takes the {p} "
                                    f"slopes of {p} heads first, then every other slope of {2 * p} heads"),
        (2.0 ** (-8 * (k - 1) / n), "the first slope is 2^(-8/n), not 1: k runs from 1 to n"),
    ]
    for wrong, hint in hints:
        if _same(out, wrong):
            return f"{what}: {hint}"
    return msg


@case("alibi_slopes", "8 heads: 1/2, 1/4, ..., 1/256")
def _(fn):
    return _slopes_case(fn, 8)


@case("alibi_slopes", "powers of two: 1, 2, 4 and 16 heads")
def _(fn):
    for n in (1, 2, 4, 16):
        msg = _slopes_case(fn, n)
        if msg:
            return msg
    return None


@case("alibi_slopes", "12 heads (not a power of two): 8 slopes of 8 heads, then every other one of 16")
def _(fn):
    return _slopes_case(fn, 12)


@case("alibi_slopes", "5 and 6 heads")
def _(fn):
    for n in (5, 6):
        msg = _slopes_case(fn, n)
        if msg:
            return msg
    return None


# --------------------------------------------------------------------------- alibi_bias
def _bias_case(fn, n, tq, tk):
    out = fn(n, tq, tk)
    want = alibi_bias(n, tq, tk)
    what = f"alibi_bias({n}, {tq}, {tk})"
    msg = compare(out, want, what=what)
    if msg is None or not isinstance(out, torch.Tensor) or out.shape != want.shape:
        return msg
    m = alibi_slopes(n)[:, None, None]
    i, j = torch.arange(tq)[:, None], torch.arange(tk)[None, :]
    hints = [
        (-want, "the sign is flipped: a key further in the past must get a *lower* score, -m·(i - j)"),
        (-m * (i - j), "your bias is aligned top-left; with Tq < Tk the queries are the last Tq positions: "
                       "query i sits at position Tk - Tq + i"),
        (m * (i - j), "top-left aligned and the wrong sign: use -m·((Tk - Tq + i) - j)"),
        (-m * (i - j).abs() if tq == tk else -m * ((tk - tq + i) - j).abs(),
         "that is the symmetric -m·|i - j|; the causal bias is -m·(i - j) for every (i, j), future keys included"),
        (torch.minimum(want, torch.zeros(())), "keep the formula for future keys too (j > i gives a positive "
                                               "entry); the causal mask removes them, not the bias"),
    ]
    for wrong, hint in hints:
        if _same(out, wrong):
            return f"{what}: {hint}"
    return msg


@case("alibi_bias", "2 heads, Tq = Tk = 4")
def _(fn):
    return _bias_case(fn, 2, 4, 4)


@case("alibi_bias", "Tq = 2, Tk = 5 is aligned bottom-right (query i sits at position 3 + i)")
def _(fn):
    return _bias_case(fn, 2, 2, 5)


@case("alibi_bias", "a single new query over 6 keys (a decoding step), 8 heads")
def _(fn):
    return _bias_case(fn, 8, 1, 6)


@case("alibi_bias", "3 heads (not a power of two), Tq = Tk = 5")
def _(fn):
    return _bias_case(fn, 3, 5, 5)


# ---------------------------------------------------------------------- alibi_attention
def _attn_case(fn, shape_q, tk, causal, dtype=torch.float32, seed=0):
    B, H, tq, D = shape_q
    g = _gen(seed)
    q = torch.randn(B, H, tq, D, generator=g, dtype=dtype)
    k, v = torch.randn(B, H, tk, D, generator=g, dtype=dtype), torch.randn(B, H, tk, D, generator=g, dtype=dtype)
    out = fn(q, k, v, causal=causal)
    want = alibi_attention(q, k, v, causal=causal)
    what = f"alibi_attention with q {tuple(q.shape)}, k/v {tuple(k.shape)}, causal={causal}"
    msg = compare(out, want, what=what)
    if msg is None or not isinstance(out, torch.Tensor) or out.shape != want.shape:
        return msg
    bias = alibi_bias(H, tq, tk, symmetric=not causal, dtype=dtype)
    top_left = torch.ones(tq, tk, dtype=torch.bool).tril()
    hints = [
        (attention(q, k, v, bias=bias, mask=top_left) if causal else None,
         "your causal mask is aligned top-left (e.g. SDPA's is_causal=True); with Tq < Tk query i sits at "
         "position Tk - Tq + i and sees keys j <= Tk - Tq + i"),
        (attention(q, k, v, bias=bias, mask=top_left, scale=1.0) if causal else None,
         "top-left causal mask and no 1/√D scale"),
        (alibi_attention(q * math.sqrt(D), k, v, causal=causal),
         "the scores q·k are not divided by √D (the bias is added after the scaling)"),
        (attention(q, k, v, bias=bias) if causal else None,
         "the future keys are not masked: causal=True needs the bottom-right causal mask as well as the bias"),
        (attention(q, k, v, bias=alibi_bias(H, tq, tk, dtype=dtype)) if not causal else None,
         "causal=False uses the symmetric bias -m·|i - j| (and no mask), not -m·(i - j)"),
    ]
    for wrong, hint in hints:
        if wrong is not None and _same(out, wrong):
            return f"{what}: {hint}"
    return msg


@case("alibi_attention", "causal, Tq = Tk = 6, 4 heads")
def _(fn):
    return _attn_case(fn, (2, 4, 6, 8), 6, True, seed=1)


@case("alibi_attention", "causal with a cache: Tq = 3 new queries over Tk = 7 keys (bottom-right)")
def _(fn):
    return _attn_case(fn, (1, 2, 3, 4), 7, True, seed=2)


@case("alibi_attention", "causal=False: the symmetric bias -m·|i - j|, no mask")
def _(fn):
    return _attn_case(fn, (1, 4, 5, 8), 5, False, seed=3)


@case("alibi_attention", "3 heads and float64 in, float64 out")
def _(fn):
    return _attn_case(fn, (2, 3, 4, 6), 9, True, dtype=torch.float64, seed=4)
