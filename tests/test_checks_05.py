"""Chapter 05's public checks: the references pass; each classic mistake fails with a message that names it."""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.checks import check
from attncourse.checks.ch05_sliding_window import reference_receptive_field, reference_sliding_window_attention
from attncourse.masks import sliding_window_mask, streaming_mask
from check_helpers import assert_fails_saying

GOOD = {
    "window_mask": sliding_window_mask,
    "streaming_mask": streaming_mask,
    "sliding_window_attention": reference_sliding_window_attention,
    "receptive_field": reference_receptive_field,
}


def _d(tq, tk, top_left=False):
    p = torch.arange(tq).view(-1, 1) + (0 if top_left else tk - tq)
    return p - torch.arange(tk).view(1, -1)


def abs_window(tq, tk, window, causal=True):
    return _d(tq, tk).abs() < window


def w_plus_1(tq, tk, window, causal=True):
    d = _d(tq, tk)
    return (d >= 0) & (d <= window) if causal else d.abs() <= window


def top_left(tq, tk, window, causal=True):
    d = _d(tq, tk, top_left=True)
    return (d >= 0) & (d < window) if causal else d.abs() < window


def noncausal_sinks(tq, tk, window, n_sinks):
    return sliding_window_mask(tq, tk, window) | (torch.arange(tk) < n_sinks).view(1, -1)


def _blocked(q, k, v, window, block, lo_rule):
    tq, tk = q.shape[-2], k.shape[-2]
    outs = []
    for i0 in range(0, tq, block):
        i1 = min(i0 + block, tq)
        hi, lo = i1 + tk - tq, max(lo_rule(i0 + tk - tq, window), 0)
        if hi <= 0:
            outs.append(q.new_zeros(*q.shape[:-2], i1 - i0, v.shape[-1]))
            continue
        s = q[..., i0:i1, :] @ k[..., lo:hi, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
        keep = sliding_window_mask(i1 - i0, hi - lo, window)
        w = torch.where(keep.any(-1, keepdim=True), torch.softmax(s.masked_fill(~keep, float("-inf")), -1), 0.0)
        outs.append(w @ v[..., lo:hi, :])
    return torch.cat(outs, dim=-2)


def forgets_previous_block(q, k, v, window, block=64):
    return _blocked(q, k, v, window, block, lambda start, w: start)


def dense(q, k, v, window, block=64):
    keep = sliding_window_mask(q.shape[-2], k.shape[-2], window)
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
    return torch.where(keep.any(-1, keepdim=True), torch.softmax(s, -1), 0.0) @ v


def nan_rows(q, k, v, window, block=64):
    keep = sliding_window_mask(q.shape[-2], k.shape[-2], window)
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    result = check(ex_id, GOOD[ex_id])
    assert result and result.passed == result.total >= 3
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("window_mask", abs_window, "|i - j| < W, which lets a query see W - 1 keys in its future"),
    ("window_mask", w_plus_1, "off by one: each query sees W + 1 keys"),
    ("window_mask", top_left, "aligned top-left"),
    ("window_mask", lambda tq, tk, w, causal=True: sliding_window_mask(tq, tk, w, causal).int(),
     "dtype torch.int32, expected torch.bool"),
    ("streaming_mask", noncausal_sinks, "sink keys that come after it"),
    ("sliding_window_attention", forgets_previous_block, "each block attends only to its own keys"),
    ("sliding_window_attention", dense, "your function reads keys outside the window"),
    ("sliding_window_attention", nan_rows, "contains NaN"),
    ("receptive_field", lambda w, layers, causal=True: layers * w, "L·W counts the query's own position"),
    ("receptive_field", lambda w, layers, causal=True: layers * (w - 1), "the output's own position counts too"),
    ("receptive_field", lambda w, layers, causal=True: float(layers * (w - 1) + 1), "should return a Python int"),
])
def test_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
