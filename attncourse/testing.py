"""Comparisons with per-dtype tolerances and messages a learner can act on.

One tolerance table for the whole project: the package tests, the public checks and the
autograder all compare through :func:`compare`, so "close enough" means one thing.
Tolerances follow the precision used (as flash-attention's tests do): a low-precision result
is compared against a float32 (or float64) reference with room for its own rounding.
"""
from __future__ import annotations

import torch

# dtype -> (rtol, atol) when comparing a result in that dtype with a higher-precision reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (3e-2, 1.6e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for results computed in ``dtype``."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def compare(actual, expected: torch.Tensor, *, what: str = "result", rtol: float | None = None,
            atol: float | None = None, check_dtype: bool = True, reveal_values: bool = True,
            nan_hint: str | None = None) -> str | None:
    """Return ``None`` when ``actual`` matches ``expected``, else a short, specific message.

    Checks, in order: the exact type (a plain ``torch.Tensor``, no subclass), the shape, the
    dtype, NaN/inf where the expected values are finite, then values with the dtype's tolerance.
    ``reveal_values=False`` keeps hidden expected values out of the message (the autograder).
    ``nan_hint`` replaces the inferred hint for unexpected NaN (a caller that built the inputs
    knows whether they hold a fully masked row or scores large enough to overflow).
    """
    if type(actual) is not torch.Tensor:
        return f"{what} should be a torch.Tensor, but it is a {type(actual).__name__}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if check_dtype and actual.dtype != expected.dtype:
        return f"{what} has dtype {actual.dtype}, expected {expected.dtype}"
    if not actual.is_floating_point() and not expected.is_floating_point():
        if torch.equal(actual.cpu(), expected.cpu()):
            return None
        n = int((actual.cpu() != expected.cpu()).sum())
        return f"{what} differs from the expected values in {n} of {expected.numel()} entries"
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    bad_nan = torch.isnan(a) & ~torch.isnan(e)
    if bad_nan.any():
        return (f"{what} contains NaN in {int(bad_nan.sum())} of {a.numel()} entries where the expected "
                f"values are finite ({'hint: ' + nan_hint if nan_hint else _nan_hint(e, bad_nan)})")
    bad_inf = torch.isinf(a) & ~torch.isinf(e)
    if bad_inf.any():
        if bool((a[bad_inf] < 0).all()):   # -inf: not an overflow of exp(), usually a max or log of nothing
            return (f"{what} contains -inf in {int(bad_inf.sum())} entries where the expected values are finite "
                    "(hint: a maximum or log taken over no values, e.g. a block that was skipped or fully masked)")
        return (f"{what} contains inf in {int(bad_inf.sum())} entries where the expected values are finite "
                "(hint: exp() overflows for large scores; subtract the row maximum first)")
    d_rtol, d_atol = tolerance(actual.dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    finite = torch.isfinite(e)
    err = (a - e).abs()
    allowed = atol + rtol * e.abs()
    wrong = finite & (err > allowed)
    mismatch_special = ~finite & ~((a == e) | (torch.isnan(a) & torch.isnan(e)))
    if not wrong.any() and not mismatch_special.any():
        return None
    n_wrong = int(wrong.sum() + mismatch_special.sum())
    msg = f"{what} differs from the expected values in {n_wrong} of {a.numel()} entries"
    if wrong.any() and (reveal_values or a.numel() > 2):
        # with one or two entries the largest error and your own value would give the answer away
        worst = float(err[wrong].max())
        msg += f" (largest error {worst:.3g}; allowed {atol:g} + {rtol:g}·|expected|)"
        if reveal_values:
            flat = int(torch.where(wrong, err, torch.zeros_like(err)).flatten().argmax())
            idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
            msg += f"; e.g. at index {idx}: got {float(a[idx]):.6g}, expected {float(e[idx]):.6g}"
    return msg


def _nan_hint(expected: torch.Tensor, bad_nan: torch.Tensor) -> str:
    """Tell the two usual causes of NaN apart by the expected values of the rows where NaN appeared.

    A query whose keys are all masked expects a row (last dim) of **zeros**, and 0/0 gives NaN;
    an overflow (``exp`` of a large score is inf, and inf/inf is NaN) happens in rows whose
    expected values are **not** all zero. (A caller that knows the inputs passes ``nan_hint``.)
    """
    zero_rows = (expected == 0).all(dim=-1, keepdim=True) if expected.dim() else expected == 0
    masked_rows = bool((bad_nan & zero_rows).any())
    other_rows = bool((bad_nan & ~zero_rows).any())
    overflow = "exp() of a large score overflows to inf, and inf/inf is NaN: subtract the row maximum first"
    masked = "where every key is masked the expected output is zeros, and 0/0 is NaN: handle that case"
    if other_rows and masked_rows:
        return f"hint: {overflow}; also, {masked}"
    return f"hint: {overflow}" if other_rows else f"hint: {masked}"


def assert_matches(actual, expected: torch.Tensor, **kwargs) -> None:
    """``assert`` form of :func:`compare` for tests: raises ``AssertionError`` with the message."""
    msg = compare(actual, expected, **kwargs)
    if msg is not None:
        raise AssertionError(msg)
