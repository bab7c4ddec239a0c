"""What a hidden test module uses: the ``learner`` fixture's proxies, ``expect`` and markers.

A hidden test file ``tests/autograder/test_NN_topic.py`` is a plain pytest module::

    import pytest, torch
    from attncourse import stable_softmax
    from attncourse.grading.testkit import expect

    EXERCISES = {  # trusted: the submission's own metadata is never believed
        "stable_softmax": {"function": "softmax", "points": 2},
        "sdpa": {"function": "scaled_dot_product_attention", "points": 4, "from_scratch": True},
    }

    @pytest.mark.exercise("stable_softmax")
    @pytest.mark.points(2)              # relative weight inside the exercise (default 1)
    def test_rows_sum_to_one(learner):
        x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
        out = learner.softmax(x)        # runs in the sandbox; tensors go by value
        expect(out, stable_softmax(x), what="softmax(x) for x of shape (3, 5)")

``learner.<function>(...)`` returns what the learner's function returned — a plain tensor,
or a :class:`~attncourse.grading.wire.Foreign` standing for anything else — or raises
:class:`LearnerFailure` with a message for the learner (not implemented, raised, timed out,
crashed, forbidden call). ``learner.<function>.grad(*args, wrt=(0, 1), grad_output=g)``
returns ``(out, grads)``. Every comparison happens in the grading process through
:func:`expect`, i.e. :func:`attncourse.testing.compare` with ``reveal_values=False``.
"""
from __future__ import annotations

import torch

from attncourse.testing import compare
from attncourse.grading.wire import Foreign

__all__ = ["GradingFailure", "LearnerFailure", "Mismatch", "expect", "expect_true", "Foreign",
           "LOW_PRECISION", "SDPA_CALLS", "gen", "rand", "dname", "forbid"]


class GradingFailure(AssertionError):
    """A test failed for a reason the learner may read (the message is shown as is)."""


class LearnerFailure(GradingFailure):
    """The learner's function could not produce a value (raised, hung, crashed, forbidden call)."""

    def __init__(self, message: str, kind: str = "raised", raised: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.raised = tuple(raised)   # the learner's exception class and its bases, by name

    def raised_a(self, name: str) -> bool:
        """Whether the learner's function raised ``name`` or a subclass of it (``ValueError``)."""
        return self.kind == "raised" and name in self.raised


class Mismatch(GradingFailure):
    """The learner's value is wrong (type, shape, dtype, NaN or values)."""


def expect(actual, expected, *, what: str = "result", **tolerances) -> None:
    """Fail with a learner-friendly message unless ``actual`` matches ``expected``.

    Checks the exact type first (a ``Foreign`` value says what the learner returned), then
    shape, dtype, NaN/inf and values with the per-dtype tolerance; hidden values are never shown.
    """
    if isinstance(actual, Foreign):
        raise Mismatch(f"{what} should be a torch.Tensor, but your function returned {actual.description}")
    msg = compare(actual, expected, what=what, reveal_values=False, **tolerances)
    if msg is not None:
        raise Mismatch(msg)


def expect_true(condition: bool, message: str) -> None:
    """Fail with ``message`` (which must not contain hidden values) unless ``condition``."""
    if not condition:
        raise Mismatch(message)


# ------------------------------------------------ shared helpers for the hidden test modules
LOW_PRECISION = (torch.float16, torch.bfloat16)

# Every entry point to torch's fused attention: "from scratch" exercises may call none of them.
SDPA_CALLS = ["torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention",
              "torch.nn.functional.multi_head_attention_forward",
              *(f"torch.ops.aten.{op}" for op in (
                  "scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                  "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
                  "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"))]


def forbid(*rules: tuple) -> dict[str, list[str]]:
    """Build a module's ``FORBIDDEN`` table from ``(names, exercises)`` pairs, merging the lists.

    ``{**{n: [a] for n in X}, **{n: [b] for n in Y}}`` silently drops ``a`` for every name in both
    ``X`` and ``Y``; ``forbid((X, [a]), (Y, [b]))`` keeps both.
    """
    table: dict[str, list[str]] = {}
    for names, exercises in rules:
        for name in ([names] if isinstance(names, str) else names):
            for ex in ([exercises] if isinstance(exercises, str) else exercises):
                if ex not in table.setdefault(name, []):
                    table[name].append(ex)
    return table


def gen(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: hidden inputs are reproducible and never printed."""
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed, dtype=torch.float32, scale=1.0):
    """Standard-normal entries times ``scale``, drawn in float64 then cast (same values for every dtype)."""
    return (torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * scale).to(dtype)


def dname(dtype) -> str:
    """``torch.float16`` -> ``float16``, for test ids and messages."""
    return str(dtype).replace("torch.", "")
