"""The autograder against hostile and broken submissions (tests/grading_corpus/hostile.py).

Short per-call timeouts and one strike per function keep this file fast; no timing asserts.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from attncourse.grading.grader import grade_notebook
from attncourse.grading.report import write_reports
from attncourse.grading.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "autograder"
_spec = importlib.util.spec_from_file_location("hostile", ROOT / "tests" / "grading_corpus" / "hostile.py")
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)

LIMITS = Limits(call_timeout=3, cpu_seconds=60, max_strikes=1)

pytestmark = pytest.mark.skipif(not hostile.RELEASED.exists(), reason="notebooks/01_sdpa.ipynb not released yet")


def _descendants(pid: int) -> set[int]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat").read()
                table[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in table.items() if pp in frontier} - out
        out |= frontier
    return out


@pytest.mark.parametrize("name", sorted(hostile.SUBMISSIONS))
def test_hostile_submission_scores_only_what_it_earned(tmp_path, name):
    before = _descendants(os.getpid())
    path = hostile.write(hostile.SUBMISSIONS[name](), tmp_path / f"{name}.ipynb")
    result = grade_notebook(path, tests_dir=TESTS, limits=LIMITS)
    assert result.status == "graded" and result.max_score == 10  # tampered metadata changes nothing
    for ex in result.exercises:
        want_score, want_msg = hostile.EXPECT[name][ex.id]
        assert ex.score == pytest.approx(want_score), (name, ex)
        if want_msg:
            feedback = ex.problem or " ".join(t.message for t in result.tests if t.exercise == ex.id)
            assert want_msg in feedback, (name, ex.id, feedback[:300])
    assert result.score == pytest.approx(sum(s for s, _ in hostile.EXPECT[name].values()))
    # nothing the learner started survives grading
    assert _descendants(os.getpid()) <= before
    # reports come from the grader, whatever the learner wrote to disk
    out = tmp_path / "report"
    write_reports([result], ["json", "gradescope", "markdown"], out)
    gs = json.loads((out / "results.json").read_text())
    assert gs["score"] == pytest.approx(result.score) and gs["max_score"] == 10
    everything = "".join(p.read_text() for p in out.iterdir())
    hidden_source = hostile.HIDDEN.read_text()
    assert "EXERCISES = {" not in everything and "def test_" not in everything
    assert hidden_source[:200] not in everything


def test_not_a_notebook(tmp_path):
    bad = tmp_path / "garbage.ipynb"
    bad.write_bytes(b"\x00\xffnot json at all")
    # Told the chapter (e.g. `--chapter 01_sdpa`), it scores 0 of that chapter's points...
    result = grade_notebook(bad, tests_dir=TESTS, limits=LIMITS, chapter="01_sdpa")
    assert result.score == 0 and result.max_score == 10
    assert result.exercises and all("not a Jupyter notebook" in (ex.problem or "") for ex in result.exercises)
    # ...and without a chapter it is an error that says why, never a crash.
    result = grade_notebook(bad, tests_dir=TESTS, limits=LIMITS)
    assert result.status == "error" and result.score == 0 and "not a Jupyter notebook" in result.error


def test_reference_imported_in_setup_is_not_the_learners(tmp_path):
    nb = hostile.with_sources({"causal_mask": "pass\n"})
    setup = next(c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", []))
    setup["source"] = "".join(setup["source"]) + "\nfrom attncourse.masks import causal_mask\n"
    result = grade_notebook(hostile.write(nb, tmp_path / "setup.ipynb"), tests_dir=TESTS, limits=LIMITS)
    ex = {e.id: e for e in result.exercises}["causal_mask"]
    assert ex.score == 0 and "must define the function causal_mask" in ex.problem
