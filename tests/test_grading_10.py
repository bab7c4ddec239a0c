"""Chapter 10's hidden tests take points for the classic RoPE mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants


_ROTATE = """
D = x.shape[-1]; half = D // 2
dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
theta = (base ** (-{exponent} * torch.arange(half, dtype=torch.float64) / D)).to(dtype)
ang = positions.to(dtype)[:, None] * theta
cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
{pairs}
"""
ADJACENT = _ROTATE.format(exponent=2, pairs="a, b = x[..., 0::2], x[..., 1::2]\n"
                          "return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)")
I_OVER_D = _ROTATE.format(exponent=1, pairs="a, b = x[..., :half], x[..., half:]\n"
                          "return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)")
ONE_BLOCK = """
D = w.shape[0]
return w.reshape(1, D // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)
"""
PI_NOT_NTK = """
return base ** (-2 * torch.arange(dim // 2, dtype=torch.float64) / dim) / scale
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "adjacent_pairs+one_block": {"rope_rotate": ADJACENT, "rope_convert_layout": ONE_BLOCK},
    "i_over_d+pi": {"rope_rotate": I_OVER_D, "rope_ntk": PI_NOT_NTK},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("10_rope", MUTANTS, tmp_path_factory.mktemp("mutants10"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, 0.5)