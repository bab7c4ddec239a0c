"""Public checks for chapter 10 (rotary position embedding).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse.rope`` through :func:`attncourse.testing.compare`. When the result is wrong, the
cases first test it against the classic mistakes (adjacent pairs instead of half-split, ``i/D``
instead of ``2i/D``, positions ignored, the rotation turned the wrong way, the permutation applied
across heads or in the wrong direction, PI instead of NTK) and name the one that fits. The hidden
autograder tests (``tests/autograder/test_10_rope.py``) use larger and odder grids.
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.rope import (apply_rope, half_split_to_interleaved, interleaved_to_half_split, ntk_frequencies,
                             pi_frequencies, rope_frequencies)
from attncourse.testing import compare


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(out, want) -> bool:
    return isinstance(out, torch.Tensor) and out.shape == want.shape and compare(out, want, check_dtype=False) is None


# --------------------------------------------------------------------------- rope_rotate
def _rope_mistake(out, x, pos, base=10000.0) -> str | None:
    """Name the classic mistake ``out`` matches, if any."""
    D = x.shape[-1]
    wrong_freq = (base ** (-torch.arange(D // 2, dtype=torch.float64) / D)).to(x.dtype)   # base^(-i/D)
    mistakes = [
        (apply_rope(x, pos, base=base, interleaved=True),
         "you rotated adjacent pairs (2i, 2i+1); this exercise uses the half-split layout: dimension i "
         "pairs with i + D/2"),
        (apply_rope(x, pos, base=base, inv_freq=wrong_freq),
         "your frequencies look like base^(-i/D); RoPE uses θ_i = base^(-2i/D) for i = 0 .. D/2 - 1"),
        (apply_rope(x, pos, base=base, interleaved=True, inv_freq=wrong_freq),
         "adjacent pairs and base^(-i/D): use the half-split pairs (i, i + D/2) and θ_i = base^(-2i/D)"),
        (apply_rope(x, -pos, base=base),
         "your rotation turns the wrong way: the first of each pair becomes x_a·cos - x_b·sin, "
         "the second x_a·sin + x_b·cos"),
    ]
    if not torch.equal(pos, torch.arange(len(pos))):
        mistakes.append((apply_rope(x, torch.arange(len(pos)), base=base),
                         "you ignored `positions` and rotated by 0, 1, 2, ...; use the positions you are given"))
    for want, hint in mistakes:
        if _same(out, want):
            return hint
    return None


def _rope_case(fn, x, pos, what, base=None):
    out = fn(x, pos) if base is None else fn(x, pos, base=base)
    want = apply_rope(x, pos, base=10000.0 if base is None else base)
    msg = compare(out, want, what=what)
    if msg is not None and isinstance(out, torch.Tensor):
        hint = _rope_mistake(out.detach(), x, pos, 10000.0 if base is None else base)
        if hint:
            return f"{what}: {hint}"
    return msg


@case("rope_rotate", "x of shape (5, 8) at positions 0..4")
def _(fn):
    x = torch.randn(5, 8, generator=_gen(1))
    return _rope_case(fn, x, torch.arange(5), "rope_rotate(x of shape (5, 8), positions 0..4)")


@case("rope_rotate", "position 1 turns the pair (x_i, x_{i+D/2}) = (1, 0) to (cos θ_i, sin θ_i)")
def _(fn):
    x = torch.zeros(1, 4)
    x[0, 0] = x[0, 1] = 1.0                                            # pairs (0, 2) and (1, 3) start at (1, 0)
    return _rope_case(fn, x, torch.tensor([1]), "rope_rotate of x = [1, 1, 0, 0] at position 1")


@case("rope_rotate", "positions that do not start at 0 (new tokens 7..12 after a cache)")
def _(fn):
    x = torch.randn(6, 6, generator=_gen(2))
    return _rope_case(fn, x, torch.arange(7, 13), "rope_rotate(x of shape (6, 6), positions 7..12)")


@case("rope_rotate", "a batch of heads (B, H, T, D) = (2, 3, 4, 16)")
def _(fn):
    x = torch.randn(2, 3, 4, 16, generator=_gen(3))
    return _rope_case(fn, x, torch.arange(4) + 2, "rope_rotate(x of shape (2, 3, 4, 16), positions 2..5)")


@case("rope_rotate", "another base (500000, as in Llama 3)")
def _(fn):
    x = torch.randn(3, 8, generator=_gen(4))
    return _rope_case(fn, x, torch.arange(3) * 40, "rope_rotate(..., base=500000.0)", base=500000.0)


@case("rope_rotate", "keeps the input dtype (float64 in, float64 out)")
def _(fn):
    x = torch.randn(2, 5, 10, generator=_gen(5), dtype=torch.float64)
    return _rope_case(fn, x, torch.arange(5) + 100, "rope_rotate of a float64 x of shape (2, 5, 10)")


# ------------------------------------------------------------------- rope_convert_layout
def _layout_case(fn, w, n_heads, what):
    out = fn(w, n_heads)
    want = interleaved_to_half_split(w, n_heads)
    msg = compare(out, want, what=what)
    if msg is not None and isinstance(out, torch.Tensor):
        if n_heads > 1 and _same(out, interleaved_to_half_split(w, 1)):
            return (f"{what}: you permuted all H·D rows as if they were one head; the pairs live inside "
                    "each head, so reorder the D rows of every head separately")
        if _same(out, half_split_to_interleaved(w, n_heads)):
            return (f"{what}: that is the opposite direction (half-split to interleaved); within a head, "
                    "row 2i + a of the interleaved weight must move to row a·D/2 + i")
    return msg


@case("rope_convert_layout", "one head, D = 8: rows 0, 2, 4, 6 then 1, 3, 5, 7")
def _(fn):
    w = torch.arange(8.0)[:, None].expand(8, 3).contiguous()          # row r holds the number r
    return _layout_case(fn, w, 1, "interleaved_to_half_split of an (8, 3) weight, 1 head")


@case("rope_convert_layout", "3 heads of D = 6: each head is reordered on its own")
def _(fn):
    w = torch.randn(18, 5, generator=_gen(6))
    return _layout_case(fn, w, 3, "interleaved_to_half_split of an (18, 5) weight, 3 heads")


@case("rope_convert_layout", "a bias vector of shape (H·D,) = (16,) with 2 heads")
def _(fn):
    b = torch.randn(16, generator=_gen(7))
    return _layout_case(fn, b, 2, "interleaved_to_half_split of a bias of shape (16,), 2 heads")


@case("rope_convert_layout", "after converting, half-split RoPE gives the interleaved model's scores")
def _(fn):
    C, H, D, T = 12, 2, 6, 5
    g = _gen(8)
    w_q, w_k, x = torch.randn(H * D, C, generator=g), torch.randn(H * D, C, generator=g), torch.randn(T, C, generator=g)
    pos = torch.arange(T)

    def scores(wq, wk, interleaved):
        q = apply_rope((x @ wq.T).view(T, H, D).transpose(0, 1), pos, interleaved=interleaved)   # (H, T, D)
        k = apply_rope((x @ wk.T).view(T, H, D).transpose(0, 1), pos, interleaved=interleaved)
        return q @ k.transpose(-2, -1)                                                         # (H, T, T)

    wq2, wk2 = fn(w_q, H), fn(w_k, H)
    if not isinstance(wq2, torch.Tensor) or wq2.shape != w_q.shape:
        return _layout_case(fn, w_q, H, "interleaved_to_half_split of a (12, 12) weight, 2 heads")
    return compare(scores(wq2, wk2, False), scores(w_q, w_k, True),
                   what="scores q·k of the converted weights with half-split RoPE")


# ---------------------------------------------------------------------------- rope_ntk
def _ntk_case(fn, dim, scale, what, base=None):
    out = fn(dim, scale) if base is None else fn(dim, scale, base=base)
    b = 10000.0 if base is None else base
    want = ntk_frequencies(dim, scale, b, dtype=torch.float64)
    msg = compare(out, want, what=what)
    if msg is not None and isinstance(out, torch.Tensor) and out.shape == want.shape:
        hints = [
            (pi_frequencies(dim, scale, b, dtype=torch.float64),
             "these are the position-interpolation frequencies θ_i / s; NTK-aware scaling changes the base instead"),
            (rope_frequencies(dim, b * scale, dtype=torch.float64),
             "you multiplied the base by s; NTK-aware scaling uses base · s^(D/(D-2)), so the lowest "
             "frequency is divided by exactly s"),
            ((b * scale ** (dim / (dim - 2))) ** (-torch.arange(dim // 2, dtype=torch.float64) / dim),
             "the new base is right but the exponent looks like -i/D; use -2i/D"),
        ]
        for wrong, hint in hints:
            if _same(out, wrong):
                return f"{what}: {hint}"
    return msg


@case("rope_ntk", "scale 1 leaves the frequencies unchanged (D = 8)")
def _(fn):
    return _ntk_case(fn, 8, 1.0, "ntk_frequencies(8, 1.0)")


@case("rope_ntk", "D = 64, s = 8: the NTK-aware base 10000 · 8^(64/62)")
def _(fn):
    return _ntk_case(fn, 64, 8.0, "ntk_frequencies(64, 8.0)")


@case("rope_ntk", "the fastest pair keeps θ_0 = 1, the slowest is divided by exactly s")
def _(fn):
    out = fn(16, 4.0)
    msg = _ntk_case(fn, 16, 4.0, "ntk_frequencies(16, 4.0)")
    if msg is None:
        return None
    if isinstance(out, torch.Tensor) and out.shape == (8,):
        theta = rope_frequencies(16, dtype=torch.float64)
        ends = [f"θ'_0 = {float(out[0]):.6g} (should be 1)", f"θ'_7 / θ_7 = {float(out[-1] / theta[-1]):.6g} (should be 1/4)"]
        return msg + "; " + ", ".join(ends)
    return msg


@case("rope_ntk", "another base (500000) and a fractional scale (2.5)")
def _(fn):
    return _ntk_case(fn, 32, 2.5, "ntk_frequencies(32, 2.5, base=500000.0)", base=500000.0)
