"""Fair grading: each exercise is graded on its own cell, and the hidden tests say what they cover.

* Isolation: for every chapter whose hidden tests declare ``uses``, a submission whose
  depended-upon exercises are **stubs** (they raise NotImplementedError) still gets full marks
  on every other exercise, because the grader supplies the reference for them; the stubs get 0.
* A classic mistake in one exercise (a naive softmax) costs points in that exercise only.
* Every hidden test module has a ``Coverage:`` section naming every exercise.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_notebook
from attncourse.grading.release import stub
from mutants import mutate

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ROOT / "tests" / "autograder"
CHAPTERS = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb") if (HIDDEN / f"test_{p.stem}.py").exists())


def hidden(chapter: str):
    name = f"_fair_{chapter}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HIDDEN / f"test_{chapter}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def mutated(chapter: str, tmp_path: Path, changes: dict[str, str | None]) -> Path:
    """The solution with some exercises replaced: by ``code``, or by the release stub for ``None``."""
    changes = {ex: body if body is not None else stub(ex) for ex, body in changes.items()}
    return mutate(chapter, changes, tmp_path / f"{chapter}.ipynb")


ISOLATED = [c for c in CHAPTERS if any(spec.get("uses") for spec in hidden(c).EXERCISES.values())]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", ISOLATED)
def test_dependents_keep_full_marks_when_their_dependencies_are_stubs(chapter, tmp_path):
    specs = hidden(chapter).EXERCISES
    by_function = {spec["function"]: ex for ex, spec in specs.items()}
    used = {by_function[name] for spec in specs.values() for name in spec.get("uses", {})}
    result = grade_notebook(mutated(chapter, tmp_path, {ex: None for ex in used}), tests_dir=HIDDEN)
    scores = {e.id: (e.score, e.max_score) for e in result.exercises}
    for ex, (score, max_score) in scores.items():
        if ex in used:
            assert score == 0, f"{chapter}: the stub {ex} scored {score}"
        else:
            assert score == max_score, (f"{chapter}: {ex} lost points because an exercise it calls is a stub "
                                        f"({score}/{max_score}): {[t.message for t in result.tests if t.exercise == ex and t.status != 'passed'][:2]}")


@pytest.mark.slow
def test_a_naive_softmax_costs_points_in_softmax_only(tmp_path):
    path = mutated("01_sdpa", tmp_path, {"stable_softmax": "return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)"})
    result = grade_notebook(path, tests_dir=HIDDEN)
    scores = {e.id: (e.score, e.max_score) for e in result.exercises}
    assert scores["stable_softmax"][0] < scores["stable_softmax"][1]
    assert all(s == m for ex, (s, m) in scores.items() if ex != "stable_softmax"), scores
    # the NaN came from overflow, not from a masked row: the hint says so
    overflow = [t.message for t in result.tests if "large_scores" in t.name and t.status == "failed"]
    assert overflow and all("overflow" in m and "masked" not in m for m in overflow), overflow


@pytest.mark.slow
def test_torch_softmax_in_the_softmax_exercise_scores_zero(tmp_path):
    body = "return torch.nan_to_num(torch.softmax(x, dim), nan=0.0)"
    result = grade_notebook(mutated("01_sdpa", tmp_path, {"stable_softmax": body}), tests_dir=HIDDEN)
    ex = {e.id: e for e in result.exercises}
    assert ex["stable_softmax"].score == 0 and "torch.softmax" in (ex["stable_softmax"].problem or "")
    assert result.score == result.max_score - ex["stable_softmax"].max_score


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_hidden_tests_state_their_coverage(chapter):
    mod = hidden(chapter)
    doc = mod.__doc__ or ""
    assert "Coverage" in doc, f"test_{chapter}.py: the module docstring needs a 'Coverage:' section"
    section = doc[doc.index("Coverage"):]
    for ex in mod.EXERCISES:
        assert f"- {ex}:" in section, f"test_{chapter}.py: the Coverage section has no line '- {ex}: ...'"


def test_uses_names_must_be_other_exercises(tmp_path):
    """A misconfigured ``uses`` is the grader's error (exit 2), never a silent zero for the learner."""
    from attncourse.grading.grader import GraderError

    tests = tmp_path / "tests"
    tests.mkdir()
    src = (HIDDEN / "test_01_sdpa.py").read_text().replace(
        '"uses": {"softmax": "attncourse.core.stable_softmax"}', '"uses": {"softmaxx": "attncourse.core.stable_softmax"}')
    assert "softmaxx" in src
    (tests / "test_01_sdpa.py").write_text(src)
    with pytest.raises(GraderError, match="softmaxx"):
        grade_notebook(ROOT / "solutions" / "01_sdpa.ipynb", tests_dir=tests)
