"""Public checks for chapter 12 (the KV cache).

The references below adapt :mod:`attncourse.kvcache` to the exercises' plain-tensor signatures
(the hidden tests in ``tests/autograder/test_12_kv_cache.py`` use the same adapters).
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.core import attention
from attncourse.kvcache import KVCache, RollingKVCache, gather_blocks, kv_cache_bytes, position_mask
from attncourse.testing import compare


# ------------------------------------------------------------------------- references
def reference_kv_cache_bytes(n_layers, n_kv_heads, head_dim, tokens, dtype_bytes=2, batch=1):
    return kv_cache_bytes(n_layers, n_kv_heads, head_dim, tokens, dtype_bytes=dtype_bytes, batch=batch)


def reference_decode_step(q, k_new, v_new, k_cache, v_cache, length):
    """``(out (B, H, T, D), k_cache, v_cache)``: write at slots length..length+T-1, attend causally."""
    B, H, cap, D = k_cache.shape
    c = KVCache(B, H, cap, D, head_dim_v=v_cache.shape[-1], dtype=k_cache.dtype)
    c.k, c.v, c.length = k_cache.clone(), v_cache.clone(), length
    k, v, k_pos = c.update(k_new, v_new, length)
    T = q.shape[2]
    mask = position_mask(torch.arange(length, length + T), k_pos)          # (T, length+T), bottom-right
    return attention(q, k, v, mask=mask), c.k, c.v


def reference_ring_write(k_ring, v_ring, slot_pos, k_new, v_new, start_pos):
    """``(k_ring, v_ring, slot_pos)`` after writing positions start_pos.. into slots ``p % W``."""
    B, Hkv, W, D = k_ring.shape
    c = RollingKVCache(B, Hkv, W, D, head_dim_v=v_ring.shape[-1], dtype=k_ring.dtype)
    c.k, c.v, c.pos, c.length = k_ring.clone(), v_ring.clone(), slot_pos.clone(), start_pos
    c.update(k_new, v_new, start_pos)
    return c.k, c.v, c.pos


def reference_read_block_table(pool, block_table, length):
    return gather_blocks(pool, block_table, length)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _int(got, want: int, what: str):
    if type(got) is not int:
        return f"{what} should be a Python int, but it is a {type(got).__name__} (use integer arithmetic)"
    if got != want:
        if got * 2 == want:
            return f"{what} is {got:,}, half of the right count: the cache holds K *and* V"
        return f"{what} is {got:,}, expected {want:,}"
    return None


def _tensors(res, n: int, what: str):
    if not isinstance(res, tuple) or len(res) != n:
        return None, f"{what} should return a tuple of {n} tensors, got {type(res).__name__}"
    return res, None


# ---------------------------------------------------------------------- kv_cache_bytes
@case("kv_cache_bytes", "Llama 2 7B (32 layers, 32 K/V heads of 128), one token in float16: 512 KiB")
def _(fn):
    return _int(fn(32, 32, 128, 1), reference_kv_cache_bytes(32, 32, 128, 1), what="kv_cache_bytes(32, 32, 128, 1)")


@case("kv_cache_bytes", "Llama 3 8B (8 K/V heads) at 8192 tokens, float32, batch 4")
def _(fn):
    return _int(fn(32, 8, 128, 8192, dtype_bytes=4, batch=4),
                reference_kv_cache_bytes(32, 8, 128, 8192, dtype_bytes=4, batch=4),
                what="kv_cache_bytes(32, 8, 128, 8192, dtype_bytes=4, batch=4)")


@case("kv_cache_bytes", "equals the nbytes of real K and V tensors")
def _(fn):
    k = torch.zeros(3, 2, 11, 5, dtype=torch.float16)                    # (B, Hkv, T, D), one layer
    return _int(fn(1, 2, 5, 11, dtype_bytes=2, batch=3), k.nbytes * 2, what="kv_cache_bytes(1, 2, 5, 11, 2, 3)")


# ------------------------------------------------------------------------- decode_step
def _decode_inputs(B, H, cap, D, length, T, seed, dtype=torch.float32):
    g = _gen(seed)
    q, k_new, v_new = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(3))
    k_cache = torch.randn(B, H, cap, D, generator=g).to(dtype)
    v_cache = torch.randn(B, H, cap, D, generator=g).to(dtype)
    k_cache[:, :, length:] = 1e3                                         # unused slots hold junk
    v_cache[:, :, length:] = -1e3
    return q, k_new, v_new, k_cache, v_cache


def _check_decode(fn, B, H, cap, D, length, T, seed, what):
    args = _decode_inputs(B, H, cap, D, length, T, seed)
    res, msg = _tensors(fn(*(a.clone() for a in args), length), 3, what)
    if msg:
        return msg
    want = reference_decode_step(*args, length)
    out = res[0]
    if isinstance(out, torch.Tensor) and out.shape == want[0].shape and T == 1 and length:
        q, k_new, v_new, k_cache, v_cache = args
        without = attention(q, k_cache[:, :, :length], v_cache[:, :, :length])
        if torch.allclose(out, without, atol=1e-5):
            return ("the new token does not attend to itself: after writing it at slot `length`, "
                    "attend over slots 0 .. length (length + 1 keys)")
    for got, exp, name in zip(res, want, ("out", "k_cache", "v_cache")):
        msg = compare(got, exp, what=f"{what}: {name}")
        if msg:
            if name != "out":
                msg += " (the new keys and values go to slots length .. length+T-1, the rest stays)"
            return msg
    return None


@case("decode_step", "one new token after 5 cached ones (B=2, H=3, D=4, capacity 8)")
def _(fn):
    return _check_decode(fn, 2, 3, 8, 4, 5, 1, 1, "decode_step with length=5, T=1")


@case("decode_step", "the first token (an empty cache, length=0)")
def _(fn):
    return _check_decode(fn, 1, 2, 4, 3, 0, 1, 2, "decode_step with length=0")


@case("decode_step", "a chunk of 3 new tokens: causal, bottom-right aligned")
def _(fn):
    args = _decode_inputs(1, 2, 9, 4, 4, 3, 3)
    res = fn(*(a.clone() for a in args), 4)
    want = reference_decode_step(*args, 4)
    if isinstance(res, tuple) and len(res) == 3 and isinstance(res[0], torch.Tensor) and res[0].shape == want[0].shape:
        q, k_new, v_new, kc, vc = args
        k = torch.cat([kc[:, :, :4], k_new], 2)
        v = torch.cat([vc[:, :, :4], v_new], 2)
        top_left = attention(q, k, v, mask=torch.ones(3, 7, dtype=torch.bool).tril())
        if torch.allclose(res[0], top_left, atol=1e-5):
            return ("new token i sits at position length + i and sees keys 0 .. length + i; "
                    "a top-left `tril` mask hides most of the cache from it")
    return _check_decode(fn, 1, 2, 9, 4, 4, 3, 3, "decode_step with length=4, T=3")


@case("decode_step", "a token that does not fit raises ValueError")
def _(fn):
    args = _decode_inputs(1, 1, 4, 2, 4, 1, 4)
    try:
        fn(*args, 4)
    except ValueError:
        return None
    except Exception as exc:  # noqa: BLE001 - learner code
        return f"raised {type(exc).__name__}, expected ValueError (length 4 + 1 new token > capacity 4)"
    return "returned a value, but length 4 + 1 new token does not fit a capacity of 4: raise ValueError"


# ------------------------------------------------------------------------- ring_write
def _ring_inputs(B, Hkv, W, D, start_pos, T, seed):
    g = _gen(seed)
    k_ring = torch.randn(B, Hkv, W, D, generator=g)
    v_ring = torch.randn(B, Hkv, W, D, generator=g)
    filled = torch.arange(max(0, start_pos - W), start_pos)              # the last W positions so far
    slot_pos = torch.full((W,), -1, dtype=torch.long)
    slot_pos[filled % W] = filled
    k_new, v_new = torch.randn(B, Hkv, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g)
    return k_ring, v_ring, slot_pos, k_new, v_new


def _check_ring(fn, B, Hkv, W, D, start_pos, T, seed, what):
    args = _ring_inputs(B, Hkv, W, D, start_pos, T, seed)
    try:
        res = fn(*(a.clone() for a in args), start_pos)
    except IndexError as exc:
        return f"IndexError ({exc}): position p goes to slot p % W — the ring wraps around"
    res, msg = _tensors(res, 3, what)
    if msg:
        return msg
    want = reference_ring_write(*args, start_pos)
    for got, exp, name in zip(res, want, ("k_ring", "v_ring", "slot_pos")):
        msg = compare(got, exp, what=f"{what}: {name}")
        if msg:
            return msg + " (hint: position p lives in slot p % W; only the last W positions stay)"
    return None


@case("ring_write", "one token into an empty ring of 4 slots")
def _(fn):
    return _check_ring(fn, 1, 2, 4, 3, 0, 1, 5, "ring_write at start_pos=0, W=4")


@case("ring_write", "position 9 in a ring of 4 slots wraps around to slot 1")
def _(fn):
    return _check_ring(fn, 2, 1, 4, 3, 9, 1, 6, "ring_write at start_pos=9, W=4")


@case("ring_write", "a prefill of 7 tokens into 3 slots keeps the last 3")
def _(fn):
    return _check_ring(fn, 1, 2, 3, 2, 0, 7, 7, "ring_write of 7 tokens at start_pos=0, W=3")


# -------------------------------------------------------------------- read_block_table
def _pool(N, Hkv, S, D, seed):
    return torch.randn(N, Hkv, S, D, generator=_gen(seed))


_READ_HINT = "token p is in block block_table[p // S], at offset p % S"


def _read(fn, pool, table, length):
    """Call the learner's function; an IndexError gets the index-arithmetic hint."""
    try:
        return fn(pool, table, length), None
    except IndexError as exc:
        return None, f"IndexError ({exc}): {_READ_HINT}"


@case("read_block_table", "blocks in table order, not pool order: table [3, 0, 2], block size 4, 10 tokens")
def _(fn):
    pool = _pool(5, 2, 4, 3, 8)
    table = torch.tensor([3, 0, 2])
    out, msg = _read(fn, pool, table, 10)
    if msg:
        return msg
    if isinstance(out, torch.Tensor) and out.shape == (2, 10, 3):
        sorted_read = gather_blocks(pool, torch.tensor([0, 2, 3]), 10)
        if torch.equal(out, sorted_read):
            return "you read the blocks sorted by id; token p is in block block_table[p // S]"
    return compare(out, reference_read_block_table(pool, table, 10), what="read_block_table(pool, [3, 0, 2], 10)")


@case("read_block_table", "a length that ends inside a block, and unused table entries (-1)")
def _(fn):
    pool = _pool(6, 1, 5, 2, 9)
    table = torch.tensor([4, 1, -1, -1])
    out, msg = _read(fn, pool, table, 7)
    return msg or compare(out, reference_read_block_table(pool, table, 7),
                          what="read_block_table(pool, [4, 1, -1, -1], 7) with block size 5")


@case("read_block_table", "block size 1: one token per block")
def _(fn):
    pool = _pool(4, 3, 1, 2, 10)
    table = torch.tensor([2, 3, 0])
    out, msg = _read(fn, pool, table, 3)
    return msg or compare(out, reference_read_block_table(pool, table, 3), what="read_block_table with block size 1")
