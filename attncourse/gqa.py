"""Grouped key/value heads (chapters 08-09): attention without copying K/V, and MHA -> GQA conversion.

With ``H`` query heads and ``Hkv`` key/value heads (``G = H / Hkv`` query heads per group),
query head ``h`` reads K/V head ``h // G`` (the conventions' grouping, = ``repeat_interleave``,
= SDPA's ``enable_gqa``). MHA is ``Hkv = H``, MQA (Shazeer 2019) ``Hkv = 1``, GQA (Ainslie et
al. 2023) anything between.

* :func:`grouped_attention` computes it **without copying K/V**: the ``G`` query heads of a
  group are stacked along the query axis, ``(B, H, Tq, D) -> (B, Hkv, G, Tq, D) -> (B, Hkv, G·Tq, D)``,
  so each K/V head meets all of its queries in one ordinary matrix product. The alternative,
  ``k.repeat_interleave(G, dim=1)`` (:func:`attncourse.core.expand_kv_heads`), materialises
  ``G`` copies of the cache and throws away the bandwidth MQA/GQA were meant to save.
  The math is :func:`attncourse.core.attention`; only shapes change here.
* :func:`mean_pool_kv_heads` and :func:`convert_to_gqa`: the GQA paper's recipe for turning
  a multi-head checkpoint into a grouped one — each new K/V head is the mean of the K/V
  projection heads of its group — to be followed by a short "uptraining".
* :func:`decode_attention_cost`: FLOPs and bytes of one decode step's attention, whose ratio
  (arithmetic intensity) shows why decoding is limited by memory bandwidth.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from attncourse.core import attention

__all__ = ["kv_head_index", "grouped_attention", "mean_pool_kv_heads", "convert_to_gqa", "decode_attention_cost"]


def _group_size(n_heads: int, n_kv_heads: int) -> int:
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {n_kv_heads} key/value heads "
                         f"(the number of query heads must be a multiple of the K/V heads)")
    return n_heads // n_kv_heads


def kv_head_index(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """``(H,)`` int64: the K/V head each query head reads, ``h // (H // Hkv)`` (consecutive heads share)."""
    return torch.arange(n_heads) // _group_size(n_heads, n_kv_heads)


def _fold(t: torch.Tensor | None, H: int, Hkv: int, Tq: int, Tk: int) -> torch.Tensor | None:
    """A mask/bias broadcastable to ``(..., H, Tq, Tk)`` -> ``(..., Hkv, G·Tq, Tk)`` (grouped rows)."""
    if t is None:
        return None
    while t.dim() < 3:
        t = t.unsqueeze(0)                                          # give it a head dim
    lead = t.shape[:-3]
    t = t.expand(*lead, H, Tq, Tk)                                  # (..., H, Tq, Tk), a view
    return t.reshape(*lead, Hkv, (H // Hkv) * Tq, Tk)               # copies only the (small) mask


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, scale: float | None = None, return_weights: bool = False):
    """Attention with ``Hkv`` K/V heads shared by ``H`` query heads, without copying K or V.

    Args:
        q: ``(..., H, Tq, D)``; k: ``(..., Hkv, Tk, D)``; v: ``(..., Hkv, Tk, Dv)``, ``H % Hkv == 0``.
        mask: bool, broadcastable to ``(..., H, Tq, Tk)``, True = may attend (may differ per head).
        bias: float, broadcastable to ``(..., H, Tq, Tk)`` (e.g. ALiBi, one slope per query head).
        scale: default ``1/√D``.

    Returns:
        ``(..., H, Tq, Dv)`` (and the weights ``(..., H, Tq, Tk)`` if ``return_weights``), equal
        to ``attention(q, k.repeat_interleave(G, -3), v.repeat_interleave(G, -3))`` and to SDPA
        with ``enable_gqa=True``. Query head ``h`` reads K/V head ``h // (H // Hkv)``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 3:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"grouped_attention: {name} must be (..., heads, T, D), got {got}")
    if k.shape[-3] != v.shape[-3]:
        raise ValueError(f"grouped_attention: k and v need the same number of K/V heads; "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    H, Tq, D = q.shape[-3:]
    Hkv, Tk = k.shape[-3], k.shape[-2]
    G = _group_size(H, Hkv)
    lead = q.shape[:-3]
    qg = q.reshape(*lead, Hkv, G * Tq, D)            # (..., H, Tq, D) -> (..., Hkv, G, Tq, D) -> (..., Hkv, G·Tq, D)
    res = attention(qg, k, v, mask=_fold(mask, H, Hkv, Tq, Tk), bias=_fold(bias, H, Hkv, Tq, Tk),
                    scale=scale, return_weights=return_weights)
    if return_weights:
        out, w = res
        return out.reshape(*lead, H, Tq, v.shape[-1]), w.reshape(*lead, H, Tq, Tk)
    return res.reshape(*lead, H, Tq, v.shape[-1])    # (..., Hkv, G·Tq, Dv) -> (..., H, Tq, Dv)


# ------------------------------------------------------------------------- conversion
def mean_pool_kv_heads(weight: torch.Tensor, n_kv_heads: int, new_kv_heads: int) -> torch.Tensor:
    """Mean-pool the heads of a K or V projection: ``(Hkv·D, ...) -> (Hkv'·D, ...)``.

    ``weight`` is laid out like ``nn.Linear.weight`` (rows = output channels; head ``j`` owns
    rows ``j·D .. (j+1)·D - 1``) or a bias ``(Hkv·D,)``. New head ``g`` is the mean of old heads
    ``g·r .. (g+1)·r - 1`` with ``r = Hkv / Hkv'``: consecutive heads, because after conversion
    the query heads that used them are exactly the ones grouped onto K/V head ``g``.
    """
    r = _group_size(n_kv_heads, new_kv_heads)
    rows = weight.shape[0]
    if rows % n_kv_heads:
        raise ValueError(f"mean_pool_kv_heads: {rows} rows are not {n_kv_heads} heads of equal width")
    D = rows // n_kv_heads
    w = weight.reshape(new_kv_heads, r, D, *weight.shape[1:])       # (Hkv', r, D, ...)
    return w.mean(dim=1).reshape(new_kv_heads * D, *weight.shape[1:])  # (Hkv'·D, ...)


@torch.no_grad()
def convert_to_gqa(model: nn.Module, n_kv_heads: int) -> nn.Module:
    """A copy of ``model`` whose every :class:`~attncourse.multihead.MultiHeadAttention` has
    ``n_kv_heads`` K/V heads, their ``W_K``/``W_V`` (and biases) mean-pooled from the original's.

    The query, output, MLP and embedding weights are copied unchanged. ``n_kv_heads`` must divide
    each layer's current number of K/V heads.
    """
    from attncourse.multihead import MultiHeadAttention  # here: multihead imports this module

    new = copy.deepcopy(model)
    for mod in new.modules():
        if not isinstance(mod, MultiHeadAttention):
            continue
        old = mod.n_kv_heads
        _group_size(mod.n_heads, n_kv_heads)
        for name in ("w_k", "w_v"):
            lin: nn.Linear = getattr(mod, name)
            pooled = nn.Linear(lin.in_features, n_kv_heads * mod.d_head, bias=lin.bias is not None)
            pooled = pooled.to(device=lin.weight.device, dtype=lin.weight.dtype)
            pooled.weight.copy_(mean_pool_kv_heads(lin.weight, old, n_kv_heads))
            if lin.bias is not None:
                pooled.bias.copy_(mean_pool_kv_heads(lin.bias, old, n_kv_heads))
            setattr(mod, name, pooled)
        mod.n_kv_heads = n_kv_heads
    return new


# ------------------------------------------------------------------- cost of one decode step
def decode_attention_cost(n_heads: int, n_kv_heads: int, head_dim: int, context: int, *,
                          dtype_bytes: int = 2, batch: int = 1) -> dict:
    """FLOPs and bytes of the attention of **one decode step** (one new query per sequence).

    FLOPs: ``q·Kᵀ`` and ``weights·V`` cost ``2·H·D·t`` each (multiply-add = 2) per sequence.
    Bytes: reading the cached K and V, ``2·Hkv·D·t·bytes``, dominates (the query and output are
    ``H·D`` numbers). Returns ``{"flops", "bytes", "intensity"}`` (FLOP per byte): with grouping
    the same bytes serve ``H / Hkv`` query heads, so the intensity is ``2·(H/Hkv)/bytes``.
    """
    _group_size(n_heads, n_kv_heads)
    flops = 4 * batch * n_heads * head_dim * context
    nbytes = dtype_bytes * batch * (2 * n_kv_heads * head_dim * context + 2 * n_heads * head_dim)
    return {"flops": int(flops), "bytes": int(nbytes), "intensity": flops / nbytes}
