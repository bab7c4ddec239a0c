"""Benchmark the autograder: one notebook, a batch with --jobs, and the worst cases per submission.

    python benchmarks/grading.py [--n 20] [--jobs 2]             # one notebook, a batch
    python benchmarks/grading.py --worst [--cases loop,exit]      # hostile submissions (slow: minutes)
    python benchmarks/grading.py --worst --repeat 2 --json benchmarks/results/grading_worst.json
    python benchmarks/grading.py --worst --cases memory_creep,memory_held --cgroup /sys/fs/cgroup/memory/gs768
        # as root: run each grading inside an existing memory cgroup (e.g. limited to 768 MiB, like
        # Gradescope's default container) and record its peak usage and OOM kills

Budgets (design.md §8, issue 14): grading one chapter notebook ≤ 15 s on the 2-core CI machine;
any single submission ≤ ~60 s with the default limits, whatever it does.
Each measurement runs the real CLI (``python -m attncourse.cli grade ...``) in a fresh process,
so it includes starting Python, importing torch in the grader and in the sandbox, pytest
collection, every hidden test and writing the reports. Peak memory is sampled every 50 ms from
/proc: the RSS of the grader process plus everything it started (the sandboxed child), summed
at each sample; the largest sum is what one ``--jobs`` slot needs. The worst cases are
``tests/grading_corpus/worst.py``. Timings are printed, never asserted.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_sdpa.ipynb"
RELEASED = ROOT / "notebooks" / "01_sdpa.ipynb"
TESTS = ROOT / "tests" / "autograder"


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """(RSS of ``root``, RSS of all its descendants) in MiB, from /proc."""
    table, rss = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            rest = stat[stat.rindex(")") + 2:].split()
            table[int(name)] = int(rest[1])
            rss[int(name)] = int(rest[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            continue
    kids, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in table.items() if pp in frontier} - kids
        kids |= frontier
    return rss.get(root, 0.0), sum(rss.get(p, 0.0) for p in kids)


def _cgroup_files(cgroup: str) -> tuple[Path, Path, Path]:
    """(procs, peak usage, OOM events) files of a cgroup v1 memory or v2 folder."""
    c = Path(cgroup)
    if (c / "memory.max_usage_in_bytes").exists():
        return c / "cgroup.procs", c / "memory.max_usage_in_bytes", c / "memory.oom_control"
    return c / "cgroup.procs", c / "memory.peak", c / "memory.events"


def _oom_kills(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def measured(cmd: list[str], timeout: float = 1800, cgroup: str | None = None) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds, peak RSS (MiB) of it, of its descendants and of both.

    With ``cgroup``, the command runs inside that (memory) cgroup: also its peak usage and OOM kills.
    """
    preexec, kills0 = None, 0
    if cgroup:
        procs, peak_file, events = _cgroup_files(cgroup)
        try:
            peak_file.write_text("0")  # v1: reset the peak
        except OSError:
            pass
        kills0 = _oom_kills(events)

        def preexec():  # noqa: F811 - runs in the child, before exec
            procs.write_text(str(os.getpid()))
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # not the checkout: ``python -m`` would import attncourse from the current directory
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir(), preexec_fn=preexec)
    peak = {"grader": 0.0, "children": 0.0, "total": 0.0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                own, kids = _tree_rss_mb(proc.pid)
            except OSError:
                own, kids = 0.0, 0.0
            peak["grader"] = max(peak["grader"], own)
            peak["children"] = max(peak["children"], kids)
            peak["total"] = max(peak["total"], own + kids)
            done.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    done.set()
    th.join()
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"wall_s": round(time.perf_counter() - t0, 2), "rc": proc.returncode, "stdout": out, "stderr": err,
              "cpu_s": round(usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime, 2),
              "peak_rss_mb": {k: round(v) for k, v in peak.items()}}
    if cgroup:
        result["cgroup_peak_mb"] = round(int(peak_file.read_text().split()[0]) / 2**20)
        result["cgroup_oom_kills"] = _oom_kills(events) - kills0
    return result


def grade_cmd(paths, jobs: int, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attncourse.cli", "grade", *map(str, paths), "--tests", str(TESTS),
            "--jobs", str(jobs), "--format", "all", "--output", str(out), "--quiet", *extra]


def grade(paths, jobs: int, out: Path) -> tuple[float, str, dict]:
    r = measured(grade_cmd(paths, jobs, out))
    if r["rc"] != 0:
        raise SystemExit(f"grading failed ({r['rc']}):\n{r['stderr']}")
    return r["wall_s"], r["stdout"].strip().splitlines()[-1], r["peak_rss_mb"]


def _worst_module():
    spec = importlib.util.spec_from_file_location("_bench_worst", ROOT / "tests" / "grading_corpus" / "worst.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def worst(cases: list[str], repeat: int, tmp: Path, cgroup: str | None = None) -> dict:
    """Grade every worst case ``repeat`` times with the default limits; wall time and peak RSS."""
    corpus = _worst_module()
    out = {}
    for case in cases:
        path = corpus.write(case, tmp / f"01_sdpa_{case}.ipynb")
        runs = []
        for i in range(repeat):
            r = measured(grade_cmd([path], 1, tmp / f"worst-{case}-{i}", "--chapter", "01_sdpa"), cgroup=cgroup)
            info = {}
            try:
                sub = json.loads((tmp / f"worst-{case}-{i}" / "grades.json").read_text())["submissions"][0]
                info = {"execution_time_s": sub["execution_time"], "restarts": sub["sandbox"].get("restarts"),
                        "startup_s": sub["sandbox"].get("startup_s"), "sandbox_s": sub["sandbox"].get("sandbox_s"),
                        "score": sub["score"], "sandbox_peak_rss_mb": sub["sandbox"].get("peak_rss_mb")}
            except (OSError, KeyError, IndexError, ValueError):
                pass
            extra = {k: r[k] for k in ("cgroup_peak_mb", "cgroup_oom_kills") if k in r}
            runs.append({"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "rc": r["rc"], "peak_rss_mb": r["peak_rss_mb"],
                         **info, **extra})
            print(f"  {case:17s} run {i + 1}: {r['wall_s']:6.1f} s wall ({info.get('execution_time_s')} s grading, "
                  f"{info.get('startup_s')} s of it start-up), {r['cpu_s']} s CPU, peak RSS {r['peak_rss_mb']['total']}"
                  f" MiB (grader {r['peak_rss_mb']['grader']}, sandbox+zygote {r['peak_rss_mb']['children']}), "
                  f"restarts {info.get('restarts')}, score {info.get('score')}"
                  + (f", cgroup peak {extra['cgroup_peak_mb']} MiB, OOM kills {extra['cgroup_oom_kills']}"
                     if extra else ""), flush=True)
        walls = [r["wall_s"] for r in runs]
        out[case] = {"what": corpus.CASES[case][0], "wall_s_min": min(walls), "wall_s_max": max(walls),
                     "peak_rss_mb_max": max(r["peak_rss_mb"]["total"] for r in runs), "runs": runs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="submissions in the batch (default 20)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs for the batch (default 2)")
    ap.add_argument("--worst", action="store_true", help="grade the worst cases of tests/grading_corpus/worst.py")
    ap.add_argument("--cases", default=None, help="comma-separated worst cases (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per worst case (default 1)")
    ap.add_argument("--cgroup", default=None, help="run each worst-case grading inside this memory cgroup (root)")
    ap.add_argument("--label", default=None, help="a label stored with the results (e.g. before/after)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    try:
        from attncourse.bench import metadata
        meta = metadata()
    except Exception:  # noqa: BLE001 - the numbers matter more than the metadata
        meta = {}
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(), "loadavg": os.getloadavg()},
               "metadata": meta, "date": time.strftime("%Y-%m-%d"), "label": args.label}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.worst:
            cases = args.cases.split(",") if args.cases else list(_worst_module().CASES)
            results["worst"] = worst(cases, args.repeat, tmp, args.cgroup)
            results["cgroup"] = args.cgroup
        else:
            for label, nb in (("solution", SOLUTION), ("stub", RELEASED)):
                t, points, rss = grade([nb], 1, tmp / f"one-{label}")
                results[f"one_{label}_s"] = t
                results[f"one_{label}_peak_rss_mb"] = rss
                print(f"one notebook ({label}): {t:.1f} s, peak RSS {rss['total']} MiB "
                      f"(grader {rss['grader']}, sandbox {rss['children']})  [{points}]")
            batch = tmp / "batch"
            batch.mkdir()
            for i in range(args.n):  # half solved, half stubs: both paths through the grader
                shutil.copy(SOLUTION if i % 2 == 0 else RELEASED, batch / f"learner{i:02d}.ipynb")
            t, points, rss = grade([batch], args.jobs, tmp / "batch-out")
            results[f"batch_{args.n}_jobs{args.jobs}_s"] = t
            results["batch_per_notebook_s"] = round(t / args.n, 2)
            results[f"batch_jobs{args.jobs}_peak_rss_mb"] = rss
            print(f"{args.n} notebooks with --jobs {args.jobs}: {t:.1f} s ({t / args.n:.2f} s each), "
                  f"peak RSS {rss['total']} MiB  [{points}]")
    results["machine"]["loadavg_after"] = os.getloadavg()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "worst"}))


if __name__ == "__main__":
    main()
