"""Scaffolding for Triton kernels in the course: optional Triton, its CPU interpreter, a launcher.

This module is not a reference implementation: exercises may import it (the reference Triton
kernel lives in :mod:`attncourse.flash_triton`). Triton is an optional dependency
(``pip install -r requirements-triton.txt``). Importing this module never fails:

* on a machine without CUDA it sets ``TRITON_INTERPRET=1`` (unless the variable is already
  set) **before** importing ``triton``, so ``@triton.jit`` kernels run on the CPU: Triton's
  interpreter executes the kernel body with numpy, one program of the grid after another.
  It needs no compiler, no GPU driver and no source file, which is what lets the autograder
  run a learner's kernel in its sandbox;
* without Triton installed, :data:`HAVE_TRITON` is False and ``triton``/``tl`` are stand-ins:
  a kernel can still be *defined* (so a notebook runs top to bottom), and launching it raises
  :class:`TritonUnavailable` with the install command.

:func:`launch_flash_kernel` is the host side shared by the reference kernel
(``attncourse.flash_triton.flash_fwd_kernel``) and chapter 07's exercise: it checks the inputs, flattens
``(B, H)``, picks the grid ``(⌈Tq / BLOCK_Q⌉, B·H)`` and passes strides, and returns
``(o, lse)`` like :func:`attncourse.flash.flash_attention_forward`. The kernel signature::

    kernel[grid](Q, K, V, O, LSE, scale, Tq, Tk, D, Dv,
                 stride_qh, stride_qt, stride_kh, stride_kt, stride_vh, stride_vt, stride_oh, stride_ot,
                 CAUSAL=..., BLOCK_Q=..., BLOCK_K=..., BLOCK_D=..., BLOCK_DV=..., DOT_PRECISION=...)

Tensors are ``(B·H, T, D)`` with a unit stride in the last dim; ``LSE`` is ``(B·H, Tq)`` float32.
"""
from __future__ import annotations

import importlib.util
import math
import os
import types

import torch

__all__ = ["HAVE_TRITON", "INTERPRET", "TritonUnavailable", "triton", "tl", "launch_flash_kernel", "INSTALL_HINT"]

INSTALL_HINT = "pip install -r requirements-triton.txt (or: pip install triton), then restart the kernel"


class TritonUnavailable(RuntimeError):
    """Triton is not installed, so a Triton kernel cannot be launched here."""


if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # must happen before `import triton`
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")

HAVE_TRITON = importlib.util.find_spec("triton") is not None
if HAVE_TRITON:
    import triton
    import triton.language as tl
else:
    class _Anything:
        """Stands in for ``tl.<anything>`` in annotations such as ``BLOCK: tl.constexpr``."""

        def __getattr__(self, name):
            return self

        def __call__(self, *args, **kwargs):
            return self

    class _MissingKernel:
        def __init__(self, fn):
            self.fn = fn
            self.__name__ = getattr(fn, "__name__", "kernel")
            self.__doc__ = getattr(fn, "__doc__", None)

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise TritonUnavailable(f"Triton is not installed, so {self.__name__} cannot run: {INSTALL_HINT}")
            return launch

    def _jit(fn=None, **kwargs):
        return _MissingKernel(fn) if fn is not None else (lambda f: _MissingKernel(f))

    triton = types.SimpleNamespace(jit=_jit, cdiv=lambda a, b: -(-a // b), __version__=None,
                                   next_power_of_2=lambda n: 1 << max(0, int(n) - 1).bit_length())
    tl = _Anything()


def _is_stub(kernel) -> bool:
    """A kernel whose body still raises the exercise's ``NotImplementedError``."""
    fn = getattr(kernel, "fn", kernel)
    code = getattr(fn, "__code__", None)
    return code is not None and "NotImplementedError" in code.co_names


def launch_flash_kernel(kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                        block_q: int | None = None, block_k: int | None = None, scale: float | None = None):
    """Launch a FlashAttention forward kernel (signature in the module docstring): ``(o, lse)``.

    Args:
        q: ``(..., Tq, D)``, k: ``(..., Tk, D)``, v: ``(..., Tk, Dv)``, float32/float16/bfloat16,
            same leading dims. On a machine with CUDA (and without ``TRITON_INTERPRET=1``)
            CPU inputs are moved to the GPU and the results moved back.
        causal: bottom-right causal mask, as in the rest of the course.
        block_q, block_k: tile sizes, powers of two ≥ 16 (``tl.dot`` needs 16); default 16
            under the interpreter (few, cheap programs) and 64 on a GPU.

    Returns:
        ``o: (..., Tq, Dv)`` in q's dtype and ``lse: (..., Tq)`` float32 (``-inf`` and zero output
        for rows with no visible key).
    """
    if _is_stub(kernel):
        raise NotImplementedError("the kernel still holds the exercise stub: write the online-softmax update")
    if not HAVE_TRITON:
        raise TritonUnavailable(f"Triton is not installed: {INSTALL_HINT}")
    from attncourse.flash import _check_qkv

    default = 16 if INTERPRET else 64
    block_q = default if block_q is None else block_q
    block_k = default if block_k is None else block_k
    _check_qkv(q, k, v, block_q, block_k, "launch_flash_kernel")
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"launch_flash_kernel: {name} must be a power of two >= 16 (tl.dot needs 16), got {b}")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"launch_flash_kernel: Triton's tl.dot takes float32, float16 or bfloat16, got {q.dtype}")
    home = q.device
    run_on = home
    if not INTERPRET and home.type == "cpu":
        if not torch.cuda.is_available():
            raise RuntimeError("launch_flash_kernel: no CUDA device and TRITON_INTERPRET is not set; "
                               "set TRITON_INTERPRET=1 before importing triton to run kernels on the CPU")
        run_on = torch.device("cuda")
    lead, tq, tk, d, dv = q.shape[:-2], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    bh = math.prod(lead)
    q3 = q.reshape(bh, tq, d).to(run_on).contiguous()   # (..., T, D) -> (B·H, T, D)
    k3 = k.reshape(bh, tk, d).to(run_on).contiguous()
    v3 = v.reshape(bh, tk, dv).to(run_on).contiguous()
    o = torch.zeros(bh, tq, dv, dtype=q.dtype, device=run_on)
    lse = torch.full((bh, tq), float("-inf"), dtype=torch.float32, device=run_on)
    if bh and tq:
        scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
        grid = (triton.cdiv(tq, block_q), bh)
        kernel[grid](q3, k3, v3, o, lse, scale, tq, tk, d, dv,
                     q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
                     v3.stride(0), v3.stride(1), o.stride(0), o.stride(1),
                     CAUSAL=bool(causal), BLOCK_Q=block_q, BLOCK_K=block_k,
                     BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
                     DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    return o.reshape(*lead, tq, dv).to(home), lse.reshape(*lead, tq).to(home)
