"""Worst cases for the grader's time and memory: every function of a chapter-01 submission misbehaves.

Each case replaces **every** exercise cell of the released chapter-01 notebook (found by id) so
that every function (or every cell, at load time) does the same hostile thing. None of them can
earn a point; what they measure is how long grading takes and how much memory it needs, with
the default limits. ``benchmarks/grading.py --worst`` runs them all with the real CLI and
records wall time and peak RSS; ``tests/test_grading_scale.py`` grades the cheap ones.

``{fn}`` is the function name from the hidden tests' ``EXERCISES``; ``{timeout}`` the per-call
limit (so "just under the limit" scales with it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_worst_hostile", Path(__file__).with_name("hostile.py"))
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)
HIDDEN = ROOT / "tests" / "autograder" / "test_01_sdpa.py"

# name -> (what it does, a template for each exercise cell)
CASES = {
    "loop": ("every function loops forever",
             "def {fn}(*args, **kwargs):\n    while True:\n        pass\n"),
    "slow": ("every function sleeps just under the per-call limit, then returns nothing",
             "import time\ndef {fn}(*args, **kwargs):\n    time.sleep({timeout} * 0.9)\n    return None\n"),
    "memory_creep": ("every function fills memory 64 MiB at a time (touching each page) until MemoryError",
                     "def {fn}(*args, **kwargs):\n    hog = []\n    while True:\n"
                     "        hog.append(b'x' * (64 << 20))\n"),
    "memory_instant": ("every function asks for 128 GiB at once",
                       "def {fn}(*args, **kwargs):\n    return [0] * (1 << 34)\n"),
    "memory_held": ("every cell fills memory at load time and keeps it; the functions allocate more",
                    "hog = []\ntry:\n    while True:\n        hog.append(b'x' * (64 << 20))\nexcept MemoryError:\n"
                    "    pass\ndef {fn}(*args, **kwargs):\n    return [1.0] * (1 << 24)\n"),
    "exit": ("every function calls os._exit(1)",
             "import os\ndef {fn}(*args, **kwargs):\n    os._exit(1)\n"),
    "segfault": ("every function dereferences NULL (SIGSEGV)",
                 "import ctypes\ndef {fn}(*args, **kwargs):\n    return ctypes.string_at(0)\n"),
    "cell_loop": ("every exercise cell loops forever when it runs (load time)",
                  "while True:\n    pass\ndef {fn}(*args, **kwargs):\n    return None\n"),
    "cell_slow_exit": ("every cell sleeps just under the limit at load time; every function exits",
                       "import os, time\ntime.sleep({timeout} * 0.8)\ndef {fn}(*args, **kwargs):\n    os._exit(1)\n"),
    "huge_answer": ("every function returns a 200 MiB tensor",
                    "import torch\ndef {fn}(*args, **kwargs):\n    return torch.ones(50_000_000)\n"),
    "spinning_threads": ("every function starts a thread that spins forever, then raises",
                         "import threading\ndef _spin():\n    while True:\n        pass\n"
                         "def {fn}(*args, **kwargs):\n    threading.Thread(target=_spin, daemon=True).start()\n"
                         "    raise ValueError('no')\n"),
}
# The setup cell too (load time): a hang there is blamed on the setup cell and it is skipped.
SETUP_LOOP = "while True:\n    pass\n"


def exercises() -> dict:
    spec = importlib.util.spec_from_file_location("_worst_hidden_01", HIDDEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.EXERCISES


def notebook(case: str, timeout: float = 10.0) -> dict:
    """The released chapter-01 notebook with every exercise cell replaced by ``CASES[case]``."""
    _, template = CASES[case]
    sources = {ex: template.format(fn=spec["function"], timeout=timeout) for ex, spec in exercises().items()}
    nb = hostile.with_sources(sources)
    if case == "cell_loop":
        setup = next(c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", []))
        setup["source"] = SETUP_LOOP + "".join(setup["source"])
    return nb


def write(case: str, path: Path, timeout: float = 10.0) -> Path:
    return hostile.write(notebook(case, timeout), path)
