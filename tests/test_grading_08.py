"""Chapter 08's hidden tests take points for the classic grouping mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "08_mqa.ipynb"

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
QUERY_HEADS_IN_BYTES = """
return 4 * n_heads * head_dim * context / (dtype_bytes * (2 * n_heads * head_dim * context + 2 * n_heads * head_dim))
"""

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "repeat_order+bad_merge+query_heads": {"grouped_attention": REPEAT_ORDER, "mqa_layer": BAD_MERGE,
                                           "decode_intensity": QUERY_HEADS_IN_BYTES},
    "top_left": {"grouped_attention": TOP_LEFT},
    "copying": {"grouped_attention": COPYING},
}


def mutate(changes: dict[str, str], out: Path) -> Path:
    nb = json.loads(SOLUTION.read_text())
    for cell in nb["cells"]:
        ex = cell.get("metadata", {}).get("attncourse", {}).get("id")
        if ex in changes:
            src = "".join(cell["source"])
            a, b = src.index("# BEGIN SOLUTION"), src.index("# END SOLUTION")
            indent = src[src.rfind("\n", 0, a) + 1:a]
            body = textwrap.indent(textwrap.dedent(changes[ex]).strip("\n"), indent)
            cell["source"] = (src[:a] + "# BEGIN SOLUTION\n" + body + "\n" + indent + src[b:]).splitlines(True)
    out.write_text(json.dumps(nb))
    return out


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mutants08")
    paths = [mutate(changes, tmp / f"{name}.ipynb") for name, changes in MUTANTS.items()]
    results = grade_paths(paths, tests_dir=ROOT / "tests" / "autograder", jobs=2)
    return {name: {e.id: e for e in r.exercises} for name, r in zip(MUTANTS, results)}


KEEPS_AT_MOST = {"top_left": 0.75}   # right whenever Tq == Tk or causal=False, which the text also grades


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    for ex_id, ex in graded[name].items():
        if ex_id in MUTANTS[name]:
            limit = KEEPS_AT_MOST.get(name, 0.5)
            assert ex.score <= limit * ex.max_score, f"{name}: {ex_id} kept {ex.score}/{ex.max_score}"
        else:
            assert ex.score == ex.max_score, f"{name}: {ex_id} lost points ({ex.score}/{ex.max_score})"
