"""KV caches for autoregressive decoding (chapter 12), and what they cost in bytes.

A decoder generates in two phases: **prefill** runs the prompt (``T`` tokens at once), then each
**decode step** runs one new token. The new token's query needs the keys and values of every
earlier token; under a causal mask those never change once computed, so they are *cached*
instead of recomputed: a decode step then does one token of work instead of ``t``.

The protocol every cache here follows (one cache object per layer; state is passed in
explicitly and never hidden in the attention module)::

    k_all, v_all, key_pos = cache.update(k_new, v_new, start_pos)

        k_new, v_new: (B, Hkv, T, D)   keys/values of the tokens at positions start_pos .. start_pos+T-1
        k_all, v_all: (B, Hkv, Tk, D)  every key/value those T queries may need (views where possible;
                                       valid until the next ``update``)
        key_pos:      (Tk,) int64      the absolute position of each returned key, -1 for an empty slot

The attention module turns the query positions and ``key_pos`` into the boolean mask with
:func:`position_mask` (causal, optional sliding window, empty slots hidden). Positions are
explicit so that position-dependent transforms (RoPE, chapter 10) can be applied to the new
queries and keys *before* they are cached, at positions ``start_pos + arange(T)``.

The caches:

* :class:`KVCache` — a preallocated ``(B, Hkv, capacity, D)`` buffer: a decode step writes one
  slot and returns views, no copy. Decoding past ``capacity`` is a ``ValueError``.
* :class:`ConcatKVCache` — grows with ``torch.cat``, which re-copies the whole cache every
  step; kept only to measure against :class:`KVCache`.
* :class:`RollingKVCache` — ``W`` slots used as a ring (Mistral's rolling buffer): the token at
  position ``p`` lives in slot ``p % W``. Memory stays flat however long the sequence.
* :class:`PagedKVCache` — fixed-size blocks from a shared pool and a block table per sequence
  (vLLM's PagedAttention): memory is reserved one block at a time, not for the maximum length.

Bytes: :func:`kv_cache_bytes` is ``2 · layers · Hkv · D · bytes · tokens · batch``;
:data:`MODEL_CONFIGS` holds published model configurations (with the paper that states them),
and :func:`cache_bytes_per_token` / :func:`model_cache_bytes` compute their caches, including a
sliding window's cap and DeepSeek-V2's compressed MLA latent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from attncourse.masks import and_masks, causal, sliding_window

__all__ = [
    "position_mask", "KVCache", "ConcatKVCache", "RollingKVCache", "PagedKVCache", "gather_blocks",
    "kv_cache_bytes", "ModelConfig", "MODEL_CONFIGS", "cache_bytes_per_token", "model_cache_bytes",
    "preallocated_reservation", "paged_reservation",
]


# ------------------------------------------------------------------------------- masks
def position_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, *, window: int | None = None) -> torch.Tensor:
    """Causal keep-mask ``(Tq, Tk)`` from absolute positions (True = may attend).

    Key ``j`` is visible to query ``i`` iff the key's slot is filled (``k_pos[j] >= 0``) and
    ``0 <= q_pos[i] - k_pos[j]`` (causal), and, with a ``window`` ``W``, ``q_pos[i] - k_pos[j] < W``
    (the conventions' sliding window: ``W`` keys, the query itself included). With
    ``q_pos = Tk - Tq + arange(Tq)`` and ``k_pos = arange(Tk)`` this is ``causal_mask(Tq, Tk)``.
    The rules are the mask_mods of :mod:`attncourse.masks`, evaluated on positions instead of indices.
    """
    qi, kj = q_pos.view(-1, 1), k_pos.view(1, -1)                    # (Tq, 1), (1, Tk)
    mod = causal() if window is None else and_masks(causal(), sliding_window(window, causal=True))
    return mod(None, None, qi, kj) & (kj >= 0)                       # (Tq, Tk)


# ------------------------------------------------------------------------------ checks
def _check_new(cache, k_new: torch.Tensor, v_new: torch.Tensor, start_pos: int) -> int:
    """Validate ``k_new, v_new: (B, Hkv, T, D)`` against the cache; return ``T``."""
    want_k = (cache.batch, cache.n_kv_heads, cache.head_dim)
    want_v = (cache.batch, cache.n_kv_heads, cache.head_dim_v)
    for name, t, want in (("k_new", k_new, want_k), ("v_new", v_new, want_v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{type(cache).__name__}.update: {name} must be (B, Hkv, T, D), got {got}")
        got = (t.shape[0], t.shape[1], t.shape[3])
        if got != want:
            raise ValueError(f"{type(cache).__name__}.update: {name} has (B, Hkv, D) = {got} but the cache "
                             f"holds (B, Hkv, D) = {want}; shape {tuple(t.shape)} (mismatched head counts?)")
    if k_new.shape[2] != v_new.shape[2] or k_new.shape[2] < 1:
        raise ValueError(f"{type(cache).__name__}.update: k_new and v_new need the same number T >= 1 of "
                         f"new tokens; got {k_new.shape[2]} and {v_new.shape[2]}")
    if int(start_pos) != start_pos or start_pos < 0:
        raise ValueError(f"{type(cache).__name__}.update: start_pos must be a non-negative int, got {start_pos!r}")
    return k_new.shape[2]


def _check_sizes(**sizes) -> None:
    for name, n in sizes.items():
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")


# ------------------------------------------------------------------- preallocated buffer
class KVCache:
    """One layer's keys and values in a preallocated buffer (the reference cache).

    ``KVCache(batch, n_kv_heads, capacity, head_dim, *, head_dim_v=None, dtype=float32, device=None)``
    allocates ``k: (B, Hkv, capacity, D)`` and ``v: (B, Hkv, capacity, Dv)`` once. ``update``
    writes the new tokens into slots ``start_pos .. start_pos+T-1`` and returns views of slots
    ``0 .. start_pos+T-1``: nothing already cached is copied again.

    ``start_pos`` may rewrite the end of the cache (``start_pos < length``) but not leave a gap
    (``start_pos > length``), and ``start_pos + T > capacity`` raises ``ValueError``.
    """

    def __init__(self, batch: int, n_kv_heads: int, capacity: int, head_dim: int, *,
                 head_dim_v: int | None = None, dtype: torch.dtype = torch.float32, device=None):
        head_dim_v = head_dim if head_dim_v is None else head_dim_v
        _check_sizes(batch=batch, n_kv_heads=n_kv_heads, capacity=capacity, head_dim=head_dim, head_dim_v=head_dim_v)
        self.batch, self.n_kv_heads, self.head_dim, self.head_dim_v = batch, n_kv_heads, head_dim, head_dim_v
        self.k = torch.zeros(batch, n_kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, capacity, head_dim_v, dtype=dtype, device=device)
        self.length = 0  # slots 0 .. length-1 hold tokens

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes reserved by the buffers (all ``capacity`` slots, filled or not)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, start_pos: int):
        T = _check_new(self, k_new, v_new, start_pos)
        end = start_pos + T
        if start_pos > self.length:
            raise ValueError(f"KVCache.update: start_pos={start_pos} but the cache holds {self.length} tokens; "
                             "positions must follow each other without a gap")
        if end > self.capacity:
            raise ValueError(f"KVCache.update: decoding past the cache's capacity: positions {start_pos}..{end - 1} "
                             f"do not fit in {self.capacity} slots (make a cache with capacity >= {end})")
        self.k[:, :, start_pos:end] = k_new                     # (B, Hkv, T, D) into slots start_pos..end-1
        self.v[:, :, start_pos:end] = v_new
        self.length = end
        key_pos = torch.arange(end, device=self.k.device)
        return self.k[:, :, :end], self.v[:, :, :end], key_pos  # views, (B, Hkv, end, D)


class ConcatKVCache:
    """The naive cache: ``torch.cat`` the new keys onto the old ones (for comparison only).

    Same protocol as :class:`KVCache`; every ``update`` allocates a new ``(B, Hkv, t+T, D)``
    tensor and copies the whole cache into it, so ``n`` decode steps copy ``O(n²)`` numbers.
    Appending only: ``start_pos`` must equal ``length``.
    """

    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, *, head_dim_v: int | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        head_dim_v = head_dim if head_dim_v is None else head_dim_v
        _check_sizes(batch=batch, n_kv_heads=n_kv_heads, head_dim=head_dim, head_dim_v=head_dim_v)
        self.batch, self.n_kv_heads, self.head_dim, self.head_dim_v = batch, n_kv_heads, head_dim, head_dim_v
        self.k = torch.zeros(batch, n_kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, 0, head_dim_v, dtype=dtype, device=device)

    @property
    def length(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, start_pos: int):
        _check_new(self, k_new, v_new, start_pos)
        if start_pos != self.length:
            raise ValueError(f"ConcatKVCache.update: start_pos={start_pos} but the cache holds {self.length} "
                             "tokens; this cache can only append")
        self.k = torch.cat([self.k, k_new], dim=2)               # copies all t+T keys
        self.v = torch.cat([self.v, v_new], dim=2)
        return self.k, self.v, torch.arange(self.length, device=self.k.device)


# ------------------------------------------------------------------------- ring buffer
class RollingKVCache:
    """A ``W``-slot ring buffer for a causal sliding window of width ``W`` (Mistral's rolling cache).

    ``RollingKVCache(batch, n_kv_heads, window, head_dim, *, head_dim_v=None, dtype, device)``.
    The token at absolute position ``p`` is stored in slot ``p % W``, overwriting position
    ``p - W``, which no later query can see (the window of query ``i`` is ``i-W+1 .. i``).
    ``pos[s]`` records which position slot ``s`` holds (-1 while empty), so the mask and any
    position-dependent computation need no assumption about the slot order: attention does not
    care in which order its keys come.

    ``update`` with one token writes first and returns the ``W`` slots (no copy). With ``T > 1``
    tokens (prefill) the early new queries still need keys that the write would overwrite, so it
    returns the old slots followed by the new keys (``W + T`` of them) and then keeps the last
    ``min(T, W)`` new tokens. Memory: ``W`` slots, whatever the sequence length. Appending only:
    ``start_pos`` must equal ``length``.
    """

    def __init__(self, batch: int, n_kv_heads: int, window: int, head_dim: int, *,
                 head_dim_v: int | None = None, dtype: torch.dtype = torch.float32, device=None):
        head_dim_v = head_dim if head_dim_v is None else head_dim_v
        _check_sizes(batch=batch, n_kv_heads=n_kv_heads, window=window, head_dim=head_dim, head_dim_v=head_dim_v)
        self.batch, self.n_kv_heads, self.head_dim, self.head_dim_v = batch, n_kv_heads, head_dim, head_dim_v
        self.window = window
        self.k = torch.zeros(batch, n_kv_heads, window, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, window, head_dim_v, dtype=dtype, device=device)
        self.pos = torch.full((window,), -1, dtype=torch.long, device=device)  # position held by each slot
        self.length = 0  # tokens seen so far (not stored: at most W of them are)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def slot(self, position: int) -> int:
        """The ring index of an absolute position: ``position % W``."""
        return position % self.window

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, start_pos: int):
        T = _check_new(self, k_new, v_new, start_pos)
        if start_pos != self.length:
            raise ValueError(f"RollingKVCache.update: start_pos={start_pos} but the cache has seen {self.length} "
                             "tokens; a ring buffer can only append")
        if T == 1:                                               # decode: overwrite position start_pos - W
            s = self.slot(start_pos)
            self.k[:, :, s] = k_new[:, :, 0]
            self.v[:, :, s] = v_new[:, :, 0]
            self.pos[s] = start_pos
            self.length += 1
            return self.k, self.v, self.pos.clone()              # (B, Hkv, W, D), slots in ring order
        new_pos = torch.arange(start_pos, start_pos + T, device=self.pos.device)
        k_all = torch.cat([self.k, k_new], dim=2)                # (B, Hkv, W + T, D): old slots, then new
        v_all = torch.cat([self.v, v_new], dim=2)
        key_pos = torch.cat([self.pos, new_pos])
        keep = min(T, self.window)                               # only the last W tokens can be needed again
        slots = new_pos[-keep:] % self.window
        self.k[:, :, slots] = k_new[:, :, -keep:]
        self.v[:, :, slots] = v_new[:, :, -keep:]
        self.pos[slots] = new_pos[-keep:]
        self.length += T
        return k_all, v_all, key_pos


# ------------------------------------------------------------------------------- paging
def gather_blocks(pool: torch.Tensor, block_table: torch.Tensor | Sequence[int], length: int) -> torch.Tensor:
    """Read one sequence's first ``length`` tokens through its block table.

    Args:
        pool: ``(num_blocks, Hkv, S, D)`` — every block of the pool (``S`` = block size).
        block_table: ``(n,)`` int block ids; token ``p`` of the sequence is at
            ``pool[block_table[p // S], :, p % S]``.
        length: tokens to read; needs ``n >= ceil(length / S)``.

    Returns:
        ``(Hkv, length, D)``, the tokens in position order (a gather, so a copy).
    """
    table = torch.as_tensor(block_table, dtype=torch.long, device=pool.device)
    N, Hkv, S, D = pool.shape
    n_needed = -(-length // S)
    if table.dim() != 1 or len(table) < n_needed:
        raise ValueError(f"gather_blocks: {length} tokens in blocks of {S} need {n_needed} block ids, "
                         f"got a table of shape {tuple(table.shape)}")
    used = table[:n_needed]
    if len(used) and (used.min() < 0 or used.max() >= N):
        raise ValueError(f"gather_blocks: the block table names block {used.tolist()} but the pool has "
                         f"blocks 0..{N - 1}")
    blocks = pool[used]                                          # (n, Hkv, S, D)
    return blocks.transpose(0, 1).reshape(Hkv, n_needed * S, D)[:, :length]  # (Hkv, n·S, D) -> (Hkv, length, D)


class PagedKVCache:
    """Keys and values in fixed-size blocks from one pool, found through a block table (vLLM).

    ``PagedKVCache(num_blocks, block_size, batch, n_kv_heads, head_dim, *, head_dim_v=None, dtype, device)``

    * ``k_pool: (num_blocks, Hkv, S, D)``, ``v_pool`` likewise: the physical memory, shared by
      all sequences; ``free`` lists the unused block ids.
    * ``block_tables[b]``: the block ids of sequence ``b`` in order; its token at position ``p``
      sits in block ``block_tables[b][p // S]`` at offset ``p % S``. A sequence takes a new block
      only when it crosses a block boundary, so at most ``S - 1`` slots per sequence are unused.

    ``update`` (the model's protocol; every sequence of the batch at the same ``start_pos``)
    writes through the tables and reads every sequence back with :func:`gather_blocks`.
    ``free_sequence(b)`` returns a finished sequence's blocks to the pool. A table naming a block
    that is free, a full pool, or mismatched head counts raise ``ValueError``.
    """

    def __init__(self, num_blocks: int, block_size: int, batch: int, n_kv_heads: int, head_dim: int, *,
                 head_dim_v: int | None = None, dtype: torch.dtype = torch.float32, device=None):
        head_dim_v = head_dim if head_dim_v is None else head_dim_v
        _check_sizes(num_blocks=num_blocks, block_size=block_size, batch=batch, n_kv_heads=n_kv_heads,
                     head_dim=head_dim, head_dim_v=head_dim_v)
        self.batch, self.n_kv_heads, self.head_dim, self.head_dim_v = batch, n_kv_heads, head_dim, head_dim_v
        self.block_size = block_size
        self.k_pool = torch.zeros(num_blocks, n_kv_heads, block_size, head_dim, dtype=dtype, device=device)
        self.v_pool = torch.zeros(num_blocks, n_kv_heads, block_size, head_dim_v, dtype=dtype, device=device)
        self.free: list[int] = list(range(num_blocks))
        self.block_tables: list[list[int]] = [[] for _ in range(batch)]
        self.lengths = [0] * batch

    @property
    def num_blocks(self) -> int:
        return self.k_pool.shape[0]

    @property
    def length(self) -> int:
        return max(self.lengths)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole pool (what the allocator reserved up front)."""
        return self.k_pool.nbytes + self.v_pool.nbytes

    def _allocate(self, b: int) -> None:
        if not self.free:
            raise ValueError(f"PagedKVCache: the pool's {self.num_blocks} blocks of {self.block_size} tokens are "
                             f"all in use; sequence {b} needs one more (free a finished sequence or make a larger pool)")
        self.block_tables[b].append(self.free.pop(0))

    def check_table(self, b: int) -> None:
        """``ValueError`` unless every block in sequence ``b``'s table is allocated and in range."""
        free = set(self.free)
        for i, blk in enumerate(self.block_tables[b]):
            if not 0 <= blk < self.num_blocks:
                raise ValueError(f"PagedKVCache: block table of sequence {b} names block {blk} (entry {i}), "
                                 f"but the pool has blocks 0..{self.num_blocks - 1}")
            if blk in free:
                raise ValueError(f"PagedKVCache: block table of sequence {b} names block {blk} (entry {i}), "
                                 "which is free: it belongs to no sequence and may be handed to another one")

    def read(self, b: int, length: int | None = None):
        """Sequence ``b``'s keys and values ``(Hkv, length, D)`` through its block table."""
        length = self.lengths[b] if length is None else length
        self.check_table(b)
        table = self.block_tables[b]
        return gather_blocks(self.k_pool, table, length), gather_blocks(self.v_pool, table, length)

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, start_pos: int):
        T = _check_new(self, k_new, v_new, start_pos)
        end, S = start_pos + T, self.block_size
        pos = torch.arange(start_pos, end)
        for b in range(self.batch):
            if start_pos > self.lengths[b]:
                raise ValueError(f"PagedKVCache.update: start_pos={start_pos} but sequence {b} holds "
                                 f"{self.lengths[b]} tokens; positions must follow each other without a gap")
            while len(self.block_tables[b]) * S < end:           # a new block only at a boundary
                self._allocate(b)
            self.check_table(b)
            table = torch.tensor(self.block_tables[b], dtype=torch.long)
            blk, off = table[pos // S].to(self.k_pool.device), (pos % S).to(self.k_pool.device)
            self.k_pool[blk, :, off] = k_new[b].transpose(0, 1)  # (Hkv, T, D) -> (T, Hkv, D) at (block, :, offset)
            self.v_pool[blk, :, off] = v_new[b].transpose(0, 1)
            self.lengths[b] = end
        ks, vs = zip(*(self.read(b, end) for b in range(self.batch)))
        key_pos = torch.arange(end, device=self.k_pool.device)
        return torch.stack(ks), torch.stack(vs), key_pos          # (B, Hkv, end, D)

    def free_sequence(self, b: int) -> None:
        """Return sequence ``b``'s blocks to the pool; its table becomes empty."""
        self.free.extend(self.block_tables[b])
        self.block_tables[b] = []
        self.lengths[b] = 0


# ------------------------------------------------------------------------------- bytes
def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, *, dtype_bytes: int = 2,
                   batch: int = 1) -> int:
    """Bytes of a KV cache: ``2 · layers · Hkv · D · bytes · tokens · batch`` (the 2 is K and V).

    ``dtype_bytes`` is 2 for float16/bfloat16 (the default: how models are served), 4 for float32.
    Returns a Python ``int``.
    """
    for name, n in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                    ("dtype_bytes", dtype_bytes), ("batch", batch)):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"kv_cache_bytes: {name} must be a positive integer, got {n!r}")
    if isinstance(tokens, bool) or int(tokens) != tokens or tokens < 0:
        raise ValueError(f"kv_cache_bytes: tokens must be a non-negative integer, got {tokens!r}")
    return int(2 * n_layers * n_kv_heads * head_dim * dtype_bytes * tokens * batch)


@dataclass(frozen=True)
class ModelConfig:
    """The attention shape of a published model, as its paper states it.

    ``latent_dim`` (MLA only): numbers cached per token and layer instead of K and V —
    DeepSeek-V2 caches the compressed ``c_KV`` (``d_c = 512``) plus the shared RoPE key
    (``d_h^R = 64``). ``window``: a sliding window caps the cache at ``window`` tokens.
    """
    name: str
    attention: str          # "MHA", "GQA", "MQA" or "MLA"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    cite: str               # key in book/references.bib
    window: int | None = None
    latent_dim: int | None = None


MODEL_CONFIGS: list[ModelConfig] = [
    # Llama 2 paper, Table 1 / appendix: 7B has 32 layers, d_model 4096, 32 heads (D = 128), MHA.
    ModelConfig("Llama 2 7B", "MHA", n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128, cite="touvron2023llama2"),
    # Llama 3 paper, Table 3: 8B has 32 layers, d_model 4096, 32 heads, 8 key/value heads (GQA).
    ModelConfig("Llama 3 8B", "GQA", n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, cite="dubey2024llama3"),
    # Mistral 7B paper, Table 1: 32 layers, head_dim 128, 32 heads, 8 kv heads, window 4096.
    ModelConfig("Mistral 7B", "GQA", n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, cite="jiang2023mistral",
                window=4096),
    # Falcon paper: Falcon-7B has 32 layers, d_model 4544, 71 heads of 64, multi-query (one K/V head).
    ModelConfig("Falcon 7B", "MQA", n_layers=32, n_heads=71, n_kv_heads=1, head_dim=64, cite="almazrouei2023falcon"),
    # PaLM paper, Table 1: 540B has 118 layers, 48 heads of 256, multi-query attention.
    ModelConfig("PaLM 540B", "MQA", n_layers=118, n_heads=48, n_kv_heads=1, head_dim=256, cite="chowdhery2023palm"),
    # DeepSeek-V2 paper, section 3.1: 60 layers, 128 heads of 128, d_c = 512, d_h^R = 64 (MLA).
    ModelConfig("DeepSeek-V2", "MLA", n_layers=60, n_heads=128, n_kv_heads=128, head_dim=128, cite="deepseek2024v2",
                latent_dim=512 + 64),
]


def cache_bytes_per_token(cfg: ModelConfig, *, dtype_bytes: int = 2) -> int:
    """Bytes one token adds to the cache of one sequence (all layers)."""
    if cfg.latent_dim is not None:                   # MLA: one latent vector per token and layer
        return int(cfg.n_layers * cfg.latent_dim * dtype_bytes)
    return kv_cache_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, 1, dtype_bytes=dtype_bytes)


def model_cache_bytes(cfg: ModelConfig, tokens: int, *, dtype_bytes: int = 2, batch: int = 1) -> int:
    """Cache bytes of ``batch`` sequences of ``tokens`` tokens; a sliding window caps the tokens kept."""
    kept = tokens if cfg.window is None else min(tokens, cfg.window)
    return int(cache_bytes_per_token(cfg, dtype_bytes=dtype_bytes) * kept * batch)


# ------------------------------------------------------------------ reservation (paging)
def preallocated_reservation(lengths: Sequence[int], max_len: int) -> int:
    """Token slots reserved when every request gets a buffer for ``max_len`` tokens up front."""
    if any(n > max_len for n in lengths):
        raise ValueError(f"a request of {max(lengths)} tokens does not fit max_len={max_len}")
    return int(len(lengths) * max_len)


def paged_reservation(lengths: Sequence[int], block_size: int) -> int:
    """Token slots reserved by paging: ``ceil(length / S)`` blocks of ``S`` slots per request."""
    _check_sizes(block_size=block_size)
    return int(sum(math.ceil(n / block_size) * block_size for n in lengths))
