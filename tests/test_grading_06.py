"""Chapter 06: the hidden tests take points for the classic mistakes, and only from the exercise
that makes them (each exercise is graded on its own code).

Two mutated copies of the solution are graded in one run: the first makes a classic mistake in
exercises 1, 3 and 5, the second in exercises 2 and 4 (more mistakes were tried by hand, see the
chapter's report: every one loses points).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "06_sparse.ipynb"
TESTS = ROOT / "tests" / "autograder"

# exercise id -> (solution text, mistaken text, what the mistake is)
MISTAKES_A = {
    "strided_mask": ("(d % stride == 0)", "(j % stride == 0)", "strided keys counted from position 0"),
    "bigbird_mask": ("| chosen[qb, kb]", "| chosen[qb, kb] | chosen[kb, qb]", "random blocks mirrored"),
    "layers_to_reach": ("step = (mask | torch.eye(t, dtype=torch.bool)).float()", "step = mask.float()",
                        "no residual identity"),
}
MISTAKES_B = {
    "fixed_mask": ("summary = j % stride >= stride - c", "summary = j % stride < c", "summary keys at a block's start"),
    "block_tiles": ("return (count > 0).long() + (count == block_q * block_k).long()",
                    "corner = padded[::block_q, ::block_k]\n    return corner.long() + (count == block_q * block_k).long()",
                    "a tile judged by its corner entry"),
}


def mutate(mistakes: dict, path: Path) -> Path:
    nb = json.loads(SOLUTION.read_text())
    for cell in nb["cells"]:
        ex_id = cell.get("metadata", {}).get("attncourse", {}).get("id")
        if ex_id in mistakes:
            old, new, _ = mistakes[ex_id]
            src = "".join(cell["source"])
            assert src.count(old) == 1, f"{ex_id}: the solution no longer contains {old!r}"
            cell["source"] = src.replace(old, new)
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ch06")
    paths = [mutate(MISTAKES_A, tmp / "mistakes_a.ipynb"), mutate(MISTAKES_B, tmp / "mistakes_b.ipynb")]
    return grade_paths(paths, tests_dir=TESTS, jobs=2)


@pytest.mark.parametrize("which", [0, 1], ids=["strided-bigbird-reach", "fixed-tiles"])
def test_each_mistake_loses_points_only_where_it_is(graded, which):
    result, mistakes = graded[which], (MISTAKES_A, MISTAKES_B)[which]
    assert result.status == "graded", result.error
    for ex in result.exercises:
        if ex.id in mistakes:
            assert ex.score < ex.max_score, f"{ex.id}: '{mistakes[ex.id][2]}' kept full marks"
        else:
            assert ex.score == ex.max_score, f"{ex.id} lost points for another exercise's mistake"
