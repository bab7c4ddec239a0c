"""Hidden tests for chapter 10 (rotary position embedding). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the reference (``attncourse.rope``, itself tested against explicit
2×2 rotations and the complex-number form in ``tests/test_rope.py``) and compared with
``expect`` (no hidden values in messages). Points: ``EXERCISES[id]["points"]`` is split over the
exercise's tests in proportion to their ``points`` marker (default 1).

Coverage:
    - rope_rotate: shapes (T, D), (B, T, D), (B, H, T, D) with T = 1, 13, 97 and D = 2 .. 128; positions
        starting at 0, at a cache offset, unordered and repeated, int32 and int64; bases 10, 10000,
        500000; float32 and float64 (float64 at positions up to 1e5, where float32 angles or i/D
        frequencies fail); the half-split pairing on one-hot inputs (adjacent pairs lose points);
        the frequencies 2i/D (i/D loses points); rotation direction; float64 gradients; return type.
    - rope_convert_layout: 1 to 8 heads, D = 2 .. 128, weights (H·D, C) and biases (H·D,); float16,
        bfloat16, float64 kept; rows of one head never mix with another's (one-block permutation loses
        points); the direction interleaved -> half-split (the inverse loses points, D >= 6); equal
        attention scores after conversion; exact values.
    - rope_ntk: D = 4 .. 256, scales 1 (identity), 1.5, 2, 8, 16.5, bases 10, 10000, 500000; float64 dtype and
        (D/2,) shape; the ends θ'_0 = 1 and θ'_last = θ_last / s; PI (θ/s), base·s and i/D lose points.
"""
from __future__ import annotations

import pytest
import torch

from attncourse.grading.testkit import Foreign, dname, expect, expect_true, rand
from attncourse.rope import (apply_rope, interleaved_to_half_split, ntk_frequencies, pi_frequencies,
                             rope_frequencies)

EXERCISES = {
    "rope_rotate": {"function": "rope_rotate", "points": 4},
    "rope_convert_layout": {"function": "interleaved_to_half_split", "points": 2},
    "rope_ntk": {"function": "ntk_frequencies", "points": 2},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
FORBIDDEN = {
    "attncourse.rope.apply_rope": ["rope_rotate"],
    "attncourse.rope.rope_frequencies": ["rope_rotate", "rope_ntk"],
    "attncourse.rope.rotate_half": ["rope_rotate"],
    "attncourse.rope.interleaved_to_half_split": ["rope_convert_layout"],
    "attncourse.rope.half_split_to_interleaved": ["rope_convert_layout"],
    "attncourse.rope.half_split_permutation": ["rope_convert_layout"],
    "attncourse.rope.ntk_frequencies": ["rope_ntk"],
    "attncourse.rope.pi_frequencies": ["rope_ntk"],
    "attncourse.rope.yarn_frequencies": ["rope_ntk"],
}

# float32 angles of two correct implementations can differ by an ulp of θ_i times the position;
# at positions <= 100 that is < 2e-5 in the output, far below what any mistake changes.
F32 = {"rtol": 1e-4, "atol": 1e-4}


def _tol(dtype):
    return F32 if dtype == torch.float32 else {}


# ============================================================================ rope_rotate
ROTATE_CASES = [  # (shape of x, first position, base)
    ((1, 2), 0, 10000.0), ((1, 8), 37, 500000.0), ((5, 4), 0, 10000.0), ((13, 6), 3, 10.0), ((2, 97, 16), 0, 500000.0),
    ((3, 2, 7, 10), 5, 10000.0), ((2, 4, 1, 64), 99, 1000000.0), ((1, 3, 11, 128), 0, 10000.0),
]


def _rid(case):
    shape, p0, base = case
    return "x".join(map(str, shape)) + f"-from{p0}-b{base:g}"


@pytest.mark.exercise("rope_rotate")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", ROTATE_CASES, ids=_rid)
def test_rotate_matches_reference(learner, case, dtype):
    shape, p0, base = case
    x = rand(*shape, seed=1, dtype=dtype)
    pos = torch.arange(p0, p0 + shape[-2])
    expect(learner.rope_rotate(x, pos, base=base), apply_rope(x, pos, base=base),
           what=f"rope_rotate(x of shape {shape}, positions {p0}..{p0 + shape[-2] - 1}, base={base:g}), {dname(dtype)}", **_tol(dtype))


@pytest.mark.exercise("rope_rotate")
@pytest.mark.points(2)
@pytest.mark.parametrize("D", [4, 12, 64])
def test_rotate_pairs_i_with_i_plus_half(learner, D):
    # One-hot rows: row r has a 1 in dimension r. Half-split moves it only within (r, r ± D/2).
    x = torch.eye(D, dtype=torch.float64)                                # (T = D, D)
    pos = torch.full((D,), 3)
    expect(learner.rope_rotate(x, pos), apply_rope(x, pos),
           what=f"rope_rotate of the {D} unit vectors of width {D} at position 3 (half-split pairs: i with i + D/2)")


@pytest.mark.exercise("rope_rotate")
@pytest.mark.points(2)
@pytest.mark.parametrize("D", [8, 128])
def test_rotate_frequencies_2i_over_d(learner, D):
    # Unit vector in dimension i, position 1: the result is (cos θ_i, sin θ_i) in the pair (i, i + D/2).
    x = torch.zeros(D // 2, D, dtype=torch.float64)
    x[torch.arange(D // 2), torch.arange(D // 2)] = 1.0
    pos = torch.ones(D // 2, dtype=torch.long)
    expect(learner.rope_rotate(x, pos), apply_rope(x, pos),
           what=f"rope_rotate of unit vectors e_i at position 1, D = {D} (pair i turns by θ_i = base^(-2i/D))")


@pytest.mark.exercise("rope_rotate")
@pytest.mark.points(2)
def test_rotate_float64_far_positions(learner):
    x = rand(2, 5, 128, seed=2, dtype=torch.float64)
    pos = torch.tensor([0, 1, 4097, 31999, 100000])
    expect(learner.rope_rotate(x, pos, base=500000.0), apply_rope(x, pos, base=500000.0),
           what="rope_rotate(..., base=500000) of a float64 x at positions up to 100000 (angles in float64)")


@pytest.mark.exercise("rope_rotate")
@pytest.mark.points(2)
@pytest.mark.parametrize("pos_dtype", [torch.int64, torch.int32], ids=dname)
def test_rotate_arbitrary_positions(learner, pos_dtype):
    x = rand(2, 3, 6, 8, seed=3, dtype=torch.float64)
    pos = torch.tensor([5, 0, 3, 3, 90, 17], dtype=pos_dtype)            # unordered, repeated
    expect(learner.rope_rotate(x, pos), apply_rope(x, pos.long()),
           what=f"rope_rotate with positions [5, 0, 3, 3, 90, 17] ({dname(pos_dtype)}); each row turns by its own position")


@pytest.mark.exercise("rope_rotate")
def test_rotate_cache_step_matches_full_sequence(learner):
    x = rand(1, 2, 9, 16, seed=4, dtype=torch.float64)
    full = apply_rope(x, torch.arange(9))
    expect(learner.rope_rotate(x[:, :, -2:].contiguous(), torch.tensor([7, 8])), full[:, :, -2:],
           what="rope_rotate of the last 2 tokens at positions 7, 8 (a decoding step after a cache of 7)")


@pytest.mark.exercise("rope_rotate")
@pytest.mark.parametrize("base", [10.0, 500000.0])
def test_rotate_other_base(learner, base):
    x = rand(3, 4, 32, seed=5, dtype=torch.float64)
    pos = torch.arange(4) * 25 + 1
    expect(learner.rope_rotate(x, pos, base=base), apply_rope(x, pos, base=base),
           what=f"rope_rotate(..., base={base:g}) of x of shape (3, 4, 32)")


@pytest.mark.exercise("rope_rotate")
def test_rotate_direction(learner):
    x = torch.zeros(1, 2, dtype=torch.float64)
    x[0, 0] = 1.0                                                        # the pair (1, 0)
    expect(learner.rope_rotate(x, torch.tensor([1])), apply_rope(x, torch.tensor([1])),
           what="rope_rotate of (1, 0) at position 1 (must give (cos 1, sin 1): counter-clockwise)")


@pytest.mark.exercise("rope_rotate")
@pytest.mark.points(2)
@pytest.mark.parametrize("shape,p0,base", [((2, 3, 5, 8), 11, 10000.0), ((7, 16), 0, 500000.0), ((1, 2, 4, 128), 4097, 10000.0)])
def test_rotate_gradient(learner, shape, p0, base):
    x = rand(*shape, seed=6, dtype=torch.float64)
    pos = torch.arange(shape[-2]) + p0
    g = rand(*shape, seed=7, dtype=torch.float64)
    out, (gx,) = learner.rope_rotate.grad(x, pos, base=base, wrt=(0,), grad_output=g)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(apply_rope(xr, pos, base=base), xr, g)
    expect(out, apply_rope(x, pos, base=base), what=f"rope_rotate(x of shape {shape}) in the gradient test")
    expect(gx, want, what="the gradient of rope_rotate with respect to x (backpropagate through your function)")


# ==================================================================== rope_convert_layout
LAYOUT_CASES = [  # (n_heads, D, C); C = 0 means a bias (H·D,)
    (1, 2, 3), (1, 8, 4), (3, 6, 5), (4, 16, 7), (2, 64, 0), (8, 128, 3), (5, 10, 0),
]


def _lid(case):
    h, d, c = case
    return f"H{h}D{d}" + ("bias" if c == 0 else f"C{c}")


def _weight(h, d, c, seed, dtype=torch.float32):
    return rand(h * d, seed=seed, dtype=dtype) if c == 0 else rand(h * d, c, seed=seed, dtype=dtype)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=_lid)
def test_layout_matches_reference(learner, case):
    h, d, c = case
    w = _weight(h, d, c, seed=20)
    expect(learner.interleaved_to_half_split(w, h), interleaved_to_half_split(w, h),
           what=f"interleaved_to_half_split of a weight of shape {tuple(w.shape)}, {h} head{'s' * (h != 1)}", rtol=0, atol=0)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.points(2)
@pytest.mark.parametrize("h,d", [(2, 4), (4, 8)])
def test_layout_heads_stay_separate(learner, h, d):
    w = torch.arange(h * d, dtype=torch.float32)[:, None].expand(h * d, 3).contiguous()   # row r holds r
    expect(learner.interleaved_to_half_split(w, h), interleaved_to_half_split(w, h),
           what=f"interleaved_to_half_split with {h} heads of D = {d} (each head's rows are reordered within that head)",
           rtol=0, atol=0)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.points(2)
@pytest.mark.parametrize("d", [6, 12])
def test_layout_direction(learner, d):
    w = torch.arange(d, dtype=torch.float64)[:, None].expand(d, 2).contiguous()
    expect(learner.interleaved_to_half_split(w, 1), interleaved_to_half_split(w, 1),
           what=f"interleaved_to_half_split of one head of D = {d} (row 2i + a of the input goes to row a·D/2 + i)",
           rtol=0, atol=0)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.points(2)
@pytest.mark.parametrize("h,d,dtype", [(1, 8, torch.float32), (4, 16, torch.bfloat16), (8, 128, torch.float64)],
                         ids=["H1D8-float32", "H4D16-bfloat16", "H8D128-float64"])
def test_layout_bias(learner, h, d, dtype):
    b = rand(h * d, seed=25, dtype=dtype)
    expect(learner.interleaved_to_half_split(b, h), interleaved_to_half_split(b, h),
           what=f"interleaved_to_half_split of a {dname(dtype)} bias of shape ({h * d},), {h} head{'s' * (h != 1)}", rtol=0, atol=0)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=dname)
def test_layout_keeps_dtype(learner, dtype):
    w = _weight(2, 8, 5, seed=21, dtype=dtype)
    expect(learner.interleaved_to_half_split(w, 2), interleaved_to_half_split(w, 2),
           what=f"interleaved_to_half_split of a {dname(dtype)} weight of shape (16, 5)", rtol=0, atol=0)


@pytest.mark.exercise("rope_convert_layout")
@pytest.mark.points(2)
def test_layout_gives_equal_scores(learner):
    C, H, D, T = 24, 3, 8, 11
    w_q, w_k = rand(H * D, C, seed=22, dtype=torch.float64), rand(H * D, C, seed=23, dtype=torch.float64)
    x = rand(2, T, C, seed=24, dtype=torch.float64)
    pos = torch.arange(T) + 4

    def scores(wq, wk, interleaved):
        q = (x @ wq.T).view(2, T, H, D).transpose(1, 2)                 # (B, H, T, D)
        k = (x @ wk.T).view(2, T, H, D).transpose(1, 2)
        return apply_rope(q, pos, interleaved=interleaved) @ apply_rope(k, pos, interleaved=interleaved).transpose(-2, -1)

    wq2, wk2 = learner.interleaved_to_half_split(w_q, H), learner.interleaved_to_half_split(w_k, H)
    expect(wq2, interleaved_to_half_split(w_q, H), what="the converted W_Q of shape (24, 24), 3 heads")
    expect(scores(wq2, wk2, False), scores(w_q, w_k, True),
           what="attention scores of the converted weights with half-split RoPE (must equal the interleaved model's)")


# ================================================================================ rope_ntk
NTK_CASES = [  # (dim, scale, base)
    (4, 1.0, 10000.0), (4, 2.0, 500000.0), (6, 3.0, 10000.0), (64, 8.0, 1000000.0), (128, 4.0, 500000.0),
    (128, 16.5, 500000.0), (10, 1.5, 10.0), (256, 2.0, 10000.0),
]


def _nid(case):
    return "D{}-s{:g}-b{:g}".format(*case)


def _call_ntk(learner, dim, scale, base):
    return learner.ntk_frequencies(dim, scale) if base == 10000.0 else learner.ntk_frequencies(dim, scale, base=base)


@pytest.mark.exercise("rope_ntk")
@pytest.mark.parametrize("case", NTK_CASES, ids=_nid)
def test_ntk_matches_formula(learner, case):
    dim, scale, base = case
    expect(_call_ntk(learner, dim, scale, base), ntk_frequencies(dim, scale, base, dtype=torch.float64),
           what=f"ntk_frequencies({dim}, {scale:g}, base={base:g})")


@pytest.mark.exercise("rope_ntk")
@pytest.mark.points(2)
@pytest.mark.parametrize("dim,scale,base", [(16, 4.0, 500000.0), (96, 32.0, 10000.0)])
def test_ntk_ends(learner, dim, scale, base):
    out = _call_ntk(learner, dim, scale, base)
    if isinstance(out, Foreign) or type(out) is not torch.Tensor:
        expect(out, ntk_frequencies(dim, scale, base, dtype=torch.float64), what=f"ntk_frequencies({dim}, {scale:g})")
    theta = rope_frequencies(dim, base, dtype=torch.float64)
    expect_true(out.shape == (dim // 2,), f"ntk_frequencies({dim}, {scale:g}) should have shape ({dim // 2},)")
    expect(out[:1].double(), theta[:1], what=f"the fastest frequency θ'_0 of ntk_frequencies({dim}, {scale:g}) (must stay 1)",
           check_dtype=False)
    expect(out[-1:].double(), theta[-1:] / scale,
           what=f"the slowest frequency of ntk_frequencies({dim}, {scale:g}) (must be θ_last / s)", check_dtype=False)


@pytest.mark.exercise("rope_ntk")
@pytest.mark.points(2)
def test_ntk_is_not_pi(learner):
    # Between the ends NTK slows pairs down less than PI does.
    out = learner.ntk_frequencies(64, 8.0)
    expect(out, ntk_frequencies(64, 8.0, dtype=torch.float64),
           what="ntk_frequencies(64, 8.0) (the middle pairs must be slowed down less than by PI's 1/s)")
    pi = pi_frequencies(64, 8.0, dtype=torch.float64)
    expect_true(type(out) is torch.Tensor and bool((out[1:-1].double() > pi[1:-1]).all()),
                "ntk_frequencies(64, 8.0): the middle frequencies must be larger than θ_i / s")


@pytest.mark.exercise("rope_ntk")
def test_ntk_returns_float64(learner):
    expect(learner.ntk_frequencies(8, 2.0), ntk_frequencies(8, 2.0, dtype=torch.float64),
           what="ntk_frequencies(8, 2.0) (a float64 tensor of shape (4,))")
