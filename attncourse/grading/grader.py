"""Grade submissions: pytest over the hidden tests here, the learner's code in a sandbox.

:func:`grade_notebook` grades one notebook:

1. read the notebook JSON (never run it) and its chapter from the metadata;
2. start the sandboxed child (it imports torch while we work);
3. run pytest **in this process** over ``<tests>/test_<chapter>.py`` with a plugin that
   provides the ``learner`` fixture and records every test's outcome. Collection imports the
   hidden tests and the reference before any learner code runs; only then are the setup and
   exercise cells sent to the child;
4. stop the child (and everything it started) and turn the outcomes into scores.

:func:`grade_paths` expands folders and grades many notebooks, ``jobs`` at a time, each in a
worker process. Scores never depend on anything the child says except the values its
functions returned, which are checked here.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pytest

from attncourse.grading.sandbox import Limits, Sandbox, SandboxError, close_zygotes
from attncourse.grading.submission import NO_CHAPTER, Submission, extract, read_submission, why_forbidden
from attncourse.grading.testkit import GradingFailure, LearnerFailure

SCHEMA_VERSION = 1


@dataclass
class TestResult:
    name: str                 # e.g. "test_sdpa_matches_reference[2x3x5x9-float32-causal]"
    exercise: str
    weight: float
    status: str               # "passed", "failed", "error" (grader's fault) or "skipped"
    message: str = ""
    score: float = 0.0        # filled in by scale(): share of the exercise's points
    max_score: float = 0.0
    duration: float = 0.0


@dataclass
class ExerciseResult:
    id: str
    function: str
    score: float
    max_score: float
    passed: int
    total: int
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SubmissionResult:
    path: str
    chapter: str | None
    score: float
    max_score: float
    status: str                       # "graded" or "error" (nothing could be graded)
    error: str | None
    exercises: list[ExerciseResult]
    tests: list[TestResult]
    notes: list[str]
    execution_time: float
    sandbox: dict
    chapter_source: str | None = None  # "assignment" (--chapter), "metadata", "file name" or "only chapter"

    def to_dict(self) -> dict:
        return asdict(self)


class GraderError(Exception):
    """The grader itself cannot run (missing hidden tests, bad configuration)."""


# ----------------------------------------------------------------------------- proxies
class _Proxy:
    def __init__(self, learner: "_Learner", exercise: str, function: str):
        self._learner, self.exercise, self.function = learner, exercise, function

    def __call__(self, *args, **kwargs):
        return self._learner.call(self.exercise, args, kwargs)

    def grad(self, *args, wrt=(0,), grad_output=None, **kwargs):
        """Forward and backward in the sandbox: ``(out, grads)`` w.r.t. the positional args ``wrt``."""
        if grad_output is None:
            raise TypeError("grad() needs grad_output (a tensor shaped like the result)")
        return self._learner.call(self.exercise, args, kwargs, grad_wrt=tuple(wrt), grad_output=grad_output)


class _Learner:
    """The ``learner`` fixture: ``learner.<function name>`` is a proxy into the sandbox."""

    def __init__(self, sandbox: Sandbox | None, exercises: dict, unavailable: dict[str, str]):
        self._sandbox = sandbox
        self._exercises = exercises
        self._by_function = {spec["function"]: ex for ex, spec in exercises.items()}
        self._unavailable = unavailable

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._by_function:
            raise AttributeError(f"no exercise defines a function {name!r}")
        ex = self._by_function[name]
        return _Proxy(self, ex, name)

    def call(self, exercise, args, kwargs, grad_wrt=None, grad_output=None):
        if exercise in self._unavailable:
            raise LearnerFailure(self._unavailable[exercise], "unavailable")
        try:
            out = self._sandbox.call(exercise, args, kwargs, grad_wrt=grad_wrt, grad_output=grad_output)
        except SandboxError as exc:
            msg = {"timeout": f"your function did not finish within {self._sandbox.limits.call_timeout:g} s "
                              "(an infinite loop, or far too slow?); it was stopped",
                   "crash": f"your function ended the process it ran in ({exc}); "
                            "do not call exit() or os._exit(), and stay within the memory limit",
                   "protocol": "your code interfered with the grader's communication channel",
                   "startup": f"the grader could not restart the sandbox for this test ({exc})",
                   }.get(exc.kind, str(exc))
            raise LearnerFailure(msg, exc.kind) from None
        fname = self._exercises[exercise]["function"]
        if out.violations:
            raise LearnerFailure(f"{fname} calls {out.violations[0]}, which this exercise does not allow "
                                 + why_forbidden(out.violations[0], self._exercises[exercise]), "forbidden")
        if out.grad_problem:
            raise LearnerFailure(f"gradient check: {out.grad_problem}", "grad")
        if not out.ok:
            err = out.error or {}
            etype, emsg = str(err.get("type", "Exception")), str(err.get("message", ""))
            if etype == "NotImplementedError":
                raise LearnerFailure(f"{fname}: not implemented yet", "not implemented")
            where = f" (line {err['line']} of your exercise cell)" if isinstance(err.get("line"), int) else ""
            if etype == "MemoryError" or "can't allocate memory" in emsg:
                emsg = (emsg + " " if emsg else "") + (f"(out of memory: the sandbox allows "
                                                       f"{self._sandbox.limits.memory_mb} MiB of address space)")
            bases = err.get("bases")
            raised = tuple(str(b) for b in bases) if isinstance(bases, list) else (etype,)
            raise LearnerFailure(f"your function raised {etype}" + (f": {emsg}" if emsg else " (with no message)")
                                 + where, "raised", raised)
        if grad_wrt is not None:
            value = out.value.detach() if hasattr(out.value, "detach") and type(out.value).__name__ == "Tensor" else out.value
            return value, out.grads
        return out.value


# ----------------------------------------------------------------------------- plugin
class _Plugin:
    """Pytest plugin living in the grading process; it never imports learner code."""

    def __init__(self, path: str, sandbox: Sandbox, error: str | None = None):
        self.path, self.sandbox, self.error = path, sandbox, error
        self.exercises: dict = {}
        self.submission: Submission | None = None
        self.results: list[TestResult] = []
        self.load_report: dict = {}
        self.unavailable: dict[str, str] = {}
        self.fatal: str | None = None
        self.config_error: str | None = None
        self._learner = None

    def pytest_configure(self, config):
        # pytest's failure reports are never shown (they could leak hidden values), and formatting
        # each one with its source costs ~0.1-0.7 s a failing test: a stub would spend most of its
        # grading time there. "no" skips the source lookups.
        config.option.tbstyle = "no"

    # collection is finished: tests and references are imported; now run the learner's cells
    def pytest_collection_finish(self, session):
        modules = {item.module for item in session.items if hasattr(item, "module")}
        specs = {}
        for mod in modules:
            specs.update(getattr(mod, "EXERCISES", {}))
        self.exercises = specs
        forbidden = forbidden_calls(modules, specs)
        uses = {ex: dict(spec.get("uses", {})) for ex, spec in specs.items() if spec.get("uses")}
        problem = _check_uses(specs, uses)
        if problem:
            self.config_error = problem
            raise pytest.UsageError(problem)
        sub = self.submission = extract(self.path, specs, forbidden=forbidden)
        self.unavailable = dict(sub.problems)
        if self.error or sub.error:
            self.unavailable = {ex: self.error or sub.error for ex in specs}
            self._learner = _Learner(None, specs, self.unavailable)
            return
        cells = []
        if sub.setup is not None:
            cells.append({"key": "setup", "exercise": None, "function": None,
                          "source": sub.setup.source, "filename": sub.setup.filename})
        for cell in sorted(sub.cells.values(), key=lambda c: c.index):
            cells.append({"key": cell.key, "exercise": cell.exercise, "function": cell.function,
                          "source": cell.source, "filename": cell.filename})
        try:
            report = self.load_report = self.sandbox.load({"op": "load", "cells": cells, "forbidden": forbidden,
                                                           "uses": uses})
        except SandboxError as exc:
            if exc.kind == "startup":  # no learner code ran yet: the machine's fault, not the learner's
                self.config_error = str(exc)
                raise pytest.UsageError(self.config_error)
            self.fatal = f"the sandbox could not run the notebook's cells ({exc})"
            for ex in specs:
                self.unavailable.setdefault(ex, self.fatal)
            report = {}
        if report.get("__uses_missing__"):
            self.config_error = ("the hidden tests name references the sandbox cannot find: "
                                 + ", ".join(map(str, report["__uses_missing__"]))[:300])
            raise pytest.UsageError(self.config_error)
        setup = report.get("setup")
        if setup and not setup.get("ok"):
            if setup.get("fatal"):
                sub.setup_note = f"the setup cell {setup['fatal']} and was skipped"
            else:
                e = setup.get("error", {})
                sub.setup_note = f"the setup cell raised {e.get('type')}: {e.get('message')}"
        for ex, spec in specs.items():
            st = report.get(ex)
            if ex in self.unavailable or st is None:
                continue
            fname = spec["function"]
            if st.get("fatal"):
                self.unavailable[ex] = f"running the exercise cell {st['fatal']}, so {fname} could not be tested"
            elif not st.get("defined"):
                err = st.get("error")
                if err and not st.get("ok"):
                    line = f" on line {err.get('line')}" if err.get("line") else ""
                    self.unavailable[ex] = (f"the exercise cell raised {err.get('type')}: {err.get('message')}{line} "
                                            f"before defining {fname}")
                elif st.get("found"):
                    self.unavailable[ex] = (f"the exercise cell must define the function {fname} with `def` "
                                            f"(found {st['found']} instead)")
                else:
                    self.unavailable[ex] = f"the exercise cell does not define a function named {fname}"
            elif not st.get("ok"):
                err = st.get("error") or {}
                self.submission.notes.setdefault(ex, []).append(
                    f"the exercise cell raised {err.get('type')}: {err.get('message')} after defining {fname}")
        self._learner = _Learner(self.sandbox, specs, self.unavailable)

    @staticmethod
    def _marker(item, name, default):
        m = item.get_closest_marker(name)
        return m.args[0] if m is not None and m.args else default

    @pytest.fixture
    def learner(self):
        return self._learner

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        rep = outcome.get_result()
        exercise = self._marker(item, "exercise", None)
        weight = self._marker(item, "points", 1)
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            if rep.passed:
                status, message = "passed", ""
            elif rep.skipped:
                status, message = "skipped", "skipped"
            else:
                status, message = _failure_message(call.excinfo)
            self.results.append(TestResult(item.name, str(exercise), float(weight), status, message,
                                           duration=rep.duration))


def forbidden_calls(modules, specs: dict) -> dict[str, list[str]]:
    """``{dotted name: [exercise ids]}`` from the hidden modules' ``FORBIDDEN`` tables.

    Every ``from_scratch`` exercise also gets torch's SDPA entry points, so the rule a
    notebook states ("from scratch") never depends on a module remembering to list them.
    """
    from attncourse.grading.testkit import SDPA_CALLS

    forbidden: dict[str, list[str]] = {}
    for mod in modules:
        for name, exs in getattr(mod, "FORBIDDEN", {}).items():
            forbidden.setdefault(name, []).extend(exs)
    for ex, spec in specs.items():
        if spec.get("from_scratch"):
            for name in SDPA_CALLS:
                if ex not in forbidden.setdefault(name, []):
                    forbidden[name].append(ex)
    return forbidden


def _check_uses(specs: dict, uses: dict) -> str | None:
    """A ``uses`` entry must name another exercise's function and a dotted reference path."""
    functions = {spec["function"] for spec in specs.values()}
    for ex, names in uses.items():
        if not isinstance(names, dict):
            return f"EXERCISES[{ex!r}]['uses'] must be a dict {{function name: 'dotted.reference'}}"
        for name, dotted in names.items():
            if name not in functions or name == specs[ex]["function"]:
                return f"EXERCISES[{ex!r}]['uses'] names {name!r}, which is not another exercise's function"
            if not isinstance(dotted, str) or "." not in dotted:
                return f"EXERCISES[{ex!r}]['uses'][{name!r}] must be a dotted path to a reference, got {dotted!r}"
    return None


def _failure_message(excinfo) -> tuple[str, str]:
    if excinfo is None:
        return "error", "the test could not run"
    exc = excinfo.value
    if isinstance(exc, GradingFailure):
        return "failed", str(exc)
    if isinstance(exc, AssertionError):
        first = (str(exc).strip().splitlines() or [""])[0]
        if not first or first.startswith("assert "):  # a bare assert would print hidden values
            first = "a check on your result failed"
        return "failed", first
    # a bug or an unexpected situation in the hidden test: no details (they could leak it)
    return "error", (f"the grader hit an internal error in this test ({type(exc).__name__}); "
                     "please tell your instructor")


# ----------------------------------------------------------------------------- grading
def default_tests_dir() -> Path:
    """``tests/autograder`` of the checkout attncourse was installed from (or the cwd's)."""
    import attncourse

    repo = Path(attncourse.__file__).resolve().parent.parent
    for cand in (Path.cwd() / "tests" / "autograder", repo / "tests" / "autograder"):
        if cand.is_dir():
            return cand
    return Path.cwd() / "tests" / "autograder"


def chapter_from_name(path: str | Path, known: list[str]) -> str | None:
    """The chapter a file name points to: ``01_sdpa.ipynb``, ``01_sdpa (1).ipynb``, ``01-final.ipynb``."""
    stem = Path(path).stem.lower()
    for chap in known:
        if stem == chap or stem.startswith(chap):
            return chap
    number = re.match(r"^(\d\d)(?:[_\- .]|$)", stem)
    if number:
        matches = [c for c in known if c.startswith(number.group(1) + "_")]
        if len(matches) == 1:
            return matches[0]
    return None


FROM_FILENAME = "from-filename"


def which_chapter(path, meta_chapter: str | None, assignment: str | None, known: list[str]):
    """``(chapter, where it came from)``. The instructor's ``--chapter`` wins over everything.

    ``--chapter from-filename`` pins each notebook to the chapter its file name names
    (``notebooks/01_sdpa.ipynb`` is graded as 01_sdpa, whatever its metadata says): the
    GitHub Classroom workflow grades a learner's whole ``notebooks/`` folder this way.
    """
    if assignment == FROM_FILENAME:
        return chapter_from_name(path, known), "assignment"
    if assignment:
        return assignment, "assignment"
    if meta_chapter:
        return meta_chapter, "metadata"
    by_name = chapter_from_name(path, known)
    if by_name:
        return by_name, "file name"
    if len(known) == 1:
        return known[0], "only chapter"
    return None, None


SANDBOX_KEYS = {"env": dict, "read_paths": list, "memory_mb": int}


def sandbox_options(test_file: Path) -> dict:
    """The optional ``SANDBOX = {...}`` table of a hidden test module, read without importing it.

    A chapter whose learner code needs more than the default sandbox says so here, as a literal::

        SANDBOX = {"env": {"TRITON_INTERPRET": "1"},       # added to the child's environment
                   "read_paths": ["/opt/triton-cache"],     # more folders the child may read
                   "memory_mb": 2048}                       # at least this much address space

    It must be known before the sandbox starts (torch imports there while pytest collects), so
    it is read from the file's source with :func:`ast.literal_eval`. Hidden folders (the tests,
    the submissions) stay unreadable whatever ``read_paths`` says.
    """
    import ast

    try:
        tree = ast.parse(Path(test_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SANDBOX" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise GraderError(f"{test_file}: SANDBOX must be a literal dict") from None
            if not isinstance(value, dict) or any(k not in SANDBOX_KEYS or not isinstance(v, SANDBOX_KEYS[k])
                                                  for k, v in value.items()):
                raise GraderError(f"{test_file}: SANDBOX may only have {', '.join(SANDBOX_KEYS)} "
                                  "(a dict of strings, a list of paths, an int)")
            return value
    return {}


def chapters_in(tests_dir: Path) -> list[str]:
    return sorted(p.stem[len("test_"):] for p in Path(tests_dir).glob("test_*.py"))


_PRELOADED = False


def _preload() -> None:
    """Import everything grading and reporting need before any learner code can touch disk."""
    global _PRELOADED
    if _PRELOADED:
        return
    import json  # noqa: F401
    import xml.etree.ElementTree  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import torch.testing  # noqa: F401
    import attncourse.core  # noqa: F401
    import attncourse.masks  # noqa: F401
    import attncourse.testing  # noqa: F401
    from attncourse.grading import report  # noqa: F401
    _PRELOADED = True


def grade_notebook(path: str | Path, *, tests_dir: str | Path | None = None, limits: Limits = Limits(),
                   chapter: str | None = None, debug: bool = False, keep_zygote: bool = False) -> SubmissionResult:
    """Grade one notebook; never raises for anything the submission does.

    ``keep_zygote``: leave this process's sandbox zygote running for the next notebook
    (:func:`grade_paths` does, and stops it at the end); by default nothing outlives the call.
    """
    try:
        return _grade_notebook(path, tests_dir=tests_dir, limits=limits, chapter=chapter, debug=debug)
    finally:
        if not keep_zygote:
            close_zygotes()


def _grade_notebook(path, *, tests_dir, limits, chapter, debug) -> SubmissionResult:
    _preload()
    t0 = time.perf_counter()
    path = str(path)
    tests_dir = Path(tests_dir) if tests_dir else default_tests_dir()
    if not tests_dir.is_dir():
        raise GraderError(f"hidden tests folder {tests_dir} does not exist (use --tests)")
    _, meta_chapter, error = read_submission(path)
    known = chapters_in(tests_dir)
    chap, source = which_chapter(path, meta_chapter, chapter, known)
    if chapter and chap is None:
        error = error or (f"the file name {Path(path).name!r} does not name a chapter (expected e.g. "
                          f"{(known or ['01_sdpa'])[0]}.ipynb); it was not graded")
    elif chapter and meta_chapter and meta_chapter != chap:
        error = (f"this notebook is chapter {meta_chapter} (its metadata says so), but this assignment is "
                 f"chapter {chap}; it was not graded. Submit your {chap} exercise notebook")
    test_file = tests_dir / f"test_{chap}.py" if chap else None
    if chap is None or not test_file.is_file():
        why = error or (NO_CHAPTER if chap is None else
                        f"there are no hidden tests for chapter {chap!r} (known: {', '.join(known) or 'none'})")
        return SubmissionResult(path, chap, 0.0, 0.0, "error", why, [], [], [], round(time.perf_counter() - t0, 3), {},
                                chapter_source=source)

    options = sandbox_options(test_file)
    if options.get("memory_mb"):
        limits = replace(limits, memory_mb=max(limits.memory_mb, int(options["memory_mb"])))
    sandbox = Sandbox(limits, hidden_paths=[str(tests_dir), str(Path(path).resolve().parent)], debug=debug,
                      env=options.get("env"), read_paths=options.get("read_paths", ()))
    if error is None:
        sandbox.start()  # torch imports in the child while pytest collects here
    plugin = _Plugin(path, sandbox, error)
    with tempfile.TemporaryDirectory(prefix="attncourse-grade-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\nmarkers =\n    exercise(id): the exercise a hidden test grades\n"
                       "    points(n): relative weight of a hidden test inside its exercise\n")
        args = [str(test_file), "-c", str(ini), "--rootdir", str(tests_dir), "--noconftest",
                "-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:randomly", "-p", "no:nbval",
                "-p", "no:xdist", "-p", "no:cov", "--import-mode=importlib", "-W", "ignore",
                "--basetemp", str(Path(tmp) / "pt")]
        _forget_other_hidden_modules(test_file)
        old = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                code = pytest.main(args, plugins=[plugin])
        finally:
            if old is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = old
            sandbox.stop()
    if debug:
        print(sink.getvalue(), file=sys.stderr)
    if plugin.config_error and plugin.config_error.startswith("the sandbox could not start"):
        raise GraderError(f"{plugin.config_error}; no learner code ran, so this is the grading machine's "
                          "problem (too busy? --memory too low for torch?): rerun, with --debug to see more")
    if plugin.config_error:
        raise GraderError(f"the hidden tests in {test_file} are misconfigured: {plugin.config_error}")
    if int(code) not in (0, 1) or not plugin.exercises:
        raise GraderError(f"pytest could not run the hidden tests in {test_file} (exit code {int(code)})"
                          + ("" if debug else "; rerun with --debug to see why"))
    result = _assemble(path, chap, plugin, sandbox, time.perf_counter() - t0, error)
    result.chapter_source = source
    return result


def _forget_other_hidden_modules(test_file: Path) -> None:
    """Drop an already imported ``test_<chapter>`` module that came from another file.

    pytest's importlib mode reuses a module of the same name from ``sys.modules``; in a process
    that grades with two hidden-test folders (or after the file changed on disk) that would grade
    with the wrong tests.
    """
    target = test_file.resolve()
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and Path(f).name == test_file.name and Path(f).resolve() != target:
            del sys.modules[name]


def _assemble(path, chapter, plugin: _Plugin, sandbox: Sandbox, elapsed: float, error) -> SubmissionResult:
    sub = plugin.submission
    exercises, tests = [], []
    for ex, spec in plugin.exercises.items():
        mine = [t for t in plugin.results if t.exercise == ex and t.status != "skipped"]
        total_w = sum(t.weight for t in mine) or 1.0
        points = float(spec.get("points", total_w))
        if not mine and spec.get("optional"):
            # an optional exercise this grader cannot run (every test skipped, e.g. no Triton): worth 0 of 0
            exercises.append(ExerciseResult(ex, spec["function"], 0.0, 0.0, 0, 0, None,
                                            ["not graded here: its hidden tests need something this grading "
                                             "machine does not have (e.g. Triton), so it counts 0 of 0 points"]))
            continue
        for t in mine:
            t.max_score = points * t.weight / total_w
            t.score = t.max_score if t.status == "passed" else 0.0
            if t.status != "passed" and ex in plugin.unavailable:
                t.message = plugin.unavailable[ex]
        score = sum(t.score for t in mine)
        notes = list(sub.notes.get(ex, [])) if sub else []
        exercises.append(ExerciseResult(ex, spec["function"], round(score, 6), points,
                                        sum(t.status == "passed" for t in mine), len(mine),
                                        plugin.unavailable.get(ex), notes))
        tests.extend(mine)
    orphans = [t for t in plugin.results if t.exercise not in plugin.exercises]
    for t in orphans:  # a hidden test without an exercise marker: a grader bug, worth 0
        t.status, t.message = "error", "hidden test has no exercise marker (grader configuration error)"
    tests.extend(orphans)
    notes = [n for n in ([sub.setup_note] if sub and sub.setup_note else [])]
    info = {"confinement": sandbox.confinement, "restarts": sandbox.restarts,
            "limits": asdict(sandbox.limits), "peak_rss_mb": sandbox.memory(),
            "strikes": {ex: list(v) for ex, v in sandbox.strikes.items()}, **sandbox.timing()}
    score = round(sum(e.score for e in exercises), 6)
    max_score = round(sum(e.max_score for e in exercises), 6)
    return SubmissionResult(path, chapter, score, max_score, "error" if error else "graded", error,
                            exercises, tests, notes, round(elapsed, 3), info)


def expand(paths) -> list[Path]:
    """Notebooks named directly, and every ``*.ipynb`` inside named folders (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts))
        else:
            out.append(p)
    return out


def _grade_one(args):
    path, kwargs = args
    try:
        return grade_notebook(path, keep_zygote=True, **kwargs)
    except GraderError as exc:
        return exc


def grade_paths(paths, *, jobs: int = 1, **kwargs) -> list[SubmissionResult]:
    """Grade every notebook in ``paths`` (files or folders), ``jobs`` at a time."""
    files = expand(paths)
    if jobs <= 1 or len(files) <= 1:
        try:
            results = [_grade_one((f, kwargs)) for f in files]
        finally:
            close_zygotes()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_preload) as pool:
            results = list(pool.map(_grade_one, [(f, kwargs) for f in files]))
    for r in results:
        if isinstance(r, GraderError):
            raise r
    return results
