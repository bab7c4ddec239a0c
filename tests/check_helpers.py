"""What every chapter's public-check tests assert (tests/test_checks*.py)."""
from __future__ import annotations

from attncourse.checks import check


def assert_passes(ex_id: str, fn, capsys) -> None:
    """The reference passes every public case of ``ex_id`` and the learner is told so."""
    result = check(ex_id, fn)
    assert result and result.passed == result.total > 0, result.messages
    assert "all" in capsys.readouterr().out


def assert_fails_saying(ex_id: str, fn, expect: str, capsys) -> None:
    """A mistaken ``fn`` fails the public checks of ``ex_id`` with a message containing ``expect``."""
    result = check(ex_id, fn)
    assert not result and result.status == "failed"
    out = capsys.readouterr().out
    assert expect in out, out
