"""Hidden tests for chapter 01 (scaled dot-product attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here, by the reference, and compared with ``expect`` (no hidden values in
messages). Points: ``EXERCISES[id]["points"]`` is split over the exercise's tests in
proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- stable_softmax: shapes 1-D to 3-D incl. (1, 1); dim -1, 0 and 1; float32/float64 and
  float16/bfloat16 (dtype kept); scores up to ±1e5 (overflow); an all -inf row and an all -inf
  column (zeros); float64 gradient with a -inf entry; rule: torch/F/Tensor/special softmax.
- causal_mask: Tq = Tk, Tq < Tk and Tq > Tk (rows before the first key all False), 1×1; bool
  dtype; the last query sees every key (bottom-right).
- padding_mask: t = max(lengths) and t > max(lengths), lengths 0 and full; shape (B, 1, 1, t),
  bool; broadcasts against (B, H, Tq, T).
- sdpa: no/extra batch dims, Tq = Tk and Tq != Tk both ways, D = 1..64, Dv != D; float32/64 and
  float16/bfloat16 with a causal mask; masks: causal, padding (several layouts), random with a
  fully masked row, and masked scores of magnitude 10-50 (masking after the softmax fails);
  unmasked scores large enough to overflow a naive softmax; scale 1/sqrt(D); float64 gradients
  for q, k, v with and without a mask. Graded with the reference softmax (``uses``).
"""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.core import attention, stable_softmax
from attncourse.masks import causal_mask as ref_causal_mask, padding_mask as ref_padding_mask
from attncourse.grading.testkit import LOW_PRECISION, SDPA_CALLS, dname, expect, expect_true, gen, rand

EXERCISES = {
    "stable_softmax": {"function": "softmax", "points": 2},
    "causal_mask": {"function": "causal_mask", "points": 2},
    "padding_mask": {"function": "padding_mask", "points": 2},
    "sdpa": {"function": "scaled_dot_product_attention", "points": 4, "from_scratch": True,
             "uses": {"softmax": "attncourse.core.stable_softmax"}},
}

# Run-time tripwires in the sandbox (and the static check of the same names): calling one of
# these from the listed exercises fails the test. The notebook states each on a "Not allowed" line.
_TORCH_SOFTMAX = ["torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.special.softmax"]
_REF_SOFTMAX = ["attncourse.core.stable_softmax"]
_REF_MASKS = ["attncourse.masks.causal_mask", "attncourse.masks.padding_mask", "attncourse.masks.materialize"]
FORBIDDEN = {
    **{name: ["stable_softmax", "sdpa"] for name in _REF_SOFTMAX + _TORCH_SOFTMAX},
    **{name: ["causal_mask", "padding_mask"] for name in _REF_MASKS},
    **{name: ["sdpa"] for name in SDPA_CALLS + ["attncourse.core.attention", "attncourse.core.masked_scores"]},
}



# ============================================================================ stable_softmax
SOFTMAX_CASES = [  # (shape, dim)
    ((7,), -1), ((3, 5), -1), ((3, 5), 0), ((2, 3, 17), -1), ((2, 3, 17), 1), ((1, 1), -1), ((4, 1, 33), -1),
]


@pytest.mark.exercise("stable_softmax")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("shape,dim", SOFTMAX_CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"dim{v}")
def test_softmax_matches_reference(learner, shape, dim, dtype):
    x = rand(*shape, seed=1, dtype=dtype, scale=3.0)
    out = learner.softmax(x, dim=dim)
    expect(out, stable_softmax(x, dim=dim), what=f"softmax(x, dim={dim}) for x of shape {shape}, {dname(dtype)}")


@pytest.mark.exercise("stable_softmax")
@pytest.mark.points(2)
@pytest.mark.parametrize("magnitude", [1e3, 1e5])
def test_softmax_large_scores_no_overflow(learner, magnitude):
    x = rand(4, 9, seed=2, scale=magnitude)
    out = learner.softmax(x)
    expect(out, stable_softmax(x.double()).float(),
           what=f"softmax of scores as large as ±{magnitude:g} (subtract the row maximum before exp)")


@pytest.mark.exercise("stable_softmax")
@pytest.mark.points(2)
def test_softmax_fully_masked_row_gives_zeros(learner):
    x = rand(4, 6, seed=3)
    x[1] = float("-inf")
    x[3, ::2] = float("-inf")
    out = learner.softmax(x)
    expect(out, stable_softmax(x), what="softmax with one row entirely -inf (must be zeros, not NaN)")


@pytest.mark.exercise("stable_softmax")
def test_softmax_first_dim_fully_masked(learner):
    x = rand(5, 3, seed=4)
    x[:, 2] = float("-inf")
    out = learner.softmax(x, dim=0)
    expect(out, stable_softmax(x, dim=0), what="softmax(x, dim=0) with an all -inf column",
           nan_hint="a slice that is all -inf must give zeros, and 0/0 is NaN: handle that case")


@pytest.mark.exercise("stable_softmax")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_softmax_low_precision_keeps_dtype(learner, dtype):
    x = rand(3, 11, seed=5, dtype=dtype, scale=4.0)
    out = learner.softmax(x)
    expect(out, stable_softmax(x.float()).to(dtype), what=f"softmax of a {dname(dtype)} tensor (keep its dtype)")


@pytest.mark.exercise("stable_softmax")
@pytest.mark.points(2)
def test_softmax_gradient(learner):
    x = rand(3, 7, seed=6, dtype=torch.float64)
    x[0, 2] = float("-inf")
    g = rand(3, 7, seed=7, dtype=torch.float64)
    out, (grad,) = learner.softmax.grad(x, wrt=(0,), grad_output=g)
    ref_x = x.clone().requires_grad_(True)
    ref = stable_softmax(ref_x)
    (ref_grad,) = torch.autograd.grad(ref, ref_x, g)
    expect(out, ref.detach(), what="softmax(x) in the gradient test")
    expect(grad, ref_grad, what="the gradient of softmax(x) (backpropagate through your function)")


# ============================================================================ causal_mask
MASK_SIZES = [(1, 1), (4, 4), (9, 9), (5, 9), (3, 7), (1, 6), (17, 31), (6, 3), (2, 1), (13, 5)]


@pytest.mark.exercise("causal_mask")
@pytest.mark.parametrize("tq,tk", MASK_SIZES, ids=lambda v: str(v))
def test_causal_mask_matches_reference(learner, tq, tk):
    out = learner.causal_mask(tq, tk)
    expect(out, ref_causal_mask(tq, tk),
           what=f"causal_mask({tq}, {tk})" + (" (bottom-right aligned: query i sits at position tk - tq + i)"
                                              if tq != tk else ""))


@pytest.mark.exercise("causal_mask")
@pytest.mark.points(2)
@pytest.mark.parametrize("tq,tk", [(7, 3), (4, 1)], ids=str)
def test_causal_mask_more_queries_than_keys(learner, tq, tk):
    out = learner.causal_mask(tq, tk)
    expect(out, ref_causal_mask(tq, tk), what=f"causal_mask({tq}, {tk})")
    expect_true(not bool(out[: tq - tk].any()),
                f"causal_mask({tq}, {tk}): the first tq - tk = {tq - tk} queries sit before the first key; "
                "their rows must be all False")


@pytest.mark.exercise("causal_mask")
@pytest.mark.points(2)
def test_causal_mask_last_query_sees_every_key(learner):
    out = learner.causal_mask(4, 10)
    expect(out, ref_causal_mask(4, 10), what="causal_mask(4, 10)")
    expect_true(bool(out[-1].all()), "causal_mask(4, 10): the last query must see every key (bottom-right alignment)")


# ============================================================================ padding_mask
PAD_CASES = [([3, 1, 4], 5), ([0, 2], 2), ([7], 7), ([1, 1, 1, 1], 1), ([5, 0, 13, 8, 2, 11], 13),
             ([3, 1, 4], 9), ([0, 2], 6), ([1], 97)]  # the last three: t > max(lengths)


@pytest.mark.exercise("padding_mask")
@pytest.mark.parametrize("lengths,t", PAD_CASES, ids=lambda v: str(v))
def test_padding_mask_matches_reference(learner, lengths, t):
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    out = learner.padding_mask(lengths_t, t)
    expect(out, ref_padding_mask(lengths_t, t), what=f"padding_mask(lengths of {len(lengths)} sequences, t={t})")


@pytest.mark.exercise("padding_mask")
@pytest.mark.points(2)
def test_padding_mask_broadcasts_over_scores(learner):
    lengths = torch.tensor([2, 5, 3])
    out = learner.padding_mask(lengths, 5)
    expect(out, ref_padding_mask(lengths, 5), what="padding_mask(lengths of 3 sequences, t=5)")
    scores_shape = (3, 2, 4, 5)
    expect_true(torch.broadcast_shapes(out.shape, scores_shape) == scores_shape,
                "padding_mask must broadcast against scores of shape (B, H, Tq, T)")


# ============================================================================ sdpa
SDPA_SHAPES = [  # (batch dims, Tq, Tk, D, Dv)
    ((), 1, 1, 4, 4), ((), 5, 5, 8, 8), ((2,), 3, 7, 6, 5), ((1, 1), 1, 1, 4, 4), ((2, 3), 5, 9, 8, 8),
    ((1, 2), 7, 7, 16, 5), ((3, 1), 13, 6, 7, 11), ((2, 2), 17, 31, 59, 3),
]


def _sdpa_inputs(batch, tq, tk, d, dv, seed, dtype=torch.float32, scale=1.0):
    q = rand(*batch, tq, d, seed=seed, dtype=dtype, scale=scale)
    k = rand(*batch, tk, d, seed=seed + 1, dtype=dtype, scale=scale)
    v = rand(*batch, tk, dv, seed=seed + 2, dtype=dtype)
    return q, k, v


def _shape_id(case):
    batch, tq, tk, d, dv = case
    return "x".join(map(str, batch + (tq, tk, d, dv)))


def _mask(kind, batch, tq, tk, seed):
    if kind == "none":
        return None
    if kind == "causal":
        return ref_causal_mask(tq, tk)                                  # (Tq, Tk), broadcast
    if kind == "padding":
        b = batch[0] if batch else 1
        lengths = torch.randint(1, tk + 1, (b,), generator=gen(seed))
        m = ref_padding_mask(lengths, tk)                               # (B, 1, 1, Tk)
        if not batch:
            return m[0, 0]                                              # (1, Tk)
        return m.view(b, 1, tk) if len(batch) == 1 else m               # (B, 1, Tk) or (B, 1, 1, Tk)
    if kind == "random":
        m = torch.rand(*batch, tq, tk, generator=gen(seed)) < 0.6
        m[..., 0, :] = False                                            # one fully masked row
        return m
    raise ValueError(kind)


def _describe(case, dtype, mask_kind):
    batch, tq, tk, d, dv = case
    return (f"attention output for q {tuple(batch) + (tq, d)}, k {tuple(batch) + (tk, d)}, "
            f"v {tuple(batch) + (tk, dv)}, {dname(dtype)}, mask: {mask_kind}")


@pytest.mark.exercise("sdpa")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", SDPA_SHAPES, ids=_shape_id)
def test_sdpa_no_mask(learner, case, dtype):
    q, k, v = _sdpa_inputs(*case, seed=10, dtype=dtype)
    out = learner.scaled_dot_product_attention(q, k, v)
    expect(out, attention(q, k, v), what=_describe(case, dtype, "none"))


@pytest.mark.exercise("sdpa")
@pytest.mark.parametrize("mask_kind", ["causal", "padding", "random"])
@pytest.mark.parametrize("case", [SDPA_SHAPES[i] for i in (1, 2, 4, 6, 7)], ids=_shape_id)
def test_sdpa_with_mask(learner, case, mask_kind):
    batch, tq, tk = case[0], case[1], case[2]
    q, k, v = _sdpa_inputs(*case, seed=20)
    mask = _mask(mask_kind, batch, tq, tk, seed=21)
    out = learner.scaled_dot_product_attention(q, k, v, mask=mask)
    expect(out, attention(q, k, v, mask=mask), what=_describe(case, torch.float32, mask_kind))


@pytest.mark.exercise("sdpa")
@pytest.mark.points(3)
def test_sdpa_fully_masked_rows_are_zero(learner):
    q, k, v = _sdpa_inputs((2, 2), 6, 5, 8, 4, seed=30)
    mask = torch.ones(2, 2, 6, 5, dtype=torch.bool)
    mask[0, 1, 2] = False
    mask[1, :, -1] = False
    out = learner.scaled_dot_product_attention(q, k, v, mask=mask)
    expect(out, attention(q, k, v, mask=mask),
           what="attention output where some query rows have every key masked (those rows must be zeros)")


def masked_high_scores(batch, tq, tk, d, dv, magnitude, seed):
    """q, k, v and a mask whose **masked** keys have scores near ``magnitude`` (visible ones near 0).

    Masking after the softmax (then renormalising) lets the visible weights underflow: at a gap
    above ~104 float32 rounds e^-gap to 0 and the row becomes 0/0; below it the result is only
    imprecise. Setting masked scores to -inf first is exact at any magnitude.
    """
    u = rand(d, seed=seed)
    u = u / u.norm()
    q = rand(*batch, tq, d, seed=seed + 1) * 0.3 + 3.0 * u                      # every query points along u
    masked_key = torch.rand(*batch, 1, tk, generator=gen(seed + 2)) < 0.5       # (..., 1, Tk)
    masked_key[..., 0] = False                                                  # every row keeps a key
    k = rand(*batch, tk, d, seed=seed + 3) * 0.3
    k = k + masked_key.transpose(-2, -1) * u * (magnitude * math.sqrt(d) / 3.0)  # q·k/sqrt(d) ≈ magnitude
    v = rand(*batch, tk, dv, seed=seed + 4)
    mask = (~masked_key).expand(*batch, tq, tk)
    return q, k, v, mask


@pytest.mark.exercise("sdpa")
@pytest.mark.points(3)
@pytest.mark.parametrize("magnitude", [30.0, 150.0], ids=lambda m: f"scores{m:g}")
def test_sdpa_masked_keys_with_large_scores(learner, magnitude):
    q, k, v, mask = masked_high_scores((2, 2), 6, 9, 8, 5, magnitude, seed=45)
    out = learner.scaled_dot_product_attention(q, k, v, mask=mask)
    want = attention(q.double(), k.double(), v.double(), mask=mask).float()
    expect(out, want, what=f"attention output where the masked keys have scores near {magnitude:g} "
                           "(set masked scores to -inf before the softmax, not after it)")


@pytest.mark.exercise("sdpa")
@pytest.mark.points(2)
def test_sdpa_large_scores_stay_finite(learner):
    q, k, v = _sdpa_inputs((1, 2), 5, 8, 16, 8, seed=40, scale=30.0)
    out = learner.scaled_dot_product_attention(q, k, v)
    expect(out, attention(q.double(), k.double(), v.double()).float(),
           what="attention output with very large scores (softmax must not overflow)")


@pytest.mark.exercise("sdpa")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_sdpa_low_precision_keeps_dtype(learner, dtype):
    q, k, v = _sdpa_inputs((2, 2), 7, 9, 16, 8, seed=50, dtype=dtype)
    mask = ref_causal_mask(7, 9)
    out = learner.scaled_dot_product_attention(q, k, v, mask=mask)
    expect(out, attention(q.float(), k.float(), v.float(), mask=mask).to(dtype),
           what=f"attention output for {dname(dtype)} inputs (the result keeps the input dtype)")


@pytest.mark.exercise("sdpa")
@pytest.mark.points(2)
def test_sdpa_scale_uses_head_dim(learner):
    q, k, v = _sdpa_inputs((1, 1), 4, 4, 64, 4, seed=60, scale=2.0)
    out = learner.scaled_dot_product_attention(q, k, v)
    expect(out, attention(q, k, v), what="attention output for D = 64 (scale the scores by 1/sqrt(D))")


@pytest.mark.exercise("sdpa")
@pytest.mark.points(3)
@pytest.mark.parametrize("mask_kind", ["none", "random"])
def test_sdpa_gradients(learner, mask_kind):
    batch, tq, tk, d, dv = (2, 2), 5, 7, 6, 3
    q, k, v = _sdpa_inputs(batch, tq, tk, d, dv, seed=70, dtype=torch.float64)
    mask = _mask(mask_kind, batch, tq, tk, seed=71)
    g = rand(*batch, tq, dv, seed=72, dtype=torch.float64)
    kwargs = {} if mask is None else {"mask": mask}
    out, grads = learner.scaled_dot_product_attention.grad(q, k, v, wrt=(0, 1, 2), grad_output=g, **kwargs)
    ref_in = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = attention(*ref_in, mask=mask)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    expect(out, ref.detach(), what=f"attention output in the gradient test (mask: {mask_kind})")
    for name, got, want in zip("qkv", grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} (mask: {mask_kind}; "
                               "masked rows must give finite, zero gradients)")
