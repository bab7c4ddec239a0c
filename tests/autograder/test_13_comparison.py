"""Hidden tests for chapter 13 (a modern decoder layer). Run by `attncourse grade` only.

Every expected value comes from the package through the adapters of
``attncourse.checks.ch13_comparison`` (``attncourse.model.rms_norm``, ``attncourse.rope.apply_rope``,
``attncourse.llama.LlamaLayer``) and is compared with ``expect`` (no hidden values in messages).

Coverage (keep it true when tests change):
- rms_norm: (C,), (T, C), (B, T, C), C = 1..97; float32/64; float16 with values near 300 (squares
  overflow float16: statistics must be float32) and bfloat16 (dtype kept), weighted; eps inside the
  root (tiny inputs, several eps, and eps = 0.5 at unit scale: a hard-coded eps fails); inputs with
  a large mean (RMSNorm is not LayerNorm); float64 gradients for x and weight, weighted; rule:
  torch's rms_norm / RMSNorm.
- swiglu: 1-D to 3-D x, C != F, F = 1, float32/64 and bfloat16; gate and up not swapped (the SiLU
  on the gate); float64 gradients for x and the three matrices.
- rope: positions (T,) and (B, T), starting at 0 and far from it (up to 5000), gapped (B, T)
  positions, D = 2..128, one and several heads, bases 100, 10000 and 500000 (an ignored base
  fails), float32/64 (float64 angles) and bfloat16; half-split pairs, θ_i = base^(-2i/D); float64
  gradient.
- decoder_layer: MHA, GQA and MQA (causality and gradient with GQA, where a `repeat` grouping
  fails); window None, 1, 2, 3, 4 and >= T; T = 1 and 17; positions (T,) and (B, T) with gaps
  (ignoring positions fails); eps and base passed through (non-default values, with a window);
  float32/64; float64 gradient for x; causality. Graded with the reference rms_norm, swiglu and
  rope (``uses``).
"""
from __future__ import annotations

import pytest
import torch

from attncourse.checks.ch13_comparison import (
    random_weights, reference_decoder_layer, reference_rms_norm, reference_rope, reference_swiglu,
)
from attncourse.grading.testkit import LOW_PRECISION, dname, expect, expect_true, forbid, rand

_CH = "attncourse.checks.ch13_comparison."
EXERCISES = {
    "rms_norm": {"function": "rms_norm", "points": 2},
    "swiglu": {"function": "swiglu", "points": 2},
    "rope": {"function": "rope", "points": 2},
    "decoder_layer": {"function": "decoder_layer", "points": 4,
                      "uses": {"rms_norm": _CH + "reference_rms_norm", "swiglu": _CH + "reference_swiglu",
                               "rope": _CH + "reference_rope"}},
}

FORBIDDEN = forbid(
    (["torch.nn.functional.rms_norm", "torch.nn.modules.normalization.RMSNorm.forward", "torch.rms_norm",
      "torch.ops.aten.rms_norm",
      "attncourse.model.rms_norm", "attncourse.model.RMSNorm.forward"], ["rms_norm", "decoder_layer"]),
    (["attncourse.rope.apply_rope"], ["rope", "decoder_layer"]),
    (["attncourse.llama.LlamaLayer.forward", "attncourse.llama.LlamaAttention.forward",
      "attncourse.llama.SwiGLU.forward"], ["swiglu", "decoder_layer"]),
)


# ============================================================================ rms_norm
@pytest.mark.exercise("rms_norm")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 9, 16), (1, 4, 97)], ids=str)
def test_rms_norm_matches_reference(learner, shape, dtype):
    x, w = rand(*shape, seed=1, dtype=dtype, scale=2.0), rand(shape[-1], seed=2, dtype=dtype)
    expect(learner.rms_norm(x, w), reference_rms_norm(x, w), what=f"rms_norm of x {shape}, {dname(dtype)}")


@pytest.mark.exercise("rms_norm")
@pytest.mark.points(5)      # eps is one of the two arguments: a hard-coded eps loses a third
@pytest.mark.parametrize("eps, scale", [(1e-6, 1e-3), (1e-2, 1e-3), (0.5, 1.0)], ids=str)
def test_rms_norm_eps_inside_the_root(learner, eps, scale):
    x, w = rand(3, 8, seed=3, scale=scale), rand(8, seed=4)
    expect(learner.rms_norm(x, w, eps), reference_rms_norm(x, w, eps),
           what=f"rms_norm of tiny inputs with eps={eps:g} (eps goes inside the square root)")


@pytest.mark.exercise("rms_norm")
@pytest.mark.points(2)
def test_rms_norm_is_not_layer_norm(learner):
    x, w = rand(4, 12, seed=5) + 3.0, rand(12, seed=6)                     # a large mean
    expect(learner.rms_norm(x, w), reference_rms_norm(x, w), what="rms_norm of inputs with mean 3 (do not subtract the mean)")


@pytest.mark.exercise("rms_norm")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dname)
def test_rms_norm_low_precision(learner, dtype):
    x, w = rand(2, 5, 32, seed=7, scale=300.0).to(dtype), rand(32, seed=8).to(dtype)
    expect(learner.rms_norm(x, w), reference_rms_norm(x, w),
           what=f"rms_norm of {dname(dtype)} inputs near 300 (compute the mean square in float32, return {dname(dtype)})")


@pytest.mark.exercise("rms_norm")
@pytest.mark.points(4)
def test_rms_norm_gradients(learner):
    x, w = rand(3, 6, seed=9, dtype=torch.float64), rand(6, seed=10, dtype=torch.float64)
    g = rand(3, 6, seed=11, dtype=torch.float64)
    out, grads = learner.rms_norm.grad(x, w, wrt=(0, 1), grad_output=g)
    rx, rw = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ref = reference_rms_norm(rx, rw)
    want = torch.autograd.grad(ref, (rx, rw), g)
    expect(out, ref.detach(), what="rms_norm in the gradient test")
    for name, got, exp in zip(("x", "weight"), grads, want):
        expect(got, exp, what=f"the gradient of rms_norm with respect to {name}")


# ============================================================================ swiglu
def _mlp(c, f, seed, dtype=torch.float32):
    return (rand(c, f, seed=seed, dtype=dtype, scale=c ** -0.5), rand(c, f, seed=seed + 1, dtype=dtype, scale=c ** -0.5),
            rand(f, c, seed=seed + 2, dtype=dtype, scale=f ** -0.5))


@pytest.mark.exercise("swiglu")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("shape,f", [((5,), 7), ((3, 8), 1), ((2, 6, 8), 20), ((1, 1, 16), 16)], ids=str)
def test_swiglu_matches_reference(learner, shape, f, dtype):
    x = rand(*shape, seed=20, dtype=dtype)
    w = _mlp(shape[-1], f, seed=21, dtype=dtype)
    expect(learner.swiglu(x, *w), reference_swiglu(x, *w), what=f"swiglu of x {shape} with hidden width {f}, {dname(dtype)}")


@pytest.mark.exercise("swiglu")
@pytest.mark.points(2)
def test_swiglu_gate_is_the_silu_side(learner):
    x = rand(2, 4, 8, seed=22, scale=3.0)
    w = _mlp(8, 12, seed=23)
    expect(learner.swiglu(x, *w), reference_swiglu(x, *w), what="swiglu output (SiLU on x @ w_gate, times x @ w_up)")


@pytest.mark.exercise("swiglu")
def test_swiglu_bfloat16(learner):
    x = rand(2, 3, 16, seed=24).bfloat16()
    w = tuple(t.bfloat16() for t in _mlp(16, 24, seed=25))
    expect(learner.swiglu(x, *w), reference_swiglu(x.float(), *(t.float() for t in w)).bfloat16(),
           what="swiglu of bfloat16 inputs (keep the dtype)")


@pytest.mark.exercise("swiglu")
@pytest.mark.points(2)
def test_swiglu_gradients(learner):
    x = rand(2, 3, 6, seed=26, dtype=torch.float64)
    w = _mlp(6, 10, seed=27, dtype=torch.float64)
    g = rand(2, 3, 6, seed=28, dtype=torch.float64)
    out, grads = learner.swiglu.grad(x, *w, wrt=(0, 1, 2, 3), grad_output=g)
    ref_in = [t.clone().requires_grad_(True) for t in (x, *w)]
    ref = reference_swiglu(*ref_in)
    want = torch.autograd.grad(ref, ref_in, g)
    expect(out, ref.detach(), what="swiglu in the gradient test")
    for name, got, exp in zip(("x", "w_gate", "w_up", "w_down"), grads, want):
        expect(got, exp, what=f"the gradient of swiglu with respect to {name}")


# ============================================================================ rope
ROPE_CASES = [  # (B, H, T, D, start)
    (1, 1, 1, 2, 0), (1, 2, 5, 8, 0), (2, 3, 7, 16, 13), (1, 1, 4, 128, 5000), (3, 2, 9, 6, 1),
]


@pytest.mark.exercise("rope")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", ROPE_CASES, ids=lambda c: "B{}H{}T{}D{}from{}".format(*c))
def test_rope_matches_reference(learner, case, dtype):
    b, h, t, d, start = case
    x = rand(b, h, t, d, seed=30, dtype=dtype)
    pos = torch.arange(start, start + t)
    expect(learner.rope(x, pos), reference_rope(x, pos),
           what=f"rope of x {(b, h, t, d)}, {dname(dtype)}, positions {start}..{start + t - 1}")


@pytest.mark.exercise("rope")
@pytest.mark.points(2)
@pytest.mark.parametrize("base", [10000.0, 500000.0, 100.0], ids=lambda b: f"base{b:g}")
def test_rope_per_sequence_positions_and_base(learner, base):
    x = rand(3, 2, 4, 10, seed=31)
    pos = torch.tensor([[0, 1, 2, 3], [7, 8, 9, 10], [100, 101, 102, 103]])
    expect(learner.rope(x, pos, base), reference_rope(x, pos, base),
           what=f"rope with per-sequence positions (B, T) and base {base:g}")


@pytest.mark.exercise("rope")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
def test_rope_gapped_positions_and_base(learner, dtype):
    x = rand(2, 3, 5, 8, seed=35, dtype=dtype)
    pos = torch.tensor([[0, 1, 2, 6, 7], [3, 5, 8, 13, 21]])            # not consecutive, not from 0
    expect(learner.rope(x, pos, 500000.0), reference_rope(x, pos, 500000.0),
           what=f"rope of {dname(dtype)} x with positions [[0, 1, 2, 6, 7], [3, 5, 8, 13, 21]] and base 500000")


@pytest.mark.exercise("rope")
@pytest.mark.points(2)
def test_rope_pairs_are_half_split(learner):
    x = torch.zeros(1, 1, 2, 8)
    x[..., 0] = 1.0                                                        # only dimension 0 is set
    pos = torch.tensor([0, 1])
    expect(learner.rope(x, pos), reference_rope(x, pos),
           what="rope of a unit vector in dimension 0 (it turns towards dimension D/2, not dimension 1)")


@pytest.mark.exercise("rope")
@pytest.mark.points(2)
def test_rope_bfloat16(learner):
    x = rand(2, 2, 6, 8, seed=32).bfloat16()
    pos = torch.arange(6)
    expect(learner.rope(x, pos), reference_rope(x, pos), what="rope of bfloat16 x (keep the dtype)")


@pytest.mark.exercise("rope")
@pytest.mark.points(2)
def test_rope_gradient(learner):
    x = rand(1, 2, 5, 6, seed=33, dtype=torch.float64)
    g = rand(1, 2, 5, 6, seed=34, dtype=torch.float64)
    pos = torch.arange(3, 8)
    out, (grad,) = learner.rope.grad(x, pos, wrt=(0,), grad_output=g)
    rx = x.clone().requires_grad_(True)
    ref = reference_rope(rx, pos)
    (want,) = torch.autograd.grad(ref, rx, g)
    expect(out, ref.detach(), what="rope in the gradient test")
    expect(grad, want, what="the gradient of rope with respect to x (a rotation's gradient is the inverse rotation)")


# ============================================================================ decoder_layer
LAYER_CASES = [  # (B, T, C, H, Hkv, F, window)
    (1, 1, 8, 2, 2, 8, None), (2, 6, 16, 4, 4, 24, None), (2, 7, 16, 4, 2, 24, 2), (1, 9, 24, 6, 1, 16, 4),
    (2, 8, 16, 4, 2, 20, 3), (1, 17, 16, 2, 1, 12, 1), (2, 5, 16, 4, 2, 16, 8),
]


def _layer_id(c):
    return "B{}T{}C{}H{}kv{}F{}W{}".format(*c)


@pytest.mark.exercise("decoder_layer")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", LAYER_CASES, ids=_layer_id)
def test_decoder_layer_matches_reference(learner, case, dtype):
    b, t, c, h, hkv, f, window = case
    x = rand(b, t, c, seed=40, dtype=dtype)
    w = random_weights(c, h, hkv, f, seed=41, dtype=dtype)
    pos = torch.arange(t)
    expect(learner.decoder_layer(x, w, pos, h, hkv, window), reference_decoder_layer(x, w, pos, h, hkv, window),
           what=f"decoder_layer output for x {(b, t, c)}, {h} query heads, {hkv} K/V heads, window {window}, {dname(dtype)}")


@pytest.mark.exercise("decoder_layer")
@pytest.mark.points(4)
def test_decoder_layer_positions_eps_base(learner):
    x = rand(2, 5, 16, seed=42)
    w = random_weights(16, 4, 2, 16, seed=43)
    pos = torch.tensor([[0, 1, 2, 6, 7], [3, 5, 8, 13, 21]])            # gaps: RoPE sees i - j change
    expect(learner.decoder_layer(x, w, pos, 4, 2, None, 1e-3, 500000.0),
           reference_decoder_layer(x, w, pos, 4, 2, None, 1e-3, 500000.0),
           what="decoder_layer with per-sequence positions (B, T) [[0, 1, 2, 6, 7], [3, 5, 8, 13, 21]], eps=1e-3 and "
                "base 500000")


@pytest.mark.exercise("decoder_layer")
@pytest.mark.points(3)
@pytest.mark.parametrize("eps, base", [(1e-2, 100.0), (0.5, 10000.0)], ids=["eps0.01-base100", "eps0.5"])
def test_decoder_layer_eps_and_base_reach_the_parts(learner, eps, base):
    x = rand(1, 6, 16, seed=50, scale=0.2)
    w = random_weights(16, 4, 2, 16, seed=51)
    pos = torch.tensor([2, 3, 5, 9, 10, 11])
    expect(learner.decoder_layer(x, w, pos, 4, 2, 3, eps, base),
           reference_decoder_layer(x, w, pos, 4, 2, 3, eps, base),
           what=f"decoder_layer with positions (T,) [2, 3, 5, 9, 10, 11], window 3, eps={eps:g} and base {base:g} "
                "(both norms use eps, RoPE uses base)")


@pytest.mark.exercise("decoder_layer")
@pytest.mark.points(2)
def test_decoder_layer_is_causal(learner):
    x = rand(1, 8, 16, seed=44)
    w = random_weights(16, 4, 2, 16, seed=45)
    pos = torch.arange(8)
    y = x.clone()
    y[:, 5:] = rand(1, 3, 16, seed=46, scale=20.0)
    a = learner.decoder_layer(x, w, pos, 4, 2)
    b = learner.decoder_layer(y, w, pos, 4, 2)
    expect(a, reference_decoder_layer(x, w, pos, 4, 2), what="decoder_layer output (T = 8, 4 query heads, 2 K/V heads)")
    expect_true(isinstance(b, torch.Tensor) and b.shape == a.shape, "decoder_layer should return (B, T, C)")
    expect(b[:, :5], a[:, :5], what="outputs 0-4 after tokens 5-7 were changed (a token sees no later token)")


@pytest.mark.exercise("decoder_layer")
@pytest.mark.points(2)
def test_decoder_layer_gradient(learner):
    x = rand(2, 4, 8, seed=47, dtype=torch.float64)
    w = random_weights(8, 4, 2, 8, seed=48, dtype=torch.float64)
    g = rand(2, 4, 8, seed=49, dtype=torch.float64)
    pos = torch.arange(4)
    out, (grad,) = learner.decoder_layer.grad(x, w, pos, 4, 2, 3, wrt=(0,), grad_output=g)
    rx = x.clone().requires_grad_(True)
    from attncourse.checks.ch13_comparison import layer_from_weights
    from attncourse.llama import decoder_mask
    layer = layer_from_weights(w, 4, 2, window=3)
    ref = layer(rx, pos.expand(2, 4), decoder_mask(4, 4, None, 3))
    (want,) = torch.autograd.grad(ref, rx, g)
    expect(out, ref.detach(), what="decoder_layer in the gradient test (window 3)")
    expect(grad, want, what="the gradient of decoder_layer with respect to x")
