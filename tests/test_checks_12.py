"""Chapter 12's public checks: the references pass, each classic KV-cache mistake fails with a specific hint."""
import math

import pytest
import torch

from attncourse.checks.ch12_kv_cache import (reference_decode_step, reference_kv_cache_bytes,
                                             reference_read_block_table, reference_ring_write)
from attncourse.kvcache import gather_blocks
from check_helpers import assert_fails_saying, assert_passes

GOOD = {
    "kv_cache_bytes": reference_kv_cache_bytes,
    "decode_step": reference_decode_step,
    "ring_write": reference_ring_write,
    "read_block_table": reference_read_block_table,
}


def _attend(q, k, v, keep):
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1) @ v


def decode_without_self(q, k_new, v_new, k_cache, v_cache, length):
    """Attends over the cached slots only: the new token does not see itself (off by one)."""
    T = q.shape[2]
    if length + T > k_cache.shape[2]:
        raise ValueError("full")
    k, v = k_cache[:, :, :length + T].clone(), v_cache[:, :, :length + T].clone()
    out = _attend(q, k[:, :, :length], v[:, :, :length], torch.ones(T, length, dtype=torch.bool))
    k_cache[:, :, length:length + T], v_cache[:, :, length:length + T] = k_new, v_new
    return out, k_cache, v_cache


def decode_top_left(q, k_new, v_new, k_cache, v_cache, length):
    T = q.shape[2]
    if length + T > k_cache.shape[2]:
        raise ValueError("full")
    k_cache[:, :, length:length + T], v_cache[:, :, length:length + T] = k_new, v_new
    keep = torch.ones(T, length + T, dtype=torch.bool).tril()
    return _attend(q, k_cache[:, :, :length + T], v_cache[:, :, :length + T], keep), k_cache, v_cache


def decode_write_late(q, k_new, v_new, k_cache, v_cache, length):
    """Writes the new token one slot too far (and leaves junk where it should be)."""
    out, _, _ = reference_decode_step(q, k_new, v_new, k_cache, v_cache, length)
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    T = q.shape[2]
    k_cache[:, :, length + 1:length + 1 + T] = k_new[:, :, :k_cache.shape[2] - length - 1]
    return out, k_cache, v_cache


def decode_no_capacity_check(q, k_new, v_new, k_cache, v_cache, length):
    if length + q.shape[2] > k_cache.shape[2]:
        return q, k_cache, v_cache
    return reference_decode_step(q, k_new, v_new, k_cache, v_cache, length)


def ring_no_wrap(k_ring, v_ring, slot_pos, k_new, v_new, start_pos):
    T = k_new.shape[2]
    pos = torch.arange(start_pos, start_pos + T)
    k_ring[:, :, pos], v_ring[:, :, pos] = k_new, v_new
    slot_pos[pos] = pos
    return k_ring, v_ring, slot_pos


def ring_keeps_first(k_ring, v_ring, slot_pos, k_new, v_new, start_pos):
    """T > W: keeps the first W new tokens instead of the last W."""
    W, T = k_ring.shape[2], k_new.shape[2]
    keep = min(T, W)
    pos = torch.arange(start_pos, start_pos + keep)
    k_ring[:, :, pos % W], v_ring[:, :, pos % W] = k_new[:, :, :keep], v_new[:, :, :keep]
    slot_pos[pos % W] = pos
    return k_ring, v_ring, slot_pos


def read_sorted(pool, block_table, length):
    n = -(-length // pool.shape[2])
    return gather_blocks(pool, block_table[:n].sort().values, length)


def read_swapped(pool, block_table, length):
    S = pool.shape[2]
    return torch.stack([pool[block_table[p % S], :, p // S] for p in range(length)], dim=1)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("kv_cache_bytes", lambda L, h, d, t, dtype_bytes=2, batch=1: L * h * d * dtype_bytes * t * batch, "K *and* V"),
    ("kv_cache_bytes", lambda L, h, d, t, dtype_bytes=2, batch=1: 2.0 * L * h * d * dtype_bytes * t * batch,
     "should be a Python int"),
    ("decode_step", decode_without_self, "does not attend to itself"),
    ("decode_step", decode_top_left, "top-left `tril` mask"),
    ("decode_step", decode_write_late, "slots length .. length+T-1"),
    ("decode_step", decode_no_capacity_check, "raise ValueError"),
    ("ring_write", ring_no_wrap, "p % W"),
    ("ring_write", ring_keeps_first, "only the last W positions stay"),
    ("read_block_table", read_sorted, "sorted by id"),
    ("read_block_table", read_swapped, "block_table[p // S], at offset p % S"),
])
def test_classic_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
