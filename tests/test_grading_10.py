"""Chapter 10's hidden tests take points for the classic RoPE mistakes, and only from the exercise
that makes them: two mutated copies of the solution are graded with the real grader."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "10_rope.ipynb"

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
    tmp = tmp_path_factory.mktemp("mutants10")
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
