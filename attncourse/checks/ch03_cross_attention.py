"""Public checks for chapter 03 (cross-attention).

Each case builds small inputs, calls the learner's function and compares with a reference
built from :func:`attncourse.attention` and :mod:`attncourse.masks` through
:func:`attncourse.testing.compare`. The ``reference_*`` functions below are the oracles of
these checks and of the hidden tests (``tests/autograder/test_03_cross_attention.py``).
"""
from __future__ import annotations

import math

import torch

from attncourse.checks import case
from attncourse.core import attention
from attncourse.data import reversal_alignment as reference_alignment
from attncourse.masks import causal_mask, padding_mask
from attncourse.testing import compare


# ------------------------------------------------------------------------- references
def reference_key_padding_mask(context_lengths: torch.Tensor, tq: int, tk: int) -> torch.Tensor:
    """Bool ``(B, 1, Tq, Tk)``: True where key ``j < context_lengths[b]``, for every query."""
    keep = padding_mask(context_lengths, tk)                     # (B, 1, 1, Tk)
    return keep.expand(-1, 1, tq, tk).contiguous()               # (B, 1, Tq, Tk)


def key_padding_mask_problem(out, context_lengths: torch.Tensor, tq: int, tk: int, *, what: str,
                             reveal_values: bool = True) -> str | None:
    """``None`` if ``out`` is a right key-padding mask, else what is wrong.

    Exercise 1 accepts either shape that broadcasts to ``(B, 1, Tq, Tk)``: ``(B, 1, 1, Tk)`` (the
    same keys for every query, as chapter 01's ``padding_mask``) or ``(B, 1, Tq, Tk)``. The public
    checks and the hidden tests both use this function, so they accept the same answers.
    """
    b = len(context_lengths)
    want = reference_key_padding_mask(context_lengths, tq, tk)            # (B, 1, Tq, Tk)
    if type(out) is torch.Tensor and tuple(out.shape) == (b, 1, 1, tk):
        out = out.expand(b, 1, tq, tk)
    elif type(out) is torch.Tensor and tuple(out.shape) != (b, 1, tq, tk):
        return (f"{what} has shape {tuple(out.shape)}; expected (B, 1, 1, Tk) = {(b, 1, 1, tk)} "
                f"or (B, 1, Tq, Tk) = {(b, 1, tq, tk)}")
    return compare(out, want, what=what, reveal_values=reveal_values)


def reference_cross_attention(x, context, w_q, w_k, w_v, context_lengths=None):
    """Single-head cross-attention: ``x: (B, Tq, C)``, ``context: (B, Tk, C_ctx)`` -> ``(B, Tq, Dv)``."""
    mask = None
    if context_lengths is not None:
        mask = padding_mask(context_lengths, context.shape[1])[:, 0]  # (B, 1, 1, Tk) -> (B, 1, Tk)
    return attention(x @ w_q, context @ w_k, context @ w_v, mask=mask)


def reference_decoder_layer(y, memory, self_weights, cross_weights, memory_lengths=None):
    """``h = y + CausalSelfAttn(y)``, then ``h + CrossAttn(h, memory)`` (single head, no norms)."""
    w_q, w_k, w_v = self_weights
    tt = y.shape[1]
    h = y + attention(y @ w_q, y @ w_k, y @ w_v, mask=causal_mask(tt, tt, device=y.device))
    return h + reference_cross_attention(h, memory, *cross_weights, context_lengths=memory_lengths)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(c_in: int, c_out: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(c_in, c_out, generator=g, dtype=torch.float64) / math.sqrt(c_in)).to(dtype)


def _xattn_inputs(b, tq, tk, c, c_ctx, d, dv, seed, dtype=torch.float32):
    g = _gen(seed)
    x = torch.randn(b, tq, c, generator=g, dtype=torch.float64).to(dtype)
    context = torch.randn(b, tk, c_ctx, generator=g, dtype=torch.float64).to(dtype)
    return x, context, _weights(c, d, g, dtype), _weights(c_ctx, d, g, dtype), _weights(c_ctx, dv, g, dtype)


# ------------------------------------------------------------------ key padding mask
@case("cross_key_padding_mask", "shape (B, 1, 1, Tk) or (B, 1, Tq, Tk), dtype bool, True on real context tokens")
def _(fn):
    lengths = torch.tensor([4, 2])
    return key_padding_mask_problem(fn(lengths, 3, 4), lengths, 3, 4, what="key_padding_mask([4, 2], tq=3, tk=4)")


@case("cross_key_padding_mask", "Tq ≠ Tk: whole columns are masked, the same for every query")
def _(fn):
    lengths = torch.tensor([1, 5, 3])
    return key_padding_mask_problem(fn(lengths, 2, 5), lengths, 2, 5, what="key_padding_mask([1, 5, 3], tq=2, tk=5)")


@case("cross_key_padding_mask", "a context of length 0 masks every key")
def _(fn):
    lengths = torch.tensor([0, 3])
    return key_padding_mask_problem(fn(lengths, 4, 3), lengths, 4, 3, what="key_padding_mask([0, 3], tq=4, tk=3)")


@case("cross_key_padding_mask", "padded to more than the longest context: tk = 7 > max(lengths) = 5")
def _(fn):
    lengths = torch.tensor([5, 2])
    return key_padding_mask_problem(fn(lengths, 3, 7), lengths, 3, 7, what="key_padding_mask([5, 2], tq=3, tk=7)")


# ------------------------------------------------------------------- cross attention
@case("cross_attention", "Tq = 3 queries over Tk = 5 context tokens of another width (no mask)")
def _(fn):
    args = _xattn_inputs(2, 3, 5, 8, 12, 4, 6, seed=1)
    return compare(fn(*args), reference_cross_attention(*args), what="cross_attention output")


@case("cross_attention", "Tq = Tk: every query sees every context token (no causal mask)")
def _(fn):
    args = _xattn_inputs(1, 4, 4, 6, 6, 6, 6, seed=2)
    return compare(fn(*args), reference_cross_attention(*args),
                   what="cross_attention output with Tq = Tk (do not apply a causal mask)")


@case("cross_attention", "the scores are scaled by 1/√D, D = w_q.shape[1] (not C)")
def _(fn):
    x, ctx, w_q, w_k, w_v = _xattn_inputs(1, 3, 4, 4, 4, 16, 4, seed=3)
    return compare(fn(x, ctx, w_q * 3, w_k * 3, w_v), reference_cross_attention(x, ctx, w_q * 3, w_k * 3, w_v),
                   what="cross_attention output with D = 16, C = 4")


@case("cross_attention", "context_lengths masks the padded context tokens (keys)")
def _(fn):
    args = _xattn_inputs(2, 3, 5, 8, 12, 4, 6, seed=4)
    lengths = torch.tensor([5, 3])
    return compare(fn(*args, context_lengths=lengths), reference_cross_attention(*args, context_lengths=lengths),
                   what="cross_attention output with context_lengths [5, 3]")


@case("cross_attention", "a context of length 0 gives zeros, not NaN")
def _(fn):
    args = _xattn_inputs(2, 2, 3, 4, 4, 4, 4, seed=5)
    lengths = torch.tensor([0, 2])
    return compare(fn(*args, context_lengths=lengths), reference_cross_attention(*args, context_lengths=lengths),
                   what="cross_attention output with context_lengths [0, 2]")


@case("cross_attention", "keeps the input dtype (float64 in, float64 out)")
def _(fn):
    args = _xattn_inputs(2, 3, 4, 5, 7, 3, 2, seed=6, dtype=torch.float64)
    return compare(fn(*args), reference_cross_attention(*args), what="float64 cross_attention output")


# ------------------------------------------------------------------- decoder layer
def _layer_inputs(b, tt, ts, c, c_mem, d, seed, dtype=torch.float32):
    g = _gen(seed)
    y = torch.randn(b, tt, c, generator=g, dtype=torch.float64).to(dtype)
    memory = torch.randn(b, ts, c_mem, generator=g, dtype=torch.float64).to(dtype)
    self_w = (_weights(c, d, g, dtype), _weights(c, d, g, dtype), _weights(c, c, g, dtype))
    cross_w = (_weights(c, d, g, dtype), _weights(c_mem, d, g, dtype), _weights(c_mem, c, g, dtype))
    return y, memory, self_w, cross_w


@case("cross_decoder_layer", "causal self-attention, then cross-attention, each with a residual")
def _(fn):
    args = _layer_inputs(2, 4, 6, 8, 8, 8, seed=7)
    return compare(fn(*args), reference_decoder_layer(*args), what="decoder_layer output")


@case("cross_decoder_layer", "the self-attention is causal: earlier outputs ignore later target tokens")
def _(fn):
    y, memory, sw, cw = _layer_inputs(1, 5, 3, 6, 6, 6, seed=8)
    y2 = y.clone()
    y2[:, 3:] += 1.0
    a, b = fn(y, memory, sw, cw), fn(y2, memory, sw, cw)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return compare(a, reference_decoder_layer(y, memory, sw, cw), what="decoder_layer output")
    msg = compare(b[:, :3], a[:, :3], what="decoder_layer outputs 0-2 after changing target tokens 3-4")
    if msg:
        return msg + " (mask the self-attention causally: token i may see tokens j <= i only)"
    return compare(a, reference_decoder_layer(y, memory, sw, cw), what="decoder_layer output")


@case("cross_decoder_layer", "memory_lengths masks the padded memory; memory may be wider than y")
def _(fn):
    args = _layer_inputs(2, 3, 5, 4, 10, 2, seed=9)
    lengths = torch.tensor([2, 5])
    return compare(fn(*args, memory_lengths=lengths), reference_decoder_layer(*args, memory_lengths=lengths),
                   what="decoder_layer output with memory_lengths [2, 5]")


# ----------------------------------------------------------------------- alignment
def _anti_diagonal(b, h, tq, tk, lengths, seed):
    g = _gen(seed)
    w = torch.rand(b, h, tq, tk, generator=g) * 0.1
    for bi, n in enumerate(lengths):
        for i in range(min(n, tq)):
            w[bi, :, i, n - 1 - i] += 1.0
    return w.softmax(-1)


@case("cross_attention_alignment", "a perfect anti-diagonal scores 1.0, a 0-dim float32 tensor")
def _(fn):
    w = _anti_diagonal(2, 1, 4, 4, [4, 4], seed=10)[:, 0]          # (B, Tq, Tk)
    return compare(fn(w), reference_alignment(w), what="cross_attention_alignment of an anti-diagonal map")


@case("cross_attention_alignment", "random maps with heads (B, H, Tq, Tk)")
def _(fn):
    w = torch.rand(3, 2, 6, 6, generator=_gen(11)).softmax(-1)
    return compare(fn(w), reference_alignment(w), what="cross_attention_alignment of random (3, 2, 6, 6) maps")


@case("cross_attention_alignment", "lengths: only steps i < n count, against key n - 1 - i")
def _(fn):
    w = _anti_diagonal(2, 2, 6, 5, [3, 5], seed=12)
    w[0, 1, 1] = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])            # one miss in head 1
    lengths = torch.tensor([3, 5])
    return compare(fn(w, lengths), reference_alignment(w, lengths),
                   what="cross_attention_alignment with lengths [3, 5] (Tq = 6, Tk = 5)")
