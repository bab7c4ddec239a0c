"""Write the learner repository: what a GitHub Classroom template (or a public course) holds.

``attncourse release --learner-repo DIR`` copies an allow-list — the book, the released
notebooks, the ``attncourse`` package, the committed benchmark results the book plots, the
packaging files, the README and the Classroom and book workflows — and nothing else: no
``solutions/``, no ``tests/`` (so no hidden tests), no benchmark or CI scripts. It refuses to write if the released notebooks are stale, and checks
that no copied notebook contains a solution marker. DIR must be empty or an earlier learner repo
(recognised by its ``.attncourse-learner-repo`` marker); its ``.git`` is kept.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from attncourse.grading.release import BEGIN, END, release

MARKER = ".attncourse-learner-repo"
COPY_TREES = ["book", "notebooks", "attncourse", "binder", "benchmarks/results",  # results: the book plots them
              "_static"]  # the theme fixes the book loads
COPY_FILES = ["_config.yml", "_toc.yml", "pyproject.toml", "requirements.txt", "requirements-triton.txt",
              "README.md", "LICENSE", "LICENSE.md", ".gitignore", ".github/workflows/classroom.yml",
              ".github/workflows/book.yml"]
SKIP = ("__pycache__", ".ipynb_checkpoints", "_build", ".pytest_cache")


class LearnerRepoError(Exception):
    pass


def write_learner_repo(dest: str | Path, *, root: str | Path = ".", notebooks: str | Path = "notebooks") -> list[Path]:
    """Copy the learner-facing part of the course at ``root`` into ``dest``; returns the files."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest == root or root in dest.parents and dest.parts[len(root.parts)] in ("solutions", "tests", "notebooks", "book"):
        raise LearnerRepoError(f"{dest}: choose a folder outside the course's own folders")
    if (root / "solutions").is_dir() and any((root / "solutions").glob("*.ipynb")):
        stale = release(root / "solutions", root / notebooks, check=True)
        if stale:
            raise LearnerRepoError("learner notebooks are stale (run `attncourse release` first): "
                                   + ", ".join(str(s) for s in stale))
    if dest.exists():
        entries = [p for p in dest.iterdir() if p.name != ".git"]
        if entries and not (dest / MARKER).exists():
            raise LearnerRepoError(f"{dest} is not empty and is not an earlier learner repository")
        for p in entries:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    written = []

    def copy(src: Path, rel: Path):
        if any(part in SKIP for part in rel.parts) or src.suffix == ".pyc" or src.is_symlink():
            return
        if src.suffix == ".ipynb":  # a notebook with a marker would publish a solution
            data = src.read_text(encoding="utf-8", errors="replace")
            if BEGIN in data or END in data:
                raise LearnerRepoError(f"{rel} contains a solution marker; refusing to publish it")
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)
        written.append(out)

    nb_dir = Path(notebooks)
    for tree in COPY_TREES:
        src_tree = root / (nb_dir if tree == "notebooks" else tree)
        if not src_tree.is_dir():
            continue
        for src in sorted(src_tree.rglob("*")):
            if src.is_file():
                copy(src, Path(tree) / src.relative_to(src_tree))
    for name in COPY_FILES:
        if (root / name).is_file():
            copy(root / name, Path(name))
    (dest / MARKER).write_text("Written by `attncourse release --learner-repo`; safe to regenerate.\n")
    written.append(dest / MARKER)
    return written
