"""Public checks: instant, friendly feedback inside the exercise notebooks.

After each exercise the notebook runs ``check("exercise_id", your_function)``. A check runs a
few *visible* cases (the hidden autograder tests are more thorough) and prints one line per
case. It never raises, so a notebook with unfinished exercises still runs top to bottom:
an exercise that still raises ``NotImplementedError`` prints "not implemented yet".

Adding checks for a chapter: write ``attncourse/checks/chNN_topic.py`` with functions decorated
by ``@case("exercise_id", "what this case checks")``; each receives the learner's function and
returns ``None`` (passed) or a message saying what is wrong (see ``ch01_sdpa.py``).
"""
from __future__ import annotations

import importlib
import pkgutil
import traceback
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["case", "check", "CheckResult", "registered_exercises"]

_CASES: dict[str, list[tuple[str, Callable]]] = {}
_LOADED = False


def case(exercise_id: str, description: str):
    """Register a public check case for ``exercise_id``."""
    def deco(fn):
        cases = _CASES.setdefault(exercise_id, [])
        if any(d == description for d, _ in cases):
            raise ValueError(f"duplicate check case {description!r} for exercise {exercise_id!r}")
        cases.append((description, fn))
        return fn
    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def registered_exercises() -> list[str]:
    """Every exercise id that has public checks."""
    _load_all()
    return sorted(_CASES)


@dataclass
class CheckResult:
    exercise: str
    status: str  # "passed", "failed" or "not implemented"
    passed: int = 0
    total: int = 0
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        return f"<check {self.exercise}: {self.status}, {self.passed}/{self.total} cases>"

    def _ipython_display_(self) -> None:
        """Show nothing in a notebook: the feedback was already printed."""


def _describe_exception(exc: BaseException) -> str:
    import os
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = ""
    # Point at the learner's own line: the last frame that is not inside attncourse.
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not os.path.abspath(frame.filename).startswith(package_dir) and frame.line:
            where = f" (line {frame.lineno}: {frame.line.strip()})"
            break
    return f"your code raised {type(exc).__name__}: {exc}{where}"


def check(exercise_id: str, fn: Callable, *, verbose: bool = True) -> CheckResult:
    """Run the public checks of ``exercise_id`` on ``fn`` and print friendly feedback."""
    _load_all()
    if exercise_id not in _CASES:
        known = ", ".join(sorted(_CASES)) or "none"
        raise KeyError(f"no public checks for exercise {exercise_id!r}; known exercises: {known}")
    if not callable(fn):
        msg = f"check({exercise_id!r}, ...) expects your function, got {type(fn).__name__}"
        if verbose:
            print("❌", msg)
        return CheckResult(exercise_id, "failed", 0, len(_CASES[exercise_id]), [msg])
    cases = _CASES[exercise_id]
    result = CheckResult(exercise_id, "passed", 0, len(cases))
    lines = []
    for description, run in cases:
        try:
            problem = run(fn)
        except NotImplementedError:
            result.status = "not implemented"
            result.messages = ["not implemented yet"]
            if verbose:
                print(f"⏳ {exercise_id}: not implemented yet — replace the `raise NotImplementedError` "
                      "line with your code, run that cell, then run this check again.")
            return result
        except Exception as exc:  # learner code may raise anything
            problem = _describe_exception(exc)
        if problem is None:
            result.passed += 1
            lines.append(f"  ✅ {description}")
        else:
            result.status = "failed"
            result.messages.append(f"{description}: {problem}")
            lines.append(f"  ❌ {description}: {problem}")
    if verbose:
        head = (f"🎉 {exercise_id}: all {result.total} public checks passed."
                if result else f"{exercise_id}: {result.passed}/{result.total} public checks passed.")
        print(head)
        print("\n".join(lines))
        if result:
            print("  (When you submit, the hidden tests try more and harder cases.)")
    return result
