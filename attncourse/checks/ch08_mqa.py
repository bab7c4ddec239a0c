"""Public checks for chapter 08 (multi-query attention).

The references adapt :mod:`attncourse.gqa` to the exercises' signatures (the hidden tests in
``tests/autograder/test_08_mqa.py`` use the same adapters; ``reference_grouped_attention`` is what the
grader gives ``mqa_layer`` in place of the learner's ``grouped_attention``).
"""
from __future__ import annotations

import math

import torch

from attncourse.checks import case
from attncourse.core import attention
from attncourse.gqa import decode_attention_cost, grouped_attention
from attncourse.masks import causal_mask
from attncourse.multihead import merge_heads, split_heads
from attncourse.testing import compare


# ------------------------------------------------------------------------- references
def reference_grouped_attention(q, k, v, causal=False):
    """``(B, H, Tq, D)``: query head h reads K/V head h // (H // Hkv); causal aligned bottom-right."""
    mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None
    return grouped_attention(q, k, v, mask=mask)


def reference_mqa_layer(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=1, causal=False):
    """``x: (B, T, C)``; ``w_q, w_o: (C, C)``, ``w_k, w_v: (C, Hkv·D)``, all used as ``x @ w``."""
    q = split_heads(x @ w_q, n_heads)                   # (B, H, T, D)
    k = split_heads(x @ w_k, n_kv_heads)                # (B, Hkv, T, D)
    v = split_heads(x @ w_v, n_kv_heads)
    return merge_heads(reference_grouped_attention(q, k, v, causal)) @ w_o


def reference_decode_intensity(n_heads, n_kv_heads, head_dim, context, dtype_bytes=2):
    return decode_attention_cost(n_heads, n_kv_heads, head_dim, context, dtype_bytes=dtype_bytes)["intensity"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _qkv(B, H, Hkv, Tq, Tk, D, seed, dtype=torch.float32):
    g = _gen(seed)
    return (torch.randn(B, H, Tq, D, generator=g).to(dtype), torch.randn(B, Hkv, Tk, D, generator=g).to(dtype),
            torch.randn(B, Hkv, Tk, D, generator=g).to(dtype))


def _repeat_order(q, k, v, causal):
    """The classic mistake: query head h reads K/V head h % Hkv (what `k.repeat(1, G, 1, 1)` gives)."""
    G = q.shape[1] // k.shape[1]
    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    return attention(q, k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1), mask=mask)


# ------------------------------------------------------------------- grouped_attention
@case("grouped_attention", "MQA: 4 query heads share one K/V head")
def _(fn):
    q, k, v = _qkv(2, 4, 1, 3, 5, 8, 1)
    return compare(fn(q, k, v), reference_grouped_attention(q, k, v), what="grouped_attention with H=4, Hkv=1")


@case("grouped_attention", "GQA: 6 query heads over 2 K/V heads, consecutive heads share (h // 3)")
def _(fn):
    q, k, v = _qkv(1, 6, 2, 4, 4, 4, 2)
    out = fn(q, k, v)
    if isinstance(out, torch.Tensor) and out.shape == q.shape and torch.allclose(out, _repeat_order(q, k, v, False),
                                                                                  atol=1e-5):
        return ("query head h read K/V head h % Hkv (the order of `repeat`); the convention is h // (H // Hkv): "
                "heads 0, 1, 2 share K/V head 0 — reshape q to (B, Hkv, H // Hkv, T, D)")
    return compare(out, reference_grouped_attention(q, k, v), what="grouped_attention with H=6, Hkv=2")


@case("grouped_attention", "causal with one new query and 7 cached keys (Tq != Tk, bottom-right)")
def _(fn):
    q, k, v = _qkv(2, 4, 2, 1, 7, 4, 3)
    return compare(fn(q, k, v, causal=True), reference_grouped_attention(q, k, v, True),
                   what="grouped_attention(causal=True) with Tq=1, Tk=7")


@case("grouped_attention", "causal, Tq=3 < Tk=5: query i sits at position Tk - Tq + i")
def _(fn):
    q, k, v = _qkv(1, 2, 1, 3, 5, 4, 4)
    return compare(fn(q, k, v, causal=True), reference_grouped_attention(q, k, v, True),
                   what="grouped_attention(causal=True) with Tq=3, Tk=5")


@case("grouped_attention", "H = Hkv is ordinary multi-head attention")
def _(fn):
    q, k, v = _qkv(2, 3, 3, 5, 5, 4, 5, torch.float64)
    return compare(fn(q, k, v, causal=True), reference_grouped_attention(q, k, v, True),
                   what="grouped_attention with H = Hkv = 3 (float64)")


# --------------------------------------------------------------------------- mqa_layer
def _layer_inputs(B, T, C, H, Hkv, seed, dtype=torch.float32):
    g = _gen(seed)
    D = C // H
    x = torch.randn(B, T, C, generator=g).to(dtype)
    w = [(torch.randn(C, n, generator=g) / math.sqrt(C)).to(dtype) for n in (C, Hkv * D, Hkv * D, C)]
    return x, w


@case("mqa_layer", "MQA layer: C=16, 4 heads, one K/V head; w_k and w_v are (16, 4)")
def _(fn):
    x, w = _layer_inputs(2, 5, 16, 4, 1, 6)
    return compare(fn(x, *w, 4, 1), reference_mqa_layer(x, *w, 4, 1), what="mqa_layer with C=16, H=4, Hkv=1")


@case("mqa_layer", "GQA layer with causal=True: C=24, 6 heads, 2 K/V heads")
def _(fn):
    x, w = _layer_inputs(1, 7, 24, 6, 2, 7)
    return compare(fn(x, *w, 6, 2, causal=True), reference_mqa_layer(x, *w, 6, 2, True),
                   what="mqa_layer with C=24, H=6, Hkv=2, causal")


@case("mqa_layer", "Hkv = H gives multi-head attention")
def _(fn):
    x, w = _layer_inputs(2, 4, 12, 3, 3, 8)
    return compare(fn(x, *w, 3, 3), reference_mqa_layer(x, *w, 3, 3), what="mqa_layer with H = Hkv = 3")


# --------------------------------------------------------------------- decode_intensity
def _float(got, want: float, what: str):
    if type(got) is not float:
        return f"{what} should be a Python float, but it is a {type(got).__name__}"
    if not math.isclose(got, want, rel_tol=1e-9):
        return f"{what} is {got:.6g}, expected {want:.6g} (FLOPs / bytes as defined above)"
    return None


@case("decode_intensity", "MHA, 32 heads of 128, 4096 cached tokens, float16: about 1 FLOP per byte")
def _(fn):
    return _float(fn(32, 32, 128, 4096), reference_decode_intensity(32, 32, 128, 4096),
                  what="decode_intensity(32, 32, 128, 4096)")


@case("decode_intensity", "MQA reads 32 times fewer bytes for the same FLOPs")
def _(fn):
    got = fn(32, 1, 128, 4096)
    want = reference_decode_intensity(32, 1, 128, 4096)
    if type(got) is float and math.isclose(got, reference_decode_intensity(32, 32, 128, 4096), rel_tol=1e-6):
        return "the bytes read must count the Hkv cached K/V heads, not the H query heads"
    return _float(got, want, what="decode_intensity(32, 1, 128, 4096)")


@case("decode_intensity", "float32 numbers (dtype_bytes=4) halve the intensity")
def _(fn):
    return _float(fn(8, 2, 64, 1000, dtype_bytes=4), reference_decode_intensity(8, 2, 64, 1000, 4),
                  what="decode_intensity(8, 2, 64, 1000, dtype_bytes=4)")
