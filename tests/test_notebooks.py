"""The learner notebooks run top to bottom as released: every check says "not implemented yet".

(The explanatory and solution notebooks are executed by nbval, see the README's test command.)
"""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from attncourse.grading.release import parse_exercises

ROOT = Path(__file__).resolve().parents[1]
LEARNER = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", LEARNER, ids=[p.stem for p in LEARNER])
def test_learner_notebook_runs_and_reports_not_implemented(path):
    nb = nbformat.read(path, 4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    solution = nbformat.read(ROOT / "solutions" / path.name, 4)
    for ex in parse_exercises(solution, path):
        assert f"{ex.id}: not implemented yet" in text, f"{path.name}: no 'not implemented' for {ex.id}"
    assert "🎉" not in text
