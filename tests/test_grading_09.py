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

# No ValueError for uneven groups; a pooling that only works for 1-D biases' shape by accident
# (a bias comes out (new·D, 1)); dtype_bytes taken as 2.
NO_VALUE_ERROR = """
return torch.arange(n_heads) // (n_heads // n_kv_heads)
"""
FLATTENS_LAST_DIMS = """
r = n_kv_heads // new_kv_heads
D = weight.shape[0] // n_kv_heads
return weight.view(new_kv_heads, r, -1).mean(1).view(new_kv_heads * D, -1)
"""
BYTES_ALWAYS_2 = """
D = d_model // n_heads
rows = [(h, 2 * d_model * d_model + 2 * d_model * h * D, 2 * n_layers * h * D * 2 * tokens)
        for h in range(n_heads, 0, -1) if n_heads % h == 0]
return torch.tensor(rows, dtype=torch.int64)
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "modulo+strided+half": {"kv_head_index": MODULO, "mean_pool_kv": STRIDED, "gqa_table": ALL_HKV_HALF_CACHE},
    "summed": {"mean_pool_kv": SUMMED},
    "no_value_error+flattens+bytes_2": {"kv_head_index": NO_VALUE_ERROR, "mean_pool_kv": FLATTENS_LAST_DIMS,
                                        "gqa_table": BYTES_ALWAYS_2},
}
# Skipping the ValueError is one rule of three in kv_head_index (values, dtype, the error).
KEEPS_AT_MOST = {"kv_head_index": 0.65, "mean_pool_kv": 0.5, "gqa_table": 0.5}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("09_gqa", MUTANTS, tmp_path_factory.mktemp("mutants09"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, KEEPS_AT_MOST)