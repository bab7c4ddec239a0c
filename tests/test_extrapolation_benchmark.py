"""benchmarks/extrapolation.py: its tasks say what they claim (checked with loops), and its committed
result file holds every task, variant, length and seed the chapters 10-11 pages read."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from attncourse.data import IGNORE

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "extrapolation.json"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("extrapolation_bench", ROOT / "benchmarks" / "extrapolation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tasks_match_their_definitions(bench):
    g = torch.Generator().manual_seed(0)
    V = bench.V
    b = bench.last_marked(16, 40, g)
    for x, y in zip(b.x.tolist(), b.y.tolist()):
        last = None
        for t, tok in enumerate(x):
            if tok >= V:
                last = tok - V
            assert y[t] == (IGNORE if last is None else last)
    b = bench.lag_copy(8, 20, g)
    assert (b.y[:, :3] == IGNORE).all() and torch.equal(b.y[:, 3:], b.x[:, :-3])
    b = bench.one_marked(16, 30, g)
    for x, y in zip(b.x.tolist(), b.y.tolist()):
        marked = [t for t, tok in enumerate(x) if tok >= V]
        assert len(marked) == 1
        p, value = marked[0], x[marked[0]] - V
        assert y == [IGNORE] * p + [value] * (30 - p)


def test_committed_result_is_complete():
    res = json.loads(RESULT.read_text())
    cfg = res["config"]
    assert res["command"].startswith("python benchmarks/extrapolation.py")
    assert {"device_name", "torch_version", "date", "threads"} <= set(res["metadata"])
    assert len(cfg["seeds"]) >= 3 and cfg["multiples"] == [1, 2, 4, 8]
    assert "one_marked" in res["tasks"]                                  # the control task
    for task in res["tasks"]:
        assert set(res["summary"][task]) == set(res["variants"])
        for cells in res["summary"][task].values():
            assert [c["multiple"] for c in cells] == cfg["multiples"]
            assert all(len(c["per_seed"]) == len(cfg["seeds"]) and 0 <= c["mean"] <= 1 for c in cells)
        n_buckets = max(cfg["multiples"]) * cfg["L"] // cfg["bucket"]
        assert all(len(curve) == n_buckets for curve in res["curves_at_longest"]["accuracy"][task].values())
    assert len(res["runs"]) == len(res["tasks"]) * 5 * len(cfg["seeds"])
