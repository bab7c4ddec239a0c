"""ALiBi: attention with linear biases (Press, Smith & Lewis, ICLR 2022).

No position embeddings at all: each head ``h`` adds a fixed penalty proportional to the distance
between query and key to the scaled scores,

    scores[h, i, j] = q_i·k_j / √D  -  m_h · (i - j),

with slopes fixed before training (never learned, never tuned per task). For ``n`` heads, ``n`` a
power of two, head ``k = 1 .. n`` gets ``m_k = 2^(-8k/n)``: ``1/2, 1/4, ..., 1/256`` for 8 heads.
For other ``n`` the paper's code takes the slopes of the largest power of two ``p < n`` and then
every other slope of ``2p`` heads (``2^(-8k/(2p))`` for ``k = 1, 3, 5, ...``) until it has ``n``:
:func:`alibi_slopes`.

Alignment is **bottom-right**, as for the causal mask: with ``Tq`` queries and ``Tk`` keys, query
``i`` sits at position ``Tk - Tq + i``, so the bias is ``-m·((Tk - Tq + i) - j)`` — what a KV cache
needs. :func:`alibi_bias` returns the bias for every ``(i, j)``; it is not a mask: combine it with
``attncourse.masks.causal_mask`` (the entries of future keys are positive, and masked).
:func:`alibi_attention` does both through ``attncourse.attention(..., bias=...)``;
:func:`alibi_score_mod` is the same rule as a FlexAttention ``score_mod``, computed inside the
kernel instead of materialising an ``(H, Tq, Tk)`` tensor.

The paper defines ALiBi for causal language models only. ``symmetric=True`` gives the bias
``-m·|i - j|`` that encoders use as a bidirectional variant; it is a variant, not the paper's method.
ALiBi changes the scores, not the amount of work: attention still computes all ``Tq·Tk`` of them.
"""
from __future__ import annotations

import math

import torch

from attncourse.core import attention
from attncourse.masks import causal_mask

__all__ = ["alibi_slopes", "alibi_bias", "alibi_bias_at", "alibi_score_mod", "alibi_attention"]


def _check_heads(n_heads) -> int:
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, float)) or int(n_heads) != n_heads:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    if n_heads < 1:
        raise ValueError(f"ALiBi needs at least one head, got n_heads={n_heads!r}")
    return int(n_heads)


def _power_of_two_slopes(n: int) -> list[float]:
    # 2^(-8k/n), k = 1..n: a geometric sequence that starts and steps at 2^(-8/n).
    return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]


def alibi_slopes(n_heads: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(n_heads,)`` ALiBi slopes of Press et al.'s reference implementation.

    ``n`` a power of two: ``2^(-8k/n)``, ``k = 1..n``. Otherwise, with ``p`` the largest power of
    two below ``n``: the ``p`` slopes of ``p`` heads, then the slopes of ``2p`` heads at odd
    ``k = 1, 3, 5, ...`` (every other one, which are exactly the ones not already used), until
    there are ``n``. E.g. ``n = 12``: ``2^(-1), ..., 2^(-8)``, then ``2^(-0.5), 2^(-1.5), 2^(-2.5), 2^(-3.5)``.
    Computed in float64, returned in ``dtype``.
    """
    n = _check_heads(n_heads)
    p = 2 ** int(math.floor(math.log2(n)))
    slopes = _power_of_two_slopes(p)
    if p < n:
        slopes += _power_of_two_slopes(2 * p)[0::2][: n - p]   # k = 1, 3, 5, ... of 2p heads
    return torch.tensor(slopes, dtype=torch.float64, device=device).to(dtype)


def _slopes_or_default(n_heads, slopes, device):
    if slopes is None:
        return alibi_slopes(n_heads, dtype=torch.float64, device=device)
    slopes = torch.as_tensor(slopes, device=device)
    if tuple(slopes.shape) != (n_heads,):
        raise ValueError(f"slopes must have shape (n_heads,) = ({n_heads},), got {tuple(slopes.shape)}")
    return slopes.to(torch.float64)


def alibi_bias_at(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, *,
                  symmetric: bool = False) -> torch.Tensor:
    """``(H, Tq, Tk)`` bias ``-m_h · (q_pos[i] - k_pos[j])`` from absolute positions.

    The one definition of the rule: :func:`alibi_bias` calls it with ``q_pos = Tk - Tq + arange(Tq)``
    and ``k_pos = arange(Tk)``; a model with a KV cache passes the positions the cache reports.
    ``symmetric=True`` uses ``|q_pos[i] - k_pos[j]|``. Computed in the dtype of ``slopes``.
    """
    dist = q_pos.to(slopes.dtype)[:, None] - k_pos.to(slopes.dtype)[None, :]        # (Tq, Tk)
    if symmetric:
        dist = dist.abs()
    return 0.0 - slopes[:, None, None] * dist                                        # (H, Tq, Tk); 0 - x: no -0.0


def alibi_bias(n_heads: int, tq: int, tk: int | None = None, *, symmetric: bool = False,
               slopes: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
               device=None) -> torch.Tensor:
    """``(H, Tq, Tk)`` additive bias ``-m_h · ((Tk - Tq + i) - j)`` (bottom-right aligned).

    ``symmetric=True``: ``-m_h · |(Tk - Tq + i) - j|`` (the bidirectional variant). The bias
    broadcasts over a batch: pass it as ``attention(q, k, v, bias=..., mask=causal_mask(Tq, Tk))``.
    ``slopes`` defaults to :func:`alibi_slopes`. Computed in float64, returned in ``dtype``.
    """
    n = _check_heads(n_heads)
    tk = tq if tk is None else tk
    for name, t in (("tq", tq), ("tk", tk)):
        if isinstance(t, bool) or int(t) != t or t < 1:
            raise ValueError(f"alibi_bias: {name} must be a positive integer, got {t!r}")
    m = _slopes_or_default(n, slopes, device)                                       # (H,) float64
    q_pos = torch.arange(tk - tq, tk, device=device)                                # query i at Tk - Tq + i
    k_pos = torch.arange(tk, device=device)
    return alibi_bias_at(m, q_pos, k_pos, symmetric=symmetric).to(dtype)            # (H, Tq, Tk)


def alibi_score_mod(slopes: torch.Tensor, *, offset: int = 0, symmetric: bool = False):
    """A FlexAttention ``score_mod(score, b, h, q_idx, kv_idx)`` adding the ALiBi bias.

    ``offset = Tk - Tq`` gives the bottom-right alignment of :func:`alibi_bias`. The bias is
    computed per score inside the kernel, so no ``(H, Tq, Tk)`` tensor is stored (when compiled).
    """
    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx + offset - kv_idx
        if symmetric:
            d = d.abs()
        return score - slopes[h].to(score.dtype) * d
    return score_mod


def alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
                    mask: torch.Tensor | None = None, slopes: torch.Tensor | None = None,
                    return_weights: bool = False):
    """Attention with ALiBi through ``attncourse.attention``: ``softmax(q kᵀ/√D - m·dist) v``.

    ``q: (B, H, Tq, D)``, ``k, v: (B, H, Tk, D)``. ``causal=True`` (the paper's setting): bias
    ``-m·(i - j)`` and the bottom-right causal mask; ``causal=False``: the symmetric variant
    ``-m·|i - j|`` with no causal mask. ``mask`` (bool, True = attend) is combined with it.
    The bias is built in float32 (float64 for float64 inputs); the core adds it in its
    compute dtype.
    """
    if q.dim() < 3:
        raise ValueError(f"alibi_attention: q must be (..., H, Tq, D), got {tuple(q.shape)}")
    H, tq, tk = q.shape[-3], q.shape[-2], k.shape[-2]
    bdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    bias = alibi_bias(H, tq, tk, symmetric=not causal, slopes=slopes, dtype=bdt, device=q.device)  # (H, Tq, Tk)
    if causal:
        keep = causal_mask(tq, tk, device=q.device)                                  # (Tq, Tk)
        mask = keep if mask is None else mask & keep
    return attention(q, k, v, mask=mask, bias=bias, return_weights=return_weights)
