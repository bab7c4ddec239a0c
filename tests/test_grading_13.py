"""Chapter 13's classic mistakes lose points in their own exercise, and only there."""
from __future__ import annotations

import pytest

from mutants import assert_mistakes_cost_only_their_exercise, grade_mutants

MISTAKES = {
    "rms_norm": "return (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight",
    "swiglu": "return (F.silu(x @ w_up) * (x @ w_gate)) @ w_down",
    "rope": """D = x.shape[-1]
theta = (base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)).float()
ang = positions.float()[..., None] * theta
if positions.dim() == 2:
    ang = ang[:, None]
a, b = x[..., 0::2], x[..., 1::2]
return torch.stack([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()], -1).flatten(-2)""",
}
LAYER_WINDOW_OFF_BY_ONE = """B, T, C = x.shape
D = C // n_heads
h = rms_norm(x, weights["attn_norm"], eps)
q = (h @ weights["w_q"]).view(B, T, n_heads, D).transpose(1, 2)
k = (h @ weights["w_k"]).view(B, T, n_kv_heads, D).transpose(1, 2)
v = (h @ weights["w_v"]).view(B, T, n_kv_heads, D).transpose(1, 2)
q, k = rope(q, positions, base), rope(k, positions, base)
i = torch.arange(T)
lag = i[:, None] - i[None, :]
keep = lag >= 0 if window is None else (lag >= 0) & (lag <= window)
k, v = k.repeat(1, n_heads // n_kv_heads, 1, 1), v.repeat(1, n_heads // n_kv_heads, 1, 1)
out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
x = x + out.transpose(1, 2).reshape(B, T, C) @ weights["w_o"]
return x + swiglu(rms_norm(x, weights["mlp_norm"], eps), weights["w_gate"], weights["w_up"], weights["w_down"])"""


MUTANTS = {"layer_norm+swapped_gate+adjacent_pairs": MISTAKES,
           "window_off_by_one+repeat_grouping": {"decoder_layer": LAYER_WINDOW_OFF_BY_ONE}}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants("13_comparison", MUTANTS, tmp_path_factory.mktemp("mutants13"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    # the layer is graded with the reference parts, so the three part mistakes leave it whole
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, 0.7)
