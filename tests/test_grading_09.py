"""Chapter 09's hidden tests take points for the classic grouping and conversion mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "09_gqa.ipynb"

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
    tmp = tmp_path_factory.mktemp("mutants09")
    paths = [mutate(changes, tmp / f"{name}.ipynb") for name, changes in MUTANTS.items()]
    results = grade_paths(paths, tests_dir=ROOT / "tests" / "autograder", jobs=2)
    return {name: {e.id: e for e in r.exercises} for name, r in zip(MUTANTS, results)}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    for ex_id, ex in graded[name].items():
        if ex_id in MUTANTS[name]:
            assert ex.score <= 0.5 * ex.max_score, f"{name}: {ex_id} kept {ex.score}/{ex.max_score}"
        else:
            assert ex.score == ex.max_score, f"{name}: {ex_id} lost points ({ex.score}/{ex.max_score})"
