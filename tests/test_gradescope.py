"""`attncourse gradescope`: the autograder zip, unpacked into a fake /autograder and run.

The zip must hold setup.sh, run_autograder, the bundled package and the hidden tests of the one
chapter (never another chapter's, never solutions). run_autograder, pointed at a temporary
folder laid out like Gradescope's, gives the solution full marks, the released stub zero, and a
notebook of another chapter zero with a message.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from attncourse.grading.gradescope import MANIFEST, TORCH_INDEX, TORCH_PIN, build
from attncourse.grading.gradescope import main as gradescope_main

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "autograder"
CHAPTER = "01_sdpa"
POINTS = 10

pytestmark = pytest.mark.skipif(not (ROOT / "solutions" / f"{CHAPTER}.ipynb").exists(), reason="no solutions yet")


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    """The built zip, and Gradescope's layout: /autograder/source (the zip) and /autograder/run_autograder."""
    tmp = tmp_path_factory.mktemp("gradescope")
    zip_path = tmp / "autograder.zip"
    manifest = build(CHAPTER, zip_path, tests_dir=TESTS)
    root = tmp / "autograder"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    return zip_path, manifest, root


def test_zip_holds_this_chapter_only_and_pins_the_versions(autograder, tmp_path):
    zip_path, manifest, _ = autograder
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        run = zf.read("run_autograder").decode()
        reqs = zf.read("requirements-autograder.txt").decode()
    assert {"setup.sh", "run_autograder", MANIFEST, "pyproject.toml", "attncourse/__init__.py",
            "attncourse/grading/child.py", f"tests/autograder/test_{CHAPTER}.py"} <= set(names)
    assert [n for n in names if n.startswith("tests/")] == [f"tests/autograder/test_{CHAPTER}.py"]
    assert not any(n.startswith("solutions/") or n.endswith(".ipynb") or "__pycache__" in n for n in names)
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert TORCH_PIN in setup and TORCH_INDEX in setup
    assert f"--chapter {CHAPTER}" in run and "results" in run
    assert any(line.startswith("numpy==") for line in reqs.splitlines())
    assert manifest["max_score"] == POINTS and manifest["chapter"] == CHAPTER
    for script in ("setup.sh", "run_autograder"):  # both parse as bash
        with zipfile.ZipFile(zip_path) as zf:
            (tmp_path / script).write_bytes(zf.read(script))
        assert subprocess.run(["bash", "-n", str(tmp_path / script)]).returncode == 0
    again = tmp_path / "again.zip"  # deterministic: same checkout, same bytes
    build(CHAPTER, again, tests_dir=TESTS)
    assert again.read_bytes() == zip_path.read_bytes()


def test_unknown_chapter_is_refused(tmp_path, capsys):
    from attncourse.cli import main

    assert main(["gradescope", "99_nothing", "-o", str(tmp_path / "x.zip"), "--tests", str(TESTS)]) == 2
    assert "no hidden tests" in capsys.readouterr().err and not (tmp_path / "x.zip").exists()


def _submission(root: Path, files: dict[str, Path]) -> tuple[Path, Path]:
    sub, results = root / "submission", root / "results"
    shutil.rmtree(sub, ignore_errors=True)
    shutil.rmtree(results, ignore_errors=True)
    sub.mkdir()
    for name, src in files.items():
        shutil.copy(src, sub / name)
    return sub, results


def _run_autograder(root: Path, files: dict[str, Path]) -> dict:
    """Gradescope's way: ``/autograder/run_autograder`` (bash, a fresh Python, the bundled package)."""
    _, results = _submission(root, files)
    env = dict(os.environ, ATTNCOURSE_AUTOGRADER_ROOT=str(root), ATTNCOURSE_AUTOGRADER_PYTHON=sys.executable)
    run = subprocess.run(["bash", str(root / "run_autograder")], env=env, cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((results / "results.json").read_text())


def _run_in_process(root: Path, files: dict[str, Path]) -> dict:
    """What run_autograder calls, in this process (cheaper: no new interpreter importing torch)."""
    sub, results = _submission(root, files)
    code = gradescope_main(["run", "--chapter", CHAPTER, "--submission", str(sub), "--results", str(results),
                            "--tests", str(root / "source" / "tests" / "autograder")])
    assert code == 0
    return json.loads((results / "results.json").read_text())


@pytest.mark.parametrize("files, score, message, runner", [
    ({f"{CHAPTER}.ipynb": ROOT / "solutions" / f"{CHAPTER}.ipynb"}, POINTS, None, _run_autograder),
    ({f"{CHAPTER}.ipynb": ROOT / "solutions" / "02_self_attention.ipynb"}, 0, "this assignment is chapter 01_sdpa",
     _run_autograder),
    ({"my work.ipynb": ROOT / "notebooks" / f"{CHAPTER}.ipynb"}, 0, "not implemented yet", _run_in_process),
], ids=["solution", "wrong-chapter", "stub"])
def test_run_autograder_in_a_fake_gradescope(autograder, files, score, message, runner):
    _, _, root = autograder
    doc = runner(root, files)
    assert doc["score"] == score and doc["max_score"] == POINTS
    if message:
        assert message in doc["output"] + json.dumps(doc["tests"])
    assert "Graded as chapter 01_sdpa (the assignment's chapter" in doc["output"]


def test_which_notebook_is_graded(autograder, tmp_path):
    _, _, root = autograder
    (tmp_path / "answer.py").write_text("print('hi')\n")
    doc = _run_in_process(root, {"answer.py": tmp_path / "answer.py"})
    assert (doc["score"], doc["max_score"]) == (0, POINTS)
    assert "No Jupyter notebook" in doc["output"] and "answer.py" in doc["output"]
    # several notebooks: the one named after the chapter is graded (an empty one here), with a note
    (tmp_path / f"{CHAPTER}.ipynb").write_text("")
    doc = _run_in_process(root, {f"{CHAPTER}.ipynb": tmp_path / f"{CHAPTER}.ipynb",
                                 "scratch.ipynb": ROOT / "solutions" / f"{CHAPTER}.ipynb"})
    assert (doc["score"], doc["max_score"]) == (0, POINTS)
    assert "also submitted, not graded: scratch.ipynb" in doc["output"] and "the file is empty" in doc["output"]
