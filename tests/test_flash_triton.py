"""attncourse.flash_triton and attncourse.triton_support: the Triton kernel against the PyTorch
reference, and life without Triton.

With Triton installed (``requirements-triton.txt``) and no GPU, the kernel runs under Triton's
interpreter (``TRITON_INTERPRET=1``, set by the module on import); with a GPU it is compiled.
Without Triton the kernel tests skip, and the stand-ins are tested instead.
"""
from __future__ import annotations

import pytest
import torch

from attncourse import flash_triton
from attncourse import triton_support as ft
from attncourse.core import attention
from attncourse.flash import flash_attention_forward
from attncourse.masks import causal_mask
from attncourse.testing import assert_matches

needs_triton = pytest.mark.skipif(not ft.HAVE_TRITON, reason="Triton is not installed "
                                  "(pip install -r requirements-triton.txt)")


def _qkv(B, H, Tq, Tk, D, Dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    Dv = D if Dv is None else Dv
    return (torch.randn(B, H, Tq, D, generator=g).to(dtype), torch.randn(B, H, Tk, D, generator=g).to(dtype),
            torch.randn(B, H, Tk, Dv, generator=g).to(dtype))


@needs_triton
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("B,H,Tq,Tk,D,Dv", [(1, 1, 1, 1, 4, 4), (2, 2, 37, 53, 24, 8), (1, 2, 53, 37, 16, 16),
                                            (1, 1, 16, 48, 5, 3), (1, 1, 40, 9, 16, 16)])
def test_kernel_matches_the_reference(B, H, Tq, Tk, D, Dv, causal):
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv)
    o, lse = flash_triton.triton_flash_attention(q, k, v, causal=causal, block_q=16, block_k=16)
    want_o, want_lse = flash_attention_forward(q, k, v, causal=causal)
    assert_matches(o, attention(q, k, v, mask=causal_mask(Tq, Tk) if causal else None))
    assert lse.dtype == torch.float32 and torch.equal(torch.isinf(lse), torch.isinf(want_lse))
    assert_matches(torch.nan_to_num(lse, neginf=0.0), torch.nan_to_num(want_lse, neginf=0.0))


@needs_triton
def test_kernel_fully_masked_rows_and_float16():
    q, k, v = _qkv(1, 2, 40, 9, 16, dtype=torch.float16, seed=3)    # causal, Tq > Tk: 31 empty rows
    o, lse = flash_triton.triton_flash_attention(q, k, v, causal=True, block_q=16, block_k=16)
    assert o.dtype == torch.float16 and torch.equal(o[..., :31, :], torch.zeros_like(o[..., :31, :]))
    assert (lse[..., :31] == float("-inf")).all()
    assert_matches(o, attention(q.float(), k.float(), v.float(), mask=causal_mask(40, 9)).half())


@needs_triton
def test_launcher_rejects_what_tl_dot_cannot_take():
    q, k, v = _qkv(1, 1, 8, 8, 4)
    with pytest.raises(ValueError, match="power of two >= 16"):
        flash_triton.triton_flash_attention(q, k, v, block_q=24)
    with pytest.raises(TypeError, match="float64"):
        flash_triton.triton_flash_attention(q.double(), k.double(), v.double())


def test_a_stub_kernel_is_not_implemented_with_or_without_triton():
    @ft.triton.jit
    def stub_kernel(Q, K, V, O, LSE, scale, Tq, Tk, D, Dv, a, b, c, d, e, f, g, h,
                    CAUSAL: ft.tl.constexpr, BLOCK_Q: ft.tl.constexpr, BLOCK_K: ft.tl.constexpr,
                    BLOCK_D: ft.tl.constexpr, BLOCK_DV: ft.tl.constexpr, DOT_PRECISION: ft.tl.constexpr):
        raise NotImplementedError("exercise triton_flash: write this part")

    q, k, v = _qkv(1, 1, 4, 4, 4)
    with pytest.raises(NotImplementedError, match="stub"):
        ft.launch_flash_kernel(stub_kernel, q, k, v)


@pytest.mark.skipif(ft.HAVE_TRITON, reason="checks the stand-ins used when Triton is missing")
def test_without_triton_kernels_define_but_do_not_launch():
    assert ft.triton.cdiv(17, 16) == 2 and ft.triton.next_power_of_2(17) == 32
    q, k, v = _qkv(1, 1, 4, 4, 4)
    with pytest.raises(ft.TritonUnavailable, match="requirements-triton.txt"):
        flash_triton.triton_flash_attention(q, k, v)
