"""Public checks for chapter 09 (grouped-query attention).

The references adapt :mod:`attncourse.gqa`, :mod:`attncourse.kvcache` and
:mod:`attncourse.multihead` to the exercises' signatures (the hidden tests in
``tests/autograder/test_09_gqa.py`` use the same adapters).
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.gqa import kv_head_index, mean_pool_kv_heads
from attncourse.kvcache import kv_cache_bytes
from attncourse.multihead import attention_param_count
from attncourse.testing import compare


# ------------------------------------------------------------------------- references
def reference_kv_head_index(n_heads, n_kv_heads):
    return kv_head_index(n_heads, n_kv_heads)


def reference_mean_pool_kv(weight, n_kv_heads, new_kv_heads):
    return mean_pool_kv_heads(weight, n_kv_heads, new_kv_heads)


def reference_gqa_table(d_model, n_heads, n_layers, tokens, dtype_bytes=2):
    """``(k, 3)`` int64 rows ``(Hkv, attention parameters per layer, cache bytes)``, Hkv = H .. 1 dividing H."""
    D = d_model // n_heads
    rows = [(hkv, attention_param_count(d_model, n_heads, hkv), kv_cache_bytes(n_layers, hkv, D, tokens,
             dtype_bytes=dtype_bytes)) for hkv in range(n_heads, 0, -1) if n_heads % hkv == 0]
    return torch.tensor(rows, dtype=torch.long)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------- kv_head_index
@case("kv_head_index", "8 query heads over 2 K/V heads: [0, 0, 0, 0, 1, 1, 1, 1]")
def _(fn):
    out = fn(8, 2)
    if isinstance(out, torch.Tensor) and out.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]:
        return "that is h % Hkv (the order of `repeat`); consecutive query heads share a K/V head: h // (H // Hkv)"
    return compare(out, reference_kv_head_index(8, 2), what="kv_head_index(8, 2)")


@case("kv_head_index", "MHA (Hkv = H) and MQA (Hkv = 1) are the two ends")
def _(fn):
    return (compare(fn(4, 4), reference_kv_head_index(4, 4), what="kv_head_index(4, 4)")
            or compare(fn(4, 1), reference_kv_head_index(4, 1), what="kv_head_index(4, 1)"))


@case("kv_head_index", "H not a multiple of Hkv raises ValueError")
def _(fn):
    try:
        fn(6, 4)
    except ValueError:
        return None
    except Exception as exc:  # noqa: BLE001 - learner code
        return f"raised {type(exc).__name__}, expected ValueError (6 query heads cannot share 4 K/V heads evenly)"
    return "returned a value for 6 query heads over 4 K/V heads; raise ValueError"


# ------------------------------------------------------------------------ mean_pool_kv
@case("mean_pool_kv", "4 K/V heads of D=2 pooled into 2: heads (0, 1) and (2, 3) averaged")
def _(fn):
    w = torch.arange(8.0)[:, None] * torch.ones(1, 3)          # row r = r: head j holds rows 2j, 2j+1
    out = fn(w, 4, 2)
    if isinstance(out, torch.Tensor) and out.shape == (4, 3):
        strided = w.view(2, 2, 2, 3).mean(0).reshape(4, 3)      # heads (0, 2) and (1, 3)
        if torch.equal(out, strided):
            return ("you averaged heads 0 and 2 (every Hkv'-th head); the query heads grouped onto new head g "
                    "used old heads g·r .. g·r + r - 1, consecutive ones")
    return compare(out, reference_mean_pool_kv(w, 4, 2), what="mean_pool_kv of a (8, 3) weight, 4 -> 2 heads")


@case("mean_pool_kv", "to one K/V head (MQA): the mean of all heads")
def _(fn):
    w = torch.randn(12, 5, generator=_gen(1))
    return compare(fn(w, 4, 1), reference_mean_pool_kv(w, 4, 1), what="mean_pool_kv of a (12, 5) weight, 4 -> 1 head")


@case("mean_pool_kv", "a bias (1-D, Hkv·D entries) pools the same way")
def _(fn):
    b = torch.randn(12, generator=_gen(2))
    return compare(fn(b, 6, 3), reference_mean_pool_kv(b, 6, 3), what="mean_pool_kv of a bias of 12 entries, 6 -> 3")


# -------------------------------------------------------------------------- gqa_table
@case("gqa_table", "C=64, H=4, 2 layers, 100 tokens: rows for Hkv = 4, 2, 1")
def _(fn):
    out = fn(64, 4, 2, 100)
    want = reference_gqa_table(64, 4, 2, 100)
    if isinstance(out, torch.Tensor) and out.shape == want.shape and torch.equal(out[:, 0], want[:, 0]) \
            and torch.equal(out[:, 2] * 2, want[:, 2]):
        return "the cache bytes are half the expected ones: every layer caches K *and* V"
    return compare(out, want, what="gqa_table(64, 4, 2, 100)")


@case("gqa_table", "H = 6 has four divisors (6, 3, 2, 1); 4 and 5 are not valid")
def _(fn):
    return compare(fn(48, 6, 1, 10, dtype_bytes=4), reference_gqa_table(48, 6, 1, 10, 4),
                   what="gqa_table(48, 6, 1, 10, dtype_bytes=4)")


@case("gqa_table", "a Llama-2-7B-sized model (C=4096, H=32, 32 layers) at 4096 tokens")
def _(fn):
    return compare(fn(4096, 32, 32, 4096), reference_gqa_table(4096, 32, 32, 4096),
                   what="gqa_table(4096, 32, 32, 4096)")
