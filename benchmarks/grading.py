"""Benchmark the autograder: one chapter notebook, and 20 submissions with --jobs 2.

    python benchmarks/grading.py [--n 20] [--jobs 2] [--json out.json]

Budget (design.md §8): grading one chapter notebook ≤ 15 s on the 2-core CI machine.
Each measurement runs the real CLI (`python -m attncourse.cli grade ...`) in a fresh process,
so it includes starting Python, importing torch in the grader and in the sandbox, pytest
collection, every hidden test and writing the reports. Timings are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_sdpa.ipynb"
RELEASED = ROOT / "notebooks" / "01_sdpa.ipynb"
TESTS = ROOT / "tests" / "autograder"


def grade(paths, jobs: int, out: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "attncourse.cli", "grade", *map(str, paths), "--tests", str(TESTS),
           "--jobs", str(jobs), "--format", "all", "--output", str(out), "--quiet"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"grading failed ({run.returncode}):\n{run.stderr}")
    return elapsed, run.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="submissions in the batch (default 20)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs for the batch (default 2)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, nb in (("solution", SOLUTION), ("stub", RELEASED)):
            t, points = grade([nb], 1, tmp / f"one-{label}")
            results[f"one_{label}_s"] = round(t, 2)
            print(f"one notebook ({label}): {t:.1f} s  [{points}]")
        batch = tmp / "batch"
        batch.mkdir()
        for i in range(args.n):  # half solved, half stubs: both paths through the grader
            shutil.copy(SOLUTION if i % 2 == 0 else RELEASED, batch / f"learner{i:02d}.ipynb")
        t, points = grade([batch], args.jobs, tmp / "batch-out")
        results[f"batch_{args.n}_jobs{args.jobs}_s"] = round(t, 2)
        results[f"batch_per_notebook_s"] = round(t / args.n, 2)
        print(f"{args.n} notebooks with --jobs {args.jobs}: {t:.1f} s ({t / args.n:.2f} s each)  [{points}]")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
