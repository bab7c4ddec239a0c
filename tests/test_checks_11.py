"""Chapter 11's public checks: the reference passes, each classic ALiBi mistake fails with a specific hint."""
import math

import pytest
import torch

from attncourse.alibi import alibi_attention, alibi_bias, alibi_slopes
from attncourse.core import attention
from check_helpers import assert_fails_saying, assert_passes

GOOD = {
    "alibi_slopes": alibi_slopes,
    "alibi_bias": alibi_bias,
    "alibi_attention": lambda q, k, v, causal=True: alibi_attention(q, k, v, causal=causal),
}


pytestmark = pytest.mark.usefixtures("one_thread")



def naive_slopes(n):
    return torch.tensor([2.0 ** (-8 * k / n) for k in range(1, n + 1)])


def next_power_slopes(n):
    p = 2 ** math.ceil(math.log2(n))
    return torch.tensor([2.0 ** (-8 * k / p) for k in range(1, n + 1)])


def top_left_bias(n, tq, tk):
    i, j = torch.arange(tq)[:, None], torch.arange(tk)[None, :]
    return -alibi_slopes(n)[:, None, None] * (i - j)


def top_left_attention(q, k, v, causal=True):
    H, tq, tk = q.shape[1], q.shape[2], k.shape[2]
    if not causal:
        return alibi_attention(q, k, v, causal=False)
    return attention(q, k, v, bias=alibi_bias(H, tq, tk, dtype=q.dtype), mask=torch.ones(tq, tk, dtype=torch.bool).tril())


def unscaled_attention(q, k, v, causal=True):
    return alibi_attention(q * math.sqrt(q.shape[-1]), k, v, causal=causal)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("alibi_slopes", lambda n: 2.0 ** torch.arange(n, dtype=torch.float32), "not 1, 2, 4"),
    ("alibi_slopes", naive_slopes, "not a power of two: the paper does not use 2^(-8k/12)"),
    ("alibi_slopes", next_power_slopes, "first 12 slopes of 16 heads"),
    ("alibi_slopes", lambda n: alibi_slopes(n).double(), "dtype torch.float64, expected torch.float32"),
    ("alibi_bias", lambda n, tq, tk: -alibi_bias(n, tq, tk), "sign is flipped"),
    ("alibi_bias", top_left_bias, "aligned top-left"),
    ("alibi_bias", lambda n, tq, tk: alibi_bias(n, tq, tk).clamp(max=0), "future keys too"),
    ("alibi_attention", top_left_attention, "aligned top-left"),
    ("alibi_attention", unscaled_attention, "not divided by √D"),
    ("alibi_attention", lambda q, k, v, causal=True: attention(q, k, v, bias=alibi_bias(q.shape[1], q.shape[2], k.shape[2],
                                                               symmetric=not causal, dtype=q.dtype)),
     "future keys are not masked"),
])
def test_classic_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
