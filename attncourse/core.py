"""Scaled dot-product attention: the reference every other mechanism is tested against.

    attention(Q, K, V) = softmax(Q Kᵀ · scale + bias, masked) V,   scale = 1/√D by default

Conventions (see book/conventions.md):

* layout ``(..., T, D)``; the package uses ``(B, H, T, D)`` like torch SDPA;
* ``mask`` is boolean, **True = may attend**; it becomes ``-inf`` in exactly one place
  (:func:`masked_scores`);
* ``bias`` is an additive float tensor (ALiBi, relative positions), separate from the mask;
* a query row whose keys are all masked returns **zeros**, never NaN, with finite gradients;
* float16/bfloat16 inputs keep their softmax statistics in float32 and are cast back at the end;
  float64 stays float64 (so ``torch.autograd.gradcheck`` works);
* grouped K/V heads (GQA/MQA), only with ``enable_gqa=True`` (as in SDPA): ``q`` has ``H`` heads
  in dim -3, ``k``/``v`` have ``Hkv`` with ``H % Hkv == 0``; query head ``h`` uses K/V head
  ``h // (H // Hkv)``. Without the flag, mismatched head counts are an error, never a silent
  regrouping of some other dimension.
"""
from __future__ import annotations

import math

import torch

__all__ = ["attention", "stable_softmax", "masked_scores", "compute_dtype", "expand_kv_heads"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype softmax statistics are kept in: float32 for fp16/bf16, else the input dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def stable_softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax that never overflows and maps an all ``-inf`` row to zeros (not NaN).

    Subtracting the row maximum ``m`` leaves softmax unchanged (the factor ``e^{-m}``
    cancels) and makes every exponent ≤ 0, so ``exp`` cannot overflow. The shift is
    detached: the gradient through it is exactly zero because of that cancellation.
    """
    m = scores.amax(dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf row: shift by 0
    e = torch.exp(scores - m)  # exp(-inf) = 0 for masked entries
    denom = e.sum(dim=dim, keepdim=True)
    # A fully masked row has denom == 0; dividing by 1 there returns the zeros in ``e``.
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def masked_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The one place where a boolean keep-mask (True = attend) becomes ``-inf``."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask, float("-inf"))


def expand_kv_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Repeat ``Hkv`` key/value heads to ``n_heads`` query heads (GQA grouping).

    ``x: (B, Hkv, T, D) -> (B, H, T, D)``; query head ``h`` reads K/V head ``h // (H // Hkv)``,
    which is ``repeat_interleave`` (the grouping SDPA's ``enable_gqa`` uses).
    """
    hkv = x.shape[-3]
    if n_heads == hkv:
        return x
    if n_heads % hkv:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {hkv} key/value heads "
                         f"(the number of query heads must be a multiple of the K/V heads)")
    return x.repeat_interleave(n_heads // hkv, dim=-3)


def _check_inputs(q, k, v, mask, bias):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"attention: {name} must have at least 2 dims (..., T, D), "
                             f"got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"attention: {name} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q and k need the same head dim D (last dim); got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: k and v need the same number of keys Tk (dim -2); got {shapes}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError("attention: mask must be a bool tensor (True = may attend); "
                            f"got {got}. Pass additive float scores as bias= instead.")
        if mask.device != q.device:
            raise ValueError(f"attention: mask is on {mask.device} but q is on {q.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
            got = bias.dtype if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise TypeError(f"attention: bias must be a floating-point tensor, got {got}")
        if bias.device != q.device:
            raise ValueError(f"attention: bias is on {bias.device} but q is on {q.device}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
    enable_gqa: bool = False,
):
    """Scaled dot-product attention, eager and exact.

    Args:
        q: ``(..., H, Tq, D)`` queries (any leading batch dims, e.g. ``(B, H, Tq, D)``).
        k: ``(..., Hkv, Tk, D)`` keys; ``Hkv`` may divide ``H`` (GQA/MQA grouping).
        v: ``(..., Hkv, Tk, Dv)`` values.
        mask: bool, broadcastable to ``(..., H, Tq, Tk)``; True = query may attend to key.
        bias: float, broadcastable to ``(..., H, Tq, Tk)``; added to the scaled scores.
        scale: multiplier of ``q kᵀ``; default ``1/√D``.
        return_weights: also return the attention weights ``(..., H, Tq, Tk)``.
        enable_gqa: let ``Hkv`` (dim -3 of k and v) divide ``H`` (dim -3 of q).

    Returns:
        ``out: (..., H, Tq, Dv)`` in q's dtype, and the weights if ``return_weights``.
        Rows with every key masked are zeros.

    Raises:
        ValueError naming the shapes when they do not fit; TypeError for wrong dtypes.
    """
    _check_inputs(q, k, v, mask, bias)
    if enable_gqa:
        if q.dim() < 3 or k.dim() < 3 or v.dim() < 3 or k.shape[-3] != v.shape[-3]:
            raise ValueError("attention(enable_gqa=True): q, k, v need a head dim (-3), with k and v "
                             f"sharing it; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        k, v = expand_kv_heads(k, q.shape[-3]), expand_kv_heads(v, q.shape[-3])  # (..., Hkv, T, D) -> (..., H, T, D)
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError("attention: the leading (batch/head) dims of q, k, v do not broadcast; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}") from None
    score_shape = (*batch, q.shape[-2], k.shape[-2])
    for name, t in (("mask", mask), ("bias", bias)):
        if t is not None:
            try:
                torch.broadcast_shapes(t.shape, score_shape)
            except RuntimeError:
                raise ValueError(f"attention: {name} of shape {tuple(t.shape)} does not broadcast to the "
                                 f"scores' shape {score_shape} (..., Tq, Tk)") from None

    cdt = compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q.to(cdt) @ k.to(cdt).transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias.to(cdt)
    weights = stable_softmax(masked_scores(scores, mask), dim=-1)  # (..., Tq, Tk), rows sum to 1 or 0
    out = (weights @ v.to(cdt)).to(q.dtype)  # (..., Tq, Dv)
    if return_weights:
        return out, weights.to(q.dtype)
    return out
