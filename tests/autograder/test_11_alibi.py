"""Hidden tests for chapter 11 (ALiBi). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the reference (``attncourse.alibi``, itself tested against the rule of
Press et al.'s code, the formula entry by entry, SDPA's MATH backend and FlexAttention in
``tests/test_alibi.py``) and compared with ``expect`` (no hidden values in messages). Points:
``EXERCISES[id]["points"]`` is split over the exercise's tests in proportion to their ``points``
marker (default 1). ``uses``: while ``alibi_bias`` and ``alibi_attention`` are graded, the learner's
``alibi_slopes`` / ``alibi_bias`` are replaced by the references, so each exercise is graded on
its own code.

Coverage:
    - alibi_slopes: n = 1 .. 40 and 64, 96, 128 (powers of two and not, odd n); float32 dtype, (n,) shape,
        return type; the naive 2^(-8k/n), the first n slopes of the next power of two, 1, 2, 4, ...
        and k starting at 0 all lose points.
    - alibi_bias: n_heads 1, 2, 3, 5, 8, 12; Tq = Tk (1, 7, 33) and Tq < Tk (1 over 97, 3 over 8, 16 over
        40); float32 dtype, (H, Tq, Tk) shape; the sign (a flipped sign loses points); bottom-right
        alignment (top-left loses points when Tq < Tk); the formula kept for future keys (clamping
        loses points); the last row equal for every Tq.
    - alibi_attention: B 1-3, H 1, 3, 5, 8, 12; Tq = Tk and Tq < Tk (1 over 97, 4 over 9); D 1, 4, 7, 16;
        causal (bottom-right mask: a top-left mask loses points) and causal=False (symmetric bias, no
        mask); the 1/√D scale before the bias; float32 and float64; large scores; float64 gradients
        with respect to q, k, v.
"""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.alibi import alibi_attention, alibi_bias, alibi_slopes
from attncourse.core import attention
from attncourse.grading.testkit import Foreign, dname, expect, expect_true, rand
from attncourse.masks import causal_mask

EXERCISES = {
    "alibi_slopes": {"function": "alibi_slopes", "points": 2},
    "alibi_bias": {"function": "alibi_bias", "points": 2,
                   "uses": {"alibi_slopes": "attncourse.alibi.alibi_slopes"}},
    "alibi_attention": {"function": "alibi_attention", "points": 3,
                        "uses": {"alibi_bias": "attncourse.alibi.alibi_bias",
                                 "alibi_slopes": "attncourse.alibi.alibi_slopes"}},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
FORBIDDEN = {
    "attncourse.alibi.alibi_slopes": ["alibi_slopes"],
    "attncourse.alibi.alibi_bias": ["alibi_bias"],
    "attncourse.alibi.alibi_attention": ["alibi_attention"],
    "attncourse.core.attention": ["alibi_attention"],
}


# ============================================================================ alibi_slopes
@pytest.mark.exercise("alibi_slopes")
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64, 128])
def test_slopes_powers_of_two(learner, n):
    expect(learner.alibi_slopes(n), alibi_slopes(n), what=f"alibi_slopes({n})")


@pytest.mark.exercise("alibi_slopes")
@pytest.mark.points(2)
@pytest.mark.parametrize("n", [3, 5, 6, 7, 12, 20, 24, 40, 96])
def test_slopes_not_power_of_two(learner, n):
    expect(learner.alibi_slopes(n), alibi_slopes(n),
           what=f"alibi_slopes({n}) ({n} is not a power of two: the paper's interleaving rule)")


@pytest.mark.exercise("alibi_slopes")
@pytest.mark.points(2)
def test_slopes_every_n_up_to_40(learner):
    for n in range(1, 41):
        expect(learner.alibi_slopes(n), alibi_slopes(n), what=f"alibi_slopes({n}) (checking every n from 1 to 40)")


@pytest.mark.exercise("alibi_slopes")
def test_slopes_type_and_dtype(learner):
    out = learner.alibi_slopes(10)
    if isinstance(out, Foreign) or type(out) is not torch.Tensor:
        kind = out.description if isinstance(out, Foreign) else type(out).__name__
        expect_true(False, f"alibi_slopes(10) should return a torch.Tensor, but it returned {kind}")
    expect(out, alibi_slopes(10), what="alibi_slopes(10) (a float32 tensor of shape (10,))")


# ============================================================================== alibi_bias
BIAS_CASES = [  # (n_heads, tq, tk)
    (1, 1, 1), (2, 7, 7), (8, 33, 33), (3, 3, 8), (5, 1, 97), (12, 16, 40), (8, 1, 1),
]


def _bid(case):
    return "H{}-Tq{}-Tk{}".format(*case)


@pytest.mark.exercise("alibi_bias")
@pytest.mark.parametrize("case", BIAS_CASES, ids=_bid)
def test_bias_matches_reference(learner, case):
    h, tq, tk = case
    expect(learner.alibi_bias(h, tq, tk), alibi_bias(h, tq, tk), what=f"alibi_bias({h}, {tq}, {tk})")


@pytest.mark.exercise("alibi_bias")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(4, 2, 9), (3, 5, 6)], ids=_bid)
def test_bias_bottom_right(learner, case):
    h, tq, tk = case
    expect(learner.alibi_bias(h, tq, tk), alibi_bias(h, tq, tk),
           what=f"alibi_bias({h}, {tq}, {tk}) (Tq < Tk: query i sits at position Tk - Tq + i)")


@pytest.mark.exercise("alibi_bias")
@pytest.mark.points(2)
def test_bias_sign_and_future_keys(learner):
    out = learner.alibi_bias(2, 6, 6)
    expect(out, alibi_bias(2, 6, 6), what="alibi_bias(2, 6, 6) (past keys negative, -m·(i - j) also for j > i)")


@pytest.mark.exercise("alibi_bias")
def test_bias_last_row_same_for_every_tq(learner):
    full = alibi_bias(5, 11, 11)
    for tq in (1, 4):
        expect(learner.alibi_bias(5, tq, 11), full[:, 11 - tq:],
               what=f"alibi_bias(5, {tq}, 11) (must be the last {tq} rows of alibi_bias(5, 11, 11))")


# ========================================================================= alibi_attention
# A float32 bias (exercise 2's contract) carries float32 rounding into float64 attention: allow it.
F64 = {"rtol": 1e-5, "atol": 1e-6}


def _qkv(b, h, tq, tk, d, seed, dtype=torch.float32, scale=1.0):
    return (rand(b, h, tq, d, seed=seed, dtype=dtype, scale=scale), rand(b, h, tk, d, seed=seed + 1, dtype=dtype, scale=scale),
            rand(b, h, tk, d, seed=seed + 2, dtype=dtype))


ATTN_CASES = [  # (B, H, Tq, Tk, D)
    (1, 1, 1, 1, 1), (2, 3, 6, 6, 4), (1, 8, 1, 97, 16), (3, 5, 4, 9, 7), (2, 12, 33, 33, 8), (1, 2, 5, 5, 1),
]


def _aid(case):
    return "B{}H{}Tq{}Tk{}D{}".format(*case)


def _tol(dtype):
    return F64 if dtype == torch.float64 else {}


@pytest.mark.exercise("alibi_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", ATTN_CASES, ids=_aid)
def test_attention_causal(learner, case, dtype):
    b, h, tq, tk, d = case
    q, k, v = _qkv(b, h, tq, tk, d, seed=30, dtype=dtype)
    expect(learner.alibi_attention(q, k, v), alibi_attention(q, k, v),
           what=f"alibi_attention with q {(b, h, tq, d)}, k/v {(b, h, tk, d)}, {dname(dtype)}, causal=True", **_tol(dtype))


@pytest.mark.exercise("alibi_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", [ATTN_CASES[i] for i in (1, 3, 4, 5)], ids=_aid)
def test_attention_symmetric(learner, case, dtype):
    b, h, tq, tk, d = case
    q, k, v = _qkv(b, h, tq, tk, d, seed=40, dtype=dtype)
    expect(learner.alibi_attention(q, k, v, causal=False), alibi_attention(q, k, v, causal=False),
           what=f"alibi_attention with q {(b, h, tq, d)}, k/v {(b, h, tk, d)}, {dname(dtype)}, causal=False (-m·|i - j|, no mask)",
           **_tol(dtype))


@pytest.mark.exercise("alibi_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("b,h,t,n,d", [(2, 4, 10, 3, 8), (1, 8, 33, 1, 16), (1, 3, 16, 8, 4)])
def test_attention_cache_step(learner, b, h, t, n, d):
    q, k, v = _qkv(b, h, t, t, d, seed=50, dtype=torch.float64)
    full = alibi_attention(q, k, v)
    expect(learner.alibi_attention(q[:, :, -n:].contiguous(), k, v), full[:, :, -n:],
           what=f"alibi_attention of the last {n} queries over all {t} keys (must equal the last {n} rows of the full "
                "sequence: bottom-right mask and bias)", **F64)


@pytest.mark.exercise("alibi_attention")
def test_attention_scale_then_bias(learner):
    q, k, v = _qkv(1, 2, 7, 7, 64, seed=60)
    expect(learner.alibi_attention(q, k, v), alibi_attention(q, k, v),
           what="alibi_attention with D = 64 (scale q·k by 1/√D, then add the bias)")


@pytest.mark.exercise("alibi_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "symmetric"])
def test_attention_large_scores(learner, causal):
    q, k, v = _qkv(1, 3, 9, 9, 8, seed=70, scale=12.0)
    expect(learner.alibi_attention(q, k, v, causal=causal), alibi_attention(q, k, v, causal=causal), rtol=1e-3, atol=1e-4,
           what="alibi_attention with large scores (the softmax must not overflow)")


@pytest.mark.exercise("alibi_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("shape", [(2, 3, 4, 6, 5), (1, 5, 3, 7, 16)], ids=_aid)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "symmetric"])
def test_attention_gradients(learner, causal, shape):
    b, h, tq, tk, d = shape
    q, k, v = _qkv(b, h, tq, tk, d, seed=80, dtype=torch.float64)
    g = rand(b, h, tq, d, seed=83, dtype=torch.float64)
    out, grads = learner.alibi_attention.grad(q, k, v, causal=causal, wrt=(0, 1, 2), grad_output=g)
    ref_in = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = alibi_attention(*ref_in, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    expect(out, ref.detach(), what=f"alibi_attention output in the gradient test (causal={causal})", **F64)
    for name, got, want in zip("qkv", grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} (causal={causal})", **F64)


@pytest.mark.exercise("alibi_attention")
def test_attention_matches_explicit_formula(learner):
    # An independent statement of the spec: softmax(q kᵀ/√D + bias, bottom-right causal) v.
    b, h, tq, tk, d = 1, 6, 3, 8, 4
    q, k, v = _qkv(b, h, tq, tk, d, seed=90, dtype=torch.float64)
    bias = alibi_bias(h, tq, tk, dtype=torch.float64)
    want = attention(q, k, v, bias=bias, mask=causal_mask(tq, tk), scale=1 / math.sqrt(d))
    expect(learner.alibi_attention(q, k, v), want, what="alibi_attention with 6 heads, Tq = 3, Tk = 8, float64", **F64)
