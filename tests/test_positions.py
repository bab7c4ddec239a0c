"""Sinusoidal positions against the formula evaluated entry by entry."""
import math

import pytest
import torch

from attncourse.positions import sinusoidal_positions


def loop_positions(n, d, base=10000.0):
    pe = torch.empty(n, d, dtype=torch.float64)
    for col in range(d):
        omega = base ** (-2 * (col // 2) / d)
        for p in range(n):
            pe[p, col] = math.sin(p * omega) if col % 2 == 0 else math.cos(p * omega)
    return pe.float()


@pytest.mark.parametrize("n, d, base", [(1, 1, 1e4), (6, 8, 1e4), (7, 5, 1e4), (97, 64, 1e4), (33, 3, 500.0)])
def test_matches_formula(n, d, base):
    got = sinusoidal_positions(n, d, base)
    assert got.dtype == torch.float32 and got.shape == (n, d)
    torch.testing.assert_close(got, loop_positions(n, d, base), rtol=0, atol=1e-6)


def test_position_zero_is_sin0_cos0():
    assert sinusoidal_positions(1, 6)[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("n, d", [(0, 4), (4, 0), (2.5, 4)])
def test_bad_sizes(n, d):
    with pytest.raises(ValueError, match="positive integers"):
        sinusoidal_positions(n, d)
