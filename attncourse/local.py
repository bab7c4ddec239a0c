"""Local (sliding-window) attention, block by block: memory grows with T·W, never with T².

A causal window of width ``W`` lets query ``i`` see keys ``j`` with ``0 <= i - j < W`` (W keys,
itself included); the bidirectional window is ``|i - j| < W`` (see book/conventions.md). With
``Tq != Tk`` the queries are the last ``Tq`` positions (bottom-right): query ``i`` sits at
position ``p = Tk - Tq + i``. For ``Tq = 3, Tk = 6, W = 2`` (causal)::

                 key  0 1 2 3 4 5
    query 0 (pos 3)   . . 1 1 . .
    query 1 (pos 4)   . . . 1 1 .
    query 2 (pos 5)   . . . . 1 1

Dense attention with :func:`attncourse.masks.sliding_window_mask` computes all ``Tq·Tk`` scores
and throws most of them away. :func:`sliding_window_attention` takes ``block`` queries at a
time: the keys they can see are one contiguous slice of at most ``block + W - 1`` keys
(``block + 2W - 2`` bidirectional), so each step is ordinary attention
(:func:`attncourse.core.attention`, the one softmax of the package) on a
``block × (block + W - 1)`` score matrix, masked by the same ``mask_mod``
(:func:`attncourse.masks.sliding_window`) evaluated on the block's indices. The result is exact:
the same numbers as the dense masked version, up to float rounding.

Receptive field: after ``L`` causal window layers an output depends on ``L·(W - 1) + 1`` inputs
(itself and ``L·(W - 1)`` before it), :func:`receptive_field`; :func:`gradient_reach` measures
it from gradients of a real stack of layers.
"""
from __future__ import annotations

import math
import numbers

import torch

from attncourse.core import attention
from attncourse.masks import sliding_window

__all__ = ["sliding_window_attention", "receptive_field", "gradient_reach"]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                             causal: bool = True, block: int = 64, scale: float | None = None) -> torch.Tensor:
    """Exact sliding-window attention without a ``Tq × Tk`` tensor.

    Args:
        q: ``(..., Tq, D)`` queries, e.g. ``(B, H, Tq, D)``.
        k: ``(..., Tk, D)`` keys; ``Tk >= 1``.
        v: ``(..., Tk, Dv)`` values.
        window: ``W >= 1``; causal: ``0 <= p - j < W``, bidirectional: ``|p - j| < W``, where
            ``p = Tk - Tq + i`` is query ``i``'s position (bottom-right alignment).
        causal: the causal window (default) or the bidirectional one.
        block: queries processed together; any ``block >= 1`` gives the same result.
        scale: multiplier of ``q kᵀ``; default ``1/√D``.

    Returns:
        ``(..., Tq, Dv)`` in q's dtype; a query that sees no key (``p < 0`` when ``Tq > Tk``)
        gets zeros. Differentiable. Peak extra memory ``O(block·(block + W)) + O(Tq·Dv)``.

    Equals ``attention(q, k, v, mask=sliding_window_mask(Tq, Tk, W, causal))``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2:
            raise ValueError(f"sliding_window_attention: {name} must be a tensor (..., T, D), "
                             f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    window = _positive_int("window", window)
    block = _positive_int("block", block)
    tq, tk = q.shape[-2], k.shape[-2]
    if tk < 1:
        raise ValueError(f"sliding_window_attention: need at least one key, got k of shape {tuple(k.shape)}")
    if v.shape[-2] != tk:
        raise ValueError(f"sliding_window_attention: k and v need the same number of keys; "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = tk - tq                                   # query i sits at position i + offset
    mask_mod = sliding_window(window, causal=causal, offset=offset)
    ahead = 0 if causal else window - 1                # keys visible after the query's position
    if tq == 0:
        return attention(q, k, v, scale=scale)         # (..., 0, Dv): nothing to compute

    outs = []
    for i0 in range(0, tq, block):
        i1 = min(i0 + block, tq)
        # The keys queries i0..i1-1 can see: one slice [lo, hi) of at most block + W - 1 (+ W - 1) keys.
        lo = i0 + offset - (window - 1)
        hi = i1 - 1 + offset + ahead + 1
        lo, hi = max(lo, 0), min(hi, tk)
        if hi <= lo:                                   # no key visible (p < 0): keep one, fully masked,
            lo, hi = 0, 1                              # so the block still yields zeros with a gradient
        q_idx = torch.arange(i0, i1, device=q.device).view(-1, 1)      # (bq, 1)
        kv_idx = torch.arange(lo, hi, device=q.device).view(1, -1)     # (1, bk)
        keep = mask_mod(None, None, q_idx, kv_idx)                     # (bq, bk), True = may attend
        outs.append(attention(q[..., i0:i1, :], k[..., lo:hi, :], v[..., lo:hi, :],
                              mask=keep, scale=scale))                 # (..., bq, Dv)
    return torch.cat(outs, dim=-2)                                     # (..., Tq, Dv)


def receptive_field(window: int, layers: int, *, causal: bool = True) -> int:
    """How many input positions one output can depend on after ``layers`` window layers.

    Causal: each layer reaches ``W - 1`` positions further back, so ``L·(W - 1) + 1`` (the
    output's own position included). Bidirectional: ``W - 1`` each way, ``2·L·(W - 1) + 1``.
    An interior position of a long enough sequence reaches exactly this many (measured by
    :func:`gradient_reach`); near the start there are fewer positions to reach.
    """
    window = _positive_int("window", window)
    layers = _positive_int("layers", layers, minimum=0)
    reach = layers * (window - 1)                      # positions reachable on one side
    return (reach if causal else 2 * reach) + 1


def gradient_reach(window: int, layers: int, length: int, *, causal: bool = True, d_model: int = 8,
                   seed: int = 0, block: int = 16, rows=None) -> torch.Tensor:
    """Which inputs each output depends on, measured: ``(T, T)`` bool, ``[i, j] = ∂out_i/∂x_j ≠ 0``.

    ``rows`` (a list of output positions, e.g. ``[-1]``) backpropagates from those outputs only
    and returns ``(len(rows), T)``: one backward pass per row.

    Builds ``layers`` residual single-head attention layers ``x = x + attn(x W_Q, x W_K, x W_V)``
    with random float64 weights and sliding-window attention of width ``window``, runs them on
    random ``x: (T, d_model)`` and backpropagates from each output row (one random direction per
    row). Masked scores get exactly zero gradient, so the zeros are exact, not small.
    (MLPs act on each position separately: they would not change the pattern.)
    """
    window = _positive_int("window", window)
    layers = _positive_int("layers", layers, minimum=0)
    length = _positive_int("length", length)
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(layers, 3, d_model, d_model, generator=g, dtype=torch.float64) / math.sqrt(d_model)
    x0 = torch.randn(length, d_model, generator=g, dtype=torch.float64).requires_grad_(True)
    x = x0
    for w_q, w_k, w_v in ws:
        x = x + sliding_window_attention(x @ w_q, x @ w_k, x @ w_v, window, causal=causal, block=block)
    directions = torch.randn(length, d_model, generator=g, dtype=torch.float64)
    rows = list(range(length)) if rows is None else [int(r) for r in rows]
    reach = torch.zeros(len(rows), length, dtype=torch.bool)
    for n, i in enumerate(rows):                       # one backward pass per output row
        (grad,) = torch.autograd.grad(x[i] @ directions[i], x0, retain_graph=True)  # (T, d_model)
        reach[n] = (grad != 0).any(dim=-1)
    return reach
