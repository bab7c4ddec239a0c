"""No page, notebook or bibliography entry contains a control character.

A Python string such as ``"\\big("`` written without the raw prefix becomes a backspace followed
by ``ig(``; the book then shows "ig(" and the formula breaks. Such characters are invisible in
most editors, so this test reads every text the book and the learners see: Markdown pages, the
cell sources of every notebook (after JSON decoding, where ``\\b`` is the backspace), the
bibliography and the README.
"""
import json
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"\n", "\t", "\r"}
FILES = sorted({*ROOT.glob("book/**/*.md"), *ROOT.glob("book/**/*.ipynb"), *ROOT.glob("notebooks/*.ipynb"),
                *ROOT.glob("solutions/*.ipynb"), ROOT / "book" / "references.bib", ROOT / "README.md"})
FILES = [p for p in FILES if p.exists() and ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts]


def _texts(path: Path):
    """(where, text) pairs: the file itself, or each cell of a notebook."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        yield str(path.relative_to(ROOT)), raw
        return
    for i, cell in enumerate(json.loads(raw)["cells"]):
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        yield f"{path.relative_to(ROOT)} cell {i}", src


def _control_characters(text: str):
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        for ch in line:
            if ch not in ALLOWED and unicodedata.category(ch) == "Cc":
                yield lineno, ch, line.strip()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_control_characters(path):
    found = [f"{where} line {lineno}: {ch!r} in {line[:80]!r}"
             for where, text in _texts(path) for lineno, ch, line in _control_characters(text)]
    assert not found, "control characters (a missing r-prefix on '\\b', '\\f', '\\a'?):\n" + "\n".join(found)


def test_the_check_catches_a_backspace():
    assert list(_control_characters("A\\ " + "\x08ig(x\x08ig)")) != []
    assert list(_control_characters("tabs\tand\nnewlines are fine\r\n")) == []
