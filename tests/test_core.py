"""attncourse.attention against independent oracles: torch SDPA (MATH backend) and explicit loops."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attncourse import attention, stable_softmax
from attncourse.masks import causal_mask, padding_mask
from attncourse.testing import assert_matches

SIZES = [  # (B, H, Tq, Tk, D, Dv): awkward on purpose
    (1, 1, 1, 1, 1, 1),
    (2, 3, 5, 7, 4, 6),
    (1, 2, 97, 97, 16, 16),
    (3, 1, 97, 13, 1, 5),
    (1, 4, 13, 97, 8, 3),
]


def _qkv(B, H, Tq, Tk, D, Dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(B, H, Tk, D, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, H, Tk, Dv, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


def sdpa_math(q, k, v, **kw):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, **kw)


def loop_attention(q, k, v, mask=None, bias=None, scale=None):
    """The paper's formula, one query row at a time, in float64, with plain Python max/sum."""
    B, H, Tq, D = q.shape
    Tk, Dv = k.shape[-2], v.shape[-1]
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, Tq, Dv, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                s = [float(q[b, h, i].double() @ k[b, h, j].double()) * scale for j in range(Tk)]
                if bias is not None:
                    s = [s[j] + float(bias[b, h, i, j]) for j in range(Tk)]
                keep = [True] * Tk if mask is None else [bool(mask[b, h, i, j]) for j in range(Tk)]
                if not any(keep):
                    continue  # fully masked row -> zeros
                m = max(s[j] for j in range(Tk) if keep[j])
                e = [math.exp(s[j] - m) if keep[j] else 0.0 for j in range(Tk)]
                z = sum(e)
                for j in range(Tk):
                    out[b, h, i] += e[j] / z * v[b, h, j].double()
    return out


@pytest.mark.parametrize("size", SIZES)
def test_matches_sdpa_math(size):
    q, k, v = _qkv(*size)
    assert_matches(attention(q, k, v), sdpa_math(q, k, v))


@pytest.mark.parametrize("size", [s for s in SIZES if s[2] * s[3] < 2000])
def test_matches_explicit_loop_with_mask_and_bias(size):
    B, H, Tq, Tk, D, Dv = size
    q, k, v = _qkv(*size, dtype=torch.float64, seed=1)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(B, H, Tq, Tk, generator=g) < 0.7
    mask[..., 0, :] = False  # one fully masked row
    bias = torch.randn(B, H, Tq, Tk, generator=g, dtype=torch.float64)
    got = attention(q, k, v, mask=mask, bias=bias, scale=0.3)
    assert_matches(got, loop_attention(q, k, v, mask=mask, bias=bias, scale=0.3))


@pytest.mark.parametrize("size", [s for s in SIZES if s[2] <= s[3]])  # Tq > Tk: rows fully masked, see below
def test_causal_matches_sdpa_bottom_right(size):
    B, H, Tq, Tk, D, Dv = size
    q, k, v = _qkv(*size)
    m = causal_mask(Tq, Tk)
    assert_matches(attention(q, k, v, mask=m), sdpa_math(q, k, v, attn_mask=m))


def test_causal_with_more_queries_than_keys_masks_the_first_rows():
    q, k, v = _qkv(1, 2, 7, 4, 3, 3)
    out = attention(q, k, v, mask=causal_mask(7, 4))
    assert torch.equal(out[:, :, :3], torch.zeros_like(out[:, :, :3]))  # queries before key 0
    assert_matches(out[:, :, 3:], sdpa_math(q[:, :, 3:], k, v, is_causal=True))


def test_causal_square_equals_sdpa_is_causal():
    q, k, v = _qkv(2, 2, 33, 33, 8, 8)
    assert_matches(attention(q, k, v, mask=causal_mask(33, 33)), sdpa_math(q, k, v, is_causal=True))


def test_scale_and_float_bias_match_sdpa():
    q, k, v = _qkv(2, 3, 11, 9, 5, 5)
    bias = torch.randn(3, 11, 9)
    assert_matches(attention(q, k, v, bias=bias, scale=0.5), sdpa_math(q, k, v, attn_mask=bias, scale=0.5))


def test_padding_mask_broadcasts_and_padding_has_no_influence():
    q, k, v = _qkv(2, 2, 6, 6, 4, 4)
    m = padding_mask([6, 3], 6)  # (B, 1, 1, T)
    out = attention(q, k, v, mask=m)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 3:] = 1e3 * torch.randn_like(k2[1, :, 3:])  # garbage in the padding keys
    v2[1, :, 3:] = 1e3 * torch.randn_like(v2[1, :, 3:])
    out2 = attention(q, k2, v2, mask=m)
    assert_matches(out2, out)
    assert_matches(out, sdpa_math(q, k, v, attn_mask=m))


def test_fully_masked_rows_are_zero_with_finite_gradients():
    q, k, v = _qkv(1, 2, 4, 5, 3, 3)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1] = False
    out, w = attention(q, k, v, mask=mask, return_weights=True)
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    assert torch.equal(w[:, :, 1], torch.zeros_like(w[:, :, 1]))
    torch.testing.assert_close(w[:, :, [0, 2, 3]].sum(-1), torch.ones(1, 2, 3))
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, 1], torch.zeros_like(q.grad[:, :, 1]))


def test_all_masked_gives_zeros_where_torch_softmax_gives_nan():
    x = torch.full((2, 3), float("-inf"))
    assert torch.isnan(torch.softmax(x, -1)).all()  # the trap the course warns about
    assert torch.equal(stable_softmax(x), torch.zeros(2, 3))


def test_stable_softmax_no_overflow():
    x = torch.tensor([[1000.0, 1001.0, 1002.0]])
    assert torch.isnan(torch.exp(x) / torch.exp(x).sum()).any()
    torch.testing.assert_close(stable_softmax(x), torch.softmax(x.double(), -1).float())


def test_gradcheck_float64():
    q, k, v = _qkv(1, 2, 3, 4, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    bias = torch.randn(3, 4, dtype=torch.float64)
    f = lambda q, k, v: attention(q, k, v, mask=mask, bias=bias)
    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (q, k, v)))


def test_gradients_match_sdpa():
    q, k, v = _qkv(2, 2, 7, 9, 4, 5)
    m = causal_mask(7, 9)
    grads = []
    for fn in (lambda a, b, c: attention(a, b, c, mask=m), lambda a, b, c: sdpa_math(a, b, c, attn_mask=m)):
        ts = [t.clone().requires_grad_() for t in (q, k, v)]
        fn(*ts).sin().sum().backward()
        grads.append([t.grad for t in ts])
    for a, b in zip(*grads):
        assert_matches(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_is_bounded_by_same_dtype_reference(dtype):
    """flash-attention's rule: our error vs float64 is at most ~2x SDPA's own same-dtype error."""
    q, k, v = _qkv(2, 2, 97, 61, 16, 16, dtype=dtype, seed=3)
    m = causal_mask(97, 61) | (torch.arange(61) == 0)  # avoid fully masked rows for SDPA
    exact = attention(q.double(), k.double(), v.double(), mask=m)
    ours = attention(q, k, v, mask=m)
    ref = sdpa_math(q, k, v, attn_mask=m)
    assert ours.dtype == dtype
    our_err = (ours.double() - exact).abs().max()
    ref_err = (ref.double() - exact).abs().max()
    assert our_err <= 2 * ref_err + 1e-6, (our_err, ref_err)
    assert_matches(ours, exact.to(dtype))


def test_float64_stays_float64_and_weights_returned():
    q, k, v = _qkv(1, 1, 3, 4, 2, 2, dtype=torch.float64)
    out, w = attention(q, k, v, return_weights=True)
    assert out.dtype == w.dtype == torch.float64
    assert w.shape == (1, 1, 3, 4)


def test_gqa_grouping_matches_sdpa_enable_gqa():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 6, 5, 4, generator=g)
    k, v = torch.randn(2, 2, 7, 4, generator=g), torch.randn(2, 2, 7, 4, generator=g)
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert_matches(attention(q, k, v, enable_gqa=True), ref)
    with pytest.raises(ValueError, match="do not broadcast"):
        attention(q, k, v)  # without the flag, 6 vs 2 heads is an error
    with pytest.raises(ValueError, match="multiple of the K/V heads"):
        attention(q[:, :5], k, v, enable_gqa=True)
    # explicit: query head h reads K/V head h // 3
    for h in range(6):
        assert_matches(attention(q[:, h], k[:, h // 3], v[:, h // 3]), ref[:, h])


@pytest.mark.parametrize("bad, match", [
    (dict(k=torch.randn(1, 2, 5, 3)), r"same head dim"),
    (dict(v=torch.randn(1, 2, 6, 4)), r"same number of keys"),
    (dict(q=torch.randn(3, 2, 4, 4), k=torch.randn(2, 2, 5, 4), v=torch.randn(2, 2, 5, 4)), r"do not broadcast"),
    (dict(q=torch.randn(4)), r"at least 2 dims"),
    (dict(mask=torch.ones(4, 6, dtype=torch.bool)), r"mask of shape \(4, 6\) does not broadcast"),
])
def test_shape_errors_name_the_shapes(bad, match):
    args = dict(q=torch.randn(1, 2, 4, 4), k=torch.randn(1, 2, 5, 4), v=torch.randn(1, 2, 5, 4))
    mask = bad.pop("mask", None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        attention(args["q"], args["k"], args["v"], mask=mask)


def test_3d_batches_are_not_regrouped_as_heads():
    q, k = torch.randn(4, 3, 5), torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="do not broadcast"):
        attention(q, k, k)


def test_type_errors():
    q = torch.randn(1, 3, 4)
    with pytest.raises(TypeError, match="bool tensor"):
        attention(q, q, q, mask=torch.ones(3, 3))
    with pytest.raises(TypeError, match="share a dtype"):
        attention(q, q.double(), q)
    with pytest.raises(TypeError, match="floating-point"):
        attention(q.long(), q.long(), q.long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        attention([[1.0]], q, q)
