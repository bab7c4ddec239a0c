"""Chapter 07's hidden tests take points for the classic mistakes, and only from the exercise that has one.

One graded submission: the solution notebook with two exercise cells changed by one line each —
``flash_forward`` forgets to rescale its accumulator and ``flash_backward`` computes
``D_i = rowsum(dO)`` without the ``O`` factor. Those two exercises must lose points, while
``online_softmax`` and ``hbm_accesses`` (untouched) keep full marks. (Every other classic mistake
is checked cheaply against the public checks in ``tests/test_checks_07.py``; the hidden tests were
run against each of them by hand, see the chapter's closing note.)
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from attncourse.grading.grader import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
MISTAKES = {
    "flash_forward": ("acc = acc * alpha.unsqueeze(-1) + p @", "acc = acc + p @"),
    "flash_backward": ("delta = (do.to(cdt) * o.to(cdt)).sum(dim=-1)", "delta = do.to(cdt).sum(dim=-1)"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    nb = nbformat.read(ROOT / "solutions" / "07_flash.ipynb", 4)
    for cell in nb.cells:
        ex = cell.metadata.get("attncourse", {}).get("id")
        if ex in MISTAKES:
            old, new = MISTAKES[ex]
            assert old in cell.source
            cell.source = cell.source.replace(old, new)
    path = tmp_path_factory.mktemp("grading07") / "07_flash.ipynb"
    nbformat.write(nb, path)
    return {e.id: e for e in grade_notebook(path, tests_dir=ROOT / "tests" / "autograder").exercises}


@pytest.mark.slow
def test_each_mistake_costs_its_own_exercise(graded):
    for ex in MISTAKES:
        assert graded[ex].score < graded[ex].max_score, f"{ex}: the mistake kept full marks"
    assert graded["flash_forward"].score <= 0.5 * graded["flash_forward"].max_score
    assert graded["flash_backward"].score == 0


@pytest.mark.slow
def test_the_other_exercises_keep_full_marks(graded):
    for ex in ("online_softmax", "hbm_accesses"):
        assert graded[ex].score == graded[ex].max_score, (ex, graded[ex])
