"""Exercise notebooks: parse the authoring format and release learner versions.

The authoring format (``solutions/NN_topic.ipynb``, the single source of the exercises):

* notebook metadata ``{"attncourse": {"chapter": "NN_topic"}}``;
* an exercise is a **code** cell tagged ``exercise`` whose metadata holds
  ``{"attncourse": {"id": "<unique id>", "points": <number > 0>}}``;
* inside it, each solution lies between a ``# BEGIN SOLUTION`` line and a ``# END SOLUTION``
  line. Release replaces every such region with a stub that raises ``NotImplementedError``
  naming the exercise, indented like the ``BEGIN`` marker;
* markers outside exercise cells are an error (they would leak a solution).

:func:`release_notebook` is deterministic: outputs and execution counts are cleared, cell ids
are kept, and the JSON is written with sorted keys, so releasing twice changes nothing.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)# (?P<kind>BEGIN|END) SOLUTION\s*$")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExerciseFormatError(ValueError):
    """A malformed exercise notebook; the message names the notebook and the cell."""


@dataclass(frozen=True)
class Exercise:
    id: str
    points: float
    cell_index: int
    cell_id: str | None
    source: str


def _where(path, index, cell) -> str:
    cid = cell.get("id")
    return f"{path}, cell {index}" + (f" (id {cid!r})" if cid else "")


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook, turning any parse failure into an :class:`ExerciseFormatError`."""
    path = Path(path)
    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise ExerciseFormatError(f"{path}: no such file") from None
    except Exception as exc:  # nbformat raises several types for broken JSON/schema
        raise ExerciseFormatError(f"{path}: not a valid Jupyter notebook ({type(exc).__name__}: {exc})") from None


def chapter_of(nb, path="notebook") -> str:
    """The chapter stem stored in the notebook metadata (not the file name)."""
    meta = nb.get("metadata", {}).get("attncourse", {})
    chapter = meta.get("chapter") if isinstance(meta, dict) else None
    if not isinstance(chapter, str) or not chapter:
        raise ExerciseFormatError(f"{path}: notebook metadata has no attncourse.chapter "
                                  '(expected e.g. {"attncourse": {"chapter": "01_sdpa"}})')
    return chapter


def _regions(source: str, where: str) -> list[tuple[int, int, str]]:
    """(begin_line, end_line, indent) of each solution region; raises on unbalanced markers."""
    regions, open_at, indent = [], None, ""
    for n, line in enumerate(source.split("\n")):
        m = _MARKER.match(line)
        if not m:
            if BEGIN in line or END in line:
                raise ExerciseFormatError(f"{where}: line {n + 1}: a solution marker must be alone on its line: {line.strip()!r}")
            continue
        if m["kind"] == "BEGIN":
            if open_at is not None:
                raise ExerciseFormatError(f"{where}: line {n + 1}: '{BEGIN}' inside another solution region "
                                          f"(opened on line {open_at + 1})")
            open_at, indent = n, m["indent"]
        else:
            if open_at is None:
                raise ExerciseFormatError(f"{where}: line {n + 1}: '{END}' without a matching '{BEGIN}'")
            regions.append((open_at, n, indent))
            open_at = None
    if open_at is not None:
        raise ExerciseFormatError(f"{where}: line {open_at + 1}: '{BEGIN}' is never closed by '{END}'")
    return regions


def parse_exercises(nb, path="notebook") -> list[Exercise]:
    """Validate the authoring format and list the exercises in notebook order."""
    chapter_of(nb, path)
    exercises, seen = [], {}
    for i, cell in enumerate(nb.cells):
        where = _where(path, i, cell)
        tags = cell.get("metadata", {}).get("tags", [])
        meta = cell.get("metadata", {}).get("attncourse")
        is_exercise = "exercise" in tags
        if not is_exercise:
            if BEGIN in cell.source or END in cell.source:
                raise ExerciseFormatError(f"{where}: solution markers in a cell not tagged 'exercise' "
                                          "(tag the cell, or remove the markers)")
            if meta and "id" in meta:
                raise ExerciseFormatError(f"{where}: has exercise metadata but no 'exercise' tag")
            continue
        if cell.cell_type != "code":
            raise ExerciseFormatError(f"{where}: an exercise must be a code cell, this is a {cell.cell_type} cell")
        if not isinstance(meta, dict):
            raise ExerciseFormatError(f"{where}: exercise cell has no attncourse metadata "
                                      '(expected {"attncourse": {"id": "...", "points": 2}})')
        ex_id, points = meta.get("id"), meta.get("points")
        if not isinstance(ex_id, str) or not _ID.match(ex_id):
            raise ExerciseFormatError(f"{where}: attncourse.id must be a Python-identifier-like string, got {ex_id!r}")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not points > 0:
            raise ExerciseFormatError(f"{where}: exercise {ex_id!r} needs a positive number of points, got {points!r}")
        if ex_id in seen:
            raise ExerciseFormatError(f"{where}: duplicate exercise id {ex_id!r} (first used in cell {seen[ex_id]})")
        seen[ex_id] = i
        if not _regions(cell.source, where):
            raise ExerciseFormatError(f"{where}: exercise {ex_id!r} has no '{BEGIN}' ... '{END}' region")
        exercises.append(Exercise(ex_id, points, i, cell.get("id"), cell.source))
    return exercises


def stub(exercise_id: str, indent: str = "") -> str:
    return (f"{indent}# YOUR CODE HERE\n"
            f'{indent}raise NotImplementedError("exercise {exercise_id}: not implemented yet")')


def strip_solutions(source: str, exercise_id: str, where: str = "cell") -> str:
    """Replace each solution region of ``source`` by a stub naming the exercise."""
    lines = source.split("\n")
    out, last = [], 0
    for begin, end, indent in _regions(source, where):
        out.extend(lines[last:begin])
        out.append(stub(exercise_id, indent))
        last = end + 1
    out.extend(lines[last:])
    return "\n".join(out)


REPOSITORY_TOKEN = "ATTNCOURSE_REPOSITORY"
DEFAULT_REPOSITORY = "https://github.com/attncourse/attncourse"


def repository_url(config: str | Path = "_config.yml") -> str:
    """The course's repository URL from the book's ``_config.yml`` (the one setting a fork changes)."""
    path = Path(config)
    if path.exists():
        import yaml

        url = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("repository", {}).get("url")
        if url:
            return str(url).rstrip("/")
    return DEFAULT_REPOSITORY


def release_notebook(nb, path="notebook", *, repository: str = DEFAULT_REPOSITORY):
    """The learner version of a solution notebook (a new object; ``nb`` is untouched).

    ``ATTNCOURSE_REPOSITORY`` in any cell becomes ``repository`` (the install URL used on Colab).
    """
    exercises = {ex.cell_index: ex for ex in parse_exercises(nb, path)}
    out = copy.deepcopy(nb)
    for i, cell in enumerate(out.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        if i in exercises:
            cell.source = strip_solutions(cell.source, exercises[i].id, _where(path, i, cell))
        cell.source = cell.source.replace(REPOSITORY_TOKEN, repository)
    out.metadata.setdefault("attncourse", {})["released"] = True
    out.metadata.pop("widgets", None)
    return out


def release_text(src: str | Path, *, repository: str = DEFAULT_REPOSITORY) -> str:
    """The exact text the released notebook of ``src`` must have."""
    nb = read_notebook(src)
    return nbformat.writes(release_notebook(nb, src, repository=repository)) + "\n"


def release(solutions: str | Path = "solutions", notebooks: str | Path = "notebooks", *,
            check: bool = False, repository: str | None = None) -> list[Path]:
    """Write ``notebooks/NN.ipynb`` for every ``solutions/NN.ipynb``.

    With ``check=True`` nothing is written; the stale or missing outputs are returned instead.
    Returns the paths written (or stale).
    """
    solutions, notebooks = Path(solutions), Path(notebooks)
    if repository is None:
        repository = repository_url(solutions.resolve().parent / "_config.yml")
    sources = sorted(solutions.glob("*.ipynb"))
    if not sources:
        raise ExerciseFormatError(f"{solutions}: no solution notebooks (*.ipynb) found")
    changed = []
    for src in sources:
        dst = notebooks / src.name
        text = release_text(src, repository=repository)
        if dst.exists() and dst.read_text(encoding="utf-8") == text:
            continue
        changed.append(dst)
        if not check:
            notebooks.mkdir(parents=True, exist_ok=True)
            dst.write_text(text, encoding="utf-8")
    if check:  # a learner notebook without a solution source is stale too
        expected = {s.name for s in sources}
        changed += [p for p in sorted(notebooks.glob("*.ipynb")) if p.name not in expected]
    return changed
