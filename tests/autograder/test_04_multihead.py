"""Hidden tests for chapter 04 (multi-head attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here, by the reference, and compared with ``expect`` (no hidden values in
messages). Points: ``EXERCISES[id]["points"]`` is split over the exercise's tests in
proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- split_heads: B, T, C, H from 1 to 97 incl. one token, one head and H = C; float16/bfloat16/
  float64/int64 kept; consecutive channels per head; token order; non-contiguous inputs
  (transposed, sliced); float64 gradient.
- merge_heads: the same grid in reverse; dtypes kept; undoes split_heads; tokens kept together
  (transpose before reshape); non-contiguous input; float64 gradient.
- multi_head_attention: H = 1 to C, T = 1 to 97, causal False/True; float32/64 and
  float16/bfloat16 with and without the causal mask; scale 1/sqrt(C/H); agreement with
  torch.nn.MultiheadAttention; large scores; heads independent; float64 gradients. Graded with
  the reference split_heads/merge_heads (``uses``).
- mha_param_count: widths 1 to 4096, H = 1 to 64, n_kv_heads None/1/H/between, bias False/True,
  torch's own count; return type exactly ``int``.
- causal_self_attention_module: GPT-2 names and shapes (state dict loads), eval output vs the
  reference for T = 1 .. block_size, H = 1 and several, bias True/False, float32/64 and bfloat16;
  causality; GPT-2 small's parameter count and independence of block_size (mask not a
  parameter); eval deterministic with dropout; dropout on the attention weights in training
  (p = 1 leaves only c_proj's bias) and off at p = 0. Graded with the reference
  split_heads/merge_heads (``uses``).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attncourse.core import attention
from attncourse.grading.testkit import Foreign, Mismatch, dname, expect, expect_true, forbid, rand
from attncourse.masks import causal_mask
from attncourse.checks.ch04_multihead import gpt2_attention_state, reference_causal_self_attention
from attncourse.multihead import attention_param_count, merge_heads, split_heads

EXERCISES = {
    "split_heads": {"function": "split_heads", "points": 2},
    "merge_heads": {"function": "merge_heads", "points": 2},
    "multi_head_attention": {"function": "multi_head_attention", "points": 4, "from_scratch": True,
                             "uses": {"split_heads": "attncourse.multihead.split_heads",
                                      "merge_heads": "attncourse.multihead.merge_heads"}},
    "mha_param_count": {"function": "mha_param_count", "points": 2},
    "causal_self_attention_module": {"function": "run_causal_self_attention", "points": 3,
                                     "uses": {"split_heads": "attncourse.multihead.split_heads",
                                              "merge_heads": "attncourse.multihead.merge_heads"}},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
_REF_RESHAPE = ["attncourse.multihead.split_heads", "attncourse.multihead.merge_heads"]
_REF_ATTENTION = ["attncourse.core.attention", "attncourse.core.masked_scores", "attncourse.core.stable_softmax",
                  "attncourse.multihead.self_attention", "attncourse.multihead.MultiHeadAttention.forward",
                  "attncourse.multihead.SelfAttention.forward"]
_TORCH_MHA = ["torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention",
              "torch.nn.functional.multi_head_attention_forward",
              "torch.nn.modules.activation.MultiheadAttention.forward"]
_COUNTERS = ["attncourse.multihead.attention_param_count", "attncourse.multihead.param_count",
             "torch.nn.modules.activation.MultiheadAttention.__init__"]
FORBIDDEN = forbid(
    (_REF_RESHAPE, ["split_heads", "merge_heads", "multi_head_attention"]),
    (_REF_ATTENTION + _TORCH_MHA, ["multi_head_attention"]),
    (_COUNTERS, ["mha_param_count"]),
    (_TORCH_MHA[2:], ["causal_self_attention_module"]),
)



def ref_mha(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))       # (B, H, T, D)
    mask = causal_mask(x.shape[1], x.shape[1]) if causal else None
    return merge_heads(attention(q, k, v, mask=mask)) @ w_o                # (B, T, C)


# ============================================================================ split_heads
SPLIT_CASES = [  # (B, T, C, H)
    (1, 1, 4, 1), (1, 1, 4, 4), (2, 7, 12, 3), (3, 13, 64, 8), (2, 97, 15, 5), (1, 5, 1, 1), (3, 2, 6, 6),
]


def _sid(case):
    return "B{}T{}C{}H{}".format(*case)


@pytest.mark.exercise("split_heads")
@pytest.mark.parametrize("case", SPLIT_CASES, ids=_sid)
def test_split_heads_matches_reference(learner, case):
    b, t, c, h = case
    x = rand(b, t, c, seed=1)
    expect(learner.split_heads(x, h), split_heads(x, h), what=f"split_heads(x of shape {(b, t, c)}, {h})")


@pytest.mark.exercise("split_heads")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64], ids=dname)
def test_split_heads_keeps_dtype(learner, dtype):
    x = rand(2, 5, 12, seed=2, scale=5.0).to(dtype)
    expect(learner.split_heads(x, 4), split_heads(x, 4), what=f"split_heads of a {dname(dtype)} x of shape (2, 5, 12)")


@pytest.mark.exercise("split_heads")
@pytest.mark.points(2)
def test_split_heads_head_owns_consecutive_channels(learner):
    x = torch.arange(24.0).expand(2, 3, 24).contiguous()                # value = channel index
    expect(learner.split_heads(x, 4), split_heads(x, 4),
           what="split_heads of x of shape (2, 3, 24) into 4 heads (head h must hold channels h·D .. (h+1)·D - 1)")


@pytest.mark.exercise("split_heads")
@pytest.mark.points(2)
def test_split_heads_keeps_token_order(learner):
    x = torch.arange(6.0)[None, :, None].expand(2, 6, 8).contiguous()   # value = token index
    expect(learner.split_heads(x, 2), split_heads(x, 2),
           what="split_heads of x of shape (2, 6, 8) into 2 heads (the token axis must not change)")


@pytest.mark.exercise("split_heads")
@pytest.mark.parametrize("how", ["transposed", "sliced"])
def test_split_heads_non_contiguous_input(learner, how):
    if how == "transposed":
        x = rand(2, 16, 9, seed=3).transpose(1, 2)                       # (2, 9, 16), not contiguous
    else:
        x = rand(3, 9, 32, seed=4)[:, :, ::2]                            # (3, 9, 16), strided channels
    expect(learner.split_heads(x, 4), split_heads(x, 4),
           what=f"split_heads of a non-contiguous ({how}) x of shape {tuple(x.shape)}")


@pytest.mark.exercise("split_heads")
@pytest.mark.points(2)
def test_split_heads_gradient(learner):
    x = rand(2, 5, 12, seed=5, dtype=torch.float64)
    g = rand(2, 3, 5, 4, seed=6, dtype=torch.float64)
    out, (gx,) = learner.split_heads.grad(x, 3, wrt=(0,), grad_output=g)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(split_heads(xr, 3), xr, g)
    expect(out, split_heads(x, 3), what="split_heads(x of shape (2, 5, 12), 3) in the gradient test")
    expect(gx, want, what="the gradient of split_heads (backpropagate through your function)")


# ============================================================================ merge_heads
MERGE_CASES = [  # (B, H, T, D)
    (1, 1, 1, 4), (1, 4, 1, 1), (2, 3, 7, 4), (3, 8, 13, 8), (2, 5, 97, 3), (1, 6, 2, 1),
]


def _mid(case):
    return "B{}H{}T{}D{}".format(*case)


@pytest.mark.exercise("merge_heads")
@pytest.mark.parametrize("case", MERGE_CASES, ids=_mid)
def test_merge_heads_matches_reference(learner, case):
    x = rand(*case, seed=10)
    expect(learner.merge_heads(x), merge_heads(x), what=f"merge_heads(x of shape {case})")


@pytest.mark.exercise("merge_heads")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=dname)
def test_merge_heads_keeps_dtype(learner, dtype):
    x = rand(2, 3, 5, 4, seed=11, dtype=dtype)
    expect(learner.merge_heads(x), merge_heads(x), what=f"merge_heads of a {dname(dtype)} x of shape (2, 3, 5, 4)")


@pytest.mark.exercise("merge_heads")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [(2, 7, 12, 3), (1, 9, 20, 5)], ids=_sid)
def test_merge_heads_undoes_split(learner, case):
    b, t, c, h = case
    x = rand(b, t, c, seed=12)
    expect(learner.merge_heads(split_heads(x, h).contiguous()), x,
           what=f"merge_heads(split_heads(x, {h})) for x of shape {(b, t, c)} (must give x back)")


@pytest.mark.exercise("merge_heads")
@pytest.mark.points(2)
def test_merge_heads_keeps_tokens_together(learner):
    h, t, d = 3, 4, 2
    x = torch.arange(t, dtype=torch.float32)[None, None, :, None].expand(2, h, t, d).contiguous()  # value = token
    expect(learner.merge_heads(x), merge_heads(x),
           what="merge_heads of x of shape (2, 3, 4, 2) (each output row must hold the heads of one token)")


@pytest.mark.exercise("merge_heads")
def test_merge_heads_non_contiguous_input(learner):
    x = rand(2, 6, 3, 4, seed=13).transpose(1, 2)                        # (2, 3, 6, 4), not contiguous
    expect(learner.merge_heads(x), merge_heads(x), what="merge_heads of a non-contiguous x of shape (2, 3, 6, 4)")


@pytest.mark.exercise("merge_heads")
@pytest.mark.points(2)
def test_merge_heads_gradient(learner):
    x = rand(2, 3, 5, 4, seed=14, dtype=torch.float64)
    g = rand(2, 5, 12, seed=15, dtype=torch.float64)
    out, (gx,) = learner.merge_heads.grad(x, wrt=(0,), grad_output=g)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(merge_heads(xr), xr, g)
    expect(out, merge_heads(x), what="merge_heads(x of shape (2, 3, 5, 4)) in the gradient test")
    expect(gx, want, what="the gradient of merge_heads (backpropagate through your function)")


# ===================================================================== multi_head_attention
MHA_CASES = [  # (B, T, C, H)
    (1, 1, 4, 1), (2, 5, 8, 1), (2, 7, 12, 3), (3, 13, 64, 8), (1, 97, 32, 4), (2, 9, 15, 5), (1, 6, 6, 6),
]


def _mha_inputs(b, t, c, seed, dtype=torch.float32, scale=1.0):
    x = rand(b, t, c, seed=seed, dtype=dtype, scale=scale)
    ws = [rand(c, c, seed=seed + 1 + i, dtype=dtype, scale=1.0 / math.sqrt(c)) for i in range(4)]
    return x, ws


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", MHA_CASES, ids=_sid)
def test_mha_no_mask(learner, case, dtype):
    b, t, c, h = case
    x, ws = _mha_inputs(b, t, c, seed=20, dtype=dtype)
    expect(learner.multi_head_attention(x, *ws, h), ref_mha(x, *ws, h),
           what=f"output for x of shape {(b, t, c)}, {h} heads, {dname(dtype)}, causal=False")


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", [MHA_CASES[i] for i in (0, 2, 3, 4, 5)], ids=_sid)
def test_mha_causal(learner, case):
    b, t, c, h = case
    x, ws = _mha_inputs(b, t, c, seed=30)
    expect(learner.multi_head_attention(x, *ws, h, causal=True), ref_mha(x, *ws, h, causal=True),
           what=f"output for x of shape {(b, t, c)}, {h} heads, causal=True (token i sees tokens j <= i)")


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.points(2)
def test_mha_scale_uses_head_width(learner):
    x, ws = _mha_inputs(2, 6, 64, seed=40, scale=3.0)
    expect(learner.multi_head_attention(x, *ws, 16), ref_mha(x, *ws, 16),
           what="output for C = 64 with 16 heads (scale the scores by 1/sqrt(D), D = C / H = 4)")


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_mha_matches_torch_module(learner, causal):
    c, h, t = 24, 4, 11
    with torch.random.fork_rng():
        torch.manual_seed(50)
        mod = nn.MultiheadAttention(c, h, bias=False, batch_first=True).eval()
    wq, wk, wv = mod.in_proj_weight.detach().chunk(3, dim=0)              # (out, in)
    wo = mod.out_proj.weight.detach()
    x = rand(3, t, c, seed=51)
    ignore = ~causal_mask(t, t) if causal else None                      # torch: True = ignore
    with torch.no_grad():
        want = mod(x, x, x, attn_mask=ignore, need_weights=False)[0]
    got = learner.multi_head_attention(x, wq.T.contiguous(), wk.T.contiguous(), wv.T.contiguous(),
                                       wo.T.contiguous(), h, causal=causal)
    expect(got, want, what=f"output compared with torch.nn.MultiheadAttention (causal={causal})")


@pytest.mark.exercise("multi_head_attention")
def test_mha_large_scores_stay_finite(learner):
    x, ws = _mha_inputs(1, 9, 16, seed=60, dtype=torch.float64, scale=20.0)
    expect(learner.multi_head_attention(x.float(), *(w.float() for w in ws), 2),
           ref_mha(x, *ws, 2).float(), rtol=1e-3, atol=1e-3,
           what="output with very large scores (the softmax must not overflow)")


@pytest.mark.exercise("multi_head_attention")
def test_mha_heads_are_independent(learner):
    # Changing the query weights of head 1 only must not change what head 0 contributes.
    b, t, c, h = 2, 5, 12, 3
    x, ws = _mha_inputs(b, t, c, seed=70)
    w_o = torch.zeros(c, c)
    w_o[:4] = ws[3][:4]                                                  # only head 0 reaches the output
    wq2 = ws[0].clone()
    wq2[:, 4:8] = rand(c, 4, seed=71)                                    # head 1's query columns changed
    expect(learner.multi_head_attention(x, wq2, ws[1], ws[2], w_o, h), ref_mha(x, ws[0], ws[1], ws[2], w_o, h),
           what="output when only head 0 reaches W_O (each head must use only its own D columns)")


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dname)
def test_mha_low_precision_keeps_dtype(learner, dtype, causal):
    x, ws = _mha_inputs(2, 7, 16, seed=90)
    out = learner.multi_head_attention(x.to(dtype), *(w.to(dtype) for w in ws), 4, causal)
    want = ref_mha(x.to(dtype).float(), *(w.to(dtype).float() for w in ws), 4, causal=causal).to(dtype)
    expect(out, want, what=f"multi_head_attention output for {dname(dtype)} inputs, 4 heads, "
                           f"causal={causal} (the result keeps the dtype of x)")


@pytest.mark.exercise("multi_head_attention")
@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_mha_gradients(learner, causal):
    b, t, c, h = 2, 6, 12, 3
    x, ws = _mha_inputs(b, t, c, seed=80, dtype=torch.float64)
    g = rand(b, t, c, seed=81, dtype=torch.float64)
    out, grads = learner.multi_head_attention.grad(x, *ws, h, causal=causal, wrt=(0, 1, 2, 3, 4), grad_output=g)
    ref_in = [t_.clone().requires_grad_(True) for t_ in [x, *ws]]
    ref = ref_mha(*ref_in, h, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    expect(out, ref.detach(), what=f"output in the gradient test (causal={causal})")
    for name, got, want in zip(["x", "w_q", "w_k", "w_v", "w_o"], grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} (causal={causal})")


# ========================================================================= mha_param_count
def expect_int(got, want: int, what: str) -> None:
    if isinstance(got, Foreign) or type(got) is not int:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        expect_true(False, f"{what} should return a Python int, but it returned {kind}")
    expect_true(got == want, f"{what} is not the right count")


COUNT_CASES = [  # (d_model, n_heads, n_kv_heads, bias)
    (512, 8, None, False), (512, 1, None, True), (768, 12, None, True), (4096, 32, 8, False),
    (4096, 32, 1, True), (64, 16, 4, True), (6, 3, None, False), (5, 1, None, True), (96, 6, 6, False),
]


def _cid(case):
    return "C{}H{}Hkv{}{}".format(case[0], case[1], case[2], "bias" if case[3] else "")


@pytest.mark.exercise("mha_param_count")
@pytest.mark.parametrize("case", COUNT_CASES, ids=_cid)
def test_param_count_matches_formula(learner, case):
    c, h, hkv, bias = case
    got = learner.mha_param_count(c, h, n_kv_heads=hkv, bias=bias)
    expect_int(got, attention_param_count(c, h, hkv, bias=bias),
               what=f"mha_param_count({c}, {h}, n_kv_heads={hkv}, bias={bias})")


@pytest.mark.exercise("mha_param_count")
@pytest.mark.points(2)
@pytest.mark.parametrize("bias", [False, True])
def test_param_count_independent_of_heads(learner, bias):
    for h in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        got = learner.mha_param_count(256, h, bias=bias)
        expect_int(got, attention_param_count(256, h, bias=bias),
                   what=f"mha_param_count(256, {h}, bias={bias}) (with D = C / H the count must not depend on H)")


@pytest.mark.exercise("mha_param_count")
@pytest.mark.points(2)
@pytest.mark.parametrize("bias", [False, True])
def test_param_count_matches_torch(learner, bias):
    for c, h in ((48, 4), (100, 5)):
        want = sum(p.numel() for p in nn.MultiheadAttention(c, h, bias=bias).parameters())
        expect_int(learner.mha_param_count(c, h, bias=bias), want,
                   what=f"mha_param_count({c}, {h}, bias={bias}) compared with torch.nn.MultiheadAttention")


@pytest.mark.exercise("mha_param_count")
def test_param_count_default_arguments(learner):
    expect_int(learner.mha_param_count(128, 4), attention_param_count(128, 4),
               what="mha_param_count(128, 4) with the default n_kv_heads=None, bias=False")


# ============================================================================ causal_self_attention_module
MODULE_CASES = [  # (B, T, C, H, block_size)
    (1, 1, 8, 2, 1), (2, 5, 16, 4, 8), (3, 7, 12, 1, 7), (1, 13, 24, 6, 32), (2, 9, 10, 5, 16),
]


def _modid(case):
    return "B{}T{}C{}H{}blk{}".format(*case)


def expect_module(got, x, n_heads, state, what, **tol):
    if isinstance(got, Foreign) or not isinstance(got, dict) or "y" not in got:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        raise Mismatch(f"run_causal_self_attention should return its dict unchanged (it is given code); got {kind}")
    expect(got["y"], reference_causal_self_attention(x, n_heads, state).to(x.dtype), what=what, **tol)
    return got


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", MODULE_CASES, ids=_modid)
def test_module_matches_gpt2_attention(learner, case, dtype):
    b, t, c, h, block = case
    x = rand(b, t, c, seed=100, dtype=dtype)
    state = gpt2_attention_state(c, 101, dtype=dtype)
    got = learner.run_causal_self_attention(x, h, block, state)
    expect_module(got, x, h, state, what=f"eval output for x {(b, t, c)}, {h} heads, block_size {block}, {dname(dtype)}")


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.points(2)
def test_module_without_bias(learner):
    x = rand(2, 6, 12, seed=102)
    state = gpt2_attention_state(12, 103, bias=False)
    got = learner.run_causal_self_attention(x, 3, 8, state, False)
    expect_module(got, x, 3, state, what="eval output with bias=False (c_attn and c_proj have no bias)")
    expect_true(got["n_params"] == 4 * 12 * 12, "with bias=False the layer must have exactly 4·C² parameters")


@pytest.mark.exercise("causal_self_attention_module")
def test_module_low_precision(learner):
    x = rand(2, 5, 16, seed=104)
    state = gpt2_attention_state(16, 105)
    xb = x.to(torch.bfloat16)
    sb = {k: v.to(torch.bfloat16) for k, v in state.items()}
    got = learner.run_causal_self_attention(xb, 4, 8, sb)
    want = reference_causal_self_attention(xb.float(), 4, {k: v.float() for k, v in sb.items()}).to(torch.bfloat16)
    if isinstance(got, dict) and "y" in got:
        expect(got["y"], want, what="eval output for bfloat16 x and weights (keep the dtype of x)")
    else:
        expect_module(got, xb, 4, sb, what="bfloat16 output")


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.points(2)
def test_module_is_causal(learner):
    x = rand(2, 8, 12, seed=106)
    state = gpt2_attention_state(12, 107)
    changed = x.clone()
    changed[:, 5:] = rand(2, 3, 12, seed=108, scale=50.0)
    a = expect_module(learner.run_causal_self_attention(x, 3, 8, state), x, 3, state, what="eval output (T = 8)")
    b = learner.run_causal_self_attention(changed, 3, 8, state)
    expect_true(isinstance(b, dict) and "y" in b, "run_causal_self_attention should return its dict unchanged")
    expect(b["y"][:, :5], a["y"][:, :5], what="outputs of tokens 0-4 after tokens 5-7 were changed "
                                            "(a token must not see the tokens after it)")


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.points(2)
@pytest.mark.parametrize("bias", [True, False])
def test_module_gpt2_small_parameter_count(learner, bias):
    want = attention_param_count(768, 12, bias=bias)
    for block in (1024, 64):
        got = learner.run_causal_self_attention(torch.zeros(1, 2, 768), 12, block, None, bias)
        expect_true(isinstance(got, dict) and "n_params" in got,
                    "run_causal_self_attention should return its dict unchanged (it is given code)")
        expect_true(got["n_params"] == want,
                    f"CausalSelfAttention(768, 12, {block}, bias={bias}) should have {want:,} parameters "
                    f"(4·C² weights{' + 4·C biases' if bias else ''}; the causal mask is a buffer, not a parameter)")


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.points(2)
def test_module_eval_mode_ignores_dropout(learner):
    x = rand(2, 6, 16, seed=110)
    state = gpt2_attention_state(16, 111)
    got = learner.run_causal_self_attention(x, 4, 8, state, True, 0.5, False)
    expect_module(got, x, 4, state, what="eval-mode output with dropout=0.5 (dropout is off in eval mode)")


@pytest.mark.exercise("causal_self_attention_module")
@pytest.mark.points(2)
def test_module_dropout_acts_on_attention_weights(learner):
    x = rand(2, 5, 8, seed=112)
    state = gpt2_attention_state(8, 113)
    # Training with p = 1 drops every attention weight: the heads output 0 and c_proj returns its
    # bias. Dropout on the layer's output would return 0 instead; no dropout, the eval output.
    got = learner.run_causal_self_attention(x, 2, 8, state, True, 1.0, True)
    expect_true(isinstance(got, dict) and "y" in got, "run_causal_self_attention should return its dict unchanged")
    expect(got["y"], state["c_proj.bias"].expand(2, 5, 8),
           what="training-mode output with dropout=1.0 (dropout acts on the attention weights, so only "
                "c_proj's bias is left)")
    same = learner.run_causal_self_attention(x, 2, 8, state, True, 0.0, True)
    expect_module(same, x, 2, state, what="training-mode output with dropout=0.0 (the same as eval mode)")
