"""book/references.bib renders cleanly on the bibliography page (pybtex, the `plain` style).

* An organisation author written ``{{BigScience Workshop}}`` sorts after "Z" (pybtex sorts by
  the raw name, and ``{`` comes after the letters); write ``BigScience{ Workshop}`` instead:
  the first word stays a bare name and the braces keep the rest in one piece.
* A title with TeX math (``$O(n^2)$``) is shown as raw ``$...$``: write ``O(n²)``.
"""
from pathlib import Path

import pytest

pybtex = pytest.importorskip("pybtex.database")

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"


@pytest.fixture(scope="module")
def entries():
    return pybtex.parse_file(str(BIB), "bibtex").entries


def test_authors_sort_by_their_first_letter(entries):
    bad = [f"{key}: {person}" for key, entry in entries.items()
           for person in entry.persons.get("author", [])
           if not str(" ".join(person.prelast_names + person.last_names))[:1].isalnum()]
    assert not bad, ("author names that sort after 'Z' (write Org{ Name}, not {{Org Name}}):\n" + "\n".join(bad))


def test_titles_have_no_tex_math(entries):
    bad = [f"{key}: {entry.fields['title']}" for key, entry in entries.items() if "$" in entry.fields.get("title", "")]
    assert not bad, "titles with $...$ show as raw TeX on the bibliography page:\n" + "\n".join(bad)
