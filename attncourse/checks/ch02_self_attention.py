"""Public checks for chapter 02 (self-attention).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse`` (or with the formula written out here) through
:func:`attncourse.testing.compare`. The hidden autograder tests
(``tests/autograder/test_02_self_attention.py``) use larger and odder grids.
"""
from __future__ import annotations

import math

import torch

from attncourse.bench import attention_flops
from attncourse.checks import case
from attncourse.multihead import self_attention as ref_self_attention
from attncourse.positions import sinusoidal_positions
from attncourse.testing import compare


def reference_qkv_projections(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor):
    """Exercise 1's signature: ``(x @ w_q, x @ w_k, x @ w_v)``; the grader supplies it to exercise 2."""
    return x @ w_q, x @ w_k, x @ w_v  # (..., T, Dk), (..., T, Dk), (..., T, Dv)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(c: int, dk: int, dv: int, seed: int, dtype=torch.float32):
    g = _gen(seed)
    return tuple(torch.randn(c, d, generator=g, dtype=dtype) / math.sqrt(c) for d in (dk, dk, dv))


# -------------------------------------------------------------------- sa_qkv_projections
def _check_qkv(fn, x, w_q, w_k, w_v, label):
    out = fn(x, w_q, w_k, w_v)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        return f"qkv_projections should return a tuple (q, k, v) of three tensors, but it returned {got}"
    for name, got, w in zip("qkv", out, (w_q, w_k, w_v)):
        msg = compare(got, x @ w, what=f"{name} ({label})")
        if msg:
            return msg
    return None


@case("sa_qkv_projections", "x (T, C) = (5, 6), Dk = 4, Dv = 3: returns (q, k, v) with the right shapes")
def _(fn):
    x = torch.randn(5, 6, generator=_gen(1))
    return _check_qkv(fn, x, *_weights(6, 4, 3, seed=2), label="x of shape (5, 6)")


@case("sa_qkv_projections", "a batch: x (B, T, C) = (2, 7, 8)")
def _(fn):
    x = torch.randn(2, 7, 8, generator=_gen(3))
    return _check_qkv(fn, x, *_weights(8, 4, 4, seed=4), label="x of shape (2, 7, 8)")


@case("sa_qkv_projections", "keeps the dtype (float64 in, float64 out)")
def _(fn):
    x = torch.randn(3, 4, generator=_gen(5), dtype=torch.float64)
    return _check_qkv(fn, x, *_weights(4, 2, 5, seed=6, dtype=torch.float64), label="float64")


# --------------------------------------------------------------------- sa_self_attention
@case("sa_self_attention", "matches the reference without a mask, x (2, 5, 8)")
def _(fn):
    x = torch.randn(2, 5, 8, generator=_gen(7))
    w = _weights(8, 4, 4, seed=8)
    return compare(fn(x, *w), ref_self_attention(x, *w), what="self_attention output")


@case("sa_self_attention", "causal=True: token i sees tokens j <= i only")
def _(fn):
    x = torch.randn(1, 6, 8, generator=_gen(9))
    w = _weights(8, 4, 4, seed=10)
    return compare(fn(x, *w, causal=True), ref_self_attention(x, *w, causal=True),
                   what="causal self_attention output")


@case("sa_self_attention", "causal: the first token's output is its own value x[0] @ w_v")
def _(fn):
    x = torch.randn(4, 6, generator=_gen(11))
    w = _weights(6, 3, 5, seed=12)
    out = fn(x, *w, causal=True)
    msg = compare(out, ref_self_attention(x, *w, causal=True), what="causal output for x of shape (4, 6)")
    return msg or compare(out[0], x[0] @ w[2], what="output of token 0 under the causal mask")


@case("sa_self_attention", "scales by 1/sqrt(Dk), with Dk = 16 different from Dv = 3")
def _(fn):
    x = torch.randn(2, 5, 12, generator=_gen(13))
    w = tuple(3 * t for t in _weights(12, 16, 3, seed=14))
    return compare(fn(x, *w), ref_self_attention(x, *w), what="self_attention output (Dk = 16, Dv = 3)")


@case("sa_self_attention", "keeps the dtype (float64 in, float64 out)")
def _(fn):
    x = torch.randn(3, 7, 4, generator=_gen(15), dtype=torch.float64)
    w = _weights(4, 4, 4, seed=16, dtype=torch.float64)
    return compare(fn(x, *w, causal=True), ref_self_attention(x, *w, causal=True), what="float64 causal output")


# -------------------------------------------------------------------- sa_attention_flops
def _check_flops(fn, n: int, c: int, dk: int, dv: int | None = None):
    """Call ``fn(n, c, dk)`` (or with ``d_v=dv``) and compare with the exact count."""
    got = fn(n, c, dk) if dv is None else fn(n, c, dk, d_v=dv)
    want = attention_flops(n, c, dk, dk if dv is None else dv)
    call = f"attention_flops({n}, {c}, {dk}" + ("" if dv is None else f", d_v={dv}") + ")"
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"{call} should return an int, but it returned a {type(got).__name__}"
    if got != want:
        return f"{call} returned {got}, expected {want}"
    return None


@case("sa_attention_flops", "n = 10, d_model = 8, d_k = 4 (d_v defaults to d_k)")
def _(fn):
    return _check_flops(fn, 10, 8, 4)


@case("sa_attention_flops", "n = 100, d_model = 32, d_k = 8, d_v = 5")
def _(fn):
    return _check_flops(fn, 100, 32, 8, 5)


@case("sa_attention_flops", "one token: n = 1, d_model = 1, d_k = 1")
def _(fn):
    return _check_flops(fn, 1, 1, 1)


# --------------------------------------------------------------- sa_sinusoidal_positions
@case("sa_sinusoidal_positions", "n = 6, d = 8: shape (6, 8), float32, sin/cos interleaved")
def _(fn):
    return compare(fn(6, 8), sinusoidal_positions(6, 8), what="sinusoidal_positions(6, 8)")


@case("sa_sinusoidal_positions", "position 0 is [0, 1, 0, 1, ...]")
def _(fn):
    out = fn(1, 6)
    return compare(out, torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]]), what="sinusoidal_positions(1, 6)")


@case("sa_sinusoidal_positions", "an odd width d = 5 ends with a sine column")
def _(fn):
    return compare(fn(7, 5), sinusoidal_positions(7, 5), what="sinusoidal_positions(7, 5)")


@case("sa_sinusoidal_positions", "the base argument: n = 4, d = 4, base = 100")
def _(fn):
    return compare(fn(4, 4, base=100.0), sinusoidal_positions(4, 4, 100.0), what="sinusoidal_positions(4, 4, base=100.0)")
