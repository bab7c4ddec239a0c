"""Grade mutated copies of a chapter's solution: each classic mistake must cost points in the
exercise that makes it, and nowhere else (the fair-grading rule of book/contributing.md).

A chapter's ``tests/test_grading_NN.py`` lists its mutants as ``{name: {exercise id: code}}``,
where the code replaces that exercise's solution region, and calls :func:`grade_mutants` and
:func:`assert_mistakes_cost_only_their_exercise`.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from attncourse.grading.grader import grade_paths

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ROOT / "tests" / "autograder"


def mutate(chapter: str, changes: dict[str, str], out: Path) -> Path:
    """Write ``solutions/<chapter>.ipynb`` to ``out`` with each named solution region replaced."""
    nb = json.loads((ROOT / "solutions" / f"{chapter}.ipynb").read_text())
    seen = set()
    for cell in nb["cells"]:
        ex = cell.get("metadata", {}).get("attncourse", {}).get("id")
        if ex in changes:
            src = "".join(cell["source"])
            a, b = src.index("# BEGIN SOLUTION"), src.index("# END SOLUTION")
            indent = src[src.rfind("\n", 0, a) + 1:a]
            body = textwrap.indent(textwrap.dedent(changes[ex]).strip("\n"), indent)
            cell["source"] = (src[:a] + "# BEGIN SOLUTION\n" + body + "\n" + indent + src[b:]).splitlines(True)
            seen.add(ex)
    assert seen == set(changes), f"{chapter} has no exercise {sorted(set(changes) - seen)}"
    out.write_text(json.dumps(nb))
    return out


def grade_mutants(chapter: str, mutants: dict[str, dict[str, str]], tmp: Path, jobs: int = 2) -> dict:
    """``{mutant name: SubmissionResult}``, graded with the real grader (two at a time)."""
    paths = [mutate(chapter, changes, tmp / f"{i}.ipynb") for i, changes in enumerate(mutants.values())]
    return dict(zip(mutants, grade_paths(paths, tests_dir=HIDDEN, jobs=jobs)))


def assert_mistakes_cost_only_their_exercise(result, mutated: dict, name: str, keeps_at_most=0.5) -> None:
    """Every mutated exercise keeps at most ``keeps_at_most`` of its points (a number, or a dict by
    exercise id); every other exercise keeps all of them."""
    assert result.status == "graded", f"{name}: {result.error}"
    for ex in result.exercises:
        if ex.id in mutated:
            limit = keeps_at_most.get(ex.id, 0.5) if isinstance(keeps_at_most, dict) else keeps_at_most
            assert ex.score <= limit * ex.max_score, f"{name}: {ex.id} kept {ex.score}/{ex.max_score}"
        else:
            assert ex.score == ex.max_score, f"{name}: {ex.id} lost points ({ex.score}/{ex.max_score})"


def solution_region(chapter: str, exercise: str) -> str:
    """The code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` of one exercise, dedented."""
    nb = json.loads((ROOT / "solutions" / f"{chapter}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("attncourse", {}).get("id") == exercise:
            src = "".join(cell["source"])
            a, b = src.index("# BEGIN SOLUTION"), src.index("# END SOLUTION")
            return textwrap.dedent(src[src.index("\n", a) + 1:b].rstrip() + "\n")
    raise KeyError(f"{chapter} has no exercise {exercise}")


def edited(chapter: str, exercise: str, *swaps: tuple[str, str]) -> str:
    """The solution of one exercise with each ``(old, new)`` swapped once: a one-line mistake."""
    code = solution_region(chapter, exercise)
    for old, new in swaps:
        assert old in code, f"{chapter}/{exercise}: {old!r} is not in the solution"
        code = code.replace(old, new, 1)
    return code


def grade_paths_of(by_chapter: dict[str, dict[str, str]], tmp: Path, jobs: int = 2) -> dict:
    """``{chapter: SubmissionResult}`` for one mutated notebook per chapter, graded together."""
    paths = [mutate(ch, changes, tmp / f"{ch}.ipynb") for ch, changes in by_chapter.items()]
    return dict(zip(by_chapter, grade_paths(paths, tests_dir=HIDDEN, jobs=jobs)))
