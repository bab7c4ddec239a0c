"""The instructor's view of a submission: the assignment's chapter is pinned, unusable files score
0 out of the chapter's points (never 0/0), and the report says which chapter was graded and why."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from attncourse.grading.grader import chapter_from_name, grade_notebook, grade_paths
from attncourse.grading.report import FORMATS, to_markdown, write_reports

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "autograder"
CH01_POINTS = 10


def test_wrong_chapter_scores_zero_of_the_assignment(tmp_path):
    r = grade_notebook(ROOT / "solutions" / "02_self_attention.ipynb", tests_dir=TESTS, chapter="01_sdpa")
    assert (r.chapter, r.score, r.max_score, r.status) == ("01_sdpa", 0, CH01_POINTS, "error")
    assert "chapter 02_self_attention" in r.error and "assignment is chapter 01_sdpa" in r.error
    assert all(t.score == 0 for t in r.tests)


def test_without_chapter_the_report_says_which_chapter_was_graded():
    r = grade_notebook(ROOT / "notebooks" / "02_self_attention.ipynb", tests_dir=TESTS)
    assert r.chapter == "02_self_attention" and r.chapter_source == "metadata"
    md = to_markdown([r])
    assert "**Graded as chapter 02_self_attention (read from the notebook's metadata" in md


@pytest.mark.parametrize("content, why", [
    ("", "the file is empty"),
    ("   \n", "the file is empty"),
    ("{not json", "JSON is broken"),
    ('{"cells": [], "nbformat": 4, "metadata": {}}', None),          # every cell deleted
])
def test_unusable_files_score_zero_of_the_chapter_in_every_format(tmp_path, content, why):
    path = tmp_path / "01_sdpa.ipynb"                                 # the chapter comes from the file name
    path.write_text(content)
    [r] = grade_paths([path], tests_dir=TESTS)
    assert (r.chapter, r.score, r.max_score) == ("01_sdpa", 0, CH01_POINTS)
    assert r.chapter_source == "file name"
    if why:
        assert why in r.error
    else:
        assert all(e.problem and "exercise cell not found" in e.problem for e in r.exercises)
    write_reports([r], list(FORMATS), tmp_path / "out")
    out = tmp_path / "out"
    assert json.loads((out / "grades.json").read_text())["max_score"] == CH01_POINTS
    assert json.loads((out / "results.json").read_text())["max_score"] == CH01_POINTS
    assert json.loads((out / "classroom.json").read_text())["max_score"] == CH01_POINTS
    props = {p.get("name"): p.get("value") for p in ET.parse(out / "junit.xml").getroot().iter("property")}
    assert props["max_score"] == str(CH01_POINTS)
    assert (out / "summary.md").read_text().rstrip().endswith(f"Points 0/{CH01_POINTS}")


def test_assignment_chapter_gives_the_maximum_for_any_file_name(tmp_path):
    path = tmp_path / "homework.ipynb"
    path.write_text("")
    [r] = grade_paths([path], tests_dir=TESTS, chapter="01_sdpa")
    assert (r.score, r.max_score, r.chapter_source) == (0, CH01_POINTS, "assignment")
    [r] = grade_paths([path], tests_dir=TESTS)                       # nothing says which chapter
    assert r.max_score == 0 and r.chapter is None and "the file is empty" in r.error


def test_chapter_from_file_name():
    known = ["01_sdpa", "02_self_attention", "12_kv_cache"]
    assert chapter_from_name("01_sdpa.ipynb", known) == "01_sdpa"
    assert chapter_from_name("/x/01_sdpa (1).ipynb", known) == "01_sdpa"
    assert chapter_from_name("02-final.ipynb", known) == "02_self_attention"
    assert chapter_from_name("12.ipynb", known) == "12_kv_cache"
    assert chapter_from_name("homework.ipynb", known) is None
    assert chapter_from_name("123_notes.ipynb", known) is None


def test_cli_usage_errors_exit_2(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "attncourse.cli", "grade", *args, "--tests", str(TESTS),
                               "-o", str(tmp_path / "out")], capture_output=True, text=True)

    missing = run(str(tmp_path / "nope.ipynb"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    bad_chapter = run(str(ROOT / "notebooks" / "01_sdpa.ipynb"), "--chapter", "99_nothing")
    assert bad_chapter.returncode == 2 and "no hidden tests" in bad_chapter.stderr
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert run(str(empty_dir)).returncode == 2


def test_from_filename_pins_each_notebook_to_its_file_name(tmp_path):
    # a completed chapter-02 notebook saved as 01_sdpa.ipynb is not graded as chapter 02
    (tmp_path / "01_sdpa.ipynb").write_text((ROOT / "solutions" / "02_self_attention.ipynb").read_text())
    (tmp_path / "homework.ipynb").write_text((ROOT / "notebooks" / "01_sdpa.ipynb").read_text())
    r1, r2 = grade_paths([tmp_path / "01_sdpa.ipynb", tmp_path / "homework.ipynb"], tests_dir=TESTS,
                         chapter="from-filename")
    assert (r1.chapter, r1.score, r1.max_score) == ("01_sdpa", 0, CH01_POINTS) and "chapter 02_self_attention" in r1.error
    assert r2.chapter is None and "does not name a chapter" in r2.error
