"""Chapter 12's hidden tests take points for the classic KV-cache mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants


_DECODE = """
B, H, T, D = q.shape
end = length + T
if end > k_cache.shape[2]:
    raise ValueError("does not fit")
k_cache[:, :, {write}] = k_new
v_cache[:, :, {write}] = v_new
k, v = k_cache[:, :, :end], v_cache[:, :, :end]
scores = q @ k.transpose(-2, -1) / math.sqrt(D)
keep = {keep}
scores = scores.masked_fill(~keep, float("-inf"))
return torch.softmax(scores, dim=-1) @ v, k_cache, v_cache
"""
BOTTOM_RIGHT = "torch.arange(end)[None, :] <= torch.arange(length, end)[:, None]"
# The new token written one slot early (off by one), so it overwrites the last cached token.
WRITE_EARLY = _DECODE.format(write="max(length - 1, 0):max(end - 1, T)", keep=BOTTOM_RIGHT)
# A top-left causal mask: right for T = 1, wrong for a chunk after a cache.
TOP_LEFT = _DECODE.format(write="length:end", keep="torch.ones(T, end, dtype=torch.bool).tril()")
NO_WRAP = """
W, T = k_ring.shape[2], k_new.shape[2]
keep = min(T, W)
pos = torch.arange(start_pos + T - keep, start_pos + T)
slots = pos                                      # forgot the wrap-around
k_ring[:, :, slots] = k_new[:, :, T - keep:]
v_ring[:, :, slots] = v_new[:, :, T - keep:]
slot_pos[slots] = pos
return k_ring, v_ring, slot_pos
"""
SORTED_TABLE = """
N, Hkv, S, D = pool.shape
n = -(-length // S)
blocks = pool[block_table[:n].sort().values]     # pool order instead of table order
return blocks.transpose(0, 1).reshape(Hkv, n * S, D)[:, :length]
"""
FLOAT_BYTES = "return 2 * n_layers * n_kv_heads * head_dim * dtype_bytes * tokens * batch / 1"
HALF_BYTES = "return n_layers * n_kv_heads * head_dim * dtype_bytes * tokens * batch"

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "write_early+no_wrap+float": {"decode_step": WRITE_EARLY, "ring_write": NO_WRAP, "kv_cache_bytes": FLOAT_BYTES},
    "top_left+sorted+half": {"decode_step": TOP_LEFT, "read_block_table": SORTED_TABLE, "kv_cache_bytes": HALF_BYTES},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("12_kv_cache", MUTANTS, tmp_path_factory.mktemp("mutants12"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, 0.5)