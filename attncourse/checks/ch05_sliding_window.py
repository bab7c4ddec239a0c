"""Public checks for chapter 05 (local / sliding-window attention).

Each case builds small inputs, calls the learner's function and compares with the reference in
``attncourse`` through :func:`attncourse.testing.compare`. Where a wrong answer matches a known
mistake exactly (``|i - j| < W`` for the causal window, ``W + 1`` keys, top-left alignment,
a block that forgets the previous block's keys, ``L·W``), the message names the mistake.
The hidden autograder tests (``tests/autograder/test_05_sliding_window.py``) use more and
odder sizes, gradients, and a sequence long enough that a ``T × T`` tensor cannot be allocated.
(No public case measures memory: the profiler and dispatch modes import ``torch._dynamo``, which
takes seconds; "keys no query can see hold NaN" catches dense attention cheaply instead.)
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.core import attention
from attncourse.local import receptive_field as _receptive_field
from attncourse.local import sliding_window_attention as _swa
from attncourse.masks import sliding_window_mask, streaming_mask
from attncourse.testing import compare

__all__ = ["reference_sliding_window_attention", "reference_receptive_field"]


def reference_sliding_window_attention(q, k, v, window, block=64):
    """The exercise's signature (causal only) over :func:`attncourse.local.sliding_window_attention`."""
    return _swa(q, k, v, window, causal=True, block=block)


def reference_receptive_field(window, layers, causal=True):
    """The exercise's signature over :func:`attncourse.local.receptive_field`."""
    return _receptive_field(window, layers, causal=causal)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ known mistakes, for hints
def _positions(tq, tk, top_left=False):
    i = torch.arange(tq).view(-1, 1) + (0 if top_left else tk - tq)   # (Tq, 1) positions of the queries
    return i - torch.arange(tk).view(1, -1)                             # (Tq, Tk) distance i - j


def _mistaken_masks(tq, tk, w, causal=True) -> dict[str, torch.Tensor]:
    d, d_tl = _positions(tq, tk), _positions(tq, tk, top_left=True)
    out = {}
    if causal:
        out["abs"] = d.abs() < w
        out["w_plus_1"] = (d >= 0) & (d <= w)
        out["top_left"] = (d_tl >= 0) & (d_tl < w)
    else:
        out["w_plus_1"] = d.abs() <= w
        out["top_left"] = d_tl.abs() < w
    return out


_HINTS = {
    "abs": ("this is |i - j| < W, which lets a query see W - 1 keys in its future; the causal window is "
            "0 <= i - j < W (no key after the query)"),
    "w_plus_1": ("off by one: each query sees W + 1 keys; the window has exactly W keys, the query's own "
                 "included (0 <= i - j < W, strict <)"),
    "top_left": ("the queries are aligned top-left; with Tq != Tk they are the last Tq positions: "
                 "query i sits at position Tk - Tq + i (bottom-right)"),
}


def _mask_case(fn, tq, tk, w, causal, what):
    args = (tq, tk, w) if causal else (tq, tk, w, False)
    got = fn(*args)
    if isinstance(got, torch.Tensor) and got.shape == (tq, tk):
        want = sliding_window_mask(tq, tk, w, causal)
        if not torch.equal(got.bool(), want):
            for name, wrong in _mistaken_masks(tq, tk, w, causal).items():
                if torch.equal(got.bool(), wrong) and not torch.equal(wrong, want):
                    return f"{what}: {_HINTS[name]}"
    return compare(got, sliding_window_mask(tq, tk, w, causal), what=what)


# ------------------------------------------------------------------------------ window_mask
@case("window_mask", "causal, Tq = Tk = 7, W = 3: keys i-2, i-1, i (W keys, itself included)")
def _(fn):
    return _mask_case(fn, 7, 7, 3, True, "window_mask(7, 7, 3)")


@case("window_mask", "causal, Tq = 3 < Tk = 9, W = 4: bottom-right (query i at position Tk - Tq + i)")
def _(fn):
    return _mask_case(fn, 3, 9, 4, True, "window_mask(3, 9, 4)")


@case("window_mask", "causal, Tq = 6 > Tk = 3, W = 2: the first queries see no key (all-False rows)")
def _(fn):
    return _mask_case(fn, 6, 3, 2, True, "window_mask(6, 3, 2)")


@case("window_mask", "bidirectional (causal=False), Tq = Tk = 6, W = 2: |i - j| < W")
def _(fn):
    return _mask_case(fn, 6, 6, 2, False, "window_mask(6, 6, 2, causal=False)")


@case("window_mask", "W larger than Tk: the ordinary causal mask; W = 1: the diagonal")
def _(fn):
    return _mask_case(fn, 4, 5, 9, True, "window_mask(4, 5, 9)") or _mask_case(fn, 5, 5, 1, True, "window_mask(5, 5, 1)")


# --------------------------------------------------------------------------- streaming_mask
def _streaming_case(fn, tq, tk, w, n, what):
    got = fn(tq, tk, w, n)
    want = streaming_mask(tq, tk, w, n)
    if isinstance(got, torch.Tensor) and got.shape == (tq, tk) and not torch.equal(got.bool(), want):
        no_causal = sliding_window_mask(tq, tk, w) | (torch.arange(tk) < n).view(1, -1)
        if torch.equal(got.bool(), no_causal):
            return (f"{what}: a query sees sink keys that come after it; the sinks are the first n_sinks "
                    "keys *that the query may see causally* (j < n_sinks and j <= its position)")
    return compare(got, want, what=what)


@case("streaming_mask", "Tq = Tk = 8, W = 3, 2 sinks: the window plus keys 0 and 1, never a future key")
def _(fn):
    return _streaming_case(fn, 8, 8, 3, 2, "streaming_mask(8, 8, 3, 2)")


@case("streaming_mask", "one new query after 19 cached keys (Tq = 1, Tk = 20), W = 4, 4 sinks")
def _(fn):
    return _streaming_case(fn, 1, 20, 4, 4, "streaming_mask(1, 20, 4, 4)")


@case("streaming_mask", "n_sinks = 0 is the plain causal window (Tq = 5, Tk = 9, W = 3)")
def _(fn):
    return _streaming_case(fn, 5, 9, 3, 0, "streaming_mask(5, 9, 3, 0)")


# ------------------------------------------------------------------ sliding_window_attention
def _qkv(lead, tq, tk, d, seed, dtype=torch.float32, dv=None):
    g = _gen(seed)
    return (torch.randn(*lead, tq, d, generator=g, dtype=dtype), torch.randn(*lead, tk, d, generator=g, dtype=dtype),
            torch.randn(*lead, tk, dv or d, generator=g, dtype=dtype))


def _same_block_only(q, k, v, window, block):
    """The mistake: each block of queries attends only to the keys of its own block."""
    tq, tk = q.shape[-2], k.shape[-2]
    m = sliding_window_mask(tq, tk, window)
    p = torch.arange(tq).view(-1, 1) + tk - tq
    j = torch.arange(tk).view(1, -1)
    start = (torch.arange(tq).view(-1, 1) // block) * block + tk - tq      # first position of the query's block
    return attention(q, k, v, mask=m & (j >= start) & (j <= p))


def _attention_case(fn, q, k, v, window, block, what):
    got = fn(q, k, v, window, block=block)
    want = reference_sliding_window_attention(q, k, v, window, block)
    problem = compare(got, want, what=what)
    if problem and isinstance(got, torch.Tensor) and got.shape == want.shape:
        tq, tk = q.shape[-2], k.shape[-2]
        candidates = {"forgot": _same_block_only(q, k, v, window, block)}
        for name, m in _mistaken_masks(tq, tk, window).items():
            candidates[name] = attention(q, k, v, mask=m)
        for name, wrong in candidates.items():
            if compare(got, wrong) is None and compare(wrong, want) is not None:
                hint = ("each block attends only to its own keys: the first queries of a block must also see "
                        "the last W - 1 keys before the block (slice the keys from the block's first position "
                        "minus W - 1)") if name == "forgot" else _HINTS[name]
                return f"{what}: {hint}"
    return problem


@case("sliding_window_attention", "Tq = Tk = 10, W = 3, block = 4: equals dense attention with the window mask")
def _(fn):
    q, k, v = _qkv((1, 2), 10, 10, 4, seed=1)
    return _attention_case(fn, q, k, v, 3, 4, "output for (1, 2, 10, 4), W = 3, block = 4")


@case("sliding_window_attention", "Tq = 5 < Tk = 12, W = 4, block = 2 (bottom-right: the last 5 positions)")
def _(fn):
    q, k, v = _qkv((2, 1), 5, 12, 6, seed=2)
    return _attention_case(fn, q, k, v, 4, 2, "output for Tq = 5, Tk = 12, W = 4, block = 2")


@case("sliding_window_attention", "Tq = 9 > Tk = 4, W = 2: queries before key 0 get zeros, not NaN")
def _(fn):
    q, k, v = _qkv((1, 1), 9, 4, 3, seed=3)
    return _attention_case(fn, q, k, v, 2, 4, "output for Tq = 9, Tk = 4, W = 2, block = 4")


@case("sliding_window_attention", "the result does not depend on the block size (block = 1, 3, 64)")
def _(fn):
    q, k, v = _qkv((1, 2), 13, 13, 5, seed=4, dtype=torch.float64)
    for b in (1, 3, 64):
        problem = _attention_case(fn, q, k, v, 5, b, f"float64 output with block = {b} (Tq = Tk = 13, W = 5)")
        if problem:
            return problem
    return None


@case("sliding_window_attention", "keys no query can see (here NaN) are never read: Tq = 6, Tk = 50, W = 4")
def _(fn):
    q, k, v = _qkv((1, 2), 6, 50, 4, seed=5)
    first = 50 - 6 - 4 + 1                                  # the first key any query can see
    k[..., :first, :] = float("nan")
    v[..., :first, :] = float("nan")
    got = fn(q, k, v, 4, block=3)
    if isinstance(got, torch.Tensor) and got.is_floating_point() and torch.isnan(got).any():
        return (f"keys 0..{first - 1} hold NaN and no query can see them, but your output has NaN: your "
                "function reads keys outside the window (dense attention reads every key, and 0 · NaN = NaN). "
                "Slice, for each block, only the keys it can see")
    return compare(got, reference_sliding_window_attention(q, k, v, 4, 3),
                   what="output when the keys no query can see hold NaN")


# --------------------------------------------------------------------------- receptive_field
def _int_case(fn, window, layers, causal=True):
    args = (window, layers) if causal else (window, layers, False)
    got = fn(*args)
    want = _receptive_field(window, layers, causal=causal)
    what = f"receptive_field({', '.join(map(str, args))})"
    if type(got) is not int:
        return f"{what} should return a Python int, but it returned a {type(got).__name__}"
    if got != want:
        hint = ""
        if causal and got == layers * window:
            hint = (": L·W counts the query's own position once per layer; each layer adds W - 1 new "
                    "positions, so L·(W - 1) + 1")
        elif causal and got == layers * (window - 1):
            hint = ": the output's own position counts too (+ 1)"
        return f"{what} is {got:,}, expected {want:,}{hint}"
    return None


@case("receptive_field", "one layer of width 3 sees 3 positions; two layers see 5")
def _(fn):
    return _int_case(fn, 3, 1) or _int_case(fn, 3, 2)


@case("receptive_field", "Mistral 7B: W = 4096, 32 layers")
def _(fn):
    return _int_case(fn, 4096, 32)


@case("receptive_field", "W = 1 sees only itself, however deep")
def _(fn):
    return _int_case(fn, 1, 12)


@case("receptive_field", "bidirectional (causal=False): W = 3, 2 layers reach 2 each way per layer")
def _(fn):
    return _int_case(fn, 3, 2, causal=False)
