"""Public checks for chapter 04 (multi-head attention).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse`` through :func:`attncourse.testing.compare`. The hidden autograder tests
(``tests/autograder/test_04_multihead.py``) use larger and odder grids.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attncourse.checks import case
from attncourse.core import attention
from attncourse.masks import causal_mask
from attncourse.multihead import attention_param_count, merge_heads, split_heads
from attncourse.testing import compare


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mha(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))          # (B, H, T, D)
    mask = causal_mask(x.shape[1], x.shape[1]) if causal else None
    return merge_heads(attention(q, k, v, mask=mask)) @ w_o                   # (B, T, C)


def _weights(c: int, g: torch.Generator, dtype=torch.float32):
    return [(torch.randn(c, c, generator=g, dtype=torch.float64) / math.sqrt(c)).to(dtype) for _ in range(4)]


# --------------------------------------------------------------------------- split_heads
@case("split_heads", "(2, 5, 12) with 3 heads gives (2, 3, 5, 4)")
def _(fn):
    x = torch.randn(2, 5, 12, generator=_gen(1))
    return compare(fn(x, 3), split_heads(x, 3), what="split_heads(x of shape (2, 5, 12), 3)")


@case("split_heads", "head h holds channels h·D .. (h+1)·D - 1 (consecutive, not every H-th)")
def _(fn):
    x = torch.arange(8.0).expand(1, 2, 8).contiguous()                  # value = channel index
    out = fn(x, 2)
    if isinstance(out, torch.Tensor) and out.shape == (1, 2, 2, 4) and torch.equal(
            out, x.reshape(1, 2, 4, 2).permute(0, 3, 1, 2)):
        return ("the heads are interleaved (head 0 got channels 0, 2, 4, 6): reshape to (B, T, H, D), "
                "not (B, T, D, H)")
    return compare(out, split_heads(x, 2), what="split_heads of channels 0..7 into 2 heads")


@case("split_heads", "a single token and a single head: (1, 1, 6) -> (1, 1, 1, 6)")
def _(fn):
    x = torch.randn(1, 1, 6, generator=_gen(2))
    return compare(fn(x, 1), split_heads(x, 1), what="split_heads(x of shape (1, 1, 6), 1)")


@case("split_heads", "works on a non-contiguous input (a transposed tensor)")
def _(fn):
    x = torch.randn(2, 8, 3, generator=_gen(3)).transpose(1, 2)          # (2, 3, 8), not contiguous
    return compare(fn(x, 4), split_heads(x, 4), what="split_heads of a transposed (non-contiguous) x")


# --------------------------------------------------------------------------- merge_heads
@case("merge_heads", "(2, 3, 5, 4) gives (2, 5, 12)")
def _(fn):
    x = torch.randn(2, 3, 5, 4, generator=_gen(4))
    return compare(fn(x), merge_heads(x), what="merge_heads(x of shape (2, 3, 5, 4))")


@case("merge_heads", "undoes split_heads: merge_heads(split_heads(x, H)) == x")
def _(fn):
    x = torch.randn(3, 7, 10, generator=_gen(5))
    return compare(fn(split_heads(x, 5)), x, what="merge_heads(split_heads(x, 5))")


@case("merge_heads", "keeps each token's heads together (transpose before reshape)")
def _(fn):
    x = torch.randn(1, 2, 3, 2, generator=_gen(6))
    out = fn(x)
    if isinstance(out, torch.Tensor) and out.shape == (1, 3, 4) and torch.equal(out, x.reshape(1, 3, 4)):
        return ("your result mixes tokens: reshaping (B, H, T, D) straight to (B, T, H·D) puts token 1 of "
                "head 0 next to token 0; transpose to (B, T, H, D) first")
    return compare(out, merge_heads(x), what="merge_heads(x of shape (1, 2, 3, 2))")


# ------------------------------------------------------------------- multi_head_attention
@case("multi_head_attention", "one head: single-head attention followed by W_O")
def _(fn):
    g = _gen(7)
    x = torch.randn(2, 5, 8, generator=g)
    w = _weights(8, g)
    return compare(fn(x, *w, 1), _mha(x, *w, 1), what="output with n_heads=1, x of shape (2, 5, 8)")


@case("multi_head_attention", "4 heads, x of shape (2, 6, 16), no mask")
def _(fn):
    g = _gen(8)
    x = torch.randn(2, 6, 16, generator=g)
    w = _weights(16, g)
    return compare(fn(x, *w, 4), _mha(x, *w, 4), what="output with n_heads=4 (scale by 1/√D, D = C/H)")


@case("multi_head_attention", "causal=True: token i attends to tokens j <= i only")
def _(fn):
    g = _gen(9)
    x = torch.randn(1, 7, 12, generator=g)
    w = _weights(12, g)
    return compare(fn(x, *w, 3, causal=True), _mha(x, *w, 3, causal=True), what="causal output with n_heads=3")


@case("multi_head_attention", "matches torch.nn.MultiheadAttention with the same weights")
def _(fn):
    c, h, t = 16, 2, 5
    with torch.random.fork_rng():                                       # leave the learner's RNG alone
        torch.manual_seed(10)
        ref = nn.MultiheadAttention(c, h, bias=False, batch_first=True).eval()
    wq, wk, wv = ref.in_proj_weight.detach().chunk(3, dim=0)            # (out, in): transpose for x @ w
    x = torch.randn(2, t, c, generator=_gen(10))
    with torch.no_grad():
        want = ref(x, x, x, need_weights=False)[0]
    return compare(fn(x, wq.T, wk.T, wv.T, ref.out_proj.weight.detach().T, h), want,
                   what="output compared with torch.nn.MultiheadAttention")


@case("multi_head_attention", "keeps the input dtype (float64 in, float64 out)")
def _(fn):
    g = _gen(11)
    x = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    w = _weights(6, g, torch.float64)
    return compare(fn(x, *w, 2, causal=True), _mha(x, *w, 2, causal=True), what="float64 output")


# ----------------------------------------------------------------------- mha_param_count
def _int(got, want: int, what: str):
    if type(got) is not int:
        return f"{what} should be a Python int, but it is a {type(got).__name__}"
    if got != want:
        return f"{what} is {got:,}, expected {want:,}"
    return None


@case("mha_param_count", "d_model=512, 8 heads, no biases: 4·512² = 1,048,576")
def _(fn):
    return _int(fn(512, 8), attention_param_count(512, 8), what="mha_param_count(512, 8)")


@case("mha_param_count", "the same count for 1, 2, 4, 8 and 16 heads (D = C / H)")
def _(fn):
    for h in (1, 2, 4, 8, 16):
        msg = _int(fn(512, h), attention_param_count(512, h), what=f"mha_param_count(512, {h})")
        if msg:
            return msg
    return None


@case("mha_param_count", "bias=True adds one bias per output of each projection")
def _(fn):
    return _int(fn(64, 4, bias=True), attention_param_count(64, 4, bias=True), what="mha_param_count(64, 4, bias=True)")


@case("mha_param_count", "matches torch.nn.MultiheadAttention(96, 6), which has biases")
def _(fn):
    want = sum(p.numel() for p in nn.MultiheadAttention(96, 6).parameters())
    return _int(fn(96, 6, bias=True), want, what="mha_param_count(96, 6, bias=True)")


@case("mha_param_count", "fewer key/value heads (GQA): d_model=512, 8 heads, n_kv_heads=2")
def _(fn):
    return _int(fn(512, 8, n_kv_heads=2), attention_param_count(512, 8, 2),
                what="mha_param_count(512, 8, n_kv_heads=2)")


# ------------------------------------------------------------ causal_self_attention_module
def gpt2_attention_state(c: int, seed: int, *, bias: bool = True, dtype=torch.float32) -> dict:
    """Random GPT-2-named weights for a ``CausalSelfAttention(c, ...)``: ``c_attn`` (3C, C), ``c_proj`` (C, C)."""
    g = _gen(seed)
    s = 1.0 / math.sqrt(c)
    state = {"c_attn.weight": torch.randn(3 * c, c, generator=g, dtype=torch.float64) * s,
             "c_proj.weight": torch.randn(c, c, generator=g, dtype=torch.float64) * s}
    if bias:
        state["c_attn.bias"] = torch.randn(3 * c, generator=g, dtype=torch.float64) * 0.1
        state["c_proj.bias"] = torch.randn(c, generator=g, dtype=torch.float64) * 0.1
    return {k: v.to(dtype) for k, v in state.items()}


def reference_causal_self_attention(x: torch.Tensor, n_heads: int, state: dict) -> torch.Tensor:
    """GPT-2's attention from a state dict, in eval mode: ``x: (B, T, C) -> (B, T, C)``."""
    c, t = x.shape[-1], x.shape[-2]
    qkv = nn.functional.linear(x, state["c_attn.weight"], state.get("c_attn.bias"))   # (B, T, 3C)
    q, k, v = (split_heads(z, n_heads) for z in qkv.split(c, dim=-1))              # (B, H, T, D)
    out = attention(q, k, v, mask=causal_mask(t, t, device=x.device))              # (B, H, T, D)
    return nn.functional.linear(merge_heads(out), state["c_proj.weight"], state.get("c_proj.bias"))


def causal_module_problem(got, x, n_heads, state, *, what: str, reveal_values: bool = True) -> str | None:
    """What is wrong with the dict returned by ``run_causal_self_attention`` (None if right)."""
    if not isinstance(got, dict) or "y" not in got:
        return f"{what}: run_causal_self_attention should return its dict unchanged (it is given code)"
    return compare(got["y"], reference_causal_self_attention(x, n_heads, state), what=what,
                   reveal_values=reveal_values)


@case("causal_self_attention_module", "eval mode, 4 heads, x (2, 5, 16): matches GPT-2's attention")
def _(fn):
    x = torch.randn(2, 5, 16, generator=_gen(20))
    state = gpt2_attention_state(16, 21)
    return causal_module_problem(fn(x, 4, 8, state), x, 4, state, what="output for x of shape (2, 5, 16)")


@case("causal_self_attention_module", "token i does not see the tokens after it")
def _(fn):
    x = torch.randn(1, 6, 8, generator=_gen(22))
    state = gpt2_attention_state(8, 23)
    a, b = fn(x, 2, 6, state)["y"], fn(torch.cat([x[:, :3], 100 * x[:, 3:]], dim=1), 2, 6, state)["y"]
    return compare(b[:, :3], a[:, :3], what="outputs of tokens 0-2 after tokens 3-5 were changed")


@case("causal_self_attention_module", "GPT-2 small's shape (768, 12 heads, 1024 positions): 2,362,368 parameters")
def _(fn):
    got = fn(torch.zeros(1, 2, 768), 12, 1024)
    want = attention_param_count(768, 12, bias=True)
    if got["n_params"] != want:
        hint = ""
        if got["n_params"] == want + 1024 * 1024:
            hint = " (is the causal mask an nn.Parameter? make it a buffer)"
        return f"your layer has {got['n_params']:,} parameters, expected {want:,}{hint}"
    return None


@case("causal_self_attention_module", "eval mode is deterministic even with dropout=0.5")
def _(fn):
    x = torch.randn(2, 4, 8, generator=_gen(24))
    state = gpt2_attention_state(8, 25)
    return causal_module_problem(fn(x, 2, 4, state, dropout=0.5, train=False), x, 2, state,
                                 what="eval-mode output with dropout=0.5 (dropout must be off in eval mode)")
