"""Chapter 09's public checks: the references pass, each classic mistake fails with a specific hint."""
import pytest
import torch

from attncourse.checks.ch09_gqa import reference_gqa_table, reference_kv_head_index, reference_mean_pool_kv
from check_helpers import assert_fails_saying, assert_passes

GOOD = {
    "kv_head_index": reference_kv_head_index,
    "mean_pool_kv": reference_mean_pool_kv,
    "gqa_table": reference_gqa_table,
}


def strided_pool(w, n_kv, new):
    D = w.shape[0] // n_kv
    return w.reshape(n_kv // new, new, D, *w.shape[1:]).mean(0).reshape(new * D, *w.shape[1:])


def half_cache_table(C, H, L, T, dtype_bytes=2):
    t = reference_gqa_table(C, H, L, T, dtype_bytes).clone()
    t[:, 2] //= 2
    return t


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("kv_head_index", lambda H, Hkv: torch.arange(H) % Hkv, "h % Hkv"),
    ("kv_head_index", lambda H, Hkv: torch.arange(H) // (H // Hkv), "raise ValueError"),
    ("kv_head_index", lambda H, Hkv: (torch.arange(H) // (H // Hkv)).int(), "dtype torch.int32"),
    ("mean_pool_kv", strided_pool, "every Hkv'-th head"),
    ("mean_pool_kv", lambda w, n, m: w.reshape(m, n // m, -1).sum(1).reshape(-1, *w.shape[1:]),
     "differs from the expected values"),
    ("gqa_table", half_cache_table, "K *and* V"),
    ("gqa_table", lambda C, H, L, T, dtype_bytes=2: reference_gqa_table(C, H, L, T, dtype_bytes).flip(0),
     "differs from the expected values"),
])
def test_classic_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)
