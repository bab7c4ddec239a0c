"""`attncourse release`: deterministic learner notebooks, and clear errors for malformed sources."""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from attncourse.cli import main
from attncourse.grading.release import (ExerciseFormatError, parse_exercises, release, release_notebook,
                                        strip_solutions)

ROOT = Path(__file__).resolve().parents[1]


def exercise(src, ex_id="ex1", points=1, tags=("exercise",)):
    c = new_code_cell(src)
    c.metadata["tags"] = list(tags)
    if ex_id is not None:
        c.metadata["attncourse"] = {"id": ex_id, "points": points}
    return c


def notebook(*cells, chapter="99_test"):
    nb = new_notebook(cells=list(cells))
    if chapter:
        nb.metadata["attncourse"] = {"chapter": chapter}
    return nb


GOOD = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"


def test_learner_notebooks_are_current():
    stale = release(ROOT / "solutions", ROOT / "notebooks", check=True)
    assert not stale, f"run `attncourse release`: stale {stale}"


def test_released_notebooks_hold_no_solution_and_no_output():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, 4)
        sol = nbformat.read(ROOT / "solutions" / path.name, 4)
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
        ids = [e.id for e in parse_exercises(sol, path)]
        assert ids, f"{path.name} has no exercises"
        stub_cells = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
        assert [c.metadata["attncourse"]["id"] for c in stub_cells] == ids
        for c, ex_id in zip(stub_cells, ids):
            assert f'NotImplementedError("exercise {ex_id}' in c.source


def test_stub_keeps_signature_docstring_and_indent():
    out = strip_solutions(GOOD, "ex1")
    assert out.startswith("def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError")
    assert "x + 1" not in out
    compile(out, "<stub>", "exec")


def test_release_is_deterministic_and_idempotent(tmp_path):
    sol, nbs = tmp_path / "solutions", tmp_path / "notebooks"
    sol.mkdir()
    nb = notebook(new_markdown_cell("# t"), exercise(GOOD), new_code_cell("print(1)"))
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(nb, sol / "99_test.ipynb")
    assert release(sol, nbs, repository="https://example.org/r") == [nbs / "99_test.ipynb"]
    first = (nbs / "99_test.ipynb").read_bytes()
    assert release(sol, nbs, repository="https://example.org/r") == []
    assert (nbs / "99_test.ipynb").read_bytes() == first
    assert release(sol, nbs, check=True, repository="https://example.org/r") == []
    (nbs / "extra.ipynb").write_text("{}")
    assert nbs / "extra.ipynb" in release(sol, nbs, check=True, repository="https://example.org/r")


def test_repository_token_is_replaced():
    nb = notebook(new_code_cell("url = 'ATTNCOURSE_REPOSITORY'"), exercise(GOOD))
    out = release_notebook(nb, repository="https://github.com/me/fork")
    assert out.cells[0].source == "url = 'https://github.com/me/fork'"


@pytest.mark.parametrize("cells, match", [
    ([exercise("# BEGIN SOLUTION\nx = 1\n")], r"cell 0.*never closed"),
    ([exercise("x = 1\n# END SOLUTION\n")], r"cell 0.*without a matching"),
    ([exercise("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n")], r"inside another"),
    ([exercise(GOOD), exercise(GOOD)], r"cell 1.*duplicate exercise id 'ex1'"),
    ([exercise(GOOD, ex_id=None)], r"cell 0.*no attncourse metadata"),
    ([exercise(GOOD, points=0)], r"positive number of points"),
    ([exercise(GOOD, ex_id="not an id")], r"identifier"),
    ([exercise("x = 1\n")], r"no '# BEGIN SOLUTION'"),
    ([new_code_cell(GOOD)], r"cell 0.*not tagged 'exercise'"),
    ([new_markdown_cell("# BEGIN SOLUTION")], r"not tagged 'exercise'"),
    ([exercise("x = 1  # BEGIN SOLUTION\n# END SOLUTION")], r"alone on its line"),
])
def test_malformed_sources_name_notebook_and_cell(cells, match):
    nb = notebook(*cells)
    with pytest.raises(ExerciseFormatError, match=match) as info:
        parse_exercises(nb, "solutions/99_test.ipynb")
    assert "solutions/99_test.ipynb" in str(info.value)


def test_markdown_exercise_and_missing_chapter():
    md = new_markdown_cell("x")
    md.metadata.update(tags=["exercise"], attncourse={"id": "a", "points": 1})
    with pytest.raises(ExerciseFormatError, match="must be a code cell"):
        parse_exercises(notebook(md), "nb")
    with pytest.raises(ExerciseFormatError, match="attncourse.chapter"):
        parse_exercises(notebook(exercise(GOOD), chapter=None), "nb")


def test_cli_reports_malformed_and_invalid_json(tmp_path, capsys):
    sol = tmp_path / "solutions"
    sol.mkdir()
    (sol / "01_bad.ipynb").write_text("{not json")
    assert main(["release", "--solutions", str(sol), "--notebooks", str(tmp_path / "nb")]) == 2
    err = capsys.readouterr().err
    assert "01_bad.ipynb" in err and "not a valid Jupyter notebook" in err


def test_cli_check_exit_codes(tmp_path, capsys):
    sol = tmp_path / "solutions"
    sol.mkdir()
    nbformat.write(notebook(exercise(GOOD)), sol / "99_test.ipynb")
    args = ["release", "--solutions", str(sol), "--notebooks", str(tmp_path / "nb")]
    assert main(args + ["--check"]) == 1
    assert main(args) == 0
    assert main(args + ["--check"]) == 0
