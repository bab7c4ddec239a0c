"""attncourse.alibi against independent oracles: the slope rule of Press et al.'s reference code
(transcribed as a recursion), the bias written out entry by entry, torch SDPA (MATH backend) with
the bias as a float mask, FlexAttention's score_mod, and the row-shift form of the paper's code."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attncourse.alibi import alibi_attention, alibi_bias, alibi_score_mod, alibi_slopes
from attncourse.core import attention
from attncourse.masks import causal_mask
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def paper_slopes(n):
    """The rule of the ALiBi reference implementation (github.com/ofirpress/attention_with_linear_biases)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("n", list(range(1, 41)) + [48, 64, 96, 128])
def test_slopes_match_reference_rule(n):
    got = alibi_slopes(n, dtype=torch.float64)
    assert_matches(got, torch.tensor(paper_slopes(n), dtype=torch.float64), rtol=1e-12, atol=0)
    assert alibi_slopes(n).dtype == torch.float32 and alibi_slopes(n).shape == (n,)


def test_slopes_examples_from_the_paper():
    assert alibi_slopes(8, dtype=torch.float64).tolist() == [2.0 ** -k for k in range(1, 9)]     # 1/2 ... 1/256
    assert_matches(alibi_slopes(16, dtype=torch.float64),
                   torch.tensor([2.0 ** (-k / 2) for k in range(1, 17)], dtype=torch.float64))     # 1/√2 ... 1/256
    twelve = alibi_slopes(12, dtype=torch.float64)
    assert twelve[:8].tolist() == [2.0 ** -k for k in range(1, 9)]
    assert_matches(twelve[8:], torch.tensor([2.0 ** -(k / 2) for k in (1, 3, 5, 7)], dtype=torch.float64))
    # not the naive 2^(-8k/n) for n = 12
    naive = torch.tensor([2.0 ** (-8 * k / 12) for k in range(1, 13)], dtype=torch.float64)
    assert (twelve - naive).abs().max() > 0.1


@pytest.mark.parametrize("tq,tk", [(1, 1), (5, 5), (3, 8), (1, 97), (7, 7), (8, 3)])
@pytest.mark.parametrize("n_heads", [1, 3, 8])
def test_bias_formula_bottom_right(n_heads, tq, tk):
    slopes = paper_slopes(n_heads)
    want = torch.empty(n_heads, tq, tk, dtype=torch.float64)
    sym = torch.empty_like(want)
    for h in range(n_heads):
        for i in range(tq):
            for j in range(tk):
                d = (tk - tq + i) - j                                   # query i sits at position Tk - Tq + i
                want[h, i, j] = -slopes[h] * d
                sym[h, i, j] = -slopes[h] * abs(d)
    assert_matches(alibi_bias(n_heads, tq, tk, dtype=torch.float64), want)
    assert_matches(alibi_bias(n_heads, tq, tk, symmetric=True, dtype=torch.float64), sym)
    assert alibi_bias(n_heads, tq, tk).dtype == torch.float32


def test_last_query_row_is_the_same_for_any_tq():
    # with a cache, the last query always sits at position Tk - 1
    full = alibi_bias(4, 9, 9)
    for tq in (1, 3, 9):
        assert_matches(alibi_bias(4, tq, 9), full[:, 9 - tq:])


@pytest.mark.parametrize("B,H,tq,tk,D", [(2, 3, 5, 5, 4), (1, 8, 3, 11, 8), (2, 5, 1, 97, 7)])
def test_alibi_attention_matches_sdpa_math(B, H, tq, tk, D):
    q, k, v = rand(B, H, tq, D, seed=1), rand(B, H, tk, D, seed=2), rand(B, H, tk, D, seed=3)
    bias = alibi_bias(H, tq, tk, dtype=torch.float64)
    float_mask = bias.masked_fill(~causal_mask(tq, tk), float("-inf"))   # SDPA: a float mask is added
    with sdpa_kernel(SDPBackend.MATH):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask)
    assert_matches(alibi_attention(q, k, v), want)
    with sdpa_kernel(SDPBackend.MATH):
        want_sym = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(H, tq, tk, symmetric=True, dtype=torch.float64))
    assert_matches(alibi_attention(q, k, v, causal=False), want_sym)


def test_row_shift_form_gives_the_same_attention():
    # The paper's and BLOOM's code add +m·j instead of -m·(i - j): the two differ by m·i per row,
    # which softmax ignores (under the causal mask).
    B, H, T, D = 2, 6, 13, 8
    q, k, v = rand(B, H, T, D, seed=4), rand(B, H, T, D, seed=5), rand(B, H, T, D, seed=6)
    m = alibi_slopes(H, dtype=torch.float64)
    row_shift = m[:, None, None] * torch.arange(T, dtype=torch.float64)[None, None, :]   # (H, 1, T)
    assert_matches(attention(q, k, v, bias=row_shift, mask=causal_mask(T)), alibi_attention(q, k, v))


def test_gradcheck_float64():
    q, k, v = (rand(1, 3, t, 4, seed=s).requires_grad_(True) for s, t in ((7, 3), (8, 5), (9, 5)))
    assert torch.autograd.gradcheck(lambda a, b, c: alibi_attention(a, b, c), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: alibi_attention(a, b, c, causal=False), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_keeps_dtype(dtype):
    q, k, v = rand(1, 4, 6, 8, seed=10), rand(1, 4, 9, 8, seed=11), rand(1, 4, 9, 8, seed=12)
    out = alibi_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    assert_matches(out, alibi_attention(q, k, v).to(dtype), check_dtype=True)


def test_flex_attention_score_mod_matches():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    B, H, tq, tk, D = 1, 3, 5, 9, 8
    q, k, v = rand(B, H, tq, D, seed=13, dtype=torch.float32), rand(B, H, tk, D, seed=14, dtype=torch.float32), \
        rand(B, H, tk, D, seed=15, dtype=torch.float32)
    slopes = alibi_slopes(H)
    off = tk - tq
    block_mask = create_block_mask(lambda b, h, qi, ki: ki <= qi + off, None, None, tq, tk, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                   # eager flex_attention warns
        got = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes, offset=off), block_mask=block_mask)
        got_sym = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes, offset=off, symmetric=True))
    assert_matches(got, alibi_attention(q, k, v))
    assert_matches(got_sym, alibi_attention(q, k, v, causal=False))


def test_bad_input_raises_value_error():
    for args in [(0,), (-2,), (2.5,), (True,)]:
        with pytest.raises(ValueError):
            alibi_slopes(*args)
    for args, kwargs in [((0, 3, 3), {}), ((4, 0, 3), {}), ((4, 3, 0), {}), ((4, 2, 3), {"slopes": torch.ones(3)})]:
        with pytest.raises(ValueError):
            alibi_bias(*args, **kwargs)
