"""Chapter 07's public checks: the solutions pass, and each classic mistake fails with a specific hint.

The mistaken functions are the solution notebook's own exercise cells with one line changed, so
the checks are tested against the code a learner actually writes.
"""
from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch

from attncourse.checks import check
from attncourse.triton_support import HAVE_TRITON

SOLUTION = Path(__file__).resolve().parents[1] / "solutions" / "07_flash.ipynb"


pytestmark = pytest.mark.usefixtures("one_thread")


def _cells():
    nb = nbformat.read(SOLUTION, 4)
    return {c.metadata["attncourse"]["id"]: c.source for c in nb.cells
            if "exercise" in c.metadata.get("tags", [])}, \
        next(c.source for c in nb.cells if "setup" in c.metadata.get("tags", []))


CELLS, SETUP = _cells()


def _function(exercise: str, old: str | None = None, new: str | None = None):
    """The solution's function for ``exercise``, with ``old`` replaced by ``new`` in its cell."""
    src = CELLS[exercise]
    if old is not None:
        assert old in src, f"{exercise}: {old!r} is not in the solution cell"
        src = src.replace(old, new)
    ns: dict = {"torch": torch, "math": math}
    if exercise == "triton_flash":
        from attncourse import triton_support
        ns.update(triton=triton_support.triton, tl=triton_support.tl, launch_flash_kernel=triton_support.launch_flash_kernel)
    exec(compile(src, f"<solution {exercise}>", "exec"), ns)
    fn_name = {"online_softmax": "online_softmax_stats", "triton_flash": "triton_flash_forward"}.get(exercise, exercise)
    return ns[fn_name]


def _messages(exercise, fn):
    result = check(exercise, fn, verbose=False)
    return result, " | ".join(result.messages)


@pytest.mark.parametrize("exercise", ["online_softmax", "flash_forward", "flash_backward", "hbm_accesses"])
def test_solutions_pass(exercise):
    result, msgs = _messages(exercise, _function(exercise))
    assert result.status == "passed", msgs


MISTAKES = [  # (exercise, old, new, words the failure message must contain)
    ("online_softmax", "l = l * torch.exp(m - shift) + ", "l = l + ", "exp(m - m')"),
    ("online_softmax", "l = l * torch.exp(m - shift) + ", "l = l * torch.exp(m - shift) ** 2 + ", "exp(m - m')"),
    ("online_softmax", "shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)", "shift = m_new",
     "(-inf) - (-inf) is NaN"),
    ("flash_forward", "acc = acc * alpha.unsqueeze(-1) + p @", "acc = acc + p @", "exactly once per key block"),
    ("flash_forward", "acc = acc * alpha.unsqueeze(-1) + p @", "acc = acc * alpha.unsqueeze(-1) ** 2 + p @",
     "exactly once per key block"),
    ("flash_forward", "torch.where(seen, m + torch.log(l_safe),", "torch.where(seen, torch.log(l_safe),",
     "lse = m + log(l)"),
    ("flash_forward", "k_stop = min(Tk, offset + qe) if causal else Tk", "k_stop = min(Tk, offset + qe - 1) if causal else Tk",
     "Tk - Tq + q_end, exclusive"),
    ("flash_forward", "i = torch.arange(qs, qe, device=q.device)[:, None] + offset",
     "i = torch.arange(qs, qe, device=q.device)[:, None]", "top-left alignment"),
    ("flash_backward", "delta = (do.to(cdt) * o.to(cdt)).sum(dim=-1)", "delta = do.to(cdt).sum(dim=-1)",
     "rowsum(dO ∘ O)"),
    ("hbm_accesses", "b_c = -(-sram // (4 * d))", "b_c = max(1, sram // (4 * d))", "B_c = ⌈M / 4d⌉"),
    ("hbm_accesses", "t_c = -(-n // b_c)", "t_c = n // b_c", "rounds up"),
    ("hbm_accesses", "return init + kv + t_c * per_kv_block", "return float(init + kv + t_c * per_kv_block)",
     "Python int"),
]


@pytest.mark.parametrize("exercise,old,new,words", MISTAKES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_classic_mistakes_fail_with_a_hint(exercise, old, new, words):
    result, msgs = _messages(exercise, _function(exercise, old, new))
    assert result.status == "failed", f"the mistake {new!r} passed every public check of {exercise}"
    assert words in msgs, msgs


def test_wrong_return_types_are_named():
    result, msgs = _messages("flash_forward", lambda q, k, v, causal=False, bq=64, bk=64: q)
    assert result.status == "failed" and "tuple of two tensors" in msgs
    result, msgs = _messages("online_softmax", lambda x, block: [x, x])
    assert "tuple of two tensors" in msgs


def test_unfinished_exercises_say_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError("exercise: not implemented yet")
    for exercise in ("online_softmax", "flash_forward", "flash_backward", "hbm_accesses", "triton_flash"):
        assert check(exercise, stub, verbose=False).status == "not implemented"


@pytest.mark.skipif(HAVE_TRITON, reason="checks the message shown where Triton is missing")
def test_triton_check_without_triton_says_how_to_install():
    result, msgs = _messages("triton_flash", _function("triton_flash"))
    assert result.status == "failed" and "requirements-triton.txt" in msgs
    stub = _function("triton_flash", CELLS["triton_flash"][CELLS["triton_flash"].index("        m_new = tl.maximum"):
                                                           CELLS["triton_flash"].index("        # END SOLUTION")],
                     "        raise NotImplementedError('exercise triton_flash: not implemented yet')\n")
    assert check("triton_flash", stub, verbose=False).status == "not implemented"


@pytest.mark.skipif(not HAVE_TRITON, reason="Triton is not installed (pip install -r requirements-triton.txt)")
def test_triton_solution_passes_and_a_missing_rescale_fails():
    result, msgs = _messages("triton_flash", _function("triton_flash"))
    assert result.status == "passed", msgs
    bad = _function("triton_flash", "acc = acc * alpha[:, None] + tl.dot", "acc = acc + tl.dot")
    assert check("triton_flash", bad, verbose=False).status == "failed"
