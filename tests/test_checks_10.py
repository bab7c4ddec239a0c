"""Chapter 10's public checks: the reference passes, each classic RoPE mistake fails with a specific hint."""
import pytest
import torch

from attncourse.rope import (apply_rope, half_split_to_interleaved, interleaved_to_half_split, ntk_frequencies,
                             pi_frequencies, rope_frequencies)
from check_helpers import assert_fails_saying, assert_passes


pytestmark = pytest.mark.usefixtures("one_thread")


GOOD = {
    "rope_rotate": lambda x, positions, base=10000.0: apply_rope(x, positions, base=base),
    "rope_convert_layout": interleaved_to_half_split,
    "rope_ntk": lambda dim, scale, base=10000.0: ntk_frequencies(dim, scale, base, dtype=torch.float64),
}


def rotate_adjacent(x, positions, base=10000.0):
    return apply_rope(x, positions, base=base, interleaved=True)


def rotate_i_over_d(x, positions, base=10000.0):
    D = x.shape[-1]
    freq = (base ** (-torch.arange(D // 2, dtype=torch.float64) / D)).to(x.dtype)
    return apply_rope(x, positions, base=base, inv_freq=freq)


def rotate_ignoring_positions(x, positions, base=10000.0):
    return apply_rope(x, torch.arange(x.shape[-2]), base=base)


def rotate_backwards(x, positions, base=10000.0):
    return apply_rope(x, -positions, base=base)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("rope_rotate", rotate_adjacent, "adjacent pairs (2i, 2i+1)"),
    ("rope_rotate", rotate_i_over_d, "base^(-i/D)"),
    ("rope_rotate", rotate_ignoring_positions, "ignored `positions`"),
    ("rope_rotate", rotate_backwards, "turns the wrong way"),
    ("rope_rotate", lambda x, positions, base=10000.0: apply_rope(x.float(), positions, base=base),
     "dtype torch.float32, expected torch.float64"),
    ("rope_convert_layout", lambda w, n_heads: interleaved_to_half_split(w, 1), "as if they were one head"),
    ("rope_convert_layout", half_split_to_interleaved, "opposite direction"),
    ("rope_ntk", lambda dim, scale, base=10000.0: pi_frequencies(dim, scale, base, dtype=torch.float64),
     "position-interpolation frequencies"),
    ("rope_ntk", lambda dim, scale, base=10000.0: rope_frequencies(dim, base * scale, dtype=torch.float64),
     "multiplied the base by s"),
    ("rope_ntk", lambda dim, scale, base=10000.0: (base * scale ** (dim / (dim - 2))) ** (
        -torch.arange(dim // 2, dtype=torch.float64) / dim), "exponent looks like -i/D"),
    ("rope_ntk", lambda dim, scale, base=10000.0: ntk_frequencies(dim, scale, base), "dtype torch.float32"),
])
def test_classic_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
