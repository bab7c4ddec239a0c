"""Read a submitted notebook and pick out the code to grade: the setup cell and exercise cells.

Only the JSON is read here (no nbformat validation, no code is run): a learner's notebook may
be broken in any way, and every problem becomes a per-exercise message instead of a crash.

* The chapter comes from the notebook metadata ``attncourse.chapter``, not the file name.
* Exercise cells are found by the ``id`` in their ``attncourse`` metadata, not by position;
  they run in notebook order. If an id appears in several code cells, the **last** one is
  graded (it is the one a top-to-bottom run would leave defined) and the feedback says so.
* The **setup cell** is the first code cell tagged ``setup``; if no cell has that tag, the
  first code cell, unless it is an exercise. It runs before the exercise cells. No other
  cell runs (not the public checks, not the learner's experiments).
* Static checks per exercise: the source parses (syntax errors are reported with their
  line), and the from-scratch rule (no torch SDPA, no ``attncourse`` reference import).
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_NOTEBOOK_BYTES = 20 << 20
MAX_CELL_CHARS = 200_000

# Names a "from scratch" exercise may not mention (attribute, import or string).
SDPA_NAMES = ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
              "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_flash_attention", "multi_head_attention_forward", "MultiheadAttention",
              "flex_attention")
# Ways around the grader's checks, not needed by any exercise: reaching a function's globals,
# closure or original, or running autograd's engine by hand. Flagged in every exercise.
TAMPER_NAMES = ("__globals__", "__closure__", "cell_contents", "__wrapped__", "f_globals", "f_locals", "f_back",
                "_execution_engine", "run_backward", "__builtins__", "__subclasses__")
TAMPER_CALLS = ("exec", "eval", "compile", "__import__", "globals", "breakpoint")
# torch's internals: the same operators without the public names the rules are written against
# (``torch.ops.aten.*``, ``torch._C._VariableFunctions.*``, ``torch._C.TensorBase.*``).
TORCH_INTERNALS = ("_C", "ops", "_ops", "_VF", "_VariableFunctions", "TensorBase")
# attncourse modules an exercise cell may import (everything else is the reference)
# (triton_support: chapter 07's scaffolding for Triton kernels, explicitly not a reference)
ALLOWED_ATTNCOURSE = ("attncourse.checks", "attncourse.viz", "attncourse.testing", "attncourse.triton_support")


@dataclass
class Cell:
    key: str            # "setup" or the exercise id
    index: int          # position in the notebook
    source: str
    exercise: str | None = None
    function: str | None = None

    @property
    def filename(self) -> str:  # shown in tracebacks; also proves a function came from this cell
        return f"<cell {self.index}: {self.key}>"


@dataclass
class Submission:
    path: str
    chapter: str | None = None
    error: str | None = None                        # the whole file could not be graded
    setup: Cell | None = None
    setup_note: str | None = None
    cells: dict[str, Cell] = field(default_factory=dict)       # exercise id -> cell to run
    problems: dict[str, str] = field(default_factory=dict)     # exercise id -> why it scores 0
    notes: dict[str, list[str]] = field(default_factory=dict)  # exercise id -> remarks


def _source(cell) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def read_submission(path: str | Path) -> tuple[dict | None, str | None, str | None]:
    """``(notebook JSON, chapter or None, error)`` — never raises for a bad file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            return None, None, f"the file is {size >> 20} MiB; a notebook must be under {MAX_NOTEBOOK_BYTES >> 20} MiB"
        raw = path.read_bytes()
    except OSError as exc:
        return None, None, f"cannot read the file ({exc.strerror or exc})"
    if not raw.strip():
        return None, None, "the file is empty (save the notebook in Jupyter, then submit it again)"
    try:
        nb = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, None, "not a Jupyter notebook (the file is not UTF-8 text)"
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        return None, None, f"not a valid Jupyter notebook: the JSON is broken{where}"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, None, "not a valid Jupyter notebook (no list of cells)"
    if not isinstance(nb.get("nbformat"), int) or nb["nbformat"] < 4:
        return None, None, "not a Jupyter notebook in format version 4 (re-save it with Jupyter)"
    meta = nb.get("metadata")
    ac = meta.get("attncourse") if isinstance(meta, dict) else None
    chapter = ac.get("chapter") if isinstance(ac, dict) else None
    return nb, (chapter if isinstance(chapter, str) and chapter else None), None


NO_CHAPTER = ("the notebook metadata has no attncourse.chapter, so the grader cannot tell which chapter "
              "this is (start from the released exercise notebook, or grade with --chapter)")


def extract(path: str | Path, exercises: dict[str, dict],
            forbidden: dict[str, list[str]] | None = None) -> Submission:
    """Find the setup and exercise cells of a submission.

    ``exercises`` comes from the hidden tests (trusted): ``{id: {"function": name,
    "from_scratch": bool}}``. Metadata in the submission (points, function names) is ignored:
    the learner can edit it.
    ``forbidden`` (``{dotted name: [exercise ids]}``, the hidden tests' ``FORBIDDEN``) is
    checked statically too: an exercise cell that names one of its forbidden callables scores 0
    for that exercise, even when the call is never reached.
    """
    sub = Submission(str(path))
    nb, sub.chapter, sub.error = read_submission(path)
    if sub.error:
        return sub
    found: dict[str, list[tuple[int, dict]]] = {}
    first_code, setup = None, None
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            continue
        meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        tags = meta.get("tags") if isinstance(meta.get("tags"), list) else []
        ac = meta.get("attncourse") if isinstance(meta.get("attncourse"), dict) else {}
        ex_id = ac.get("id") if isinstance(ac.get("id"), str) else None
        if ex_id is not None and ex_id in exercises:
            found.setdefault(ex_id, []).append((i, cell))
            continue
        if cell.get("cell_type") == "code":
            if first_code is None and ex_id is None:
                first_code = i
            if setup is None and "setup" in tags:
                setup = i
    if setup is None and first_code is not None:
        setup = first_code
        sub.setup_note = f"no cell is tagged 'setup'; cell {first_code} (the first code cell) was used as the setup cell"
    if setup is not None:
        src = _source(nb["cells"][setup])
        sub.setup = Cell("setup", setup, src)
        problem = _syntax_problem(src)
        if problem:
            sub.setup_note = f"the setup cell (cell {setup}) was not run: {problem}"
            sub.setup = None
    for ex_id, spec in exercises.items():
        notes = sub.notes.setdefault(ex_id, [])
        cells = found.get(ex_id, [])
        code_cells = [(i, c) for i, c in cells if c.get("cell_type") == "code"]
        if not cells:
            sub.problems[ex_id] = (f"exercise cell not found: no cell has the exercise id {ex_id!r} "
                                   "(was it deleted? copy it back from the released notebook)")
            continue
        if not code_cells:
            i, c = cells[-1]
            sub.problems[ex_id] = (f"the exercise cell {ex_id!r} (cell {i}) is a {c.get('cell_type')} cell, not a "
                                   "code cell; change it back to Code")
            continue
        if len(code_cells) > 1:
            notes.append(f"exercise id {ex_id!r} is in {len(code_cells)} code cells "
                         f"({', '.join(str(i) for i, _ in code_cells)}); the last one was graded")
        i, c = code_cells[-1]
        src = _source(c)
        cell = Cell(ex_id, i, src, exercise=ex_id, function=spec["function"])
        problem = _syntax_problem(src)
        if problem:
            sub.problems[ex_id] = f"the exercise cell (cell {i}) could not be run: {problem}"
            continue
        sub.cells[ex_id] = cell
        names = [n for n, exs in (forbidden or {}).items() if ex_id in exs]
        setup_src = sub.setup.source if sub.setup is not None else ""
        violations = static_violations(src, from_scratch=spec.get("from_scratch", False), forbidden=names,
                                       context=setup_src)
        if violations:
            sub.problems[ex_id] = (f"the exercise cell uses {violations[0]}, which this exercise does not allow "
                                   + why_forbidden(violations[0], spec))
    return sub


def why_forbidden(used: str, spec: dict) -> str:
    """The reason shown after "... which this exercise does not allow", pointing at the stated rule."""
    if "attncourse" in used:
        return "(the course's reference code is not your code; see the notebook's Not allowed lines)"
    if "torch internals" in used or any(t in used for t in TAMPER_NAMES + TAMPER_CALLS + ("__name__", "_attncourse")):
        return "(it reaches around the grader's checks; see the notebook's \"Not allowed in any exercise\" line)"
    if spec.get("from_scratch"):
        return "(this exercise is written from scratch; see its Not allowed line)"
    return "(see the exercise's Not allowed line)"


def _syntax_problem(src: str) -> str | None:
    if len(src) > MAX_CELL_CHARS:
        return f"the cell has {len(src)} characters (limit {MAX_CELL_CHARS})"
    try:
        ast.parse(src)
    except SyntaxError as exc:
        return f"SyntaxError on line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"the code cannot be parsed ({type(exc).__name__})"
    return None


def _aliases(tree) -> dict[str, str]:
    """Names bound by imports: ``import torch.nn.functional as F`` -> ``{"F": "torch.nn.functional"}``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node) -> list[str] | None:
    """``a.b.c`` -> ``["a", "b", "c"]`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _forbidden_objects(forbidden) -> tuple[set[int], set[int]]:
    """ids of the objects the forbidden names denote, and of the classes that own them.

    Only ``torch`` and ``attncourse`` names are resolved (trusted strings from the hidden tests),
    by importing their modules in the grading process: ``torch.nn.MultiheadAttention`` then
    matches a ``FORBIDDEN`` entry spelled ``torch.nn.modules.activation.MultiheadAttention.forward``.
    """
    import importlib
    import inspect

    objs, owners = set(), set()
    for name in forbidden:
        if name.split(".")[0] not in ("torch", "attncourse"):
            continue
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            owner = None
            try:
                for p in parts[i:]:
                    owner, obj = obj, getattr(obj, p)
            except AttributeError:
                break
            objs.add(id(obj))
            if inspect.isclass(owner) and not name.startswith("torch.Tensor."):
                owners.add(id(owner))  # a forbidden method forbids its class (``MultiheadAttention(...)``)
            break
    return objs, owners


def _spelled_object(full: str):
    """The object a dotted ``torch.…`` chain names, looked up without importing anything new."""
    import sys

    parts = full.split(".")
    if parts[0] != "torch" or "torch" not in sys.modules:
        return None
    obj = sys.modules["torch"]
    try:
        for p in parts[1:]:
            obj = getattr(obj, p)
    except AttributeError:
        return None
    return obj


def static_violations(src: str, *, from_scratch: bool, forbidden=(), context: str = "") -> list[str]:
    """Forbidden uses visible in the source (an empty list when it is clean).

    Every exercise: importing the ``attncourse`` reference (``attncourse.checks``, ``viz`` and
    ``testing`` are fine). From-scratch exercises also: any attribute, import or string naming
    torch's SDPA (or a module built on it). ``forbidden``: the dotted names this exercise may not
    call (the hidden tests' ``FORBIDDEN``): an import of one, or an attribute chain that spells one
    through the import aliases of ``context`` (the setup cell) and of the cell itself
    (``F.softmax`` with ``import torch.nn.functional as F``). A ``torch.Tensor.<method>`` entry
    matches any ``.method`` on a value that is not a module (``x.softmax(-1)``). The sandbox's
    run-time tripwires catch indirect calls that a static look cannot see.
    """
    try:
        tree = ast.parse(src)
    except Exception:
        return []
    try:
        ctx_tree = ast.parse(context) if context else None
    except Exception:
        ctx_tree = None
    aliases = {**(_aliases(ctx_tree) if ctx_tree is not None else {}), **_aliases(tree)}
    forbidden = set(forbidden)
    methods = {f.rsplit(".", 1)[1] for f in forbidden if f.startswith("torch.Tensor.")}
    found = []

    def reference_module(mod: str) -> bool:
        return (mod == "attncourse" or mod.startswith("attncourse.")) and not mod.startswith(ALLOWED_ATTNCOURSE)

    objs, owners = _forbidden_objects(forbidden) if forbidden else (set(), set())

    def spells_forbidden(full: str) -> bool:
        if full in forbidden or any(full.startswith(f + ".") for f in forbidden if not f.startswith("torch.Tensor.")):
            return True
        obj = _spelled_object(full)
        return obj is not None and (id(obj) in objs or id(obj) in owners)

    # Names the setup cell imported from the reference (``from attncourse.core import attention``):
    # using one in an exercise cell is using the reference, wherever it was imported.
    own = set(_aliases(tree))
    setup_refs = {name: full for name, full in (_aliases(ctx_tree) if ctx_tree is not None else {}).items()
                  if reference_module(full) and name not in own}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in setup_refs and isinstance(node.ctx, ast.Load):
            found.append(f"`{setup_refs[node.id]}` (imported in the setup cell)")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if reference_module(alias.name):
                    found.append(f"`import {alias.name}`")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if reference_module(node.module):
                found.append(f"`from {node.module} import ...`")
            if from_scratch and any(a.name in SDPA_NAMES for a in node.names):
                found.append(f"`from {node.module} import {', '.join(a.name for a in node.names)}`")
            for a in node.names:
                if spells_forbidden(f"{node.module}.{a.name}"):
                    found.append(f"`{node.module}.{a.name}`")
        elif isinstance(node, ast.Attribute):
            if from_scratch and node.attr in SDPA_NAMES:
                found.append(f"`.{node.attr}`")
            if node.attr in ("attention", "stable_softmax", "core", "masks") and isinstance(node.value, ast.Name) \
                    and node.value.id == "attncourse":
                found.append(f"`attncourse.{node.attr}`")
            chain = _dotted(node)
            if chain is not None and forbidden:
                root = aliases.get(chain[0])
                if root is not None:
                    full = ".".join([root] + chain[1:])
                    if spells_forbidden(full):
                        found.append(f"`{full}`")
                elif node.attr in methods:
                    found.append(f"`torch.Tensor.{node.attr}` (the `.{node.attr}()` method)")
            elif node.attr in methods and chain is None:
                found.append(f"`torch.Tensor.{node.attr}` (the `.{node.attr}()` method)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if from_scratch and "scaled_dot_product" in text:
                found.append(f"the string {text[:40]!r}")
            elif _names_reference(text) or any(t in text for t in TAMPER_NAMES) or "_attncourse" in text:
                found.append(f"the string {text[:40]!r}")
        if isinstance(node, ast.Name) and (node.id in TAMPER_CALLS or node.id == "__name__"):
            found.append(f"`{node.id}`")
        if isinstance(node, ast.Attribute) and (node.attr in TAMPER_NAMES or node.attr.startswith(("_attncourse",
                                                                                                  "reference_"))):
            found.append(f"`.{node.attr}`")
        if isinstance(node, ast.Attribute) and node.attr in TORCH_INTERNALS:
            chain = _dotted(node)
            if chain is not None and aliases.get(chain[0], chain[0]).split(".")[0] == "torch":
                found.append(f"`{'.'.join([aliases.get(chain[0], chain[0])] + chain[1:])}` (torch internals)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch" and (
                set(node.module.split(".")) & set(TORCH_INTERNALS)
                or any(a.name in TORCH_INTERNALS for a in node.names)):
            found.append(f"`from {node.module} import ...` (torch internals)")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch" and set(alias.name.split(".")) & set(TORCH_INTERNALS):
                    found.append(f"`import {alias.name}` (torch internals)")
        if isinstance(node, ast.ImportFrom) and any(a.name.startswith("reference_") for a in node.names):
            found.append(f"`from {node.module} import reference_...`")
    return list(dict.fromkeys(found))


def _names_reference(text: str) -> bool:
    """A string that names a reference module (``"attncourse.core"``, ``"attncourse"``), not an allowed one."""
    for m in re.finditer(r"attncourse(\.[A-Za-z_][A-Za-z0-9_]*)*", text):
        if not m.group(0).startswith(ALLOWED_ATTNCOURSE) or "reference_" in text:
            return True
    return text.startswith("reference_")
