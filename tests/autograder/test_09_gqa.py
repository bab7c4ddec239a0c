"""Hidden tests for chapter 09 (grouped-query attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the references of ``attncourse.checks.ch09_gqa`` and compared with
``expect`` (no hidden values in messages).

Coverage:
- kv_head_index: MHA (Hkv = H), MQA (Hkv = 1), GQA with 1 < Hkv < H (consecutive heads; h % Hkv fails), H = 1,
  odd group sizes (H = 9, Hkv = 3), H = 64, dtype int64 and shape (H,), ValueError when H % Hkv != 0.
- mean_pool_kv: weights (Hkv·D, C) and biases (Hkv·D,), r = 1, 2, 4, 8 (to one head), odd D and C, D = 1,
  consecutive groups (strided pooling fails), mean not sum, float32 and float64 (dtype kept), the result makes a
  layer with equal heads per group exact.
- gqa_table: H with many divisors (12, 32) and a prime H (7), H = 1, rows in decreasing Hkv (non-divisors
  excluded), parameters 2C² + 2C·Hkv·D, cache bytes with K and V, n_layers, tokens, dtype_bytes 1/2/4, default
  argument, int64 dtype and shape (k, 3), a Llama-2-7B-sized model.
"""
from __future__ import annotations

import pytest
import torch

from attncourse.checks.ch09_gqa import reference_gqa_table, reference_kv_head_index, reference_mean_pool_kv
from attncourse.grading.testkit import LearnerFailure, dname, expect, expect_true, rand
from attncourse.multihead import MultiHeadAttention

EXERCISES = {
    "kv_head_index": {"function": "kv_head_index", "points": 2},
    "mean_pool_kv": {"function": "mean_pool_kv", "points": 3},
    "gqa_table": {"function": "gqa_table", "points": 3},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
FORBIDDEN = {
    "attncourse.gqa.kv_head_index": ["kv_head_index"],
    "attncourse.gqa.mean_pool_kv_heads": ["mean_pool_kv"],
    "attncourse.gqa.convert_to_gqa": ["mean_pool_kv"],
    "attncourse.kvcache.kv_cache_bytes": ["gqa_table"],
    "attncourse.multihead.attention_param_count": ["gqa_table"],
}


# ========================================================================= kv_head_index
INDEX_CASES = [(1, 1), (4, 4), (4, 1), (8, 2), (6, 3), (9, 3), (12, 4), (64, 8), (32, 16)]


@pytest.mark.exercise("kv_head_index")
@pytest.mark.parametrize("case", INDEX_CASES, ids=lambda c: "H{}-Hkv{}".format(*c))
def test_index_matches_convention(learner, case):
    H, Hkv = case
    expect(learner.kv_head_index(H, Hkv), reference_kv_head_index(H, Hkv),
           what=f"kv_head_index({H}, {Hkv}) (query head h reads K/V head h // (H // Hkv))")


@pytest.mark.exercise("kv_head_index")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(6, 2), (12, 3), (16, 4)], ids=lambda c: "H{}-Hkv{}".format(*c))
def test_index_groups_consecutive_heads(learner, case):
    H, Hkv = case
    expect(learner.kv_head_index(H, Hkv), reference_kv_head_index(H, Hkv),
           what=f"kv_head_index({H}, {Hkv}) (consecutive query heads share a K/V head, not every Hkv-th)")


@pytest.mark.exercise("kv_head_index")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", [(6, 4), (5, 2), (8, 3)], ids=lambda c: "H{}-Hkv{}".format(*c))
def test_index_rejects_uneven_groups(learner, case):
    H, Hkv = case
    try:
        learner.kv_head_index(H, Hkv)
    except LearnerFailure as exc:
        expect_true(exc.raised_a("ValueError"), f"kv_head_index({H}, {Hkv}) should raise ValueError; it failed "
                    f"differently: {exc}")
        return
    expect_true(False, f"kv_head_index({H}, {Hkv}) returned a value; {H} query heads cannot be shared evenly by "
                f"{Hkv} K/V heads: raise ValueError")


# ========================================================================== mean_pool_kv
POOL_CASES = [  # (Hkv, new, D, C)
    (2, 1, 1, 1), (4, 2, 3, 5), (8, 4, 2, 7), (8, 1, 4, 6), (6, 3, 5, 9), (4, 4, 3, 2), (16, 2, 2, 3),
]


def _pid(c):
    return "Hkv{}-to{}-D{}-C{}".format(*c)


@pytest.mark.exercise("mean_pool_kv")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", POOL_CASES, ids=_pid)
def test_pool_weight(learner, case, dtype):
    hkv, new, D, C = case
    w = rand(hkv * D, C, seed=1, dtype=dtype)
    expect(learner.mean_pool_kv(w, hkv, new), reference_mean_pool_kv(w, hkv, new),
           what=f"mean_pool_kv of a {dname(dtype)} weight of shape {(hkv * D, C)}, {hkv} -> {new} heads")


@pytest.mark.exercise("mean_pool_kv")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", [(4, 2, 3), (8, 1, 2), (6, 2, 5)], ids=lambda c: "Hkv{}-to{}-D{}".format(*c))
def test_pool_bias(learner, case, dtype):
    hkv, new, D = case
    b = rand(hkv * D, seed=2, dtype=dtype)
    expect(learner.mean_pool_kv(b, hkv, new), reference_mean_pool_kv(b, hkv, new),
           what=f"mean_pool_kv of a bias of {hkv * D} entries, {hkv} -> {new} heads")


@pytest.mark.exercise("mean_pool_kv")
@pytest.mark.points(2)
def test_pool_consecutive_groups(learner):
    hkv, new, D, C = 8, 2, 2, 3
    w = torch.arange(hkv, dtype=torch.float32).repeat_interleave(D)[:, None] * torch.ones(1, C)  # row = its head
    expect(learner.mean_pool_kv(w, hkv, new), reference_mean_pool_kv(w, hkv, new),
           what="mean_pool_kv where every row holds its head number, 8 -> 2 heads (heads 0-3 and 4-7 averaged)")


@pytest.mark.exercise("mean_pool_kv")
@pytest.mark.points(2)
def test_pool_makes_equal_groups_exact(learner):
    torch.manual_seed(0)
    C, H, D = 24, 6, 4
    mha = MultiHeadAttention(C, H, causal=True).double().eval()
    with torch.no_grad():
        for lin in (mha.w_k, mha.w_v):
            heads = lin.weight.view(H, D, C)
            heads.copy_(heads[::3].repeat_interleave(3, dim=0))            # equal within groups of 3
    gqa = MultiHeadAttention(C, H, n_kv_heads=2, causal=True).double().eval()
    pooled = [learner.mean_pool_kv(lin.weight.detach().clone(), H, 2) for lin in (mha.w_k, mha.w_v)]
    for name, got, lin in zip(("W_K", "W_V"), pooled, (mha.w_k, mha.w_v)):
        expect(got, reference_mean_pool_kv(lin.weight.detach(), H, 2), what=f"mean_pool_kv of a layer's {name}")
    with torch.no_grad():
        gqa.w_q.weight.copy_(mha.w_q.weight)
        gqa.w_o.weight.copy_(mha.w_o.weight)
        gqa.w_k.weight.copy_(pooled[0])
        gqa.w_v.weight.copy_(pooled[1])
        x = rand(2, 7, C, seed=3, dtype=torch.float64)
        expect(gqa(x), mha(x), what="the output of a layer converted with your mean_pool_kv (its groups were equal)")


# ============================================================================= gqa_table
TABLE_CASES = [  # (d_model, n_heads, n_layers, tokens, dtype_bytes)
    (64, 4, 2, 100, 2), (48, 6, 1, 10, 4), (4096, 32, 32, 4096, 2), (96, 12, 3, 77, 1), (56, 7, 5, 1000, 2),
    (16, 1, 1, 1, 4), (8192, 64, 80, 131072, 2),
]


@pytest.mark.exercise("gqa_table")
@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: "C{}-H{}-L{}-T{}-b{}".format(*c))
def test_table_matches_reference(learner, case):
    C, H, L, T, nb = case
    expect(learner.gqa_table(C, H, L, T, dtype_bytes=nb), reference_gqa_table(C, H, L, T, nb),
           what=f"gqa_table({C}, {H}, {L}, {T}, dtype_bytes={nb})")


@pytest.mark.exercise("gqa_table")
@pytest.mark.points(2)
def test_table_lists_only_divisors_in_decreasing_order(learner):
    out = learner.gqa_table(120, 12, 1, 1)
    want = reference_gqa_table(120, 12, 1, 1)
    expect(out, want, what="gqa_table(120, 12, 1, 1) (rows for Hkv = 12, 6, 4, 3, 2, 1 in that order)")


@pytest.mark.exercise("gqa_table")
def test_table_default_dtype_bytes(learner):
    expect(learner.gqa_table(64, 8, 4, 512), reference_gqa_table(64, 8, 4, 512),
           what="gqa_table(64, 8, 4, 512) with the default dtype_bytes=2")


@pytest.mark.exercise("gqa_table")
@pytest.mark.points(2)
@pytest.mark.parametrize("nb", [1, 4])
def test_table_uses_dtype_bytes(learner, nb):
    expect(learner.gqa_table(96, 12, 4, 512, dtype_bytes=nb), reference_gqa_table(96, 12, 4, 512, nb),
           what=f"gqa_table(96, 12, 4, 512, dtype_bytes={nb}) (the cache bytes scale with dtype_bytes)")
