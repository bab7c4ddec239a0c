"""The autograder: solutions get full marks, stubs get zero, reports and CLI, the wire format."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from attncourse.grading import wire
from attncourse.grading.grader import grade_paths
from attncourse.grading.release import read_notebook
from attncourse.grading.report import FORMATS, write_reports
from attncourse.grading.submission import extract, static_violations

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "autograder"
CHAPTERS = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))
SOLUTION = ROOT / "solutions" / "01_sdpa.ipynb"
RELEASED = ROOT / "notebooks" / "01_sdpa.ipynb"


def _points(path) -> float:
    nb = read_notebook(path)
    return sum(c.metadata["attncourse"]["points"] for c in nb.cells if "exercise" in c.metadata.get("tags", []))


@pytest.fixture(scope="module", params=CHAPTERS)
def graded(request):
    """Every chapter's solution and its released stub, graded together (solution first)."""
    chapter = request.param
    return grade_paths([ROOT / "solutions" / f"{chapter}.ipynb", ROOT / "notebooks" / f"{chapter}.ipynb"],
                       tests_dir=TESTS, jobs=2)


def test_solution_gets_full_marks(graded):
    sol = graded[0]
    assert sol.status == "graded" and sol.score == sol.max_score == _points(sol.path) > 0
    assert all(t.status == "passed" for t in sol.tests), [t for t in sol.tests if t.status != "passed"][:3]


def test_released_stub_gets_zero_not_implemented(graded):
    stub = graded[1]
    assert stub.score == 0 and stub.max_score == graded[0].max_score
    assert all(t.message.endswith("not implemented yet") for t in stub.tests)


def test_every_exercise_has_hidden_tests_worth_its_points(graded):
    nb = read_notebook(graded[0].path)
    meta = {c.metadata["attncourse"]["id"]: c.metadata["attncourse"] for c in nb.cells
            if "exercise" in c.metadata.get("tags", [])}
    got = {e.id: e for e in graded[0].exercises}
    assert set(got) == set(meta)
    for ex_id, m in meta.items():
        assert got[ex_id].max_score == m["points"] and got[ex_id].function == m["function"]
        assert got[ex_id].total >= 5, f"{ex_id}: too few hidden tests"


def test_all_report_formats(graded, tmp_path):
    write_reports(graded, list(FORMATS), tmp_path)
    full = graded[0].max_score
    gs = json.loads((tmp_path / "results.json").read_text())
    assert gs["score"] == full and gs["max_score"] == 2 * full and "execution_time" in gs
    assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(gs["tests"][0])
    own = json.loads((tmp_path / "grades.json").read_text())
    assert own["schema"] == "attncourse-grades" and len(own["submissions"]) == 2
    cr = json.loads((tmp_path / "classroom.json").read_text())
    assert cr["max_score"] == 2 * full and sum(t["score"] for t in cr["tests"]) == full and cr["status"] == "fail"
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert suites.tag == "testsuites" and len(suites.findall("testsuite")) == 2
    md = (tmp_path / "summary.md").read_text()
    assert md.rstrip().endswith(f"Points {full:g}/{2 * full:g}") and "not implemented yet" in md


def test_wire_roundtrip_and_rejects_forgeries():
    blobs = []
    values = (torch.randn(3, 4), torch.ones(2, dtype=torch.bfloat16), torch.zeros(0, 5, dtype=torch.float16),
              torch.tensor(7), (1, 2.5, None, "x", float("nan")), {"a": torch.arange(3)})
    desc = wire.encode_value(values, blobs)
    header, got_blobs = wire.unpack(wire.pack({"value": desc}, blobs)[8:])
    back = wire.decode_value(header["value"], got_blobs)
    for a, b in zip(values[:4], back[:4]):
        assert type(b) is torch.Tensor and b.dtype == a.dtype and torch.equal(a, b)
    assert isinstance(wire.decode_value(wire.encode_value(torch.ones(2).as_subclass(torch.nn.Parameter), []), []),
                      wire.Foreign)
    forged = {"kind": "tensor", "dtype": "float32", "shape": [1000], "blob": 0}
    with pytest.raises(wire.WireError):
        wire.decode_value(forged, [b"\x00" * 8])
    with pytest.raises(wire.WireError):
        wire.unpack(b"\x00\x00\x00\xffgarbage")


def test_static_check():
    assert static_violations("import torch.nn.functional as F\ny = F.scaled_dot_product_attention(q, k, v)",
                             from_scratch=True)
    assert static_violations("from attncourse import attention", from_scratch=False)
    assert static_violations("from attncourse.core import stable_softmax as s", from_scratch=False)
    assert not static_violations("from attncourse.checks import check\n"
                                 "def scaled_dot_product_attention(q, k, v):\n    return q", from_scratch=True)


def test_extraction_by_id_not_position(tmp_path):
    nb = json.loads(SOLUTION.read_text())
    nb["cells"].reverse()
    path = tmp_path / "reordered.ipynb"
    path.write_text(json.dumps(nb))
    specs = {"sdpa": {"function": "scaled_dot_product_attention"}, "stable_softmax": {"function": "softmax"}}
    sub = extract(path, specs)
    assert sub.chapter == "01_sdpa" and not sub.problems and set(sub.cells) == set(specs)
    assert sub.setup is not None and "import torch" in sub.setup.source


def test_cli_exit_status_and_outputs(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "attncourse.cli", "grade", str(RELEASED), "--tests", str(TESTS),
                          "-f", "gradescope,junit", "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr  # grading ran; the score is not the exit status
    assert run.stdout.strip().endswith("Points 0/10")
    assert (out / "results.json").exists() and (out / "junit.xml").exists()
    bad = subprocess.run([sys.executable, "-m", "attncourse.cli", "grade", str(RELEASED),
                          "--tests", str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_error_messages_are_explained_and_cut_at_a_boundary():
    from attncourse.grading.child import _clip, _describe

    x = torch.ones(3, requires_grad=True)
    y = torch.softmax(x, 0)
    y[0] = 0.0                                    # in place on a tensor softmax's backward needs
    with pytest.raises(RuntimeError) as info:
        y.sum().backward()
    message = _describe(info.value)["message"]
    assert "changed in place" in message and "output 0 of Softmax" in message and "torch.where" in message
    long = "A first sentence long enough to keep. " + "word " * 100
    assert _clip(long, 60) == "A first sentence long enough to keep."
    assert _clip("word " * 100, 40).endswith("word…") and len(_clip("word " * 100, 40)) <= 40
    assert _clip("short") == "short"


@pytest.mark.parametrize("src", [
    "def f(x):\n    return f.__globals__['torch'].softmax(x, -1)\n",
    "def f(x):\n    return torch.ops.aten.softmax(x, -1, False)\n",
    "import torch._C as C\n",
    "def f(x):\n    return getattr(sys.modules['attncourse.core'], 'attention')(x, x, x)\n",
    "from attncourse.checks.ch13_comparison import reference_swiglu\n",
    "def f(x):\n    return checks.reference_swiglu(x)\n",
    "__name__ = 'attncourse.fake'\n",
    "def f(x):\n    return eval('x')\n",
], ids=["globals", "torch.ops", "torch._C", "string", "reference-import", "reference-attr", "__name__", "eval"])
def test_static_check_flags_ways_around_the_rules_in_every_exercise(src):
    assert static_violations(src, from_scratch=False, context="import torch, sys")


def test_static_check_leaves_ordinary_code_alone():
    src = ("import math\nimport torch\n"
           "def f(x, w):\n    \"\"\"Uses attncourse.checks in the notebook, not here.\"\"\"\n"
           "    s = x @ w.T / math.sqrt(x.shape[-1])\n    return torch.softmax(s, -1).mT\n")
    assert static_violations(src, from_scratch=False) == []
