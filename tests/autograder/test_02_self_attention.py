"""Hidden tests for chapter 02 (self-attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here — by the reference (``attncourse.multihead.self_attention``), by the
formula written out entry by entry, or by PyTorch's FLOP counter — and compared with ``expect``
(no hidden values in messages). Points: ``EXERCISES[id]["points"]`` is split over the
exercise's tests in proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- sa_qkv_projections: (T, C), (B, T, C) and two batch dims; T = 1, 97, 1025; C odd; Dk != Dv and
  non-square weights (orientation x @ w); float32/64 and float16/bfloat16 (dtype kept); return
  type a tuple of three tensors.
- sa_self_attention: the shapes above, causal False/True (keyword and positional), the future
  does not leak, permutation equivariance without a mask, scale 1/sqrt(Dk) with Dk != Dv != C,
  float16/bfloat16 causal, causal scores of magnitude ~30 and ~150 (a mask applied after the
  softmax fails), float64 gradients for x and the three weights. Graded with the reference
  ``qkv_projections`` (``uses``).
- sa_attention_flops: n from 1 to 131072, d_v default and given (keyword and positional), against
  torch's FLOP counter, quadratic growth; return type exactly ``int`` (not float, not bool).
- sa_sinusoidal_positions: n, d from 1 to 129 incl. odd d, other bases, n = 2048 and n = 8192
  (float32 angles fail the float32 tolerance there), position 0; float32 result.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attncourse.grading.testkit import Foreign, LOW_PRECISION, Mismatch, SDPA_CALLS, dname, expect, expect_true, gen, rand
from attncourse.bench import attention_flops
from attncourse.multihead import self_attention as ref_self_attention
from attncourse.positions import sinusoidal_positions

EXERCISES = {
    "sa_qkv_projections": {"function": "qkv_projections", "points": 2},
    "sa_self_attention": {"function": "self_attention", "points": 4, "from_scratch": True,
                          "uses": {"qkv_projections": "attncourse.checks.ch02_self_attention.reference_qkv_projections"}},
    "sa_attention_flops": {"function": "attention_flops", "points": 2},
    "sa_sinusoidal_positions": {"function": "sinusoidal_positions", "points": 2},
}

# Run-time tripwires in the sandbox: calling one of these from sa_self_attention fails the test.
_REFERENCE = ["attncourse.core.attention", "attncourse.core.masked_scores", "attncourse.core.stable_softmax",
              "attncourse.multihead.self_attention", "attncourse.masks.causal_mask", "attncourse.masks.materialize",
              "torch.nn.modules.activation.MultiheadAttention.forward"]
FORBIDDEN = {
    **{name: ["sa_self_attention"] for name in SDPA_CALLS + _REFERENCE},
    "attncourse.bench.attention_flops": ["sa_attention_flops"],
    "attncourse.positions.sinusoidal_positions": ["sa_sinusoidal_positions"],
}



def weights(c, dk, dv, seed, dtype=torch.float32, scale=1.0):
    """w_q, w_k: (C, Dk); w_v: (C, Dv), entries of size about scale/sqrt(C)."""
    s = scale / math.sqrt(c)
    return rand(c, dk, seed=seed, dtype=dtype, scale=s), rand(c, dk, seed=seed + 1, dtype=dtype, scale=s), \
        rand(c, dv, seed=seed + 2, dtype=dtype, scale=s)


# (batch dims, T, C, Dk, Dv): T = 1 and 97, odd widths, Dk != Dv, batch 3, two batch dims
CASES = [
    ((), 1, 1, 1, 1), ((), 5, 6, 4, 3), ((2,), 7, 8, 4, 4), ((3,), 97, 13, 5, 7),
    ((2, 3), 4, 16, 8, 2), ((1,), 1, 59, 3, 11), ((3,), 33, 24, 16, 16),
]


def case_id(case):
    batch, t, c, dk, dv = case
    return "x".join(map(str, batch + (t,))) + f"-C{c}-Dk{dk}-Dv{dv}"


def describe(case, dtype, what):
    batch, t, c, dk, dv = case
    return f"{what} for x of shape {tuple(batch) + (t, c)}, w_q/w_k ({c}, {dk}), w_v ({c}, {dv}), {dname(dtype)}"


# ============================================================================ sa_qkv_projections
def expect_qkv(out, x, w_q, w_k, w_v, what, ref_dtype=None):
    if isinstance(out, Foreign) or not isinstance(out, (tuple, list)) or len(out) != 3:
        got = out.description if isinstance(out, Foreign) else (
            f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        raise Mismatch(f"qkv_projections should return a tuple (q, k, v) of three tensors, but it returned {got}")
    for name, got, w in zip("qkv", out, (w_q, w_k, w_v)):
        if ref_dtype is None:
            want = x @ w
        else:  # low precision: compare with a float32 product rounded to the input dtype
            want = (x.float() @ w.float()).to(ref_dtype)
        expect(got, want, what=f"{name} = x @ w_{name}, {what}")


@pytest.mark.exercise("sa_qkv_projections")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_qkv_matches_reference(learner, case, dtype):
    batch, t, c, dk, dv = case
    x = rand(*batch, t, c, seed=1, dtype=dtype)
    w = weights(c, dk, dv, seed=2, dtype=dtype)
    expect_qkv(learner.qkv_projections(x, *w), x, *w, what=describe(case, dtype, "the projections"))


@pytest.mark.exercise("sa_qkv_projections")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_qkv_low_precision_keeps_dtype(learner, dtype):
    x = rand(2, 9, 16, seed=3, dtype=dtype)
    w = weights(16, 8, 4, seed=4, dtype=dtype)
    expect_qkv(learner.qkv_projections(x, *w), x, *w, what=f"x of shape (2, 9, 16), {dname(dtype)} "
               "(keep the input dtype)", ref_dtype=dtype)


@pytest.mark.exercise("sa_qkv_projections")
@pytest.mark.points(2)
def test_qkv_rows_are_tokens(learner):
    # Non-square weights make x @ w and w @ x (or w.T) fail differently: this pins the orientation.
    x = rand(3, 5, 7, seed=5)
    w = weights(7, 2, 9, seed=6)
    expect_qkv(learner.qkv_projections(x, *w), x, *w,
               what="x of shape (3, 5, 7), w_q/w_k (7, 2), w_v (7, 9) (rows are tokens: x @ w)")


@pytest.mark.exercise("sa_qkv_projections")
def test_qkv_long_sequence(learner):
    x = rand(1, 1025, 32, seed=7)
    w = weights(32, 16, 16, seed=8)
    expect_qkv(learner.qkv_projections(x, *w), x, *w, what="x of shape (1, 1025, 32)")


# ============================================================================ sa_self_attention
@pytest.mark.exercise("sa_self_attention")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_self_attention_no_mask(learner, case, dtype):
    batch, t, c, dk, dv = case
    x = rand(*batch, t, c, seed=10, dtype=dtype)
    w = weights(c, dk, dv, seed=11, dtype=dtype, scale=2.0)
    out = learner.self_attention(x, *w)
    expect(out, ref_self_attention(x, *w), what=describe(case, dtype, "self_attention output (causal=False)"))


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_self_attention_causal(learner, case, dtype):
    batch, t, c, dk, dv = case
    x = rand(*batch, t, c, seed=20, dtype=dtype)
    w = weights(c, dk, dv, seed=21, dtype=dtype, scale=2.0)
    out = learner.self_attention(x, *w, causal=True)
    expect(out, ref_self_attention(x, *w, causal=True), what=describe(case, dtype, "self_attention output (causal=True)"))


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(2)
def test_self_attention_causal_positional_argument(learner):
    x = rand(2, 6, 8, seed=25)
    w = weights(8, 4, 4, seed=26, scale=2.0)
    out = learner.self_attention(x, *w, True)
    expect(out, ref_self_attention(x, *w, causal=True),
           what="self_attention(x, w_q, w_k, w_v, True) with causal passed by position")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(2)
def test_self_attention_future_does_not_leak(learner):
    x = rand(2, 11, 12, seed=30)
    w = weights(12, 6, 5, seed=31, scale=2.0)
    x_future = x.clone()
    x_future[:, 7:] = rand(2, 4, 12, seed=32, scale=10.0)
    a = learner.self_attention(x, *w, causal=True)
    b = learner.self_attention(x_future, *w, causal=True)
    expect(a, ref_self_attention(x, *w, causal=True), what="causal output for x of shape (2, 11, 12)")
    expect(b[:, :7], a[:, :7], what="causal outputs of tokens 0..6 after tokens 7..10 were changed "
                                    "(a token must not see the tokens after it)")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(2)
def test_self_attention_permutation_equivariant(learner):
    x = rand(3, 9, 10, seed=40)
    w = weights(10, 5, 5, seed=41, scale=2.0)
    perm = torch.randperm(9, generator=gen(42))
    a = learner.self_attention(x, *w)
    b = learner.self_attention(x[:, perm], *w)
    expect(a, ref_self_attention(x, *w), what="self_attention output for x of shape (3, 9, 10)")
    expect(b, a[:, perm], what="self_attention of the permuted tokens, compared with the permuted outputs "
                               "(without a mask, reordering the tokens must only reorder the outputs)")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(2)
def test_self_attention_scale_uses_dk(learner):
    # Dk = 64 and Dv = 3: dividing by sqrt(Dv), sqrt(C) or not at all gives visibly different weights.
    x = rand(2, 6, 20, seed=50)
    w = weights(20, 64, 3, seed=51, scale=3.0)
    expect(learner.self_attention(x, *w), ref_self_attention(x, *w),
           what="self_attention output for C = 20, Dk = 64, Dv = 3 (scale the scores by 1/sqrt(Dk))")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("magnitude", [30.0, 150.0], ids=lambda m: f"scores{m:g}")
def test_self_attention_causal_large_future_scores(learner, magnitude):
    # The future keys get the largest scores: a mask applied after the softmax (then renormalised)
    # underflows; -inf before the softmax is exact. Weights make q·k/sqrt(Dk) grow with the key index.
    t, c, dk = 7, 4, 4
    x = torch.zeros(2, t, c, dtype=torch.float64)
    x[..., 0] = 1.0
    x[..., 1] = torch.arange(t, dtype=torch.float64) / (t - 1)           # token position as a feature
    x[..., 2:] = rand(2, t, c - 2, seed=80, dtype=torch.float64) * 0.1
    x = x.float()
    w_q = torch.zeros(c, dk)
    w_q[0, 0] = 1.0
    w_k = torch.zeros(c, dk)
    w_k[1, 0] = magnitude * math.sqrt(dk)                                   # score(i, j) ≈ magnitude · j / (T-1)
    w_v = rand(c, 3, seed=81)
    out = learner.self_attention(x, w_q, w_k, w_v, causal=True)
    want = ref_self_attention(x.double(), w_q.double(), w_k.double(), w_v.double(), causal=True).float()
    expect(out, want, what=f"causal self_attention where future keys score up to {magnitude:g} "
                           "(mask with -inf before the softmax)")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_self_attention_low_precision_keeps_dtype(learner, dtype):
    x = rand(2, 7, 16, seed=60, dtype=dtype)
    w = weights(16, 8, 8, seed=61, dtype=dtype)
    out = learner.self_attention(x, *w, causal=True)
    want = ref_self_attention(x.float(), *(t.float() for t in w), causal=True).to(dtype)
    expect(out, want, what=f"causal self_attention output for {dname(dtype)} inputs (keep the input dtype)")


@pytest.mark.exercise("sa_self_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_self_attention_gradients(learner, causal):
    x = rand(2, 6, 7, seed=70, dtype=torch.float64)
    w = weights(7, 5, 3, seed=71, dtype=torch.float64, scale=2.0)
    g = rand(2, 6, 3, seed=72, dtype=torch.float64)
    out, grads = learner.self_attention.grad(x, *w, causal, wrt=(0, 1, 2, 3), grad_output=g)
    ref_in = [t.clone().requires_grad_(True) for t in (x, *w)]
    ref = ref_self_attention(*ref_in, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    label = "causal" if causal else "no mask"
    expect(out, ref.detach(), what=f"self_attention output in the gradient test ({label})")
    for name, got, want in zip(("x", "w_q", "w_k", "w_v"), grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} ({label})")


# ============================================================================ sa_attention_flops
def expect_count(got, n, c, dk, dv, call, want=None):
    if type(got) is not int:  # the spec says a Python int: a float (or a tensor, or a bool) is wrong
        what = got.description if isinstance(got, Foreign) else f"a {type(got).__name__}"
        raise Mismatch(f"{call} should return a Python int, but it returned {what}"
                       + (" (use integer arithmetic, or int(...))" if type(got) is float else ""))
    want = attention_flops(n, c, dk, dv) if want is None else want
    if got == want:
        return
    hints = []
    if got * 2 == want:
        hints.append("count a multiply-add as 2 FLOPs")
    if got == want - 2 * n * c * (2 * dk + dv):
        hints.append("include the three projections X W_Q, X W_K, X W_V")
    if got == 2 * n * c * (2 * dk + dv):
        hints.append("include the scores Q Kᵀ and the weighted sum A V")
    if got == attention_flops(n, c, dk, dk) and dv != dk:
        hints.append("the value width d_v enters the V projection and A V")
    raise Mismatch(f"{call} is not the expected count" + (f" (hint: {'; '.join(hints)})" if hints else
                   " (a product of an (a×b) and a (b×c) matrix costs 2·a·b·c)"))


FLOP_CASES = [  # (n, d_model, d_k, d_v or None)
    (1, 1, 1, None), (7, 5, 3, None), (97, 64, 16, 16), (97, 13, 5, 11), (2048, 512, 64, None),
    (131072, 4096, 128, 128), (3, 1000, 1, 2),
]


@pytest.mark.exercise("sa_attention_flops")
@pytest.mark.parametrize("n,c,dk,dv", FLOP_CASES, ids=lambda v: str(v))
def test_flops_formula(learner, n, c, dk, dv):
    if dv is None:
        got, call = learner.attention_flops(n, c, dk), f"attention_flops({n}, {c}, {dk})"
        dv = dk
    else:
        got, call = learner.attention_flops(n, c, dk, d_v=dv), f"attention_flops({n}, {c}, {dk}, d_v={dv})"
    expect_count(got, n, c, dk, dv, call)


@pytest.mark.exercise("sa_attention_flops")
def test_flops_d_v_by_position(learner):
    got = learner.attention_flops(50, 24, 8, 3)
    expect_count(got, 50, 24, 8, 3, "attention_flops(50, 24, 8, 3) with d_v passed by position")


@pytest.mark.exercise("sa_attention_flops")
@pytest.mark.points(2)
@pytest.mark.parametrize("n,c,dk,dv", [(37, 24, 8, 5), (200, 16, 16, 16)], ids=lambda v: str(v))
def test_flops_match_torch_flop_counter(learner, n, c, dk, dv):
    # An independent oracle: PyTorch counts the matrix products of the reference layer.
    x = torch.randn(1, n, c)
    w_q, w_k, w_v = torch.randn(c, dk), torch.randn(c, dk), torch.randn(c, dv)
    with FlopCounterMode(display=False) as counter:
        ref_self_attention(x, w_q, w_k, w_v)
    got = learner.attention_flops(n, c, dk, d_v=dv)
    expect_count(got, n, c, dk, dv, f"attention_flops({n}, {c}, {dk}, d_v={dv}) against torch's FLOP counter",
                 want=counter.get_total_flops())


@pytest.mark.exercise("sa_attention_flops")
@pytest.mark.points(2)
def test_flops_grow_quadratically(learner):
    # Doubling n: the n-linear part doubles, the n² part quadruples.
    counts = [learner.attention_flops(n, 64, 64) for n in (4096, 8192)]
    for n, got in zip((4096, 8192), counts):
        expect_count(got, n, 64, 64, 64, f"attention_flops({n}, 64, 64)")
    expect_true(3.5 < counts[1] / counts[0] < 4.0,
                "attention_flops at n = 8192 should be almost 4 times the count at n = 4096 (the n² terms dominate)")


# ============================================================================ sa_sinusoidal_positions
PE_CASES = [(1, 1), (1, 2), (6, 8), (7, 5), (97, 64), (128, 3), (33, 1), (10, 2), (5, 129)]


@pytest.mark.exercise("sa_sinusoidal_positions")
@pytest.mark.parametrize("n,d", PE_CASES, ids=lambda v: str(v))
def test_sinusoidal_matches_formula(learner, n, d):
    expect(learner.sinusoidal_positions(n, d), sinusoidal_positions(n, d),
           what=f"sinusoidal_positions({n}, {d})" + (" (odd d: the last column is a sine)" if d % 2 else ""))


@pytest.mark.exercise("sa_sinusoidal_positions")
@pytest.mark.parametrize("base", [100.0, 2.0, 500000.0], ids=lambda v: f"base{v:g}")
def test_sinusoidal_base(learner, base):
    expect(learner.sinusoidal_positions(20, 10, base=base), sinusoidal_positions(20, 10, base),
           what=f"sinusoidal_positions(20, 10, base={base:g})")


@pytest.mark.exercise("sa_sinusoidal_positions")
@pytest.mark.points(2)
def test_sinusoidal_long(learner):
    # float32 angles lose about p·6e-8 radians at position p; allow for that, not for a wrong formula.
    expect(learner.sinusoidal_positions(2048, 128), sinusoidal_positions(2048, 128), atol=5e-4, rtol=0.0,
           what="sinusoidal_positions(2048, 128)")


@pytest.mark.exercise("sa_sinusoidal_positions")
@pytest.mark.points(2)
def test_sinusoidal_thousands_of_positions_float64_angles(learner):
    # The spec asks for float64 angles: at p ~ 8000, float32 angles are off by ~5e-4 rad, far
    # outside the float32 tolerance of the result; float64 angles rounded once are exact.
    expect(learner.sinusoidal_positions(8192, 16), sinusoidal_positions(8192, 16),
           what="sinusoidal_positions(8192, 16) (compute the angles in float64)")


@pytest.mark.exercise("sa_sinusoidal_positions")
def test_sinusoidal_position_zero(learner):
    want = torch.tensor([[0.0, 1.0] * 4])
    expect(learner.sinusoidal_positions(1, 8), want,
           what="sinusoidal_positions(1, 8): position 0 (sin 0 = 0 in even columns, cos 0 = 1 in odd ones)")
