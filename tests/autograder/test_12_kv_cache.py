"""Hidden tests for chapter 12 (the KV cache). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the references of ``attncourse.checks.ch12_kv_cache`` (built on
``attncourse.kvcache``) and compared with ``expect`` (no hidden values in messages).

Coverage:
- kv_cache_bytes: published configurations (MHA 32/32, GQA 32/8, MQA, 80 layers at 128k tokens), batch > 1,
  dtype_bytes 1/2/4, tokens 0, default arguments, exact return type int (a float or tensor fails), K and V both counted.
- decode_step: one token (length 0, 1, middle, last slot: off-by-one in the write slot or in the attended range),
  chunks T = 2..6 (bottom-right causal, a top-left mask fails), B > 1, H 1..4, D odd, the caches returned (slots before
  untouched, written slots), junk of magnitude 1e3 in unused slots, float32 and float64, a 12-step decode loop against
  full attention, ValueError past capacity (T = 1 and a chunk), filling the cache to its last slot (a `>=`
  capacity check fails). Weighted so that a mask missing inside a chunk, or a dtype not kept, costs over a third.
- ring_write: empty ring, positions far past W (wrap-around several times), a write that crosses the wrap, T = W, T > W
  (only the last W kept, in slot order; weighted), W = 1, B > 1, slot_pos updated (int64), a 3W-step loop, a loop of
  mixed chunk sizes 5, 1, 2, 7, 1, 3 (catches a contiguous write across the wrap), float64 values.
- read_block_table: permuted tables (table order, not pool order), lengths 1, inside a block, a multiple of S, S = 1,
  S = 16, tables longer than needed with -1 entries, Hkv 1..3, float16 and float64 pools (dtype kept), shape (Hkv, length, D).
"""
from __future__ import annotations

import pytest
import torch

from attncourse.checks.ch12_kv_cache import (reference_decode_step, reference_kv_cache_bytes,
                                             reference_read_block_table, reference_ring_write)
from attncourse.core import attention
from attncourse.grading.testkit import (SDPA_CALLS, Foreign, LearnerFailure, dname, expect, expect_true, gen,
                                        rand)
from attncourse.masks import causal_mask

EXERCISES = {
    "kv_cache_bytes": {"function": "kv_cache_bytes", "points": 2},
    "decode_step": {"function": "decode_step", "points": 4, "from_scratch": True},
    "ring_write": {"function": "ring_write", "points": 3},
    "read_block_table": {"function": "read_block_table", "points": 3},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
_REF_CACHE = ["attncourse.kvcache.kv_cache_bytes", "attncourse.kvcache.KVCache.update",
              "attncourse.kvcache.RollingKVCache.update", "attncourse.kvcache.PagedKVCache.update",
              "attncourse.kvcache.gather_blocks", "attncourse.kvcache.model_cache_bytes"]
_REF_ATTENTION = ["attncourse.core.attention", "attncourse.core.stable_softmax", "attncourse.gqa.grouped_attention"]
FORBIDDEN = {
    **{name: list(EXERCISES) for name in _REF_CACHE},
    **{name: ["decode_step"] for name in _REF_ATTENTION + SDPA_CALLS},
}


def _int(got, want: int, what: str) -> None:
    if isinstance(got, Foreign) or type(got) is not int:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        expect_true(False, f"{what} should return a Python int, but it returned {kind}")
    expect_true(got == want, f"{what} is not the right number of bytes")


def _tuple(res, n: int, what: str):
    if isinstance(res, Foreign) or not isinstance(res, tuple) or len(res) != n:
        kind = res.description if isinstance(res, Foreign) else type(res).__name__
        expect_true(False, f"{what} should return a tuple of {n} tensors, but it returned {kind}")
    return res


# ====================================================================== kv_cache_bytes
BYTES_CASES = [  # (n_layers, n_kv_heads, head_dim, tokens, dtype_bytes, batch)
    (32, 32, 128, 1, 2, 1), (32, 8, 128, 8192, 2, 1), (32, 1, 64, 32768, 2, 8), (80, 8, 128, 131072, 2, 1),
    (60, 128, 128, 4096, 1, 3), (1, 1, 1, 1, 4, 1), (12, 12, 64, 1024, 4, 16), (7, 3, 5, 11, 2, 2),
]


def _bid(c):
    return "L{}-Hkv{}-D{}-T{}-b{}-B{}".format(*c)


@pytest.mark.exercise("kv_cache_bytes")
@pytest.mark.parametrize("case", BYTES_CASES, ids=_bid)
def test_bytes_match_formula(learner, case):
    L, hkv, d, t, nb, b = case
    _int(learner.kv_cache_bytes(L, hkv, d, t, dtype_bytes=nb, batch=b), reference_kv_cache_bytes(L, hkv, d, t, nb, b),
         what=f"kv_cache_bytes({L}, {hkv}, {d}, {t}, dtype_bytes={nb}, batch={b})")


@pytest.mark.exercise("kv_cache_bytes")
@pytest.mark.points(2)
def test_bytes_equal_real_tensors(learner):
    for dtype, nb in ((torch.float16, 2), (torch.float32, 4), (torch.float64, 8)):
        k = torch.zeros(2, 3, 17, 5, dtype=dtype)                   # (B, Hkv, T, D) of one layer
        _int(learner.kv_cache_bytes(4, 3, 5, 17, dtype_bytes=nb, batch=2), 4 * 2 * k.nbytes,
             what=f"kv_cache_bytes(4, 3, 5, 17, dtype_bytes={nb}, batch=2) compared with real K and V tensors")


@pytest.mark.exercise("kv_cache_bytes")
def test_bytes_defaults_and_zero_tokens(learner):
    _int(learner.kv_cache_bytes(32, 8, 128, 4096), reference_kv_cache_bytes(32, 8, 128, 4096),
         what="kv_cache_bytes(32, 8, 128, 4096) with the defaults dtype_bytes=2, batch=1")
    _int(learner.kv_cache_bytes(32, 8, 128, 0), 0, what="kv_cache_bytes(32, 8, 128, 0)")


@pytest.mark.exercise("kv_cache_bytes")
def test_bytes_positional_arguments(learner):
    _int(learner.kv_cache_bytes(2, 4, 16, 100, 4, 3), reference_kv_cache_bytes(2, 4, 16, 100, 4, 3),
         what="kv_cache_bytes(2, 4, 16, 100, 4, 3) (dtype_bytes and batch given by position)")


# ========================================================================= decode_step
def _decode_inputs(B, H, cap, D, length, T, seed, dtype=torch.float32):
    q, k_new, v_new = (rand(B, H, T, D, seed=seed + i, dtype=dtype) for i in range(3))
    k_cache = rand(B, H, cap, D, seed=seed + 3, dtype=dtype)
    v_cache = rand(B, H, cap, D, seed=seed + 4, dtype=dtype)
    k_cache[:, :, length:] = 1e3                                       # junk beyond the filled slots
    v_cache[:, :, length:] = -1e3
    return q, k_new, v_new, k_cache, v_cache


def _check_decode(learner, B, H, cap, D, length, T, seed, dtype=torch.float32, parts=("out", "k_cache", "v_cache")):
    args = _decode_inputs(B, H, cap, D, length, T, seed, dtype)
    what = f"decode_step with B={B}, H={H}, capacity={cap}, D={D}, length={length}, T={T} ({dname(dtype)})"
    res = _tuple(learner.decode_step(*args, length), 3, what)
    want = reference_decode_step(*args, length)
    for name, got, exp in zip(("out", "k_cache", "v_cache"), res, want):
        if name in parts:
            expect(got, exp, what=f"{what}: {name}")


ONE_TOKEN = [  # (B, H, capacity, D, length)
    (1, 1, 1, 1, 0), (2, 3, 8, 4, 5), (1, 2, 97, 7, 96), (3, 2, 20, 5, 1), (2, 4, 33, 3, 17),
]


@pytest.mark.exercise("decode_step")
@pytest.mark.points(1.5)
@pytest.mark.parametrize("case", ONE_TOKEN, ids=lambda c: "B{}-H{}-cap{}-D{}-len{}".format(*c))
def test_decode_one_token(learner, case):
    B, H, cap, D, length = case
    _check_decode(learner, B, H, cap, D, length, 1, seed=10, parts=("out",))


@pytest.mark.exercise("decode_step")
@pytest.mark.parametrize("case", ONE_TOKEN, ids=lambda c: "B{}-H{}-cap{}-D{}-len{}".format(*c))
def test_decode_writes_the_right_slots(learner, case):
    B, H, cap, D, length = case
    _check_decode(learner, B, H, cap, D, length, 1, seed=20, parts=("k_cache", "v_cache"))


CHUNKS = [(1, 2, 9, 4, 0, 2), (2, 2, 16, 5, 3, 4), (1, 3, 40, 6, 29, 6), (2, 1, 7, 3, 2, 5)]


@pytest.mark.exercise("decode_step")
@pytest.mark.points(3)      # chunks are half of the contract: the causal mask inside a chunk
@pytest.mark.parametrize("case", CHUNKS, ids=lambda c: "B{}-H{}-cap{}-D{}-len{}-T{}".format(*c))
def test_decode_chunk_is_bottom_right_causal(learner, case):
    _check_decode(learner, *case, seed=30)


@pytest.mark.exercise("decode_step")
@pytest.mark.points(2)
def test_decode_float64(learner):
    _check_decode(learner, 2, 3, 12, 5, 7, 2, seed=40, dtype=torch.float64)


@pytest.mark.exercise("decode_step")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(2, 2, 10, 4, 9, 1), (1, 3, 8, 5, 3, 5)],
                         ids=lambda c: "B{}-H{}-cap{}-D{}-len{}-T{}".format(*c))
def test_decode_fills_to_capacity(learner, case):
    _check_decode(learner, *case, seed=45)


@pytest.mark.exercise("decode_step")
@pytest.mark.points(2)
def test_decode_loop_equals_full_attention(learner):
    B, H, D, T = 2, 3, 4, 12
    q, k, v = (rand(B, H, T, D, seed=50 + i) for i in range(3))
    want = attention(q, k, v, mask=causal_mask(T, T))                  # every position at once
    k_cache, v_cache = torch.zeros(B, H, T, D), torch.zeros(B, H, T, D)
    outs, t = [], 0
    for n in (3, 1, 1, 4, 1, 1, 1):                                    # a prompt chunk, then steps and a chunk
        res = _tuple(learner.decode_step(q[:, :, t:t + n], k[:, :, t:t + n], v[:, :, t:t + n], k_cache, v_cache, t),
                     3, f"decode_step at length={t}")
        out, k_cache, v_cache = res
        expect_true(type(k_cache) is torch.Tensor and type(v_cache) is torch.Tensor,
                    f"decode_step at length={t} should return the updated caches as tensors")
        outs.append(out)
        t += n
    expect_true(all(type(o) is torch.Tensor for o in outs), "decode_step should return the output as a tensor")
    expect(torch.cat(outs, 2), want, what="12 positions decoded step by step, compared with attention over all of them")


@pytest.mark.exercise("decode_step")
@pytest.mark.points(2)
@pytest.mark.parametrize("length,T", [(4, 1), (2, 3)], ids=["one-token", "chunk"])
def test_decode_past_capacity_raises(learner, length, T):
    args = _decode_inputs(1, 2, 4, 3, length, T, seed=60)
    try:
        learner.decode_step(*args, length)
    except LearnerFailure as exc:
        expect_true(exc.raised_a("ValueError"), f"decode_step with length={length}, T={T}, capacity 4 should raise "
                    f"ValueError; it failed differently: {exc}")
        return
    expect_true(False, f"decode_step with length={length}, T={T} and capacity 4 returned a value; it should raise "
                "ValueError (the new tokens do not fit)")


# ========================================================================== ring_write
def _ring_inputs(B, Hkv, W, D, start_pos, T, seed, dtype=torch.float32):
    k_ring, v_ring = rand(B, Hkv, W, D, seed=seed, dtype=dtype), rand(B, Hkv, W, D, seed=seed + 1, dtype=dtype)
    filled = torch.arange(max(0, start_pos - W), start_pos)            # the last W positions so far
    slot_pos = torch.full((W,), -1, dtype=torch.long)
    slot_pos[filled % W] = filled
    k_new, v_new = rand(B, Hkv, T, D, seed=seed + 2, dtype=dtype), rand(B, Hkv, T, D, seed=seed + 3, dtype=dtype)
    return k_ring, v_ring, slot_pos, k_new, v_new


def _check_ring(learner, B, Hkv, W, D, start_pos, T, seed, dtype=torch.float32):
    args = _ring_inputs(B, Hkv, W, D, start_pos, T, seed, dtype)
    what = f"ring_write with W={W}, start_pos={start_pos}, T={T} (B={B}, Hkv={Hkv}, D={D})"
    res = _tuple(learner.ring_write(*args, start_pos), 3, what)
    for name, got, exp in zip(("k_ring", "v_ring", "slot_pos"), res, reference_ring_write(*args, start_pos)):
        expect(got, exp, what=f"{what}: {name}")


RING_CASES = [  # (B, Hkv, W, D, start_pos, T)
    (1, 1, 1, 1, 0, 1), (1, 2, 4, 3, 0, 1), (2, 1, 4, 3, 9, 1), (1, 2, 5, 2, 3, 4), (1, 1, 3, 2, 0, 7),
    (2, 2, 5, 3, 13, 11), (1, 1, 4, 2, 101, 1), (1, 1, 6, 2, 5, 6), (1, 3, 1, 4, 7, 3),
]


@pytest.mark.exercise("ring_write")
@pytest.mark.parametrize("case", RING_CASES, ids=lambda c: "B{}-Hkv{}-W{}-D{}-start{}-T{}".format(*c))
def test_ring_matches_reference(learner, case):
    _check_ring(learner, *case, seed=70)


def _ring_sequence(learner, W, chunks, seed, what):
    """Write chunks of the given sizes one after another into an empty ring, checking each step."""
    B, Hkv, D = 1, 2, 3
    k_ring, v_ring = torch.zeros(B, Hkv, W, D), torch.zeros(B, Hkv, W, D)
    slot_pos = torch.full((W,), -1, dtype=torch.long)
    p = 0
    for n in chunks:
        kn, vn = rand(B, Hkv, n, D, seed=seed + p), rand(B, Hkv, n, D, seed=seed + 100 + p)
        want = reference_ring_write(k_ring, v_ring, slot_pos, kn, vn, p)
        res = _tuple(learner.ring_write(k_ring, v_ring, slot_pos, kn, vn, p), 3,
                     f"ring_write of {n} tokens at position {p}, W={W}")
        for name, got, exp in zip(("k_ring", "v_ring", "slot_pos"), res, want):
            expect(got, exp, what=f"{what} (now {n} at position {p}), W={W}: {name}")
        k_ring, v_ring, slot_pos = want
        p += n


@pytest.mark.exercise("ring_write")
@pytest.mark.points(2)
@pytest.mark.parametrize("W", [3, 4])
def test_ring_wraps_around_many_times(learner, W):
    _ring_sequence(learner, W, [1] * (3 * W + 1), seed=80, what="after writing one position at a time")


@pytest.mark.exercise("ring_write")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(1, 2, 4, 3, 2, 10), (2, 1, 3, 2, 5, 8)],
                         ids=lambda c: "B{}-Hkv{}-W{}-D{}-start{}-T{}".format(*c))
def test_ring_chunk_longer_than_the_window(learner, case):
    _check_ring(learner, *case, seed=85)


@pytest.mark.exercise("ring_write")
@pytest.mark.points(3)
def test_ring_mixed_chunks(learner):
    # crosses the wrap, and is longer than W
    _ring_sequence(learner, 4, (5, 1, 2, 7, 1, 3), seed=190, what="after chunks of 5, 1, 2, 7, 1, 3 tokens")


@pytest.mark.exercise("ring_write")
def test_ring_float64(learner):
    _check_ring(learner, 2, 1, 4, 5, 6, 3, seed=90, dtype=torch.float64)


# ==================================================================== read_block_table
def _table(N, length, S, seed, extra=1):
    n = -(-length // S)
    perm = torch.randperm(N, generator=gen(seed))[:n]
    return torch.cat([perm, torch.full((extra,), -1, dtype=torch.long)])


TABLE_CASES = [  # (N, Hkv, S, D, length)
    (4, 1, 1, 2, 3), (8, 2, 4, 3, 1), (8, 2, 4, 3, 8), (10, 3, 4, 5, 10), (12, 1, 5, 2, 23),
    (6, 2, 16, 4, 33), (20, 2, 3, 1, 50),
]


@pytest.mark.exercise("read_block_table")
@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: "N{}-Hkv{}-S{}-D{}-len{}".format(*c))
def test_read_matches_reference(learner, case):
    N, Hkv, S, D, length = case
    pool = rand(N, Hkv, S, D, seed=100)
    table = _table(N, length, S, seed=101)
    expect(learner.read_block_table(pool, table, length), reference_read_block_table(pool, table, length),
           what=f"read_block_table with a pool of {N} blocks of {S}, length {length}")


@pytest.mark.exercise("read_block_table")
@pytest.mark.points(2)
def test_read_uses_table_order(learner):
    N, Hkv, S, D = 6, 2, 4, 3
    pool = rand(N, Hkv, S, D, seed=110)
    table = torch.tensor([5, 2, 0, 4])                                 # deliberately not sorted
    expect(learner.read_block_table(pool, table, 14), reference_read_block_table(pool, table, 14),
           what="read_block_table with the table [5, 2, 0, 4] (token p is in block block_table[p // S])")


@pytest.mark.exercise("read_block_table")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64], ids=dname)
def test_read_keeps_dtype(learner, dtype):
    pool = rand(5, 2, 3, 4, seed=120, dtype=dtype)
    table = torch.tensor([3, 1, 4, -1, -1])
    expect(learner.read_block_table(pool, table, 8), reference_read_block_table(pool, table, 8),
           what=f"read_block_table of a {dname(dtype)} pool")


@pytest.mark.exercise("read_block_table")
def test_read_values_are_token_positions(learner):
    N, S = 5, 3
    pool = torch.full((N, 1, S, 1), -1.0)
    table = torch.tensor([2, 4, 0])
    for i, blk in enumerate(table.tolist()):                           # pool value = the position stored there
        pool[blk, 0, :, 0] = torch.arange(i * S, (i + 1) * S, dtype=torch.float32)
    expect(learner.read_block_table(pool, table, 8), torch.arange(8.0).view(1, 8, 1),
           what="read_block_table where each slot holds its own position (the result must be 0, 1, ..., 7)")

