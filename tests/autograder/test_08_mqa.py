"""Hidden tests for chapter 08 (multi-query attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the references of ``attncourse.checks.ch08_mqa`` (built on
``attncourse.gqa``) and compared with ``expect`` (no hidden values in messages).

Coverage:
- grouped_attention: MQA (Hkv = 1), GQA with 1 < Hkv < H and G > 1 (the h // G grouping; the `repeat` order
  h % Hkv fails), MHA (Hkv = H), B > 1, Tq != Tk both ways without a mask, causal with Tq = 1 and Tq < Tk
  (bottom-right), D odd and 1, scores of magnitude 10-30, float32 and float64, float64 gradients w.r.t. q, k, v,
  comparison with SDPA(enable_gqa=True); rule: no repeat_interleave / repeat / tile / SDPA (static and run time).
- mqa_layer: C, H, Hkv with MQA, GQA and MHA, w_k/w_v of shape (C, Hkv·D), causal and not, B > 1, T = 1,
  float64, float64 gradients w.r.t. x and all four weights; uses the reference grouped_attention.
- decode_intensity: MHA / GQA / MQA of published sizes, context 1 (the q/out bytes matter) to 128k, dtype_bytes
  1/2/4, default argument, exact return type float, H counted in FLOPs and Hkv in bytes.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attncourse.checks.ch08_mqa import reference_decode_intensity, reference_grouped_attention, reference_mqa_layer
from attncourse.grading.testkit import SDPA_CALLS, Foreign, dname, expect, expect_true, rand

EXERCISES = {
    "grouped_attention": {"function": "grouped_attention", "points": 4, "from_scratch": True},
    "mqa_layer": {"function": "mqa_layer", "points": 3, "from_scratch": True,
                  "uses": {"grouped_attention": "attncourse.checks.ch08_mqa.reference_grouped_attention"}},
    "decode_intensity": {"function": "decode_intensity", "points": 2},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
_COPIES = ["torch.repeat_interleave", "torch.Tensor.repeat_interleave", "torch.Tensor.repeat", "torch.tile",
           "torch.Tensor.tile", "attncourse.core.expand_kv_heads", "torch.ops.aten.repeat_interleave",
           "torch.ops.aten.repeat", "torch.ops.aten.tile"]
_REF = ["attncourse.gqa.grouped_attention", "attncourse.core.attention", "attncourse.core.stable_softmax",
        "attncourse.multihead.MultiHeadAttention.forward"]
FORBIDDEN = {
    **{name: ["grouped_attention", "mqa_layer"] for name in _COPIES + _REF + SDPA_CALLS},
    "attncourse.gqa.decode_attention_cost": ["decode_intensity"],
}


# ===================================================================== grouped_attention
GROUP_CASES = [  # (B, H, Hkv, Tq, Tk, D)
    (1, 1, 1, 1, 1, 1), (2, 4, 1, 3, 5, 8), (1, 6, 2, 4, 4, 4), (2, 6, 3, 5, 9, 7), (1, 8, 4, 9, 3, 5),
    (3, 4, 4, 6, 6, 3), (1, 12, 2, 1, 97, 16),
]


def _gid(c):
    return "B{}-H{}-Hkv{}-Tq{}-Tk{}-D{}".format(*c)


def _qkv(B, H, Hkv, Tq, Tk, D, seed, dtype=torch.float32, scale=1.0):
    return (rand(B, H, Tq, D, seed=seed, dtype=dtype, scale=scale), rand(B, Hkv, Tk, D, seed=seed + 1, dtype=dtype,
            scale=scale), rand(B, Hkv, Tk, D, seed=seed + 2, dtype=dtype))


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(0.5)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", GROUP_CASES, ids=_gid)
def test_grouped_no_mask(learner, case, dtype):
    q, k, v = _qkv(*case, seed=1, dtype=dtype)
    expect(learner.grouped_attention(q, k, v), reference_grouped_attention(q, k, v),
           what=f"grouped_attention with (B, H, Hkv, Tq, Tk, D) = {case}, {dname(dtype)}")


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(1, 6, 2, 2, 2, 4), (2, 8, 2, 3, 6, 4), (1, 9, 3, 1, 5, 2)], ids=_gid)
def test_grouped_consecutive_heads_share(learner, case):
    q, k, v = _qkv(*case, seed=2)
    v = v * 10.0                                                     # make a wrong pairing obvious
    expect(learner.grouped_attention(q, k, v), reference_grouped_attention(q, k, v),
           what=f"grouped_attention with H={case[1]}, Hkv={case[2]} (query head h must read K/V head h // (H // Hkv))")


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", [(2, 4, 1, 1, 7, 4), (1, 6, 2, 3, 5, 4), (2, 4, 2, 2, 9, 3), (1, 8, 2, 1, 33, 5),
                                  (1, 3, 1, 5, 5, 2)], ids=_gid)
def test_grouped_causal_bottom_right(learner, case):
    q, k, v = _qkv(*case, seed=3)
    expect(learner.grouped_attention(q, k, v, causal=True), reference_grouped_attention(q, k, v, True),
           what=f"grouped_attention(causal=True) with Tq={case[3]}, Tk={case[4]} (query i at position Tk - Tq + i)")


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", [(2, 6, 2, 5, 5, 4), (1, 8, 4, 4, 4, 3), (2, 6, 3, 4, 10, 5)], ids=_gid)
def test_grouped_causal_groups_float64(learner, case):
    q, k, v = _qkv(*case, seed=8, dtype=torch.float64)
    expect(learner.grouped_attention(q, k, v, causal=True), reference_grouped_attention(q, k, v, True),
           what=f"grouped_attention(causal=True), float64, with H={case[1]}, Hkv={case[2]}, Tq={case[3]}, Tk={case[4]} "
                "(every query head of a group at the same positions)")


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_grouped_large_scores(learner, causal):
    q, k, v = _qkv(2, 6, 3, 4, 8, 4, seed=4, dtype=torch.float64, scale=5.0)
    expect(learner.grouped_attention(q.float(), k.float(), v.float(), causal=causal),
           reference_grouped_attention(q, k, v, causal).float(), rtol=1e-3, atol=1e-4,
           what="grouped_attention with scores of magnitude 10-30 (the softmax must not overflow)")


@pytest.mark.exercise("grouped_attention")
def test_grouped_matches_sdpa_enable_gqa(learner):
    q, k, v = _qkv(2, 8, 2, 1, 50, 16, seed=5)
    with sdpa_kernel([SDPBackend.MATH]):
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    expect(learner.grouped_attention(q, k, v), want, what="grouped_attention compared with SDPA(enable_gqa=True)")


@pytest.mark.exercise("grouped_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_grouped_gradients(learner, causal):
    q, k, v = _qkv(2, 6, 2, 3, 5, 4, seed=6, dtype=torch.float64)
    g = rand(2, 6, 3, 4, seed=7, dtype=torch.float64)
    out, grads = learner.grouped_attention.grad(q, k, v, causal=causal, wrt=(0, 1, 2), grad_output=g)
    ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = reference_grouped_attention(*ins, causal)
    want = torch.autograd.grad(ref, ins, g)
    expect(out, ref.detach(), what=f"grouped_attention in the gradient test (causal={causal})")
    for name, got, exp in zip("qkv", grads, want):
        expect(got, exp, what=f"the gradient with respect to {name} (causal={causal}); the K/V gradient sums over "
                              "the query heads of each group")


# ============================================================================ mqa_layer
LAYER_CASES = [  # (B, T, C, H, Hkv)
    (2, 5, 16, 4, 1), (1, 7, 24, 6, 2), (2, 4, 12, 3, 3), (1, 1, 8, 2, 1), (3, 9, 30, 6, 3), (1, 13, 64, 8, 2),
]


def _layer_inputs(B, T, C, H, Hkv, seed, dtype=torch.float32):
    D = C // H
    x = rand(B, T, C, seed=seed, dtype=dtype)
    ws = [rand(C, n, seed=seed + 1 + i, dtype=dtype, scale=1 / math.sqrt(C)) for i, n in enumerate((C, Hkv * D,
                                                                                                   Hkv * D, C))]
    return x, ws


def _lid(c):
    return "B{}-T{}-C{}-H{}-Hkv{}".format(*c)


@pytest.mark.exercise("mqa_layer")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=_lid)
def test_layer_matches_reference(learner, case, causal):
    B, T, C, H, Hkv = case
    x, ws = _layer_inputs(*case, seed=20)
    expect(learner.mqa_layer(x, *ws, H, Hkv, causal=causal), reference_mqa_layer(x, *ws, H, Hkv, causal),
           what=f"mqa_layer with x of shape {(B, T, C)}, H={H}, Hkv={Hkv}, causal={causal}")


@pytest.mark.exercise("mqa_layer")
def test_layer_default_is_one_kv_head(learner):
    x, ws = _layer_inputs(2, 6, 20, 5, 1, seed=30)
    expect(learner.mqa_layer(x, *ws, 5), reference_mqa_layer(x, *ws, 5),
           what="mqa_layer(x, w_q, w_k, w_v, w_o, 5) with the default n_kv_heads=1")


@pytest.mark.exercise("mqa_layer")
def test_layer_float64(learner):
    x, ws = _layer_inputs(2, 5, 18, 6, 2, seed=40, dtype=torch.float64)
    expect(learner.mqa_layer(x, *ws, 6, 2, causal=True), reference_mqa_layer(x, *ws, 6, 2, True),
           what="mqa_layer in float64")


@pytest.mark.exercise("mqa_layer")
@pytest.mark.points(2)
def test_layer_gradients(learner):
    x, ws = _layer_inputs(2, 4, 12, 4, 2, seed=50, dtype=torch.float64)
    g = rand(2, 4, 12, seed=51, dtype=torch.float64)
    out, grads = learner.mqa_layer.grad(x, *ws, 4, 2, causal=True, wrt=(0, 1, 2, 3, 4), grad_output=g)
    ins = [t.clone().requires_grad_(True) for t in (x, *ws)]
    ref = reference_mqa_layer(*ins, 4, 2, True)
    want = torch.autograd.grad(ref, ins, g)
    expect(out, ref.detach(), what="mqa_layer in the gradient test")
    for name, got, exp in zip(["x", "w_q", "w_k", "w_v", "w_o"], grads, want):
        expect(got, exp, what=f"the gradient of mqa_layer with respect to {name}")


# ===================================================================== decode_intensity
def _float(got, want: float, what: str) -> None:
    if isinstance(got, Foreign) or type(got) is not float:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        expect_true(False, f"{what} should return a Python float, but it returned {kind}")
    expect_true(math.isclose(got, want, rel_tol=1e-9), f"{what} is not the right intensity")


INTENSITY_CASES = [  # (H, Hkv, D, context, dtype_bytes)
    (32, 32, 128, 4096, 2), (32, 8, 128, 8192, 2), (71, 1, 64, 2048, 2), (48, 1, 256, 131072, 2), (8, 2, 64, 1, 4),
    (16, 4, 32, 100, 1), (4, 4, 16, 7, 4),
]


@pytest.mark.exercise("decode_intensity")
@pytest.mark.parametrize("case", INTENSITY_CASES, ids=lambda c: "H{}-Hkv{}-D{}-t{}-b{}".format(*c))
def test_intensity_matches_formula(learner, case):
    H, Hkv, D, t, nb = case
    _float(learner.decode_intensity(H, Hkv, D, t, dtype_bytes=nb), reference_decode_intensity(H, Hkv, D, t, nb),
           what=f"decode_intensity({H}, {Hkv}, {D}, {t}, dtype_bytes={nb})")


@pytest.mark.exercise("decode_intensity")
def test_intensity_default_dtype(learner):
    _float(learner.decode_intensity(32, 8, 128, 1000), reference_decode_intensity(32, 8, 128, 1000),
           what="decode_intensity(32, 8, 128, 1000) with the default dtype_bytes=2")


@pytest.mark.exercise("decode_intensity")
@pytest.mark.points(2)
def test_intensity_counts_kv_heads_in_bytes(learner):
    for hkv in (32, 16, 4, 1):
        _float(learner.decode_intensity(32, hkv, 128, 4096), reference_decode_intensity(32, hkv, 128, 4096),
               what=f"decode_intensity(32, {hkv}, 128, 4096) (bytes read grow with Hkv, FLOPs with H)")


@pytest.mark.exercise("decode_intensity")
@pytest.mark.points(2)
@pytest.mark.parametrize("nb", [1, 4])
def test_intensity_uses_dtype_bytes(learner, nb):
    _float(learner.decode_intensity(32, 8, 128, 4096, dtype_bytes=nb), reference_decode_intensity(32, 8, 128, 4096, nb),
           what=f"decode_intensity(32, 8, 128, 4096, dtype_bytes={nb}) (every number read or written costs dtype_bytes)")
