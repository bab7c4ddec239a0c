"""Public checks for chapter 13 (a modern decoder layer from the course's parts).

The references are thin adapters from the exercise signatures (rows are tokens, ``x @ w``) to
the package's code: :class:`attncourse.model.RMSNorm`, :class:`attncourse.llama.SwiGLU`,
:func:`attncourse.rope.apply_rope` and :class:`attncourse.llama.LlamaLayer`. The hidden tests
(``tests/autograder/test_13_comparison.py``) use the same adapters on larger and odder grids.
"""
from __future__ import annotations

import math

import torch

from attncourse.checks import case
from attncourse.llama import LlamaConfig, LlamaLayer
from attncourse.model import rms_norm
from attncourse.rope import apply_rope
from attncourse.testing import compare

WEIGHT_NAMES = ("attn_norm", "w_q", "w_k", "w_v", "w_o", "mlp_norm", "w_gate", "w_up", "w_down")


# ------------------------------------------------------------------------- references
def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(mean(x²) + eps) * weight`` over the last dim: :func:`attncourse.model.rms_norm`."""
    return rms_norm(x, weight, eps)


def reference_swiglu(x, w_gate, w_up, w_down):
    """``(silu(x @ w_gate) * (x @ w_up)) @ w_down``: Llama's MLP with rows as tokens."""
    return (torch.nn.functional.silu(x @ w_gate) * (x @ w_up)) @ w_down


def reference_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Half-split RoPE (chapter 10): ``attncourse.rope.apply_rope``."""
    return apply_rope(x, positions, base=base)


def layer_from_weights(weights: dict, n_heads: int, n_kv_heads: int, *, window=None, eps=1e-6,
                       base=10000.0) -> LlamaLayer:
    """The package's :class:`LlamaLayer` holding ``weights`` (given as ``x @ w`` matrices)."""
    d_model, d_ff = weights["w_q"].shape[0], weights["w_gate"].shape[1]
    cfg = LlamaConfig(vocab_size=1, d_model=d_model, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      d_ff=d_ff, max_seq_len=1 << 20, rope_base=base, norm_eps=eps, window=window)
    layer = LlamaLayer(cfg).to(weights["w_q"].dtype)
    with torch.no_grad():
        layer.input_layernorm.weight.copy_(weights["attn_norm"])
        layer.post_attention_layernorm.weight.copy_(weights["mlp_norm"])
        for name, lin in (("w_q", layer.self_attn.q_proj), ("w_k", layer.self_attn.k_proj),
                          ("w_v", layer.self_attn.v_proj), ("w_o", layer.self_attn.o_proj),
                          ("w_gate", layer.mlp.gate_proj), ("w_up", layer.mlp.up_proj),
                          ("w_down", layer.mlp.down_proj)):
            lin.weight.copy_(weights[name].T)                 # nn.Linear stores (out, in)
    return layer


def reference_decoder_layer(x, weights, positions, n_heads, n_kv_heads, window=None, eps=1e-6, base=10000.0):
    """One Llama/Mistral decoder layer: ``x: (B, T, C) -> (B, T, C)``, causal, no padding."""
    layer = layer_from_weights(weights, n_heads, n_kv_heads, window=window, eps=eps, base=base)
    T = x.shape[1]
    pos = positions if positions.dim() == 2 else positions.expand(x.shape[0], T)
    from attncourse.llama import decoder_mask
    with torch.no_grad():
        return layer(x, pos, decoder_mask(T, T, None, window, device=x.device))


def random_weights(c: int, n_heads: int, n_kv_heads: int, d_ff: int, seed: int, dtype=torch.float32) -> dict:
    """Weights for :func:`reference_decoder_layer`, scaled so the layer's output is O(1)."""
    g = torch.Generator().manual_seed(seed)
    d = c // n_heads

    def w(i, o):
        return (torch.randn(i, o, generator=g, dtype=torch.float64) / math.sqrt(i)).to(dtype)

    return {"attn_norm": (1 + 0.3 * torch.randn(c, generator=g, dtype=torch.float64)).to(dtype),
            "w_q": w(c, n_heads * d), "w_k": w(c, n_kv_heads * d), "w_v": w(c, n_kv_heads * d),
            "w_o": w(n_heads * d, c),
            "mlp_norm": (1 + 0.3 * torch.randn(c, generator=g, dtype=torch.float64)).to(dtype),
            "w_gate": w(c, d_ff), "w_up": w(c, d_ff), "w_down": w(d_ff, c)}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- rms_norm
@case("rms_norm", "x (2, 5, 8): divides by the root mean square, then scales by weight")
def _(fn):
    x, w = torch.randn(2, 5, 8, generator=_gen(1)), torch.randn(8, generator=_gen(2))
    out = fn(x, w)
    if isinstance(out, torch.Tensor) and out.shape == x.shape and torch.allclose(
            out, torch.nn.functional.layer_norm(x, (8,)) * w, atol=1e-5):
        return "that is LayerNorm: RMSNorm does not subtract the mean"
    return compare(out, reference_rms_norm(x, w), what="rms_norm(x, weight)")


@case("rms_norm", "eps goes inside the square root")
def _(fn):
    x, w = 1e-3 * torch.randn(3, 4, generator=_gen(3)), torch.ones(4)
    return compare(fn(x, w, eps=1e-4), reference_rms_norm(x, w, eps=1e-4), what="rms_norm of tiny inputs, eps=1e-4")


@case("rms_norm", "keeps the dtype: bfloat16 in, bfloat16 out")
def _(fn):
    x, w = torch.randn(2, 6, generator=_gen(4)).bfloat16(), torch.randn(6, generator=_gen(5)).bfloat16()
    return compare(fn(x, w), reference_rms_norm(x, w), what="rms_norm in bfloat16")


# --------------------------------------------------------------------------- swiglu
@case("swiglu", "x (2, 3, 8), hidden width 12: down(silu(gate) * up)")
def _(fn):
    g = _gen(6)
    x, wg, wu, wd = (torch.randn(2, 3, 8, generator=g), torch.randn(8, 12, generator=g),
                     torch.randn(8, 12, generator=g), torch.randn(12, 8, generator=g))
    out = fn(x, wg, wu, wd)
    if isinstance(out, torch.Tensor) and out.shape == x.shape and torch.allclose(
            out, reference_swiglu(x, wu, wg, wd), atol=1e-4):
        return "gate and up are swapped: the SiLU goes on x @ w_gate"
    return compare(out, reference_swiglu(x, wg, wu, wd), what="swiglu output")


@case("swiglu", "keeps the dtype: float64 in, float64 out, hidden width 1")
def _(fn):
    g = _gen(15)
    x, wg, wu, wd = (torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(6, 1, generator=g, dtype=torch.float64),
                     torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(1, 6, generator=g, dtype=torch.float64))
    return compare(fn(x, wg, wu, wd), reference_swiglu(x, wg, wu, wd), what="swiglu in float64")


# --------------------------------------------------------------------------- rope
@case("rope", "half-split pairs (i, i + D/2), positions 0..4, D = 8")
def _(fn):
    x = torch.randn(1, 2, 5, 8, generator=_gen(7))
    pos = torch.arange(5)
    out = fn(x, pos)
    if isinstance(out, torch.Tensor) and out.shape == x.shape and torch.allclose(
            out, apply_rope(x, pos, interleaved=True), atol=1e-5):
        return "you rotate adjacent pairs (2i, 2i+1); this layout pairs dimension i with i + D/2"
    return compare(out, reference_rope(x, pos), what="rope(x, positions 0..4)")


@case("rope", "positions need not start at 0 (decoding), base = 500000")
def _(fn):
    x = torch.randn(2, 1, 3, 6, generator=_gen(8))
    pos = torch.tensor([[7, 8, 9], [20, 21, 22]])
    return compare(fn(x, pos, base=500000.0), reference_rope(x, pos, base=500000.0),
                   what="rope with per-sequence positions (B, T) and base 500000")


# --------------------------------------------------------------------------- decoder_layer
@case("decoder_layer", "Llama layer: C = 16, 4 query heads, 2 K/V heads, T = 6")
def _(fn):
    x = torch.randn(2, 6, 16, generator=_gen(9))
    w = random_weights(16, 4, 2, 24, seed=10)
    pos = torch.arange(6)
    return compare(fn(x, w, pos, 4, 2), reference_decoder_layer(x, w, pos, 4, 2), what="decoder_layer output")


@case("decoder_layer", "Mistral layer: the same with a sliding window W = 3")
def _(fn):
    x = torch.randn(1, 7, 16, generator=_gen(11))
    w = random_weights(16, 4, 1, 24, seed=12)
    pos = torch.arange(7)
    return compare(fn(x, w, pos, 4, 1, window=3), reference_decoder_layer(x, w, pos, 4, 1, window=3),
                   what="decoder_layer output with window = 3")


@case("decoder_layer", "causal: changing the last token changes only the last output")
def _(fn):
    x = torch.randn(1, 5, 16, generator=_gen(13))
    w = random_weights(16, 2, 2, 16, seed=14)
    pos = torch.arange(5)
    y = x.clone()
    y[:, -1] += 5
    a, b = fn(x, w, pos, 2, 2), fn(y, w, pos, 2, 2)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return "decoder_layer should return a tensor"
    return compare(b[:, :-1], a[:, :-1], what="outputs 0..3 after token 4 changed (a token sees no later token)")

