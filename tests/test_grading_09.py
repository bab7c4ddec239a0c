"""Chapter 09's hidden tests take points for the classic grouping and conversion mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants


# Query head h reads K/V head h % Hkv: the order `repeat` (not `repeat_interleave`) gives.
MODULO = """
if n_heads % n_kv_heads:
    raise ValueError("uneven groups")
return torch.arange(n_heads) % n_kv_heads
"""
# Pooling every new_kv_heads-th head together (heads g, g + Hkv', ...) instead of consecutive ones.
STRIDED = """
r = n_kv_heads // new_kv_heads
D = weight.shape[0] // n_kv_heads
rest = weight.shape[1:]
return weight.reshape(r, new_kv_heads, D, *rest).mean(dim=0).reshape(new_kv_heads * D, *rest)
"""
SUMMED = """
r = n_kv_heads // new_kv_heads
D = weight.shape[0] // n_kv_heads
rest = weight.shape[1:]
return weight.reshape(new_kv_heads, r, D, *rest).sum(dim=1).reshape(new_kv_heads * D, *rest)
"""
# Every Hkv from H down to 1, divisor or not, and the cache without the factor 2 (K and V).
ALL_HKV_HALF_CACHE = """
D = d_model // n_heads
rows = [(h, 2 * d_model * d_model + 2 * d_model * h * D, n_layers * h * D * dtype_bytes * tokens)
        for h in range(n_heads, 0, -1)]
return torch.tensor(rows, dtype=torch.int64)
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "modulo+strided+half": {"kv_head_index": MODULO, "mean_pool_kv": STRIDED, "gqa_table": ALL_HKV_HALF_CACHE},
    "summed": {"mean_pool_kv": SUMMED},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("09_gqa", MUTANTS, tmp_path_factory.mktemp("mutants09"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, 0.5)