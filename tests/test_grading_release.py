"""`attncourse release --learner-repo`: what a learner gets, and what never leaves the course."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (ROOT / "solutions" / "01_sdpa.ipynb").exists(), reason="no solutions yet")


def test_learner_repo_has_no_solutions_or_hidden_tests(tmp_path):
    dest = tmp_path / "learner"
    run = subprocess.run([sys.executable, "-m", "attncourse.cli", "release", "--learner-repo", str(dest)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
    files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert "notebooks/01_sdpa.ipynb" in files and "attncourse/__init__.py" in files
    assert ".github/workflows/classroom.yml" in files and ".github/workflows/book.yml" in files
    assert "benchmarks/results/extrapolation.json" in files          # the book plots committed results
    assert "_static/attncourse.css" in files                         # and loads the theme fixes
    assert not any(f.startswith("benchmarks/") and f.endswith(".py") for f in files)
    assert not any(f.startswith(("solutions/", "tests/")) for f in files)
    assert not any("__pycache__" in f for f in files)
    for nb in dest.rglob("*.ipynb"):
        assert "# BEGIN SOLUTION" not in nb.read_text()
    # rewriting an earlier learner repo is allowed; a foreign non-empty folder is not
    again = subprocess.run([sys.executable, "-m", "attncourse.cli", "release", "--learner-repo", str(dest)],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused = subprocess.run([sys.executable, "-m", "attncourse.cli", "release", "--learner-repo", str(foreign)],
                             cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and (foreign / "keep.txt").exists()


def test_hidden_tests_are_not_collected_by_the_normal_suite():
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:nbval",
                          "-o", "addopts=", "tests/autograder"], cwd=ROOT, capture_output=True, text=True)
    assert "test_01_sdpa" not in run.stdout
