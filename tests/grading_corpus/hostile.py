"""A corpus of hostile and broken chapter-01 submissions, generated from the released notebook.

Each submission replaces exercise cells (found by id) with the code below. ``EXPECT`` says,
per submission and exercise, the score it must get and a piece of the message it must show:
none may score what it did not earn, and the grader must neither crash nor hang.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "notebooks" / "01_sdpa.ipynb"
SOLUTION = ROOT / "solutions" / "01_sdpa.ipynb"
HIDDEN = ROOT / "tests" / "autograder" / "test_01_sdpa.py"


def load(path=RELEASED) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def exercise_index(nb: dict, ex_id: str) -> int:
    for i, c in enumerate(nb["cells"]):
        if c.get("metadata", {}).get("attncourse", {}).get("id") == ex_id:
            return i
    raise KeyError(ex_id)


def solution_source(ex_id: str) -> str:
    nb = load(SOLUTION)
    src = nb["cells"][exercise_index(nb, ex_id)]["source"]
    return "".join(src) if isinstance(src, list) else src


def with_sources(sources: dict[str, str], base=RELEASED) -> dict:
    nb = copy.deepcopy(load(base))
    for ex_id, src in sources.items():
        nb["cells"][exercise_index(nb, ex_id)]["source"] = src
    return nb


def write(nb: dict, path: Path) -> Path:
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- submissions
def crashers() -> dict:
    """Hangs, exits and memory bombs inside the learner's functions."""
    return with_sources({
        "stable_softmax": "def softmax(x, dim=-1):\n    while True:\n        pass\n",
        "causal_mask": "import os\ndef causal_mask(tq, tk):\n    os._exit(0)\n",
        "padding_mask": "import sys\ndef padding_mask(lengths, t):\n    sys.exit(0)\n",
        "sdpa": ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
                 "    hog = [0] * (1 << 34)  # 128 GiB of pointers: stopped by the address-space limit\n"
                 "    return q\n"),
    })


def liars() -> dict:
    """Tampering with the comparison, fake results, tensor subclasses, wrong dtypes, the reference."""
    return with_sources({
        "stable_softmax": (
            "import torch, torch.testing, os, json\n"
            "torch.allclose = lambda *a, **k: True\n"
            "torch.equal = lambda *a, **k: True\n"
            "torch.testing.assert_close = lambda *a, **k: None\n"
            "for p in ('results.json', '../results.json', '/tmp/results.json', 'grading-report/grades.json'):\n"
            "    try:\n"
            "        with open(p, 'w') as f:\n"
            "            json.dump({'score': 1000, 'max_score': 10}, f)\n"
            "    except OSError:\n"
            "        pass\n"
            "print('x' * 5_000_000)\n"
            "def softmax(x, dim=-1):\n"
            "    print('y' * 1_000_000)\n"
            "    return torch.zeros_like(x)\n"),
        "causal_mask": (
            "import torch\n"
            "class Always(torch.Tensor):\n"
            "    def __eq__(self, other):\n        return True\n"
            "    def allclose(self, *a, **k):\n        return True\n"
            "def causal_mask(tq, tk):\n"
            "    return torch.ones(tq, tk, dtype=torch.bool).as_subclass(Always)\n"),
        "padding_mask": (
            "import torch\n"
            "def padding_mask(lengths, t):\n"
            "    keep = torch.arange(t)[None, :] < lengths[:, None]\n"
            "    return keep.long().view(len(lengths), 1, 1, t)  # wrong dtype\n"),
        "sdpa": (
            "import importlib\n"
            "def scaled_dot_product_attention(q, k, v, mask=None):\n"
            "    ref = getattr(importlib.import_module('attn' + 'course'), 'atten' + 'tion')\n"
            "    return ref(q, k, v, mask=mask)\n"),
    })


def broken_cells() -> dict:
    """Deleted, retyped, duplicated, syntax errors, raising at import, tampered metadata."""
    nb = with_sources({
        "padding_mask": solution_source("padding_mask"),
        "sdpa": "raise RuntimeError('oops at import')\ndef scaled_dot_product_attention(q, k, v, mask=None):\n    return q\n",
    })
    nb["cells"].pop(exercise_index(nb, "stable_softmax"))               # deleted
    cm = nb["cells"][exercise_index(nb, "causal_mask")]
    cm["cell_type"] = "markdown"                                          # retyped
    cm.pop("outputs", None)
    cm.pop("execution_count", None)
    # a later copy of the padding_mask cell with a syntax error: the last copy is graded
    dup = copy.deepcopy(nb["cells"][exercise_index(nb, "padding_mask")])
    dup["source"] = "def padding_mask(lengths, t)\n    return lengths\n"
    dup["metadata"]["attncourse"]["points"] = 1000                        # tampered metadata
    nb["cells"].append(dup)
    return nb


def escapes() -> dict:
    """Reading the hidden tests, starting processes, signalling the grader, forging the channel."""
    return with_sources({
        "stable_softmax": (
            f"HIDDEN = {str(HIDDEN)!r}\n"
            "def softmax(x, dim=-1):\n"
            "    raise ValueError(open(HIDDEN).read()[:300])\n"),
        "causal_mask": (
            "import os, signal, subprocess, torch\n"
            "def causal_mask(tq, tk):\n"
            "    for attempt in (lambda: subprocess.Popen(['sleep', '600'], start_new_session=True),\n"
            "                    lambda: os.fork(),\n"
            "                    lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
            "                    lambda: os.killpg(0, signal.SIGKILL) if False else None):\n"
            "        try:\n"
            "            attempt()\n"
            "        except OSError:\n"
            "            pass\n"
            + "\n".join("    " + line for line in solution_source("causal_mask").splitlines()[1:]) + "\n"),
        "padding_mask": (
            "import os, struct\n"
            "def padding_mask(lengths, t):\n"
            "    junk = b'\\xff' * 64\n"
            "    for fd in range(3, 12):\n"
            "        try:\n"
            "            os.write(fd, struct.pack('>Q', 40) + junk)\n"
            "        except OSError:\n"
            "            pass\n"
            "    return lengths\n"),
        "sdpa": (
            "import torch\n"
            "def scaled_dot_product_attention(q, k, v, mask=None):\n"
            "    return torch.full(q.shape[:-1] + v.shape[-1:], float('nan'), dtype=q.dtype)\n"),
    })


def shortcuts() -> dict:
    """Static from-scratch violation, wrong shape, import-time hang, loud but correct code."""
    return with_sources({
        "stable_softmax": "print('z' * 3_000_000)\n" + solution_source("stable_softmax"),
        "causal_mask": "while True:\n    pass\n" + solution_source("causal_mask"),
        "padding_mask": ("import torch\ndef padding_mask(lengths, t):\n"
                         "    return torch.arange(t)[None, :] < lengths[:, None]  # (B, t): wrong shape\n"),
        "sdpa": ("import torch.nn.functional as F\n"
                 "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                 "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"),
    })


def tricks() -> dict:
    """Reaching the reference around the rules: a wrapper's closure, unlisted reference functions
    through strings built at run time, torch's operator namespace."""
    return with_sources({
        "stable_softmax": (
            "import importlib\n"
            "_f = importlib.import_module('attn' + 'course.core').stable_softmax\n"
            "_orig = _f.__closure__[0].cell_contents\n"
            "def softmax(x, dim=-1):\n"
            "    return _orig(x, dim)\n"),
        "causal_mask": (
            "import importlib\n"
            "def causal_mask(tq, tk):\n"
            "    m = importlib.import_module('attn' + 'course.masks')\n"
            "    return getattr(m, 'sliding_window' + '_mask')(tq, tk, tk)\n"),
        "padding_mask": (
            "import importlib\n"
            "def padding_mask(lengths, t):\n"
            "    m = importlib.import_module('attn' + 'course.masks')\n"
            "    return getattr(m, 'mater' + 'ialize')(getattr(m, 'padd' + 'ing')(lengths), len(lengths), 1, 1, t)\n"),
        "sdpa": (
            "import torch\n"
            "def scaled_dot_product_attention(q, k, v, mask=None):\n"
            "    ops = getattr(torch, 'op' + 's')\n"
            "    return getattr(ops.aten, 'scaled_dot_' + 'product_attention')(q, k, v, attn_mask=mask)\n"),
    })


# exercise id -> (expected score, a substring of its feedback); None: any message
EXPECT = {
    "crashers": {
        "stable_softmax": (0, "did not finish within"),
        "causal_mask": (0, "ended the process"),
        "padding_mask": (0, "SystemExit"),
        "sdpa": (0, "MemoryError"),
    },
    "liars": {
        "stable_softmax": (0, "differs from the expected values"),
        "causal_mask": (0, "subclass of torch.Tensor"),
        "padding_mask": (0, "dtype torch.int64, expected torch.bool"),
        "sdpa": (0, "does not allow"),
    },
    "broken_cells": {
        "stable_softmax": (0, "exercise cell not found"),
        "causal_mask": (0, "not a code cell"),
        "padding_mask": (0, "SyntaxError on line 1"),
        "sdpa": (0, "raised RuntimeError: oops at import"),
    },
    "escapes": {
        "stable_softmax": (0, "PermissionError"),
        "causal_mask": (2, None),   # correct code after failed escape attempts: earned
        "padding_mask": (0, None),
        "sdpa": (0, "NaN"),
    },
    "tricks": {
        "stable_softmax": (0, "reaches around the grader"),
        "causal_mask": (0, "attncourse.masks.sliding_window_mask"),   # not on any list: the package-wide rule
        "padding_mask": (0, "attncourse.masks.padding"),
        "sdpa": (0, "torch.ops.aten.scaled_dot_product_attention"),
    },
    "shortcuts": {
        "stable_softmax": (2, None),  # correct, only loud
        "causal_mask": (0, "did not finish within"),
        "padding_mask": (0, "has shape"),
        "sdpa": (0, "scaled_dot_product_attention"),
    },
}

SUBMISSIONS = {"crashers": crashers, "liars": liars, "broken_cells": broken_cells, "escapes": escapes,
               "shortcuts": shortcuts, "tricks": tricks}
