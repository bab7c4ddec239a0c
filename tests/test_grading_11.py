"""Chapter 11's hidden tests take points for the classic ALiBi mistakes, and only from the exercise
that makes them (``uses`` supplies the reference to the exercises that call a mistaken one): two
mutated copies of the solution are graded with the real grader."""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants


NAIVE_SLOPES = """
return torch.tensor([2.0 ** (-8.0 * k / n_heads) for k in range(1, n_heads + 1)], dtype=torch.float32)
"""
_BIAS = """
m = alibi_slopes(n_heads).double()
i = torch.arange({start}, {start} + tq, dtype=torch.float64)[:, None]
j = torch.arange(tk, dtype=torch.float64)[None, :]
return ({sign}m[:, None, None] * (i - j)).float()
"""
WRONG_SIGN = _BIAS.format(start="tk - tq", sign="")
TOP_LEFT_BIAS = _BIAS.format(start="0", sign="-")
TOP_LEFT_ATTENTION = """
import torch.nn.functional as F
H, tq, tk = q.shape[1], q.shape[2], k.shape[2]
bias = alibi_bias(H, tq, tk).to(q.dtype)
if not causal:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=-bias.abs())
keep = torch.ones(tq, tk, dtype=torch.bool).tril()          # top-left, like is_causal=True
return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~keep, float("-inf")))
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "naive_slopes+wrong_sign": {"alibi_slopes": NAIVE_SLOPES, "alibi_bias": WRONG_SIGN},
    "top_left_bias+top_left_mask": {"alibi_bias": TOP_LEFT_BIAS, "alibi_attention": TOP_LEFT_ATTENTION},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("11_alibi", MUTANTS, tmp_path_factory.mktemp("mutants11"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, 0.7)