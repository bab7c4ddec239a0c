"""Public checks for chapter 01 (scaled dot-product attention).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse`` through :func:`attncourse.testing.compare`. The hidden autograder tests
(``tests/autograder/test_01_sdpa.py``) use larger and odder grids.
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.core import attention, stable_softmax
from attncourse.masks import causal_mask, padding_mask
from attncourse.testing import compare


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------- stable_softmax
@case("stable_softmax", "matches torch.softmax on a small random tensor")
def _(softmax):
    x = torch.randn(3, 5, generator=_gen(1))
    return compare(softmax(x), torch.softmax(x, dim=-1), what="softmax(x)")


@case("stable_softmax", "respects the dim argument (dim=0)")
def _(softmax):
    x = torch.randn(4, 3, generator=_gen(2))
    return compare(softmax(x, dim=0), torch.softmax(x, dim=0), what="softmax(x, dim=0)")


@case("stable_softmax", "large scores (around 1000) do not overflow to inf or NaN")
def _(softmax):
    x = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])
    return compare(softmax(x), torch.softmax(x.double(), dim=-1).float(), what="softmax of large scores")


@case("stable_softmax", "a row that is entirely -inf gives zeros, not NaN")
def _(softmax):
    x = torch.tensor([[0.5, float("-inf"), 1.0], [float("-inf")] * 3])
    return compare(softmax(x), stable_softmax(x), what="softmax with a fully -inf row")


# -------------------------------------------------------------------------- causal_mask
@case("causal_mask", "a 4×4 mask is lower-triangular and boolean")
def _(fn):
    return compare(fn(4, 4), causal_mask(4, 4), what="causal_mask(4, 4)")


@case("causal_mask", "Tq < Tk is aligned bottom-right (the last query sees every key)")
def _(fn):
    return compare(fn(2, 5), causal_mask(2, 5), what="causal_mask(2, 5)")


@case("causal_mask", "a single query (decoding step) sees all keys")
def _(fn):
    return compare(fn(1, 6), causal_mask(1, 6), what="causal_mask(1, 6)")


@case("causal_mask", "Tq > Tk: the first Tq - Tk queries come before every key (rows all False)")
def _(fn):
    return compare(fn(4, 2), causal_mask(4, 2), what="causal_mask(4, 2)")


# ------------------------------------------------------------------------- padding_mask
@case("padding_mask", "shape (B, 1, 1, T), dtype bool, True on real tokens")
def _(fn):
    lengths = torch.tensor([3, 1, 4])
    return compare(fn(lengths, 4), padding_mask(lengths, 4), what="padding_mask([3, 1, 4], 4)")


@case("padding_mask", "a length of 0 masks the whole sequence")
def _(fn):
    lengths = torch.tensor([0, 2])
    return compare(fn(lengths, 3), padding_mask(lengths, 3), what="padding_mask([0, 2], 3)")


# --------------------------------------------------------------------------------- sdpa
@case("sdpa", "matches the reference without a mask, shape (2, 3, 5, 8)")
def _(fn):
    g = _gen(3)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    return compare(fn(q, k, v), attention(q, k, v), what="attention output")


@case("sdpa", "Tq ≠ Tk and a value width different from the key width")
def _(fn):
    g = _gen(4)
    q, k, v = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 7, 4, generator=g), torch.randn(1, 2, 7, 5, generator=g)
    return compare(fn(q, k, v), attention(q, k, v), what="attention output (Tq=3, Tk=7, Dv=5)")


@case("sdpa", "a causal mask (True = may attend) is applied")
def _(fn):
    g = _gen(5)
    q, k, v = (torch.randn(1, 1, 6, 4, generator=g) for _ in range(3))
    m = causal_mask(6, 6)
    return compare(fn(q, k, v, mask=m), attention(q, k, v, mask=m), what="causal attention output")


@case("sdpa", "a query whose keys are all masked gets zeros, not NaN")
def _(fn):
    g = _gen(6)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=g) for _ in range(3))
    m = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    return compare(fn(q, k, v, mask=m), attention(q, k, v, mask=m), what="output with a fully masked row")


@case("sdpa", "keeps the input dtype (float64 in, float64 out)")
def _(fn):
    g = _gen(7)
    q, k, v = (torch.randn(2, 4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    return compare(fn(q, k, v), attention(q, k, v), what="float64 attention output")
