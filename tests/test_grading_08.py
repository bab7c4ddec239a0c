"""Chapter 08's hidden tests take points for the classic grouping mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants


_GROUPED = """
B, H, Tq, D = q.shape
Hkv, Tk = k.shape[1], k.shape[2]
G = H // Hkv
{group}
scores = qg @ k.transpose(-2, -1) / math.sqrt(D)
if causal:
    {mask}
    scores = scores.masked_fill(j > i, float("-inf"))
out = torch.softmax(scores, dim=-1) @ v
{ungroup}
"""
RIGHT_GROUP = "qg = q.reshape(B, Hkv, G * Tq, D)"
RIGHT_UNGROUP = "return out.reshape(B, H, Tq, D)"
BOTTOM_RIGHT = ("i = (torch.arange(G * Tq) % Tq)[:, None] + (Tk - Tq)\n"
                "    j = torch.arange(Tk)[None, :]")
# Query head h reads K/V head h % Hkv: the order `k.repeat(1, G, 1, 1)` gives.
REPEAT_ORDER = _GROUPED.format(
    group="qg = q.reshape(B, G, Hkv, Tq, D).transpose(1, 2).reshape(B, Hkv, G * Tq, D)", mask=BOTTOM_RIGHT,
    ungroup="return out.reshape(B, Hkv, G, Tq, D).transpose(1, 2).reshape(B, H, Tq, D)")
# A causal mask aligned top-left: wrong as soon as Tq < Tk (a decoding step).
TOP_LEFT = _GROUPED.format(group=RIGHT_GROUP, ungroup=RIGHT_UNGROUP,
                           mask="i = (torch.arange(G * Tq) % Tq)[:, None]\n    j = torch.arange(Tk)[None, :]")
# Right numbers, but by copying K and V (the rule forbids it).
COPYING = """
G = q.shape[1] // k.shape[1]
k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
if causal:
    Tq, Tk = q.shape[-2], k.shape[-2]
    s = s.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq).logical_not(), float("-inf"))
return torch.softmax(s, dim=-1) @ v
"""
# Heads merged without the transpose: tokens and heads mixed up.
BAD_MERGE = """
B, T, C = x.shape
D = C // n_heads
q = (x @ w_q).reshape(B, T, n_heads, D).transpose(1, 2)
k = (x @ w_k).reshape(B, T, n_kv_heads, D).transpose(1, 2)
v = (x @ w_v).reshape(B, T, n_kv_heads, D).transpose(1, 2)
return grouped_attention(q, k, v, causal=causal).reshape(B, T, C) @ w_o
"""
# The causal flag ignored, and dtype_bytes taken as 2 whatever the caller says.
NO_CAUSAL = _GROUPED.format(group=RIGHT_GROUP, ungroup=RIGHT_UNGROUP, mask="pass")
BYTES_ALWAYS_2 = """
return 4 * n_heads * head_dim * context / (2 * (2 * n_kv_heads * head_dim * context + 2 * n_heads * head_dim))
"""
QUERY_HEADS_IN_BYTES = """
return 4 * n_heads * head_dim * context / (dtype_bytes * (2 * n_heads * head_dim * context + 2 * n_heads * head_dim))
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "repeat_order+bad_merge+query_heads": {"grouped_attention": REPEAT_ORDER, "mqa_layer": BAD_MERGE,
                                           "decode_intensity": QUERY_HEADS_IN_BYTES},
    "top_left": {"grouped_attention": TOP_LEFT},
    "copying": {"grouped_attention": COPYING},
    "no_causal+bytes_always_2": {"grouped_attention": NO_CAUSAL, "decode_intensity": BYTES_ALWAYS_2},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("08_mqa", MUTANTS, tmp_path_factory.mktemp("mutants08"))


# top_left is right whenever Tq == Tk or causal=False, which the text also grades; the causal flag is half
# of the exercise's contract
KEEPS_AT_MOST = {"top_left": 0.65, "no_causal+bytes_always_2": 0.6}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, KEEPS_AT_MOST.get(name, 0.5))