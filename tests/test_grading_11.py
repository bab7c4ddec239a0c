"""Chapter 11's hidden tests take points for the classic ALiBi mistakes, and only from the exercise
that makes them (``uses`` supplies the reference to the exercises that call a mistaken one): two
mutated copies of the solution are graded with the real grader."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "11_alibi.ipynb"

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
    tmp = tmp_path_factory.mktemp("mutants11")
    paths = [mutate(changes, tmp / f"{name}.ipynb") for name, changes in MUTANTS.items()]
    results = grade_paths(paths, tests_dir=ROOT / "tests" / "autograder", jobs=2)
    return {name: {e.id: e for e in r.exercises} for name, r in zip(MUTANTS, results)}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    for ex_id, ex in graded[name].items():
        if ex_id in MUTANTS[name]:
            assert ex.score <= 0.7 * ex.max_score, f"{name}: {ex_id} kept {ex.score}/{ex.max_score}"
        else:
            assert ex.score == ex.max_score, f"{name}: {ex_id} lost points ({ex.score}/{ex.max_score})"
