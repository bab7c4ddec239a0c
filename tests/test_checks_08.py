"""Chapter 08's public checks: the references pass, each classic grouping mistake fails with a specific hint."""

import pytest
import torch

from attncourse.checks.ch08_mqa import (reference_decode_intensity, reference_grouped_attention,
                                        reference_mqa_layer)
from attncourse.core import attention
from attncourse.masks import causal_mask
from check_helpers import assert_fails_saying, assert_passes

GOOD = {
    "grouped_attention": reference_grouped_attention,
    "mqa_layer": reference_mqa_layer,
    "decode_intensity": reference_decode_intensity,
}


def repeat_order(q, k, v, causal=False):
    G = q.shape[1] // k.shape[1]
    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    return attention(q, k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1), mask=mask)


def top_left(q, k, v, causal=False):
    G = q.shape[1] // k.shape[1]
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril() if causal else None
    return attention(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), mask=mask)


def layer_split_kv_as_queries(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=1, causal=False):
    """Pads K/V to C columns and splits them into H heads (as if there were no sharing)."""
    return reference_mqa_layer(x, w_q, w_k.repeat(1, n_heads // n_kv_heads), w_v.repeat(1, n_heads // n_kv_heads),
                               w_o, n_heads, n_heads, causal)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("grouped_attention", repeat_order, "h % Hkv"),
    ("grouped_attention", top_left, "grouped_attention(causal=True) with Tq=1, Tk=7"),
    ("grouped_attention", lambda q, k, v, causal=False: reference_grouped_attention(q.float(), k.float(), v.float(),
                                                                                     causal), "dtype torch.float32"),
    ("mqa_layer", layer_split_kv_as_queries, "differs from the expected values"),
    ("decode_intensity", lambda H, Hkv, D, t, dtype_bytes=2: reference_decode_intensity(H, H, D, t, dtype_bytes),
     "not the H query heads"),
    ("decode_intensity", lambda H, Hkv, D, t, dtype_bytes=2: 4 * H * D * t // (dtype_bytes * 2 * Hkv * D * t),
     "should be a Python float"),
    ("decode_intensity", lambda H, Hkv, D, t, dtype_bytes=2: 4 * H * D * t / (dtype_bytes * Hkv * D * t),
     "expected"),
])
def test_classic_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
