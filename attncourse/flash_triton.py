"""FlashAttention's forward pass as a Triton kernel: the reference for chapter 07's Triton exercise.

One program computes ``BLOCK_Q`` query rows of one ``(batch, head)``: it loads its Q tile once,
loops over the key/value tiles it may see (the causal skip is the same as in
:func:`attncourse.flash.flash_attention_forward`), keeps the running max ``m_i``, sum ``l_i``
and accumulator ``acc`` in registers, and stores ``O`` and the log-sum-exp once — the loop order
of FlashAttention-2 (queries outside, keys inside). Run it with :func:`triton_flash_attention`;
without a GPU it runs under Triton's interpreter (see :mod:`attncourse.triton_support`), and
without Triton installed, launching it raises ``TritonUnavailable``.
"""
from __future__ import annotations

import torch

from attncourse.triton_support import launch_flash_kernel, tl, triton

__all__ = ["flash_fwd_kernel", "triton_flash_attention"]


@triton.jit
def flash_fwd_kernel(Q, K, V, O, LSE, scale, Tq, Tk, D, Dv,
                     stride_qh, stride_qt, stride_kh, stride_kt, stride_vh, stride_vt, stride_oh, stride_ot,
                     CAUSAL: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program: BLOCK_Q queries of one (batch, head) against all their visible keys."""
    pid_q = tl.program_id(0)                                     # which query block
    bh = tl.program_id(1)                                        # which (batch, head)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)             # this block's query rows
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + bh * stride_qh + offs_q[:, None] * stride_qt + offs_d[None, :],
                mask=(offs_q[:, None] < Tq) & (offs_d[None, :] < D), other=0.0)          # (BLOCK_Q, BLOCK_D)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)          # running row max
    l_i = tl.zeros([BLOCK_Q], tl.float32)                        # running Σ exp(s - m_i)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)              # running Σ exp(s - m_i) v
    offset = Tk - Tq                                             # bottom-right: query i sits at offset + i
    k_stop = Tk
    if CAUSAL:                                                   # key blocks past the last visible key: skip
        k_stop = tl.minimum(Tk, (pid_q + 1) * BLOCK_Q + offset)
    for start in range(0, k_stop, BLOCK_K):
        kk = start + offs_k
        k = tl.load(K + bh * stride_kh + kk[:, None] * stride_kt + offs_d[None, :],
                    mask=(kk[:, None] < Tk) & (offs_d[None, :] < D), other=0.0)          # (BLOCK_K, BLOCK_D)
        v = tl.load(V + bh * stride_vh + kk[:, None] * stride_vt + offs_dv[None, :],
                    mask=(kk[:, None] < Tk) & (offs_dv[None, :] < Dv), other=0.0)        # (BLOCK_K, BLOCK_DV)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale               # (BLOCK_Q, BLOCK_K) fp32
        keep = kk[None, :] < Tk
        if CAUSAL:
            keep = keep & (kk[None, :] <= offs_q[:, None] + offset)
        s = tl.where(keep, s, float("-inf"))
        # online softmax: the new max, the rescale factor of everything summed so far, this block's weights
        m_new = tl.maximum(m_i, tl.max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)    # a row with nothing seen yet: shift by 0
        alpha = tl.exp(m_i - shift)
        p = tl.exp(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
    tl.store(O + bh * stride_oh + offs_q[:, None] * stride_ot + offs_dv[None, :], out.to(O.dtype.element_ty),
             mask=(offs_q[:, None] < Tq) & (offs_dv[None, :] < Dv))
    tl.store(LSE + bh * Tq + offs_q, lse, mask=offs_q < Tq)


def triton_flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                           block_q: int | None = None, block_k: int | None = None, scale: float | None = None):
    """The reference Triton FlashAttention forward: ``(o, lse)``, see :func:`launch_flash_kernel`."""
    return launch_flash_kernel(flash_fwd_kernel, q, k, v, causal=causal, block_q=block_q, block_k=block_k,
                               scale=scale)
