"""Every rule an exercise notebook states is enforced by the grader, from the same source.

A rule is stated on a paragraph that starts with ``**Not allowed:**`` (it belongs to the exercise
whose code cell comes next) or ``**Not allowed in any exercise:**`` (every exercise of the
notebook), naming each forbidden callable or module as a backticked dotted path. For every
name this test asks the grader's own machinery whether it would catch a use:

* names under ``attncourse``: the static check flags importing it in the exercise cell, and
  using it after importing it in the setup cell;
* any other name (torch's): a run-time tripwire exists for the same object — a ``FORBIDDEN``
  entry of the hidden tests for this exercise (or a method of it, for a class), or torch's SDPA
  for a ``from_scratch`` exercise — *and* the static check flags the spelled-out call.

So a notebook that forbids something the grader does not catch fails here; so does rule text
written anywhere but on a ``Not allowed`` paragraph.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

from attncourse.grading.grader import forbidden_calls
from attncourse.grading.release import read_notebook
from attncourse.grading.submission import static_violations

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ROOT / "tests" / "autograder"
CHAPTERS = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb") if (HIDDEN / f"test_{p.stem}.py").exists())

RULE = re.compile(r"^\*\*Not allowed( in any exercise)?:\*\*(.*)$", re.S)
NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`")
STRAY = re.compile(r"\b(you may not|may not call|must not call|do not call|are not allowed to|is not allowed)\b", re.I)


def hidden_module(chapter: str):
    name = f"_hidden_{chapter}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HIDDEN / f"test_{chapter}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def paragraphs(markdown: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", markdown) if p.strip()]


def stated_rules(chapter: str) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """``({exercise id: names}, names for every exercise, stray rule sentences)``."""
    nb = read_notebook(ROOT / "solutions" / f"{chapter}.ipynb")
    per_exercise: dict[str, list[str]] = {}
    everywhere: list[str] = []
    stray: list[str] = []
    pending: list[str] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for para in paragraphs(cell.source):
                m = RULE.match(para)
                if m:
                    names = NAME.findall(re.sub(r"\([^)]*\)", "", m.group(2)))  # not in parentheses
                    assert names, f"{chapter} cell {i}: a Not allowed paragraph that names nothing: {para[:80]!r}"
                    (everywhere if m.group(1) else pending).extend(names)
                elif STRAY.search(para):
                    stray.append(f"cell {i}: {para[:100]!r}")
        elif "exercise" in cell.metadata.get("tags", []):
            per_exercise[cell.metadata["attncourse"]["id"]] = pending
            pending = []
    assert not pending, f"{chapter}: a Not allowed paragraph after the last exercise belongs to none"
    return per_exercise, everywhere, stray


def resolve(dotted: str):
    """``(object, owner)`` for an importable dotted path (``torch.Tensor.softmax`` included)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner = None
        for p in parts[i:]:
            owner, obj = obj, getattr(obj, p)
        return obj, owner
    raise AssertionError(f"{dotted} does not resolve")


def tripwired(name: str, exercise: str, forbidden: dict[str, list[str]]) -> bool:
    target, _ = resolve(name)
    for entry, exercises in forbidden.items():
        if exercise not in exercises:
            continue
        try:
            obj, owner = resolve(entry)
        except (AssertionError, AttributeError):
            continue
        if obj is target or (inspect.isclass(target) and owner is target):
            return True
    return False


def statically_caught(name: str, exercise: str, spec: dict, forbidden: dict[str, list[str]]) -> bool:
    names = [n for n, exs in forbidden.items() if exercise in exs]
    parent, _, last = name.rpartition(".")
    probes = [f"import {name}\n", f"import {name.split('.')[0]}\ndef f(x):\n    return {name}(x)\n"]
    if parent:
        probes.append(f"from {parent} import {last}\n")
    flagged = [bool(static_violations(src, from_scratch=spec.get("from_scratch", False), forbidden=names))
               for src in probes]
    if name.split(".")[0] == "attncourse":
        # importing it, and using what the setup cell imported from it, are both caught
        setup = f"import {name}\n" if not parent else f"from {parent} import {last}\n"
        used = static_violations(f"def f(x):\n    return {last}(x)\n", from_scratch=False, forbidden=names,
                                 context=setup)
        return flagged[0] or (parent and flagged[2] and bool(used)) or (not parent and flagged[0])
    return flagged[1]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_stated_rule_is_enforced(chapter):
    mod = hidden_module(chapter)
    specs = mod.EXERCISES
    forbidden = forbidden_calls([mod], specs)
    per_exercise, everywhere, _ = stated_rules(chapter)
    assert set(per_exercise) == set(specs), f"{chapter}: notebook and hidden tests name different exercises"
    problems = []
    for ex, names in per_exercise.items():
        for name in names + everywhere:
            if name.split(".")[0] == "attncourse":
                ok = statically_caught(name, ex, specs[ex], forbidden)
            else:
                ok = tripwired(name, ex, forbidden) and statically_caught(name, ex, specs[ex], forbidden)
            if not ok:
                problems.append(f"{ex}: the notebook forbids `{name}`, but the grader does not catch it "
                                "(add it to FORBIDDEN for this exercise, or stop stating the rule)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_from_scratch_exercises_say_so(chapter):
    specs = hidden_module(chapter).EXERCISES
    per_exercise, _, _ = stated_rules(chapter)
    for ex, spec in specs.items():
        if spec.get("from_scratch"):
            assert "torch.nn.functional.scaled_dot_product_attention" in per_exercise.get(ex, []), \
                f"{chapter}: {ex} is graded from scratch; its Not allowed line must name torch's SDPA"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_rules_are_stated_only_on_not_allowed_lines(chapter):
    _, _, stray = stated_rules(chapter)
    assert not stray, f"{chapter}: rule text outside a **Not allowed:** paragraph:\n" + "\n".join(stray)


def test_the_checker_catches_an_unenforced_rule():
    """The test above has teeth: a rule with no tripwire behind it is reported."""
    forbidden = {"torch.softmax": ["sdpa"]}
    assert tripwired("torch.softmax", "sdpa", forbidden)
    assert not tripwired("torch.nn.functional.softmax", "sdpa", forbidden)
    assert not tripwired("torch.softmax", "causal_mask", forbidden)
    assert tripwired("torch.nn.MultiheadAttention", "x", {"torch.nn.modules.activation.MultiheadAttention.forward": ["x"]})
    assert statically_caught("torch.softmax", "sdpa", {}, forbidden)
    assert not statically_caught("torch.exp", "sdpa", {}, forbidden)
    assert statically_caught("attncourse.masks.causal_mask", "any", {}, {})
