"""A ready Gradescope autograder for one chapter: ``attncourse gradescope NN_topic -o autograder.zip``.

The zip holds what Gradescope's autograder specification asks for, at its root:

* ``setup.sh`` — run once, as root, when Gradescope builds the image (it has network access):
  a Python of the same minor version as the one that built the zip (through ``uv``, falling
  back to the image's ``python3``), the **CPU** build of torch pinned to what CI tests
  (``torch==2.13.0`` from PyTorch's CPU index), the grader's dependencies pinned to the
  versions of the building environment (``requirements-autograder.txt``), and the bundled
  course package;
* ``run_autograder`` — run for every submission: grades ``/autograder/submission/`` with the
  chapter **pinned** (``--chapter NN_topic``) and writes ``/autograder/results/results.json``;
* ``attncourse/`` — the course package itself (reference code, public checks, the grader), so
  the image never needs access to a private repository; no ``solutions/``, no notebooks;
* ``tests/autograder/test_NN_topic.py`` — the hidden tests of **this chapter only**;
* ``attncourse-autograder.json`` — what was bundled: chapter, points, package version, git
  commit, pins, limits and the SHA-256 of every file.

The zip is deterministic (sorted entries, fixed timestamps): building it twice from the same
checkout gives the same bytes. ``run_autograder`` reads ``ATTNCOURSE_AUTOGRADER_ROOT`` (default
``/autograder``), ``ATTNCOURSE_AUTOGRADER_SOURCE`` (default ``$ROOT/source``) and
``ATTNCOURSE_AUTOGRADER_PYTHON`` (default ``$ROOT/venv/bin/python``), so the tests run it in a
fake ``/autograder`` folder.

Which notebook is graded: the only ``.ipynb`` in the submission; if there are several, the
one whose file name names the chapter; otherwise each of them (at most 5), keeping the best,
with a note. No notebook at all scores 0 out of the chapter's points, with a message.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

TORCH_PIN = "torch==2.13.0"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# what the grader and the learner's setup cell import, besides torch (pinned with their dependencies)
RUNTIME = ("numpy", "matplotlib", "nbformat", "PyYAML", "pytest")
MANIFEST = "attncourse-autograder.json"
MAX_NOTEBOOKS = 5
_EPOCH = (1980, 1, 1, 0, 0, 0)


class GradescopeError(Exception):
    pass


# ----------------------------------------------------------------------------- building
def pinned_requirements(names=RUNTIME) -> list[str]:
    """``name==version`` for ``names`` and everything they need, as installed here (CI's versions)."""
    import importlib.metadata as md

    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pytest brings packaging
        return sorted(f"{n}=={md.version(n)}" for n in names)
    env = default_environment()
    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen or key == "torch":
            continue
        seen[key] = f"{dist.metadata['Name']}=={dist.version}"
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate(dict(env, extra="")):
                continue
            todo.append(req.name)
    return sorted(seen.values(), key=str.lower)


def _git_commit(root: Path) -> tuple[str | None, bool | None]:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "attncourse", "tests/autograder"],
                               capture_output=True, text=True, timeout=60).stdout.strip() != ""
        return head, (dirty if head else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def chapter_points(test_file: Path) -> dict[str, float]:
    """``{exercise id: points}`` from the hidden module's ``EXERCISES`` (imported: it is trusted)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_gs_points_{test_file.stem}", test_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {ex: float(s.get("points", 0)) for ex, s in mod.EXERCISES.items()}


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image (with network access).
# Written by `attncourse gradescope {chapter}`; see attncourse-autograder.json for what is pinned.
set -euo pipefail
SRC="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
VENV="${{ATTNCOURSE_AUTOGRADER_VENV:-/autograder/venv}}"
PYTHON_VERSION="{python}"

if command -v apt-get >/dev/null; then
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv ca-certificates >/dev/null
fi
# The Python minor version CI tests ({python}): uv fetches it if the image has another one.
if python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages uv; then
  python3 -m uv venv --seed --python "$PYTHON_VERSION" "$VENV"
else
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# The CPU build of torch, the version CI tests (the default index would bring a multi-GB CUDA build).
"$PY" -m pip install --quiet "{torch}" --index-url {index}
"$PY" -m pip install --quiet -r "$SRC/requirements-autograder.txt"
"$PY" -m pip install --quiet --no-deps "$SRC"
"$PY" -c "import torch, attncourse; print('attncourse', attncourse.__version__, 'torch', torch.__version__)"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. Written by `attncourse gradescope {chapter}`.
# Grades /autograder/submission/ as chapter {chapter} (pinned: a notebook of another chapter scores 0
# with a message) and writes /autograder/results/results.json. The paths can be moved for testing.
set -uo pipefail
ROOT="${{ATTNCOURSE_AUTOGRADER_ROOT:-/autograder}}"
SRC="${{ATTNCOURSE_AUTOGRADER_SOURCE:-$ROOT/source}}"
PY="${{ATTNCOURSE_AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
# the bundled package, whatever else is installed
export PYTHONPATH="$SRC${{PYTHONPATH:+:$PYTHONPATH}}"
mkdir -p "$ROOT/results"
exec "$PY" -m attncourse.grading.gradescope run --chapter {chapter} \\
    --submission "$ROOT/submission" --results "$ROOT/results" --tests "$SRC/tests/autograder" \\
    --timeout {timeout} --memory {memory} --cpu-time {cpu} --total-timeout {total}
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "attncourse"
version = "{version}"
description = "attncourse: reference code, public checks and the grader (bundled for a Gradescope autograder)"
requires-python = ">=3.10"

[tool.setuptools.packages.find]
include = ["attncourse*"]
"""

README = """Gradescope autograder for attncourse chapter {chapter} ({points:g} points).

Upload this zip as the programming assignment's autograder ("Configure Autograder" > "Zip file
upload"), with the assignment worth {points:g} points. Learners submit their {chapter}.ipynb.
See book/instructors.md ("Gradescope") for every step, and attncourse-autograder.json for what
is pinned. Built from attncourse {version}, commit {commit}.
"""


def _package_files(package: Path):
    for p in sorted(package.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".ipynb") \
                and not p.name.startswith("."):
            yield p


def build(chapter: str, output: str | Path, *, tests_dir: str | Path | None = None, limits=None) -> dict:
    """Write the autograder zip for ``chapter``; returns its manifest."""
    import platform

    import attncourse
    from attncourse.grading.grader import chapters_in, default_tests_dir, sandbox_options
    from attncourse.grading.sandbox import Limits

    limits = limits or Limits()
    tests_dir = Path(tests_dir) if tests_dir else default_tests_dir()
    test_file = tests_dir / f"test_{chapter}.py"
    if not test_file.is_file():
        known = ", ".join(chapters_in(tests_dir)) or "none"
        raise GradescopeError(f"no hidden tests for chapter {chapter!r} in {tests_dir} (known: {known})")
    points = chapter_points(test_file)
    package = Path(attncourse.__file__).resolve().parent
    root = package.parent
    commit, dirty = _git_commit(root)
    python = ".".join(platform.python_version_tuple()[:2])
    files: dict[str, bytes] = {}
    for p in _package_files(package):
        files[f"attncourse/{p.relative_to(package).as_posix()}"] = p.read_bytes()
    files[f"tests/autograder/test_{chapter}.py"] = test_file.read_bytes()
    files["pyproject.toml"] = PYPROJECT.format(version=attncourse.__version__).encode()
    files["requirements-autograder.txt"] = ("\n".join(
        ["# the grader's dependencies, pinned to the versions CI tests (torch is installed first, from "
         f"{TORCH_INDEX})"] + pinned_requirements()) + "\n").encode()
    files["setup.sh"] = SETUP_SH.format(chapter=chapter, python=python, torch=TORCH_PIN, index=TORCH_INDEX).encode()
    files["run_autograder"] = RUN_AUTOGRADER.format(
        chapter=chapter, timeout=f"{limits.call_timeout:g}", memory=limits.memory_mb, cpu=limits.cpu_seconds,
        total=f"{limits.total_timeout:g}").encode()
    files["README.txt"] = README.format(chapter=chapter, points=sum(points.values()), version=attncourse.__version__,
                                        commit=(commit or "unknown") + (" (with uncommitted changes)" if dirty else "")
                                        ).encode()
    bundled_tests = [n for n in files if n.startswith("tests/")]
    if bundled_tests != [f"tests/autograder/test_{chapter}.py"] or any(n.startswith("solutions/") for n in files):
        raise GradescopeError(f"refusing to bundle {bundled_tests}")  # pragma: no cover - a guard
    options = sandbox_options(test_file)
    manifest = {
        "schema": "attncourse-autograder", "version": 1, "chapter": chapter,
        "points": points, "max_score": sum(points.values()),
        "attncourse": attncourse.__version__, "commit": commit, "uncommitted_changes": dirty,
        "python": python, "torch": TORCH_PIN, "torch_index": TORCH_INDEX,
        "limits": asdict(limits), "sandbox": options,
        "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            mode = 0o755 if name in ("setup.sh", "run_autograder") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, output)
    return manifest


# ----------------------------------------------------------------------------- running (in the container)
def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.ipynb")
                  if not any(part in (".ipynb_checkpoints", "__MACOSX") or part.startswith("._") for part in p.parts))


def choose(folder: Path, chapter: str, known: list[str]) -> tuple[list[Path], list[str]]:
    """The notebook(s) to grade in a submission folder, and notes for the learner."""
    from attncourse.grading.grader import chapter_from_name

    found = _notebooks(folder)
    if len(found) <= 1:
        return found, []
    named = [p for p in found if chapter_from_name(p, known) == chapter]
    if len(named) == 1:
        others = ", ".join(p.name for p in found if p != named[0])
        return named, [f"graded {named[0].name} (its name says {chapter}); also submitted, not graded: {others}"]
    pick = (named or found)[:MAX_NOTEBOOKS]
    note = (f"your submission has {len(found)} notebooks; graded {', '.join(p.name for p in pick)} and kept the "
            f"best score (submit only {chapter}.ipynb next time)")
    return pick, [note]


def run(chapter: str, submission: Path, results: Path, tests: Path, limits) -> dict:
    """Grade a Gradescope submission folder; write ``results/results.json``; returns that document."""
    from attncourse.grading.grader import chapters_in, grade_paths
    from attncourse.grading.report import to_gradescope

    known = chapters_in(tests)
    if chapter not in known:
        raise GradescopeError(f"no hidden tests for chapter {chapter!r} in {tests}")
    picked, notes = choose(submission, chapter, known)
    if not picked:
        max_score = sum(chapter_points(tests / f"test_{chapter}.py").values())
        present = sorted(p.name for p in submission.rglob("*") if p.is_file())[:10] if submission.is_dir() else []
        doc = {"score": 0.0, "max_score": max_score, "execution_time": 0,
               "output": ("No Jupyter notebook (.ipynb) in your submission"
                          + (f" (found: {', '.join(present)})" if present else "")
                          + f". Submit your {chapter}.ipynb exercise notebook."),
               "visibility": "visible", "stdout_visibility": "hidden", "tests": []}
    else:
        graded = grade_paths(picked, tests_dir=tests, limits=limits, chapter=chapter)
        best = max(graded, key=lambda r: (r.score, -graded.index(r)))
        doc = json.loads(to_gradescope([best]))
        if notes:
            doc["output"] = "\n".join(notes + [doc.get("output", "")])
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / ".results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, results / "results.json")
    return doc


# ----------------------------------------------------------------------------- CLI
def _limit_args(p, d) -> None:
    p.add_argument("--timeout", type=float, default=d.call_timeout, help=f"seconds per call (default {d.call_timeout:g})")
    p.add_argument("--memory", type=int, default=d.memory_mb,
                   help=f"address space of the sandbox in MiB (default {d.memory_mb}: fits Gradescope's default "
                        "768 MB container)")
    p.add_argument("--cpu-time", type=int, default=d.cpu_seconds, help=f"CPU seconds per sandbox process "
                                                                      f"(default {d.cpu_seconds})")
    p.add_argument("--total-timeout", type=float, default=d.total_timeout,
                   help=f"sandbox seconds per submission (default {d.total_timeout:g})")


def _limits(args):
    from attncourse.grading.sandbox import Limits

    return Limits(call_timeout=args.timeout, memory_mb=args.memory, cpu_seconds=args.cpu_time,
                  total_timeout=args.total_timeout)


def add_parser(sub) -> None:
    from attncourse.grading.sandbox import Limits

    p = sub.add_parser("gradescope", help="build a Gradescope autograder zip for one chapter",
                       description="Build autograder.zip for one chapter: setup.sh (CPU torch and the grader, "
                                   "pinned), run_autograder (grades the submission with the chapter pinned), the "
                                   "bundled package and that chapter's hidden tests only. See book/instructors.md.")
    p.add_argument("chapter", help="the assignment's chapter, e.g. 01_sdpa")
    p.add_argument("--output", "-o", default="autograder.zip", help="the zip to write (default autograder.zip)")
    p.add_argument("--tests", default=None, help="folder of hidden tests (default: tests/autograder)")
    _limit_args(p, Limits())
    p.set_defaults(func=_build_cli)


def _build_cli(args) -> int:
    try:
        m = build(args.chapter, args.output, tests_dir=args.tests, limits=_limits(args))
    except GradescopeError as exc:
        print(f"attncourse gradescope: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: chapter {m['chapter']}, {m['max_score']:g} points, attncourse {m['attncourse']}, "
          f"commit {(m['commit'] or 'unknown')[:12]}{' (uncommitted changes!)' if m['uncommitted_changes'] else ''}")
    print(f"Set the Gradescope assignment to {m['max_score']:g} points and upload the zip "
          "(Configure Autograder > Zip file upload).")
    return 0


def main(argv=None) -> int:
    """``python -m attncourse.grading.gradescope run ...``: what ``run_autograder`` calls."""
    from attncourse.grading.grader import GraderError
    from attncourse.grading.sandbox import Limits

    ap = argparse.ArgumentParser(prog="attncourse.grading.gradescope")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="grade a Gradescope submission folder")
    r.add_argument("--chapter", required=True)
    r.add_argument("--submission", required=True, type=Path)
    r.add_argument("--results", required=True, type=Path)
    r.add_argument("--tests", required=True, type=Path)
    _limit_args(r, Limits())
    args = ap.parse_args(argv)
    try:
        doc = run(args.chapter, args.submission, args.results, args.tests, _limits(args))
    except (GradescopeError, GraderError) as exc:
        # no results.json: Gradescope shows the run as failed and the instructor can rerun it
        print(f"attncourse autograder: {exc}")
        return 2
    print(f"Points {doc['score']:g}/{doc['max_score']:g}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
