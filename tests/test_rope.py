"""attncourse.rope against independent oracles: explicit 2×2 rotations in Python loops, the
complex-number form, Hugging Face's rotate_half formula written out, and the papers' formulas."""
from __future__ import annotations

import cmath
import math

import pytest
import torch

from attncourse.core import attention
from attncourse.masks import causal_mask
from attncourse.rope import (apply_rope, half_split_permutation, half_split_to_interleaved,
                             interleaved_to_half_split, ntk_frequencies, pi_frequencies, rope_frequencies,
                             rotate_half, yarn_frequencies, yarn_ramp)
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def loop_rope(x, positions, base=10000.0, interleaved=False):
    """The definition, one 2×2 rotation at a time, in Python floats. x: (T, D)."""
    T, D = x.shape
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(T):
        m = float(positions[t])
        for i in range(D // 2):
            theta = base ** (-2 * i / D)
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + D // 2)
            c, s = math.cos(m * theta), math.sin(m * theta)
            xa, xb = float(x[t, a]), float(x[t, b])
            out[t, a] = c * xa - s * xb
            out[t, b] = s * xa + c * xb
    return out


def complex_rope(x, positions, base=10000.0):
    """RoFormer's complex form: interleaved pair (2i, 2i+1) is x_2i + i·x_2i+1, times e^{i m θ_i}."""
    T, D = x.shape
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(T):
        for i in range(D // 2):
            z = complex(float(x[t, 2 * i]), float(x[t, 2 * i + 1])) * cmath.exp(1j * float(positions[t]) * base ** (-2 * i / D))
            out[t, 2 * i], out[t, 2 * i + 1] = z.real, z.imag
    return out


SIZES = [(1, 2), (5, 4), (7, 6), (97, 8), (3, 64)]


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("T,D", SIZES)
def test_matches_explicit_rotations(T, D, interleaved):
    x = rand(T, D, seed=T * D)
    pos = torch.arange(T) + 11                                     # positions that do not start at 0
    assert_matches(apply_rope(x, pos, interleaved=interleaved), loop_rope(x, pos, interleaved=interleaved))


@pytest.mark.parametrize("T,D", [(4, 2), (9, 10), (33, 16)])
def test_interleaved_matches_complex_form(T, D):
    x = rand(T, D, seed=1)
    pos = torch.randint(0, 5000, (T,), generator=torch.Generator().manual_seed(2))
    assert_matches(apply_rope(x, pos, interleaved=True), complex_rope(x, pos))
    # torch's own complex arithmetic, as in Meta's Llama code
    xc = torch.view_as_complex(x.reshape(T, D // 2, 2).contiguous())
    rot = torch.polar(torch.ones(T, D // 2, dtype=torch.float64), pos[:, None].double() * rope_frequencies(D, dtype=torch.float64))
    assert_matches(apply_rope(x, pos, interleaved=True), torch.view_as_real(xc * rot).flatten(-2))


def test_half_split_is_hugging_face_formula():
    B, H, T, D = 2, 3, 7, 12
    x = rand(B, H, T, D, seed=3)
    pos = torch.arange(T) + 5
    freqs = pos[:, None].double() * rope_frequencies(D, dtype=torch.float64)   # (T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)                                    # (T, D)
    assert_matches(apply_rope(x, pos), x * emb.cos() + rotate_half(x) * emb.sin())


def test_frequencies_formula():
    for D in (2, 4, 6, 64, 128):
        want = torch.tensor([10000.0 ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
        assert_matches(rope_frequencies(D, dtype=torch.float64), want)
        assert rope_frequencies(D).dtype == torch.float32
    assert_matches(rope_frequencies(8, 500000.0, dtype=torch.float64),
                   torch.tensor([500000.0 ** (-i / 4) for i in range(4)], dtype=torch.float64))


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
def test_scores_depend_on_offset_only(interleaved):
    D = 32
    q, k = rand(1, D, seed=4), rand(1, D, seed=5)
    for m, n in [(0, 0), (3, 7), (100, 40), (2000, 1999)]:
        base_score = (apply_rope(q, torch.tensor([m]), interleaved=interleaved)
                      @ apply_rope(k, torch.tensor([n]), interleaved=interleaved).T)
        for shift in (1, 17, 12345):
            shifted = (apply_rope(q, torch.tensor([m + shift]), interleaved=interleaved)
                       @ apply_rope(k, torch.tensor([n + shift]), interleaved=interleaved).T)
            assert_matches(shifted, base_score, rtol=1e-9, atol=1e-9)


def test_rotation_keeps_norms_and_position_zero_is_identity():
    x = rand(2, 4, 9, 16, seed=6)
    out = apply_rope(x, torch.arange(9) * 37)
    assert_matches(out.norm(dim=-1), x.norm(dim=-1))
    assert_matches(apply_rope(x, torch.zeros(9, dtype=torch.long)), x)


def test_per_sequence_positions_and_cache_offset():
    B, H, T, D = 3, 2, 6, 8
    x = rand(B, H, T, D, seed=7)
    pos = torch.stack([torch.arange(T) + o for o in (0, 4, 50)])              # (B, T)
    out = apply_rope(x, pos)
    for b in range(B):
        assert_matches(out[b], apply_rope(x[b], pos[b]))
    # decoding: rotating only the last token at its absolute position = the last row of the full rotation
    full = apply_rope(x, torch.arange(T))
    assert_matches(apply_rope(x[:, :, -1:], torch.tensor([T - 1])), full[:, :, -1:])


def test_gradcheck_float64():
    x = rand(2, 3, 5, 6, seed=8).requires_grad_(True)
    pos = torch.arange(5) + 3
    for interleaved in (False, True):
        assert torch.autograd.gradcheck(lambda t: apply_rope(t, pos, interleaved=interleaved), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    x = rand(2, 2, 11, 16, seed=9)
    pos = torch.arange(11) + 1000
    out = apply_rope(x.to(dtype), pos)
    assert out.dtype == dtype
    assert_matches(out, apply_rope(x, pos).to(dtype), check_dtype=True,
                   **({} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}))


def test_layout_permutation():
    for D in (2, 6, 16):
        p = half_split_permutation(D)
        assert sorted(p.tolist()) == list(range(D))
        x = rand(5, D, seed=D)
        pos = torch.arange(5) + 2
        assert_matches(apply_rope(x[..., p], pos), apply_rope(x, pos, interleaved=True)[..., p])


def test_weight_conversion_gives_equal_scores():
    C, H, D, T = 24, 3, 8, 10
    w_q, w_k = rand(H * D, C, seed=10), rand(H * D, C, seed=11)      # nn.Linear layout (out, in)
    x = rand(2, T, C, seed=12)
    pos = torch.arange(T)

    def scores(wq, wk, interleaved):
        q = (x @ wq.T).view(2, T, H, D).transpose(1, 2)                # (B, H, T, D)
        k = (x @ wk.T).view(2, T, H, D).transpose(1, 2)
        q, k = apply_rope(q, pos, interleaved=interleaved), apply_rope(k, pos, interleaved=interleaved)
        return q @ k.transpose(-2, -1)

    original = scores(w_q, w_k, interleaved=True)
    converted = scores(interleaved_to_half_split(w_q, H), interleaved_to_half_split(w_k, H), interleaved=False)
    assert_matches(converted, original)
    assert (scores(w_q, w_k, interleaved=False) - original).abs().max() > 1.0     # without converting: wrong
    assert torch.equal(half_split_to_interleaved(interleaved_to_half_split(w_q, H), H), w_q)
    bias = rand(H * D, seed=13)
    assert torch.equal(interleaved_to_half_split(bias, H), bias.view(H, D)[:, half_split_permutation(D)].reshape(-1))


def test_pi_is_interpolated_positions():
    D, s = 16, 4.0
    x = rand(12, D, seed=14)
    pos = torch.arange(12) * 7
    assert_matches(apply_rope(x, pos, inv_freq=pi_frequencies(D, s, dtype=torch.float64)),
                   apply_rope(x, pos.double() / s))
    assert_matches(pi_frequencies(D, s, dtype=torch.float64), rope_frequencies(D, dtype=torch.float64) / s)


def test_ntk_formula_and_ends():
    D, s = 64, 8.0
    theta = rope_frequencies(D, dtype=torch.float64)
    ntk = ntk_frequencies(D, s, dtype=torch.float64)
    want = torch.tensor([(10000.0 * s ** (D / (D - 2))) ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    assert_matches(ntk, want)
    assert_matches(ntk[:1], theta[:1])                 # the highest frequency is unchanged
    assert_matches(ntk[-1:], theta[-1:] / s)           # the lowest is interpolated by exactly s
    assert torch.all(ntk <= theta * (1 + 1e-12)) and torch.all(ntk >= theta / s * (1 - 1e-12))


def test_yarn_matches_paper_formula():
    D, s, L = 64, 4.0, 1024
    new, factor = yarn_frequencies(D, s, L, dtype=torch.float64)
    assert math.isclose(factor, 0.1 * math.log(s) + 1)
    for i in range(D // 2):
        theta = 10000.0 ** (-2 * i / D)
        r = L / (2 * math.pi / theta)
        gamma = 0.0 if r < 1 else 1.0 if r > 32 else (r - 1) / 31
        assert math.isclose(float(new[i]), (1 - gamma) * theta / s + gamma * theta, rel_tol=1e-12)
    assert float(new[0]) == 1.0                                     # fast pairs keep their frequency
    assert math.isclose(float(new[-1]), 10000.0 ** (-(D - 2) / D) / s, rel_tol=1e-12)   # slow pairs: PI
    assert_matches(yarn_ramp(torch.tensor([0.5, 1.0, 16.5, 32.0, 40.0], dtype=torch.float64)),
                   torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0], dtype=torch.float64))


def test_rope_in_attention_is_shift_invariant():
    B, H, T, D = 1, 2, 9, 8
    q, k, v = rand(B, H, T, D, seed=15), rand(B, H, T, D, seed=16), rand(B, H, T, D, seed=17)
    m = causal_mask(T)

    def out(offset):
        pos = torch.arange(T) + offset
        return attention(apply_rope(q, pos), apply_rope(k, pos), v, mask=m)

    assert_matches(out(1000), out(0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(3, 5), positions=torch.arange(3)),              # odd head dim
    dict(x=torch.zeros(3, 0), positions=torch.arange(3)),              # empty head dim
    dict(x=torch.zeros(3, 4), positions=torch.arange(4)),              # wrong length
    dict(x=torch.zeros(2, 2, 3, 4), positions=torch.zeros(3, 3)),      # (B, T) with the wrong B
    dict(x=torch.zeros(3, 4), positions=torch.zeros(1, 3)),            # (B, T) for a 2-D x
    dict(x=torch.zeros(3, 4), positions=torch.zeros(1, 1, 3)),         # 3-D positions
    dict(x=torch.zeros(3, 4), positions=torch.arange(3), inv_freq=torch.ones(3)),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        apply_rope(**bad)


def test_bad_arguments():
    for fn, args in [(rope_frequencies, (5,)), (rope_frequencies, (0,)), (rope_frequencies, (8, 1.0)),
                     (pi_frequencies, (8, 0.5)), (ntk_frequencies, (2, 2.0)), (yarn_frequencies, (8, 2.0, 0)),
                     (half_split_permutation, (3,)), (interleaved_to_half_split, (torch.zeros(10, 4), 3)),
                     (interleaved_to_half_split, (torch.zeros(12, 4), 0)),
                     (half_split_to_interleaved, (torch.zeros(9, 4), 3))]:
        with pytest.raises(ValueError):
            fn(*args)
    with pytest.raises(TypeError):
        apply_rope(torch.zeros(3, 4, dtype=torch.long), torch.arange(3))
    with pytest.raises(TypeError):
        apply_rope(torch.zeros(3, 4), [0, 1, 2])
