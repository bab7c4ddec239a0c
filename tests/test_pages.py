"""Pages and notebooks as readers and learners get them.

* Learner notebooks (and the solutions they are generated from) render in plain Jupyter and
  Colab as well as the book: no MyST-only syntax, answers folded with HTML ``<details>``.
* No page or notebook holds a control character (a ``\\b`` once turned ``\\big(`` into "ig(").
* Every ``{doc}`` link and every relative markdown link in the book resolves.
* The commands the README and the landing page give a new user exist after the documented install.
* Setup cells print nothing stray (a bare ``torch.manual_seed(0)`` prints a Generator object).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
LEARNER = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
PAGES = sorted(BOOK.rglob("*.md")) + sorted(BOOK.rglob("*.ipynb")) + LEARNER + [ROOT / "README.md"]
PAGES = [p for p in PAGES if "_build" not in p.parts and ".ipynb_checkpoints" not in p.parts]

MYST_ONLY = [
    (re.compile(r"^\s*(:::+|```+)\s*\{[a-z-]+\}", re.M), "a MyST directive (:::{...} or ```{...})"),
    (re.compile(r"\{(doc|cite|ref|numref|term|eq|download|cite:[pt])\}`"), "a MyST role ({doc}`...` etc.)"),
    (re.compile(r"^\(([\w-]+)\)=\s*$", re.M), "a MyST target ((label)=)"),
]
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def cells(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        src = cell.get("source", "")
        yield i, cell, "".join(src) if isinstance(src, list) else src


def text_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join(src for _, cell, src in cells(path) if cell["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", LEARNER, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_learner_notebooks_have_no_myst_only_syntax(path):
    problems = []
    for i, cell, src in cells(path):
        if cell["cell_type"] != "markdown":
            continue
        for pattern, what in MYST_ONLY:
            m = pattern.search(src)
            if m:
                problems.append(f"cell {i}: {what}: {m.group(0).strip()!r}")
        if src.count("<details") != src.count("</details>"):
            problems.append(f"cell {i}: unbalanced <details>")
    assert not problems, f"{path.name} must render in plain Jupyter and Colab:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_control_characters(path):
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        raw = "\n".join(src for _, _, src in cells(path))  # sources only: outputs may hold ANSI colours
    bad = [(raw.count("\n", 0, m.start()) + 1, repr(m.group(0))) for m in CONTROL.finditer(raw)]
    assert not bad, f"{path.relative_to(ROOT)}: control characters at lines {bad[:5]} (a backslash escape lost?)"


def _doc_target(page: Path, target: str) -> bool:
    target = target.split("<")[-1].rstrip(">").strip() if "<" in target else target.strip()
    base = ROOT if target.startswith("/") else page.parent
    stem = (base / target.lstrip("/")).resolve()
    return any(stem.with_suffix(ext).exists() or Path(str(stem) + ext).exists() for ext in (".md", ".ipynb"))


BOOK_PAGES = [p for p in PAGES if BOOK in p.parents]


@pytest.mark.parametrize("path", BOOK_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_links_and_relative_links_resolve(path):
    text = re.sub(r"^```.*?^```", "", text_of(path), flags=re.S | re.M)   # fenced code shows syntax, not links
    broken = [t for t in re.findall(r"(?<!`)\{doc\}`([^`]+)`", text) if not _doc_target(path, t)]
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#")[0]
        if file and not (path.parent / file).resolve().exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links that do not resolve: {broken}"


def test_readme_commands_exist_after_the_install():
    """README: `jupyter lab notebooks/`, `jupyter-book build .`, `attncourse ...`, `python -m pytest`."""
    readme = (ROOT / "README.md").read_text() + (BOOK / "intro.md").read_text()
    bindir = str(Path(sys.executable).parent)
    for command, exe in [("jupyter lab", "jupyter-lab"), ("jupyter-book build", "jupyter-book"),
                         ("attncourse release", "attncourse"), ("attncourse grade", "attncourse")]:
        if command in readme:
            assert shutil.which(exe, path=bindir) or shutil.which(exe), \
                f"the README says `{command}`, but `{exe}` is not installed by requirements.txt"
    import importlib.util
    for module in ("pytest", "xdist", "nbval", "jupyterlab", "nbconvert"):
        assert importlib.util.find_spec(module), f"{module} is missing from the documented install"


@pytest.mark.parametrize("path", sorted(BOOK.rglob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_stray_generator_output(path):
    for i, cell, _ in cells(path):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert "torch._C.Generator" not in text, f"{path.name} cell {i} prints a Generator object: use `_ = ...`"


def test_chapter_map_lists_every_chapter_with_its_points():
    from attncourse.grading.release import parse_exercises, read_notebook

    intro = (BOOK / "intro.md").read_text()
    total = 0
    for sol in sorted((ROOT / "solutions").glob("*.ipynb")):
        points = sum(e.points for e in parse_exercises(read_notebook(sol), sol))
        total += points
        row = next((line for line in intro.splitlines() if line.startswith(f"| {sol.stem[:2]} |")), None)
        assert row is not None, f"book/intro.md: the chapter map has no row for {sol.stem}"
        assert f"{sol.stem}/index" in row and row.rstrip(" |").endswith(f"({points:g})"), \
            f"book/intro.md: the row of {sol.stem} should link it and end with its {points:g} points"
    assert f"({total:g} in all" in intro, f"book/intro.md should say the exercises total {total:g} points"
