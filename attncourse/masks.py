"""Boolean attention masks (True = may attend) built from small composable functions.

A *mask_mod* is a function ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` in the style of
PyTorch FlexAttention: it receives broadcastable integer index tensors and says, elementwise,
whether query ``q_idx`` may attend to key ``kv_idx``. Variants compose instead of growing flags:

    sliding window (causal) = and_masks(causal(offset), window(W, offset))
    Longformer              = or_masks(sliding window, global tokens)
    attention sinks         = and_masks(causal(offset), or_masks(window(W, offset), sinks(n)))

:func:`materialize` turns a mask_mod into a bool tensor ``(B, H, Tq, Tk)``; the convenience
builders (:func:`causal_mask`, :func:`sliding_window_mask`, :func:`padding_mask`) are thin
wrappers over the same mask_mods, so there is one definition of each rule.

Causal alignment is **bottom-right**: with ``Tq`` queries and ``Tk`` keys, query ``i`` sits at
absolute position ``Tk - Tq + i`` (what a KV cache needs). For ``Tq = 2, Tk = 5``::

    causal_mask(2, 5)       keys 0 1 2 3 4
        query 0 (pos 3)          1 1 1 1 .
        query 1 (pos 4)          1 1 1 1 1

The causal sliding window of width ``W`` is ``0 <= i - j < W`` (W keys, self included);
the bidirectional one is ``|i - j| < W``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "MaskMod", "causal", "sliding_window", "sinks", "padding", "prefix_lm", "document", "full",
    "and_masks", "or_masks", "not_mask", "materialize",
    "causal_mask", "sliding_window_mask", "streaming_mask", "padding_mask",
]


# ----------------------------------------------------------------------------- mask_mods
def full() -> MaskMod:
    """Every query may attend to every key."""
    def mod(b, h, q_idx, kv_idx):
        return torch.ones_like(q_idx - kv_idx, dtype=torch.bool)
    return mod


def causal(offset: int = 0) -> MaskMod:
    """Key ``j`` is visible to query ``i`` iff ``j <= i + offset``.

    ``offset = Tk - Tq`` gives bottom-right alignment (query ``i`` at position ``Tk - Tq + i``).
    """
    def mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset
    return mod


def sliding_window(window: int, *, causal: bool = True, offset: int = 0) -> MaskMod:
    """Window of width ``window`` around each query (positions aligned by ``offset``).

    causal: ``0 <= (i + offset) - j < window``; bidirectional: ``|(i + offset) - j| < window``.
    """
    if int(window) != window or window < 1:
        raise ValueError(f"sliding window width must be a positive integer, got {window!r}")

    def mod(b, h, q_idx, kv_idx):
        d = q_idx + offset - kv_idx
        return (d >= 0) & (d < window) if causal else d.abs() < window
    return mod


def sinks(n: int) -> MaskMod:
    """The first ``n`` keys (attention sinks, StreamingLLM): every query may see them.

    Meant for ``or_masks`` with a window, inside ``and_masks`` with :func:`causal` so that a
    query never sees a sink that lies in its future (see :func:`streaming_mask`). ``n = 0``
    allows nothing. (The same predicate as :func:`prefix_lm`; the name says what it is for.)
    """
    if int(n) != n or n < 0:
        raise ValueError(f"the number of sink tokens must be a non-negative integer, got {n!r}")

    def mod(b, h, q_idx, kv_idx):
        return kv_idx < n
    return mod


def padding(lengths: torch.Tensor) -> MaskMod:
    """Keys at positions ``>= lengths[b]`` are padding and may not be attended to."""
    lengths = torch.as_tensor(lengths)

    def mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths.to(kv_idx.device)[b]
    return mod


def prefix_lm(prefix_length: int) -> MaskMod:
    """Bidirectional inside the first ``prefix_length`` keys (the prompt), used with ``or_masks``."""
    def mod(b, h, q_idx, kv_idx):
        return kv_idx < prefix_length
    return mod


def document(doc_ids: torch.Tensor) -> MaskMod:
    """Packed sequences: a token attends only within its own document. ``doc_ids: (B, T)``."""
    doc_ids = torch.as_tensor(doc_ids)

    def mod(b, h, q_idx, kv_idx):
        ids = doc_ids.to(q_idx.device)
        return ids[b, q_idx] == ids[b, kv_idx]
    return mod


def and_masks(*mods: MaskMod) -> MaskMod:
    """Attend where **all** mask_mods allow it."""
    if not mods:
        raise ValueError("and_masks needs at least one mask_mod")

    def mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for m in mods[1:]:
            out = out & m(b, h, q_idx, kv_idx)
        return out
    return mod


def or_masks(*mods: MaskMod) -> MaskMod:
    """Attend where **any** mask_mod allows it."""
    if not mods:
        raise ValueError("or_masks needs at least one mask_mod")

    def mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for m in mods[1:]:
            out = out | m(b, h, q_idx, kv_idx)
        return out
    return mod


def not_mask(m: MaskMod) -> MaskMod:
    """Attend exactly where ``m`` does not."""
    def mod(b, h, q_idx, kv_idx):
        return ~m(b, h, q_idx, kv_idx)
    return mod


def materialize(mask_mod: MaskMod, B: int, H: int, Tq: int, Tk: int, *, device=None) -> torch.Tensor:
    """Evaluate a mask_mod on every ``(b, h, i, j)``: a bool tensor ``(B, H, Tq, Tk)``."""
    for name, n in (("B", B), ("H", H), ("Tq", Tq), ("Tk", Tk)):
        if int(n) != n or n < 1:
            raise ValueError(f"materialize: {name} must be a positive integer, got {n!r}")
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q_idx = torch.arange(Tq, device=device).view(1, 1, Tq, 1)
    kv_idx = torch.arange(Tk, device=device).view(1, 1, 1, Tk)
    out = mask_mod(b, h, q_idx, kv_idx)
    return out.to(torch.bool).expand(B, H, Tq, Tk).contiguous()


# ------------------------------------------------------------------ convenience builders
def causal_mask(tq: int, tk: int | None = None, *, device=None) -> torch.Tensor:
    """Bottom-right aligned causal mask ``(Tq, Tk)``; True = may attend."""
    tk = tq if tk is None else tk
    return materialize(causal(offset=tk - tq), 1, 1, tq, tk, device=device)[0, 0]


def sliding_window_mask(tq: int, tk: int | None, window: int, causal: bool = True, *, device=None) -> torch.Tensor:
    """Sliding-window mask ``(Tq, Tk)``: causal ``0 <= i - j < W``, else ``|i - j| < W``."""
    tk = tq if tk is None else tk
    mod = sliding_window(window, causal=causal, offset=tk - tq)
    return materialize(mod, 1, 1, tq, tk, device=device)[0, 0]


def streaming_mask(tq: int, tk: int | None, window: int, n_sinks: int, *, device=None) -> torch.Tensor:
    """Causal window plus attention sinks ``(Tq, Tk)``: ``0 <= i - j < W``, or ``j < n_sinks`` and ``j <= i``.

    StreamingLLM's pattern: the last ``W`` keys and the first ``n_sinks`` keys, never a future
    key (bottom-right alignment: query ``i`` sits at position ``Tk - Tq + i``).
    """
    tk = tq if tk is None else tk
    offset = tk - tq
    mod = and_masks(causal(offset), or_masks(sliding_window(window, offset=offset), sinks(n_sinks)))
    return materialize(mod, 1, 1, tq, tk, device=device)[0, 0]


def padding_mask(lengths: Sequence[int] | torch.Tensor, t: int, *, device=None) -> torch.Tensor:
    """Key-padding mask ``(B, 1, 1, T)`` from the true lengths; broadcasts over heads and queries."""
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"padding_mask: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1:
        raise ValueError(f"padding_mask: lengths must be 1-D (one length per sequence), got shape {tuple(lengths.shape)}")
    if len(lengths) and (lengths.min() < 0 or lengths.max() > t):
        raise ValueError(f"padding_mask: every length must be in [0, {t}], got {lengths.tolist()}")
    return materialize(padding(lengths), len(lengths), 1, 1, t, device=device)
