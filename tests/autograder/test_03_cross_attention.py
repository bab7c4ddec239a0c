"""Hidden tests for chapter 03 (cross-attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here from the references in ``attncourse.checks.ch03_cross_attention`` (built
on ``attncourse.attention`` and ``attncourse.masks``) and compared with ``expect`` (no hidden
values in messages). Points: ``EXERCISES[id]["points"]`` is split over the exercise's tests in
proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- cross_key_padding_mask: B = 1..6, Tq < Tk, Tq > Tk and Tq = Tk, tk = max(lengths) and
  tk > max(lengths), lengths 0 and full, int32 lengths; shape (B, 1, 1, Tk) or (B, 1, Tq, Tk)
  (both accepted, as the spec says), bool; broadcasts over heads.
- cross_attention: Tq != Tk both ways, C != C_ctx, D != Dv, D from 1 to 64; float32/64 and
  float16/bfloat16 with lengths; lengths with max < tk and = tk, length-0 contexts (zeros);
  padded keys holding values of size 1000 (masked scores far larger than visible ones: a mask
  applied after the softmax fails); square but not causal; scale 1/sqrt(D); large unmasked
  scores; float64 gradients. Graded with the reference ``key_padding_mask`` (``uses``).
- cross_decoder_layer: shapes with Tt != Ts, C != C_mem, float32/64, memory_lengths, causality
  of the self-attention, both residuals, padded memory without influence, float64 gradients.
  Graded with the reference ``cross_attention`` and ``key_padding_mask`` (``uses``).
- cross_attention_alignment: 3-D and 4-D maps, lengths None and given (rows i >= n_b ignored),
  perfect, diagonal and random maps incl. 97 × 97; result a 0-dim float32 tensor.
"""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.checks.ch03_cross_attention import (
    key_padding_mask_problem, reference_alignment, reference_cross_attention, reference_decoder_layer,
)
from attncourse.grading.testkit import LOW_PRECISION, Foreign, Mismatch, dname, expect, expect_true, gen, rand

EXERCISES = {
    "cross_key_padding_mask": {"function": "key_padding_mask", "points": 2},
    "cross_attention": {"function": "cross_attention", "points": 4, "from_scratch": True,
                        "uses": {"key_padding_mask": "attncourse.checks.ch03_cross_attention.reference_key_padding_mask"}},
    "cross_decoder_layer": {"function": "decoder_layer", "points": 3, "from_scratch": True,
                            "uses": {"key_padding_mask": "attncourse.checks.ch03_cross_attention.reference_key_padding_mask",
                                     "cross_attention": "attncourse.checks.ch03_cross_attention.reference_cross_attention"}},
    "cross_attention_alignment": {"function": "cross_attention_alignment", "points": 2},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
_ATTN = ["cross_attention", "cross_decoder_layer"]
_REFERENCE_ATTENTION = [
    "torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention",
    "torch.nn.functional.multi_head_attention_forward", "torch.nn.MultiheadAttention.forward",
    "attncourse.core.attention", "attncourse.core.masked_scores", "attncourse.core.stable_softmax",
    "attncourse.multihead.self_attention", "attncourse.multihead.SelfAttention.forward",
    "attncourse.multihead.MultiHeadAttention.forward", "attncourse.multihead.CrossAttention.forward",
    "attncourse.multihead._ProjectedAttention._attend",
]
_REF_MASKS = ["attncourse.masks.padding_mask", "attncourse.masks.causal_mask", "attncourse.masks.materialize"]
FORBIDDEN = {
    **{name: _ATTN for name in _REFERENCE_ATTENTION},
    **{name: ["cross_key_padding_mask"] + _ATTN for name in _REF_MASKS},
    "attncourse.data.reversal_alignment": ["cross_attention_alignment"],
}



# ============================================================================ key_padding_mask
PAD_CASES = [  # (lengths, tq, tk); the last three pad beyond the longest context (tk > max)
    ([3, 1, 4], 2, 4), ([0, 2], 3, 2), ([7], 1, 7), ([1, 1, 1], 5, 1), ([5, 0, 13, 8, 2, 11], 4, 13),
    ([97, 40, 1], 9, 97), ([2, 6], 6, 6), ([3, 1, 4], 2, 9), ([0, 2], 5, 6), ([1], 3, 97),
]


def expect_kpm(out, lengths, tq, tk, what):
    """(B, 1, 1, Tk) and (B, 1, Tq, Tk) are both right (the spec allows either)."""
    if isinstance(out, Foreign):
        raise Mismatch(f"{what} should be a torch.Tensor, but your function returned {out.description}")
    msg = key_padding_mask_problem(out, lengths, tq, tk, what=what, reveal_values=False)
    if msg is not None:
        raise Mismatch(msg)


@pytest.mark.exercise("cross_key_padding_mask")
@pytest.mark.parametrize("lengths,tq,tk", PAD_CASES, ids=lambda v: str(v))
def test_key_padding_mask_matches_reference(learner, lengths, tq, tk):
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    out = learner.key_padding_mask(lengths_t, tq, tk)
    expect_kpm(out, lengths_t, tq, tk, what=f"key_padding_mask(lengths of {len(lengths)} sequences, tq={tq}, tk={tk})")


@pytest.mark.exercise("cross_key_padding_mask")
@pytest.mark.points(2)
def test_key_padding_mask_columns_not_rows(learner):
    lengths = torch.tensor([2, 5, 3])
    out = learner.key_padding_mask(lengths, 7, 5)
    expect_kpm(out, lengths, 7, 5,
               what="key_padding_mask(lengths of 3 sequences, tq=7, tk=5): mask keys (columns) for every query")


@pytest.mark.exercise("cross_key_padding_mask")
def test_key_padding_mask_int32_lengths(learner):
    lengths = torch.tensor([4, 1, 0], dtype=torch.int32)
    out = learner.key_padding_mask(lengths, 3, 4)
    expect_kpm(out, lengths.long(), 3, 4, what="key_padding_mask(int32 lengths of 3 sequences, tq=3, tk=4)")


@pytest.mark.exercise("cross_key_padding_mask")
@pytest.mark.points(2)
def test_key_padding_mask_broadcasts_over_heads(learner):
    lengths = torch.tensor([3, 6])
    out = learner.key_padding_mask(lengths, 4, 6)
    expect_kpm(out, lengths, 4, 6, what="key_padding_mask(lengths of 2 sequences, tq=4, tk=6)")
    scores_shape = (2, 3, 4, 6)
    expect_true(torch.broadcast_shapes(out.shape, scores_shape) == scores_shape,
                "key_padding_mask must broadcast over heads: shape (B, 1, 1, Tk) or (B, 1, Tq, Tk)")


# ============================================================================ cross_attention
XATTN_SHAPES = [  # (B, Tq, Tk, C, C_ctx, D, Dv)
    (1, 1, 1, 4, 4, 4, 4), (2, 3, 5, 8, 12, 4, 6), (3, 7, 2, 6, 6, 6, 6), (1, 5, 5, 8, 8, 8, 8),
    (2, 1, 97, 16, 24, 8, 8), (3, 13, 6, 7, 11, 5, 3), (1, 97, 3, 9, 5, 59, 1), (2, 4, 31, 33, 17, 16, 12),
]


def _shape_id(case):
    return "x".join(map(str, case))


def _xattn_inputs(b, tq, tk, c, c_ctx, d, dv, seed, dtype=torch.float32, scale=1.0):
    x = rand(b, tq, c, seed=seed, dtype=dtype, scale=scale)
    context = rand(b, tk, c_ctx, seed=seed + 1, dtype=dtype, scale=scale)
    w_q = rand(c, d, seed=seed + 2, dtype=dtype, scale=1 / math.sqrt(c))
    w_k = rand(c_ctx, d, seed=seed + 3, dtype=dtype, scale=1 / math.sqrt(c_ctx))
    w_v = rand(c_ctx, dv, seed=seed + 4, dtype=dtype, scale=1 / math.sqrt(c_ctx))
    return x, context, w_q, w_k, w_v


def _describe(case, dtype, lengths):
    b, tq, tk, c, c_ctx, d, dv = case
    return (f"cross_attention output for x {(b, tq, c)}, context {(b, tk, c_ctx)}, D={d}, Dv={dv}, "
            f"{dname(dtype)}, " + ("no context_lengths" if lengths is None else "with context_lengths"))


def _lengths(b, tk, seed, allow_zero=False):
    return torch.randint(0 if allow_zero else 1, tk + 1, (b,), generator=gen(seed))


@pytest.mark.exercise("cross_attention")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", XATTN_SHAPES, ids=_shape_id)
def test_cross_attention_no_mask(learner, case, dtype):
    args = _xattn_inputs(*case, seed=10, dtype=dtype)
    out = learner.cross_attention(*args)
    expect(out, reference_cross_attention(*args), what=_describe(case, dtype, None))


@pytest.mark.exercise("cross_attention")
@pytest.mark.parametrize("case", [XATTN_SHAPES[i] for i in (1, 2, 4, 5, 7)], ids=_shape_id)
def test_cross_attention_with_lengths(learner, case):
    args = _xattn_inputs(*case, seed=20)
    lengths = _lengths(case[0], case[2], seed=21)
    out = learner.cross_attention(*args, context_lengths=lengths)
    expect(out, reference_cross_attention(*args, context_lengths=lengths), what=_describe(case, torch.float32, lengths))


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(2)
def test_cross_attention_padded_beyond_longest_context(learner):
    # tk = 11 > max(lengths) = 7: padding exists in every sequence, also in the longest one.
    case = (3, 4, 11, 8, 6, 4, 5)
    args = _xattn_inputs(*case, seed=25)
    lengths = torch.tensor([7, 2, 5])
    out = learner.cross_attention(*args, context_lengths=lengths)
    expect(out, reference_cross_attention(*args, context_lengths=lengths),
           what="cross_attention output with contexts of lengths 7, 2, 5 padded to tk = 11")


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(2)
def test_cross_attention_padding_has_no_influence(learner):
    case = (3, 5, 9, 8, 10, 4, 6)
    x, context, w_q, w_k, w_v = _xattn_inputs(*case, seed=30)
    lengths = torch.tensor([9, 4, 1])
    garbage = context.clone()
    garbage[1, 4:] = rand(5, 10, seed=31, scale=1000.0)
    garbage[2, 1:] = rand(8, 10, seed=32, scale=1000.0)
    out = learner.cross_attention(x, garbage, w_q, w_k, w_v, context_lengths=lengths)
    expect(out, reference_cross_attention(x, context, w_q, w_k, w_v, context_lengths=lengths),
           what="cross_attention output when the padded context slots hold large garbage values "
                "(padded keys must get exactly zero weight)")


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(2)
def test_cross_attention_empty_context_gives_zeros(learner):
    case = (3, 4, 5, 6, 6, 4, 4)
    args = _xattn_inputs(*case, seed=40)
    lengths = torch.tensor([0, 5, 0])
    out = learner.cross_attention(*args, context_lengths=lengths)
    expect(out, reference_cross_attention(*args, context_lengths=lengths),
           what="cross_attention output where some contexts have length 0 (those rows must be zeros, not NaN)")


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(2)
def test_cross_attention_square_is_not_causal(learner):
    case = (2, 6, 6, 8, 8, 8, 8)
    args = _xattn_inputs(*case, seed=50)
    out = learner.cross_attention(*args)
    expect(out, reference_cross_attention(*args),
           what="cross_attention output with Tq = Tk = 6 (every query sees the whole context: no causal mask)")


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(2)
def test_cross_attention_scale_uses_head_dim(learner):
    case = (1, 4, 5, 4, 6, 64, 4)
    args = _xattn_inputs(*case, seed=60, scale=2.0)
    out = learner.cross_attention(*args)
    expect(out, reference_cross_attention(*args),
           what="cross_attention output for C = 4, D = 64 (scale the scores by 1/sqrt(D), D = w_q.shape[1])")


@pytest.mark.exercise("cross_attention")
def test_cross_attention_large_scores_stay_finite(learner):
    case = (2, 3, 7, 8, 8, 8, 4)
    args = _xattn_inputs(*case, seed=70, scale=20.0)
    out = learner.cross_attention(*args)
    expect(out, reference_cross_attention(*(a.double() for a in args)).float(),
           what="cross_attention output with very large scores (the softmax must not overflow)")


@pytest.mark.exercise("cross_attention")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_cross_attention_low_precision_keeps_dtype(learner, dtype):
    case = (2, 5, 7, 16, 8, 8, 8)
    args = _xattn_inputs(*case, seed=80, dtype=dtype)
    lengths = torch.tensor([7, 3])
    out = learner.cross_attention(*args, context_lengths=lengths)
    want = reference_cross_attention(*(a.float() for a in args), context_lengths=lengths).to(dtype)
    expect(out, want, what=f"cross_attention output for {dname(dtype)} inputs (the result keeps the input dtype)")


@pytest.mark.exercise("cross_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["no_lengths", "lengths"])
def test_cross_attention_gradients(learner, with_lengths):
    case = (3, 4, 6, 5, 7, 3, 2)
    args = _xattn_inputs(*case, seed=90, dtype=torch.float64)
    lengths = torch.tensor([6, 0, 2]) if with_lengths else None
    g = rand(3, 4, 2, seed=91, dtype=torch.float64)
    kwargs = {"context_lengths": lengths} if with_lengths else {}
    out, grads = learner.cross_attention.grad(*args, wrt=(0, 1, 2, 3, 4), grad_output=g, **kwargs)
    ref_in = [a.clone().requires_grad_(True) for a in args]
    ref = reference_cross_attention(*ref_in, context_lengths=lengths)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    tag = "with a length-0 context" if with_lengths else "no context_lengths"
    expect(out, ref.detach(), what=f"cross_attention output in the gradient test ({tag})")
    for name, got, want in zip(["x", "context", "w_q", "w_k", "w_v"], grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} ({tag}; padded context tokens "
                               "must get zero gradient and nothing may be NaN)")


# ============================================================================ decoder_layer
LAYER_SHAPES = [  # (B, Tt, Ts, C, C_mem, D)
    (1, 1, 1, 4, 4, 4), (2, 4, 6, 8, 8, 8), (3, 7, 3, 6, 10, 2), (1, 9, 97, 16, 12, 8), (2, 13, 5, 5, 3, 7),
]


def _layer_inputs(b, tt, ts, c, c_mem, d, seed, dtype=torch.float32):
    y = rand(b, tt, c, seed=seed, dtype=dtype)
    memory = rand(b, ts, c_mem, seed=seed + 1, dtype=dtype)
    sw = (rand(c, d, seed=seed + 2, dtype=dtype, scale=1 / math.sqrt(c)),
          rand(c, d, seed=seed + 3, dtype=dtype, scale=1 / math.sqrt(c)),
          rand(c, c, seed=seed + 4, dtype=dtype, scale=1 / math.sqrt(c)))
    cw = (rand(c, d, seed=seed + 5, dtype=dtype, scale=1 / math.sqrt(c)),
          rand(c_mem, d, seed=seed + 6, dtype=dtype, scale=1 / math.sqrt(c_mem)),
          rand(c_mem, c, seed=seed + 7, dtype=dtype, scale=1 / math.sqrt(c_mem)))
    return y, memory, sw, cw


def _layer_what(case, dtype, lengths):
    b, tt, ts, c, c_mem, d = case
    return (f"decoder_layer output for y {(b, tt, c)}, memory {(b, ts, c_mem)}, D={d}, {dname(dtype)}, "
            + ("no memory_lengths" if lengths is None else "with memory_lengths")
            + " (y + causal self-attention first, then + cross-attention)")


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", LAYER_SHAPES, ids=_shape_id)
def test_decoder_layer_matches_reference(learner, case, dtype):
    args = _layer_inputs(*case, seed=100, dtype=dtype)
    out = learner.decoder_layer(*args)
    expect(out, reference_decoder_layer(*args), what=_layer_what(case, dtype, None))


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.parametrize("case", LAYER_SHAPES[1:], ids=_shape_id)
def test_decoder_layer_with_memory_lengths(learner, case):
    args = _layer_inputs(*case, seed=110)
    lengths = _lengths(case[0], case[2], seed=111)
    out = learner.decoder_layer(*args, memory_lengths=lengths)
    expect(out, reference_decoder_layer(*args, memory_lengths=lengths), what=_layer_what(case, torch.float32, lengths))


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.points(2)
def test_decoder_layer_is_causal(learner):
    y, memory, sw, cw = _layer_inputs(2, 8, 5, 8, 8, 4, seed=120)
    future = y.clone()
    future[:, 5:] = rand(2, 3, 8, seed=121, scale=5.0)
    a = learner.decoder_layer(y, memory, sw, cw)
    b = learner.decoder_layer(future, memory, sw, cw)
    expect(a, reference_decoder_layer(y, memory, sw, cw), what="decoder_layer output (Tt = 8)")
    expect(b[:, :5], a[:, :5], what="decoder_layer outputs 0-4 after changing target tokens 5-7 "
                                    "(the self-attention must be causal: token i sees tokens j <= i)")


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.points(2)
def test_decoder_layer_residuals(learner):
    y, memory, sw, cw = _layer_inputs(2, 5, 4, 6, 6, 6, seed=130)
    zero_sw = (sw[0], sw[1], torch.zeros_like(sw[2]))
    zero_cw = (cw[0], cw[1], torch.zeros_like(cw[2]))
    out = learner.decoder_layer(y, memory, zero_sw, zero_cw)
    expect(out, y, what="decoder_layer output when both W_V are zero (both sublayers add nothing, "
                        "so the residual connections must return y)")
    out = learner.decoder_layer(y, memory, sw, zero_cw)
    expect(out, reference_decoder_layer(y, memory, sw, zero_cw),
           what="decoder_layer output when the cross-attention W_V is zero (only y + causal self-attention remains)")


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.points(2)
def test_decoder_layer_padded_memory_has_no_influence(learner):
    y, memory, sw, cw = _layer_inputs(3, 4, 7, 8, 8, 4, seed=140)
    lengths = torch.tensor([7, 2, 0])
    garbage = memory.clone()
    garbage[1, 2:] = rand(5, 8, seed=141, scale=1000.0)
    garbage[2] = rand(7, 8, seed=142, scale=1000.0)
    out = learner.decoder_layer(y, garbage, sw, cw, memory_lengths=lengths)
    expect(out, reference_decoder_layer(y, memory, sw, cw, memory_lengths=lengths),
           what="decoder_layer output with garbage in the padded memory and one memory of length 0 "
                "(padded memory must have no influence; an empty memory adds zeros)")


@pytest.mark.exercise("cross_decoder_layer")
@pytest.mark.points(3)
def test_decoder_layer_gradients(learner):
    y, memory, sw, cw = _layer_inputs(2, 5, 6, 6, 4, 3, seed=150, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    g = rand(2, 5, 6, seed=151, dtype=torch.float64)
    out, grads = learner.decoder_layer.grad(y, memory, sw, cw, wrt=(0, 1), grad_output=g, memory_lengths=lengths)
    ref_y, ref_m = y.clone().requires_grad_(True), memory.clone().requires_grad_(True)
    ref = reference_decoder_layer(ref_y, ref_m, sw, cw, memory_lengths=lengths)
    ref_grads = torch.autograd.grad(ref, (ref_y, ref_m), g)
    expect(out, ref.detach(), what="decoder_layer output in the gradient test")
    for name, got, want in zip(["y", "memory"], grads, ref_grads):
        expect(got, want, what=f"the gradient of decoder_layer with respect to {name}")


# ============================================================================ alignment
def _anti_diagonal(b, h, tq, tk, lengths, seed, dtype=torch.float32):
    w = torch.rand(b, h, tq, tk, generator=gen(seed), dtype=torch.float64) * 0.5
    for bi, n in enumerate(lengths):
        for i in range(min(n, tq)):
            w[bi, :, i, n - 1 - i] += 1.0
    return w.softmax(-1).to(dtype)


def _random_maps(shape, seed, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * 2).softmax(-1).to(dtype)


def _spoil(w, seed, frac=0.4):
    """Move the argmax of a random subset of rows onto a random key (some may stay hits)."""
    w = w.clone()
    g = gen(seed)
    rows = torch.rand(w.shape[:-1], generator=g) < frac
    keys = torch.randint(0, w.shape[-1], w.shape[:-1], generator=g)
    bump = torch.zeros_like(w).scatter_(-1, keys.unsqueeze(-1), 5.0)
    return torch.where(rows.unsqueeze(-1), w + bump, w)


@pytest.mark.exercise("cross_attention_alignment")
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 4, 4), (3, 9, 8), (2, 3, 8, 8), (1, 4, 97, 97)], ids=str)
def test_alignment_random_maps(learner, shape):
    b, tq, tk = shape[0], shape[-2], shape[-1]
    h = 1 if len(shape) == 3 else shape[1]
    w = _spoil(_anti_diagonal(b, h, tq, tk, [tk] * b, seed=200), seed=201).view(shape)  # some rows hit, some miss
    out = learner.cross_attention_alignment(w)
    expect(out, reference_alignment(w), what=f"cross_attention_alignment of maps of shape {shape} (lengths None)")


@pytest.mark.exercise("cross_attention_alignment")
@pytest.mark.points(2)
def test_alignment_perfect_and_diagonal(learner):
    w = _anti_diagonal(3, 2, 9, 8, [8, 8, 8], seed=210)
    out = learner.cross_attention_alignment(w)
    expect(out, reference_alignment(w), what="cross_attention_alignment of a perfect anti-diagonal (B, H, 9, 8)")
    diag = _anti_diagonal(3, 2, 9, 8, [8, 8, 8], seed=211).flip(-1)          # the main diagonal
    out = learner.cross_attention_alignment(diag)
    expect(out, reference_alignment(diag), what="cross_attention_alignment of a diagonal (copying) map")


@pytest.mark.exercise("cross_attention_alignment")
@pytest.mark.points(2)
@pytest.mark.parametrize("lengths", [[3, 5], [1, 8, 4], [6]], ids=str)
def test_alignment_with_lengths(learner, lengths):
    b, h, tk = len(lengths), 2, max(lengths + [5])
    tq = tk + 1
    w = _spoil(_anti_diagonal(b, h, tq, tk, lengths, seed=220), seed=221)
    lengths_t = torch.tensor(lengths)
    out = learner.cross_attention_alignment(w, lengths_t)
    expect(out, reference_alignment(w, lengths_t),
           what=f"cross_attention_alignment with lengths of {b} sequences, Tq = {tq}, Tk = {tk} "
                "(only rows i < n count; the hit is key n - 1 - i)")


@pytest.mark.exercise("cross_attention_alignment")
def test_alignment_rows_after_length_do_not_count(learner):
    lengths = torch.tensor([4, 4])
    w = _anti_diagonal(2, 1, 7, 6, [4, 4], seed=230)[:, 0]                   # (B, Tq, Tk), 3-D
    w[:, 4:] = _random_maps((2, 3, 6), seed=231)                              # rows past n: anything
    out = learner.cross_attention_alignment(w, lengths)
    expect(out, reference_alignment(w, lengths),
           what="cross_attention_alignment of (2, 7, 6) maps with lengths [4, 4] (rows 4-6 must not count)")


@pytest.mark.exercise("cross_attention_alignment")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=dname)
def test_alignment_returns_float32_scalar(learner, dtype):
    w = _spoil(_anti_diagonal(2, 2, 5, 5, [5, 5], seed=240, dtype=dtype), seed=241)
    out = learner.cross_attention_alignment(w)
    expect(out, reference_alignment(w), what=f"cross_attention_alignment of {dname(dtype)} maps "
                                              "(return a 0-dim float32 tensor)")
