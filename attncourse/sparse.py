"""Sparse attention: fixed patterns as mask_mods, their cost, their reach, and the tiles a kernel skips.

Every pattern is a *mask_mod* (see :mod:`attncourse.masks`): a rule ``(b, h, q_idx, kv_idx) ->
bool``, True = may attend, composed from small rules with ``and_masks`` / ``or_masks``::

    Sparse Transformer, strided  = causal ∧ (window of l  ∨  every l-th key back)      (Child et al. 2019)
    Sparse Transformer, fixed    = causal ∧ (same block of l  ∨  last c keys of every block)
    Longformer                   = dilated window  ∨  global tokens                   (Beltagy et al. 2020)
    BigBird                      = window blocks ∨ global blocks ∨ random blocks      (Zaheer et al. 2020)

The same rule serves three purposes: :func:`attncourse.masks.materialize` draws it as a dense
``(Tq, Tk)`` mask, :func:`block_tiles` says which ``block_q × block_k`` tiles of that mask are
empty, partial or full (the bookkeeping of FlexAttention's ``BlockMask``), and
:func:`flex_block_mask` hands it to ``torch.nn.attention.flex_attention.create_block_mask``.
A dense boolean mask given to an attention kernel saves no work (every score is computed, then
replaced by ``-inf``); only a kernel that is told which tiles are empty can skip them.

Positions follow the course conventions: query ``i`` sits at position ``i + offset``; pass
``offset = Tk - Tq`` for bottom-right alignment when ``Tq != Tk`` (a KV cache). With
``Tq = Tk = 8`` and ``l = 3``::

    strided(3)        keys 0 1 2 3 4 5 6 7        fixed(3, c=1)     keys 0 1 2 3 4 5 6 7
        query 0            1 . . . . . . .            query 0            1 . . . . . . .
        query 1            1 1 . . . . . .            query 1            1 1 . . . . . .
        query 2            1 1 1 . . . . .            query 2            1 1 1 . . . . .
        query 3            1 1 1 1 . . . .            query 3            . . 1 1 . . . .
        query 4            . 1 1 1 1 . . .            query 4            . . 1 1 1 . . .
        query 5            . . 1 1 1 1 . .            query 5            . . 1 1 1 1 . .
        query 6            1 . . 1 1 1 1 .            query 6            . . 1 . . 1 1 .
        query 7            . 1 . . 1 1 1 1            query 7            . . 1 . . 1 1 1

Bad arguments (a window, stride or block size below 1, more summary keys ``c`` than the
stride, a BigBird window that is not an odd number of blocks) raise ``ValueError`` naming the
numbers.
"""
from __future__ import annotations

from typing import Sequence

import torch

from attncourse.masks import MaskMod, and_masks, causal, materialize, or_masks, sliding_window

__all__ = [
    "strided", "fixed", "dilated_window", "global_tokens", "longformer",
    "bigbird_random_blocks", "bigbird",
    "pattern_mask", "density", "count_allowed",
    "EMPTY", "PARTIAL", "FULL", "block_tiles", "block_density", "flex_block_mask",
    "reachable", "layers_to_reach",
]


_causal_rule = causal  # the mask_mod, under a name that a ``causal=`` flag cannot shadow


def _positive_int(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ Sparse Transformer
def _every(stride: int, offset: int) -> MaskMod:
    """Keys a whole number of strides back (or ahead): ``(i + offset - j) % stride == 0``."""
    def mod(b, h, q_idx, kv_idx):
        return (q_idx + offset - kv_idx) % stride == 0  # torch's % is never negative for stride > 0
    return mod


def strided(stride: int, *, offset: int = 0) -> MaskMod:
    """Sparse Transformer's *strided* pattern: the last ``l`` keys, and every ``l``-th key before.

    Key ``j`` is visible to query ``i`` (at position ``p = i + offset``) iff ``j <= p`` and
    ``p - j < l`` or ``(p - j) % l == 0`` — the union of the paper's two heads
    ``A(1) = {max(0, p - l), ..., p}`` and ``A(2) = {j : (p - j) mod l = 0}`` (Child et al. 2019,
    eq. for "strided attention"). Counted from the query, not from position 0: ``j % l == 0``
    would be a different pattern (a fixed set of columns). With ``l ≈ √n`` a row has about
    ``l + p / l ≤ 2√n`` keys, so the whole pattern costs ``O(n√n)``.
    """
    stride = _positive_int("strided", "stride", stride)
    return and_masks(causal(offset), or_masks(sliding_window(stride, offset=offset), _every(stride, offset)))


def fixed(stride: int, c: int = 1, *, offset: int = 0) -> MaskMod:
    """Sparse Transformer's *fixed* pattern: the query's own block of ``l``, and the last ``c`` keys of every block.

    Positions are cut into blocks ``[0, l), [l, 2l), ...``. Key ``j`` is visible to query ``i``
    (at ``p = i + offset``) iff ``j <= p`` and either ``j // l == p // l`` (same block,
    ``A(1)``) or ``j % l >= l - c`` (one of the ``c`` "summary" keys at the end of a block,
    ``A(2)``; Child et al. 2019 use ``c`` of 8 to 32 with ``l`` of 128). ``1 <= c <= l``.
    """
    stride = _positive_int("fixed", "stride", stride)
    c = _positive_int("fixed", "c (summary keys per block)", c)
    if c > stride:
        raise ValueError(f"fixed: c = {c} summary keys do not fit in a block of stride {stride} (need c <= stride)")

    def same_block(b, h, q_idx, kv_idx):
        return (q_idx + offset).div(stride, rounding_mode="floor") == kv_idx.div(stride, rounding_mode="floor")

    def summary(b, h, q_idx, kv_idx):
        return kv_idx % stride >= stride - c

    return and_masks(causal(offset), or_masks(same_block, summary))


# --------------------------------------------------------------------------- Longformer
def dilated_window(window: int, dilation: int = 1, *, causal: bool = False, offset: int = 0) -> MaskMod:
    """A sliding window with gaps: the keys ``0, d, 2d, ..., (W - 1)·d`` positions away.

    ``d = i + offset - j``; bidirectional (Longformer's encoder): ``|d| < W·dilation`` and
    ``d % dilation == 0``, i.e. ``2W - 1`` keys spread over ``2(W - 1)·dilation + 1`` positions;
    causal: ``0 <= d < W·dilation``, ``W`` keys. ``dilation = 1`` is the ordinary window of
    :func:`attncourse.masks.sliding_window` (Beltagy et al. 2020, "dilated sliding window").
    """
    window = _positive_int("dilated_window", "window W", window)
    dilation = _positive_int("dilated_window", "dilation", dilation)
    span = sliding_window(window * dilation, causal=causal, offset=offset)
    return span if dilation == 1 else and_masks(span, _every(dilation, offset))


def global_tokens(positions: Sequence[int] | torch.Tensor, *, offset: int = 0) -> MaskMod:
    """Global tokens: a global query sees every key, and every query sees a global key.

    ``positions`` are absolute positions (``[0]`` = a ``[CLS]`` token). The rule is symmetric,
    as in Longformer and BigBird: global tokens are the hubs through which any two tokens meet
    in two layers. Combine with :func:`attncourse.masks.causal` for a decoder.
    """
    g = [int(p) for p in torch.as_tensor(positions, dtype=torch.long).flatten().tolist()]
    if any(p < 0 for p in g):
        raise ValueError(f"global_tokens: positions must be >= 0, got {g}")

    def is_global(x):  # one comparison per global token: a handful, and it compiles into a kernel
        out = torch.zeros_like(x, dtype=torch.bool)
        for p in g:
            out = out | (x == p)
        return out

    def mod(b, h, q_idx, kv_idx):
        return is_global(q_idx + offset) | is_global(kv_idx)
    return mod


def longformer(window: int, *, dilation: int = 1, global_positions: Sequence[int] | torch.Tensor = (0,),
               causal: bool = False, offset: int = 0) -> MaskMod:
    """Longformer: a (dilated) sliding window plus a few global tokens (Beltagy et al. 2020).

    ``or_masks(dilated_window(window, dilation), global_tokens(global_positions))``; with
    ``causal=True`` the whole pattern is also cut to ``j <= i + offset``.
    """
    mod = or_masks(dilated_window(window, dilation, causal=causal, offset=offset),
                   global_tokens(global_positions, offset=offset))
    return and_masks(_causal_rule(offset), mod) if causal else mod


# ------------------------------------------------------------------------------ BigBird
def _bigbird_args(fn: str, t: int, block: int, window: int, n_global: int) -> tuple[int, int, int]:
    t = _positive_int(fn, "T", t)
    block = _positive_int(fn, "block", block)
    window = _positive_int(fn, "window (in blocks)", window)
    if window % 2 == 0:
        raise ValueError(f"{fn}: window = {window} blocks must be odd (the query's block and as many on each side)")
    if isinstance(n_global, bool) or int(n_global) != n_global or n_global < 0:
        raise ValueError(f"{fn}: n_global must be a non-negative number of blocks, got {n_global!r}")
    return t, block, int(n_global)


def bigbird_random_blocks(t: int, block: int, n_random: int, *, window: int = 3, n_global: int = 1,
                          generator: torch.Generator | None = None, seed: int = 0) -> torch.Tensor:
    """The random part of BigBird: for each query block, ``n_random`` key blocks drawn at random.

    There are ``nb = ceil(T / block)`` blocks. For query block ``qb = 0, 1, ..., nb - 1`` in
    order, the *candidates* are the key blocks outside its window (``|qb - kb| > window // 2``)
    that are not global (``kb >= n_global``), in increasing order; one call
    ``torch.randperm(len(candidates), generator=generator)`` picks ``candidates[perm[:n_random]]``.
    A row with fewer than ``n_random`` candidates takes all of them and is padded with ``-1``
    (no block). ``generator`` defaults to ``torch.Generator().manual_seed(seed)``.

    Returns:
        ``(nb, n_random)`` int64 block indices (``-1`` = none).
    """
    t, block, n_global = _bigbird_args("bigbird_random_blocks", t, block, window, n_global)
    if isinstance(n_random, bool) or int(n_random) != n_random or n_random < 0:
        raise ValueError(f"bigbird_random_blocks: n_random must be a non-negative integer, got {n_random!r}")
    g = torch.Generator().manual_seed(seed) if generator is None else generator
    nb = -(-t // block)
    out = torch.full((nb, int(n_random)), -1, dtype=torch.long)
    kb = torch.arange(nb)
    for qb in range(nb):
        candidates = kb[((kb - qb).abs() > window // 2) & (kb >= n_global)]
        pick = candidates[torch.randperm(len(candidates), generator=g)[:n_random]]
        out[qb, :len(pick)] = pick
    return out


def bigbird(t: int, block: int, *, window: int = 3, n_global: int = 1, n_random: int = 2,
            random_blocks: torch.Tensor | None = None, seed: int = 0) -> MaskMod:
    """BigBird's block pattern for self-attention over ``T`` tokens (Zaheer et al. 2020).

    Tokens are cut into blocks of ``block`` (the last one may be shorter); query ``i`` is in
    block ``i // block``. Query block ``qb`` sees key block ``kb`` iff

    * window: ``|qb - kb| <= window // 2`` (``window`` = 3: the block and its two neighbours);
    * global: ``qb < n_global`` or ``kb < n_global`` (the first blocks see and are seen by all);
    * random: ``kb`` is one of ``random_blocks[qb]`` (one-way: ``qb`` sees ``kb``, not the reverse).

    ``random_blocks`` defaults to :func:`bigbird_random_blocks` with ``seed``. (The original
    implementation also makes the *last* block global; the rule here keeps one end for brevity.)
    Bidirectional, ``Tq = Tk = T``.
    """
    t, block, n_global = _bigbird_args("bigbird", t, block, window, n_global)
    nb = -(-t // block)
    if random_blocks is None:
        random_blocks = bigbird_random_blocks(t, block, n_random, window=window, n_global=n_global, seed=seed)
    random_blocks = torch.as_tensor(random_blocks, dtype=torch.long)
    if random_blocks.dim() != 2 or random_blocks.shape[0] != nb:
        raise ValueError(f"bigbird: random_blocks must have shape ({nb}, r) for T = {t}, block = {block}; "
                         f"got {tuple(random_blocks.shape)}")
    if random_blocks.numel() and (random_blocks.min() < -1 or random_blocks.max() >= nb):
        raise ValueError(f"bigbird: random block indices must lie in [0, {nb}) or be -1, "
                         f"got values in [{int(random_blocks.min())}, {int(random_blocks.max())}]")
    layout = torch.zeros(nb, nb + 1, dtype=torch.bool)           # column nb catches the -1 padding
    layout.scatter_(1, random_blocks % (nb + 1), True)           # -1 -> nb
    layout = layout[:, :nb].contiguous()                         # (nb, nb): query block -> key block

    def blocks(b, h, q_idx, kv_idx):
        qb = q_idx.div(block, rounding_mode="floor")
        kb = kv_idx.div(block, rounding_mode="floor")
        return ((qb - kb).abs() <= window // 2) | (qb < n_global) | (kb < n_global) | layout.to(qb.device)[qb, kb]
    return blocks


# ---------------------------------------------------------------------- cost: density
def pattern_mask(mask_mod: MaskMod, tq: int, tk: int | None = None, *, device=None) -> torch.Tensor:
    """The dense ``(Tq, Tk)`` bool mask of a pattern (for drawing and counting)."""
    tk = tq if tk is None else tk
    return materialize(mask_mod, 1, 1, tq, tk, device=device)[0, 0]


def density(mask: torch.Tensor) -> float:
    """Fraction of the ``(..., Tq, Tk)`` score matrix a mask keeps (1.0 = dense)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"density: mask must be a bool tensor (True = may attend), got {mask.dtype}")
    return float(mask.sum()) / max(1, mask.numel())


def count_allowed(mask_mod: MaskMod, tq: int, tk: int | None = None, *, rows: int = 1024) -> int:
    """Number of ``(query, key)`` pairs a pattern allows, evaluated ``rows`` queries at a time.

    Memory stays ``O(rows · Tk)``, so patterns over ``T`` in the tens of thousands can be
    counted without building the ``T × T`` mask.
    """
    tk = tq if tk is None else tk
    tq, tk = _positive_int("count_allowed", "Tq", tq), _positive_int("count_allowed", "Tk", tk)
    kv = torch.arange(tk).view(1, tk)
    zero = torch.zeros((), dtype=torch.long)
    total = 0
    for start in range(0, tq, rows):
        q = torch.arange(start, min(tq, start + rows)).view(-1, 1)
        total += int(mask_mod(zero, zero, q, kv).expand(len(q), tk).sum())
    return total


# ------------------------------------------------------------------- tiles: BlockMask
EMPTY, PARTIAL, FULL = 0, 1, 2


def block_tiles(mask: torch.Tensor, block_q: int, block_k: int | None = None) -> torch.Tensor:
    """Which ``block_q × block_k`` tiles of a mask a block-sparse kernel must compute.

    Args:
        mask: bool ``(..., Tq, Tk)``, True = may attend.
        block_q, block_k: tile size (``block_k`` defaults to ``block_q``); FlexAttention uses 128.

    Returns:
        int64 ``(..., ceil(Tq / block_q), ceil(Tk / block_k))``: ``EMPTY`` (0) where the tile
        holds no True (skipped), ``FULL`` (2) where all ``block_q · block_k`` entries are True
        (computed without evaluating the mask), ``PARTIAL`` (1) otherwise. The last row/column of
        tiles sticks out past ``Tq``/``Tk`` when they are not multiples of the block: the part
        outside counts as masked, so such a tile is never full — the rule of
        ``torch.nn.attention.flex_attention.create_block_mask`` (its ``kv_num_blocks`` are the
        partial tiles, ``full_kv_num_blocks`` the full ones).
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 2:
        got = f"{mask.dtype}, shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"block_tiles: mask must be a bool tensor (..., Tq, Tk), got {got}")
    block_q = _positive_int("block_tiles", "block_q", block_q)
    block_k = block_q if block_k is None else _positive_int("block_tiles", "block_k", block_k)
    *lead, tq, tk = mask.shape
    nq, nk = -(-tq // block_q), -(-tk // block_k)                     # ceil: a partial last tile counts
    padded = torch.nn.functional.pad(mask, (0, nk * block_k - tk, 0, nq * block_q - tq))  # pads with False
    count = padded.reshape(*lead, nq, block_q, nk, block_k).sum(dim=(-3, -1))  # (..., nq, nk) True per tile
    return (count > 0).long() + (count == block_q * block_k).long()


def block_density(mask: torch.Tensor, block_q: int = 128, block_k: int | None = None) -> float:
    """Fraction of tiles that are not empty: the work a block-sparse kernel does, relative to dense.

    When ``Tq`` and ``Tk`` are multiples of the block this is ``1 - BlockMask.sparsity() / 100``
    of FlexAttention (which otherwise counts the computed area against ``Tq · Tk``, padding included).
    """
    tiles = block_tiles(mask, block_q, block_k)
    return float((tiles != EMPTY).sum()) / max(1, tiles.numel())


def flex_block_mask(mask_mod: MaskMod, tq: int, tk: int | None = None, *, block: int = 128, B=None, H=None,
                    device="cpu"):
    """FlexAttention's ``BlockMask`` for a pattern: ``create_block_mask`` with ``BLOCK_SIZE = block``.

    ``create_block_mask`` evaluates the mask_mod on every ``(query, key)`` once (vectorised with
    ``vmap``) and keeps, per query tile, the lists of partial and full key tiles; compiled
    ``flex_attention`` then visits only those.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    tk = tq if tk is None else tk
    block = _positive_int("flex_block_mask", "block", block)
    return create_block_mask(mask_mod, B, H, tq, tk, device=device, BLOCK_SIZE=block)


# ---------------------------------------------------------------------- reach: layers
def reachable(mask: torch.Tensor, layers: int) -> torch.Tensor:
    """Which inputs each output of ``layers`` stacked attention layers can depend on.

    With a residual stream, layer ``L``'s token ``i`` mixes token ``k`` of layer ``L - 1`` iff
    ``mask[i, k]`` or ``k = i``. So output ``i`` depends on input ``j`` iff there is a path, and
    the answer is the boolean matrix power ``(mask ∨ I)^L`` (one product per layer, entries
    clamped to {0, 1}).

    Args:
        mask: bool ``(T, T)``, True = may attend (self-attention: ``Tq = Tk``).
        layers: ``L >= 1``.

    Returns:
        bool ``(T, T)``: ``[i, j]`` is True iff output ``i`` can see input ``j``.
    """
    if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"reachable: mask must be a square bool (T, T) tensor, got {mask.dtype} {tuple(mask.shape)}")
    layers = _positive_int("reachable", "layers", layers)
    step = (mask | torch.eye(mask.shape[0], dtype=torch.bool, device=mask.device)).float()
    reach = step
    for _ in range(layers - 1):
        reach = ((reach @ step) > 0).float()   # path i -> k (L-1 layers), then k -> j (one layer)
    return reach > 0


def layers_to_reach(mask: torch.Tensor, *, causal: bool = True, max_layers: int | None = None) -> int | None:
    """Fewest layers after which every token can see every earlier token (``causal``) or every token.

    Returns ``None`` when the pattern never gets there (the reach stops growing first) or
    ``max_layers`` is exceeded. One boolean matrix product per layer (see :func:`reachable`): ``O(L·T³)``.
    """
    if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"layers_to_reach: mask must be a square bool (T, T) tensor, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    t = mask.shape[0]
    target = torch.ones(t, t, dtype=torch.bool, device=mask.device)
    if causal:
        target = target.tril()
    step = (mask | torch.eye(t, dtype=torch.bool, device=mask.device)).float()
    reach, layers = step, 1
    limit = t if max_layers is None else max_layers
    while True:
        if bool((reach > 0)[target].all()):
            return layers
        if layers >= limit:
            return None
        nxt = ((reach @ step) > 0).float()
        if torch.equal(nxt, reach):        # a fixed point: more layers reach nothing new
            return None
        reach, layers = nxt, layers + 1
