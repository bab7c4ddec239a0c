"""FlashAttention: exact attention computed tile by tile, never holding the ``Tq×Tk`` scores.

    O = softmax(Q Kᵀ · scale, masked) V        (the same numbers as ``attncourse.attention``)

FlashAttention (Dao, Fu, Ermon, Rudra and Ré, 2022) computes this in blocks of ``block_q``
queries against blocks of ``block_k`` keys. Three ideas make it exact, each a function here:

1. **Online softmax** (Milakov & Gimelshein, 2018), :func:`online_softmax_update`: a running
   row maximum ``m`` and running sum ``l = Σ exp(s - m)`` absorb one block of scores at a time.
   When the maximum grows from ``m`` to ``m'``, everything summed so far is rescaled by
   ``α = exp(m - m')`` — the sum ``l`` and the output accumulator alike.
2. **The tiled forward**, :func:`flash_attention_forward`: for each query block, loop over key
   blocks, keep ``(m, l, acc)``, and at the end return ``O = acc / l`` and the per-row
   log-sum-exp ``lse = m + log l`` — the only statistic the backward pass needs.
3. **The backward pass by recomputation**, :func:`flash_attention_backward`: recompute each block
   of probabilities from the saved ``lse`` (``P = exp(S - lse)``), with
   ``D_i = rowsum(dO ∘ O)_i`` standing in for ``rowsum(P ∘ dP)_i``.
   :class:`FlashAttentionFunction` wraps both in ``torch.autograd``; :func:`flash_attention`
   is the user-facing call.

Plus :func:`hbm_accesses`, the IO count of the paper's Theorem 2 made exact (element reads
and writes between HBM and on-chip SRAM), and :func:`sdpa`, torch's fused kernels with an
explicit backend (the one place the course pins SDPA backends; ``attncourse.bench`` uses it).

Conventions (book/conventions.md): ``q: (..., Tq, D)``, ``k: (..., Tk, D)``, ``v: (..., Tk, Dv)``
with equal leading dims (``(B, H)`` in the package); causal alignment is bottom-right (query
``i`` sits at position ``Tk - Tq + i``); a query with no visible key gets a zero output and
``lse = -inf``; fp16/bf16 inputs keep the softmax statistics and the accumulator in float32.
This is a teaching reference written with PyTorch ops: it saves memory (no ``Tq×Tk`` tensor,
only ``block_q×block_k`` tiles), but a Python loop over tiles is not fast — the fused kernels
(:func:`sdpa`, or a Triton kernel, see ``attncourse.flash_triton``) are.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from attncourse.core import compute_dtype, masked_scores
from attncourse import masks

__all__ = [
    "online_softmax_update", "online_softmax_stats", "online_softmax",
    "flash_attention_forward", "flash_attention_backward", "FlashAttentionFunction", "flash_attention",
    "hbm_accesses", "flash_block_sizes",
    "SDPA_BACKENDS", "sdpa", "sdpa_backend", "probe_sdpa_backends", "sdpa_kernel_name",
]

_NEG_INF = float("-inf")


# ------------------------------------------------------------------------ online softmax
def online_softmax_update(m: torch.Tensor, l: torch.Tensor, scores: torch.Tensor):
    """Fold one block of scores into the running row statistics (one step of online softmax).

    Args:
        m: ``(...)`` running maximum of the scores seen so far (``-inf`` before the first block).
        l: ``(...)`` running sum ``Σ exp(s - m)`` over those scores (0 before the first block).
        scores: ``(..., n)`` the next block of scores (``-inf`` where masked).

    Returns:
        ``(m_new, l_new, alpha, p)``: the new maximum and sum, the factor ``alpha = exp(m - m_new)``
        that rescales anything accumulated under the old maximum (``l``, and FlashAttention's
        output accumulator), and ``p = exp(scores - m_new)`` of shape ``(..., n)``.
        A row that has seen only ``-inf`` keeps ``m = -inf, l = 0`` and gets ``alpha = p = 0``.
    """
    m_new = torch.maximum(m, scores.amax(dim=-1))
    # Shift by 0 where every score so far is -inf, so that exp(-inf - (-inf)) never makes a NaN.
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    alpha = torch.exp(m - shift)                       # exp(-inf) = 0 for an empty running state
    p = torch.exp(scores - shift.unsqueeze(-1))        # (..., n); masked scores give 0
    l_new = alpha * l + p.sum(dim=-1)
    return m_new, l_new, alpha, p


def _check_block(name: str, block) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"{name} must be a positive integer, got {block!r}")
    return block


def online_softmax_stats(x: torch.Tensor, block: int = 64):
    """Row maximum ``m`` and normalizer ``l = Σ exp(x - m)`` of the last dim, in one pass over blocks.

    ``x: (..., n) -> m, l: (...)`` in float32 for fp16/bf16 input (else x's dtype). The blocks are
    ``block`` columns wide (the last may be shorter). ``logsumexp(x) = m + log(l)``; a row of only
    ``-inf`` gives ``m = -inf, l = 0``.
    """
    _check_block("block", block)
    cdt = compute_dtype(x.dtype)
    m = torch.full(x.shape[:-1], _NEG_INF, dtype=cdt, device=x.device)
    l = torch.zeros(x.shape[:-1], dtype=cdt, device=x.device)
    for start in range(0, x.shape[-1], block):
        m, l, _, _ = online_softmax_update(m, l, x[..., start:start + block].to(cdt))
    return m, l


def online_softmax(x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Softmax of the last dim from the one-pass statistics: ``exp(x - m) / l`` (zeros for all ``-inf`` rows).

    Equals ``attncourse.core.stable_softmax``; returned in x's dtype.
    """
    m, l = online_softmax_stats(x, block)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).unsqueeze(-1)
    denom = torch.where(l > 0, l, torch.ones_like(l)).unsqueeze(-1)
    return (torch.exp(x.to(m.dtype) - shift) / denom).to(x.dtype)


# ------------------------------------------------------------------------ the tiled forward
def _check_qkv(q, k, v, block_q, block_k, who: str):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2 or not t.is_floating_point():
            raise ValueError(f"{who}: {name} must be a floating-point tensor (..., T, D), "
                             f"got shape {tuple(t.shape)} and dtype {t.dtype}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{who}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"{who}: q, k, v need the same leading (batch, head) dims; got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{who}: q and k need the same head dim D (last dim); got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{who}: k and v need the same number of keys Tk (dim -2); got {shapes}")
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)


def _visible_key_end(causal_: bool, q_end: int, offset: int, tk: int) -> int:
    """One past the last key any query of the block ``[.., q_end)`` may see.

    Under the bottom-right causal rule the last query of the block, ``q_end - 1``, sits at
    position ``offset + q_end - 1`` and sees keys ``j <= offset + q_end - 1``; key blocks that
    start at or after ``offset + q_end`` are fully masked for the whole query block: skip them.
    """
    return max(0, min(tk, offset + q_end)) if causal_ else tk


def _block_mask(q_start: int, q_end: int, k_start: int, k_end: int, offset: int, device):
    """The causal keep-mask of one tile ``(q_end - q_start, k_end - k_start)``, or None if fully visible."""
    if k_end - 1 <= offset + q_start:   # the tile's last key is visible even to its first query
        return None
    q_idx = torch.arange(q_start, q_end, device=device).unsqueeze(-1)   # (bq, 1)
    k_idx = torch.arange(k_start, k_end, device=device).unsqueeze(0)    # (1, bk)
    return masks.causal(offset)(None, None, q_idx, k_idx)               # (bq, bk), True = may attend


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                            block_q: int = 64, block_k: int = 64, scale: float | None = None):
    """The tiled forward pass: ``(O, lse)`` without ever building a ``Tq×Tk`` tensor.

    Args:
        q: ``(..., Tq, D)``; k: ``(..., Tk, D)``; v: ``(..., Tk, Dv)`` (same leading dims).
        causal: bottom-right causal mask (query ``i`` sees keys ``j <= Tk - Tq + i``); key blocks
            past a query block's last visible key are skipped, not computed and masked.
        block_q, block_k: tile sizes (positive ints; need not divide ``Tq``/``Tk``).
        scale: multiplier of ``q kᵀ``; default ``1/√D``.

    Returns:
        ``o: (..., Tq, Dv)`` in q's dtype, equal to ``attncourse.attention`` up to rounding;
        ``lse: (..., Tq)`` the log-sum-exp of each row of scaled scores, in float32 for fp16/bf16
        (else q's dtype). A row with no visible key has ``o = 0`` and ``lse = -inf``.

    Memory: besides the inputs and outputs, tiles of ``block_q × block_k`` and ``block_q × Dv``.
    """
    _check_qkv(q, k, v, block_q, block_k, "flash_attention_forward")
    cdt = compute_dtype(q.dtype)
    tq, tk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = tk - tq                                     # bottom-right: query i sits at position offset + i
    lead = q.shape[:-2]
    o = torch.zeros(*lead, tq, dv, dtype=cdt, device=q.device)
    lse = torch.full((*lead, tq), _NEG_INF, dtype=cdt, device=q.device)

    for qs in range(0, tq, block_q):
        qe = min(qs + block_q, tq)
        k_stop = _visible_key_end(causal, qe, offset, tk)
        if k_stop == 0:                                  # no query of this block sees any key
            continue
        q_blk = q[..., qs:qe, :].to(cdt)                 # (..., bq, D)
        m = torch.full((*lead, qe - qs), _NEG_INF, dtype=cdt, device=q.device)   # running row max
        l = torch.zeros((*lead, qe - qs), dtype=cdt, device=q.device)            # running Σ exp(s - m)
        acc = torch.zeros((*lead, qe - qs, dv), dtype=cdt, device=q.device)      # running Σ exp(s - m) v
        for ks in range(0, k_stop, block_k):
            ke = min(ks + block_k, tk)
            s = (q_blk @ k[..., ks:ke, :].to(cdt).transpose(-2, -1)) * scale     # (..., bq, bk)
            if causal:
                s = masked_scores(s, _block_mask(qs, qe, ks, ke, offset, q.device))
            m, l, alpha, p = online_softmax_update(m, l, s)
            acc = acc * alpha.unsqueeze(-1) + p @ v[..., ks:ke, :].to(cdt)        # rescale once, then add
        seen = l > 0
        o[..., qs:qe, :] = acc / torch.where(seen, l, torch.ones_like(l)).unsqueeze(-1)
        lse[..., qs:qe] = torch.where(seen, m + torch.log(torch.where(seen, l, torch.ones_like(l))),
                                      torch.full_like(l, _NEG_INF))
    return o.to(q.dtype), lse


# ------------------------------------------------------------------------ the backward pass
def flash_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                             lse: torch.Tensor, do: torch.Tensor, *, causal: bool = False,
                             block_q: int = 64, block_k: int = 64, scale: float | None = None):
    """Gradients ``(dq, dk, dv)`` of FlashAttention, recomputing the probabilities block by block.

    With ``S = scale · q kᵀ`` (masked), ``P = exp(S - lse)`` (row-wise, from the saved ``lse``):

        dV = Pᵀ dO,   dP = dO Vᵀ,   D_i = rowsum(dO ∘ O)_i,   dS = P ∘ (dP - D),
        dQ = scale · dS K,   dK = scale · dSᵀ Q.

    ``D_i`` equals ``rowsum(P ∘ dP)_i`` (because ``O = P V``) but needs only ``Tq × Dv`` numbers.

    Args:
        q, k, v, causal, block_q, block_k, scale: as in :func:`flash_attention_forward`.
        o: ``(..., Tq, Dv)`` the forward output; lse: ``(..., Tq)`` its log-sum-exp (``-inf``
            for rows with no visible key, whose gradients are zero).
        do: ``(..., Tq, Dv)`` the gradient of the loss with respect to ``o``.

    Returns:
        ``dq, dk, dv`` shaped and typed like ``q, k, v``.
    """
    _check_qkv(q, k, v, block_q, block_k, "flash_attention_backward")
    tq, tk, dv_dim = q.shape[-2], k.shape[-2], v.shape[-1]
    want = (*q.shape[:-2], tq, dv_dim)
    if tuple(o.shape) != want or tuple(do.shape) != want or tuple(lse.shape) != want[:-1]:
        raise ValueError(f"flash_attention_backward: o and do must be {want} and lse {want[:-1]}; got "
                         f"o {tuple(o.shape)}, do {tuple(do.shape)}, lse {tuple(lse.shape)}")
    cdt = compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = tk - tq
    delta = (do.to(cdt) * o.to(cdt)).sum(dim=-1)          # (..., Tq)  D_i = rowsum(dO ∘ O)
    dq = torch.zeros(q.shape, dtype=cdt, device=q.device)
    dk = torch.zeros(k.shape, dtype=cdt, device=q.device)
    dv = torch.zeros(v.shape, dtype=cdt, device=q.device)

    for qs in range(0, tq, block_q):
        qe = min(qs + block_q, tq)
        k_stop = _visible_key_end(causal, qe, offset, tk)
        if k_stop == 0:
            continue
        q_blk, do_blk = q[..., qs:qe, :].to(cdt), do[..., qs:qe, :].to(cdt)
        lse_blk = lse[..., qs:qe].to(cdt)
        has_keys = torch.isfinite(lse_blk).unsqueeze(-1)              # rows with no key: P = 0
        lse_safe = torch.where(torch.isfinite(lse_blk), lse_blk, torch.zeros_like(lse_blk)).unsqueeze(-1)
        d_blk = delta[..., qs:qe].unsqueeze(-1)                       # (..., bq, 1)
        dq_blk = torch.zeros_like(q_blk)
        for ks in range(0, k_stop, block_k):
            ke = min(ks + block_k, tk)
            k_blk, v_blk = k[..., ks:ke, :].to(cdt), v[..., ks:ke, :].to(cdt)
            s = (q_blk @ k_blk.transpose(-2, -1)) * scale             # (..., bq, bk), recomputed
            if causal:
                s = masked_scores(s, _block_mask(qs, qe, ks, ke, offset, q.device))
            p = torch.where(has_keys, torch.exp(s - lse_safe), torch.zeros_like(s))
            dv[..., ks:ke, :] += p.transpose(-2, -1) @ do_blk
            ds = p * (do_blk @ v_blk.transpose(-2, -1) - d_blk)       # dS = P ∘ (dP - D)
            dq_blk += (ds @ k_blk) * scale
            dk[..., ks:ke, :] += (ds.transpose(-2, -1) @ q_blk) * scale
        dq[..., qs:qe, :] = dq_blk
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class FlashAttentionFunction(torch.autograd.Function):
    """``torch.autograd`` wrapper: the forward saves only ``q, k, v, o, lse``, never ``P``."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, block_q=64, block_k=64, scale=None):
        o, lse = flash_attention_forward(q, k, v, causal=causal, block_q=block_q, block_k=block_k, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.opts = dict(causal=causal, block_q=block_q, block_k=block_k, scale=scale)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(q, k, v, o, lse, do, **ctx.opts)
        return dq, dk, dv, None, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    block_q: int = 64, block_k: int = 64, scale: float | None = None) -> torch.Tensor:
    """Exact attention, tiled, with FlashAttention's recomputing backward pass.

    ``q: (..., Tq, D), k: (..., Tk, D), v: (..., Tk, Dv) -> (..., Tq, Dv)`` in q's dtype; equal to
    ``attncourse.attention(q, k, v, mask=causal_mask(Tq, Tk) if causal else None)`` up to rounding,
    gradients included. Raises ``ValueError`` naming the numbers for bad block sizes or shapes.
    """
    _check_qkv(q, k, v, block_q, block_k, "flash_attention")
    return FlashAttentionFunction.apply(q, k, v, causal, block_q, block_k, scale)


# ------------------------------------------------------------------------ the IO count
def flash_block_sizes(d: int, sram: int) -> tuple[int, int]:
    """``(B_r, B_c)`` of the paper's Algorithm 1: ``B_c = ⌈M / 4d⌉``, ``B_r = min(⌈M / 4d⌉, d)``."""
    b_c = -(-sram // (4 * d))
    return min(b_c, d), b_c


def hbm_accesses(n: int, d: int, sram: int, algorithm: str = "flash") -> int:
    """Elements read from or written to HBM by one head of attention on ``n`` tokens of head dim ``d``.

    ``sram`` is the on-chip memory ``M`` in elements. Counted line by line:

    * ``"standard"`` (the paper's Algorithm 0): read Q, K, write S (``2nd + n²``); read S, write
      P (``2n²``); read P, V, write O (``n² + 2nd``): ``4nd + 4n²`` — ``sram`` plays no role.
    * ``"flash"`` (Algorithm 1; K/V blocks outside, Q blocks inside): initialise O, ℓ, m in HBM
      (``nd + 2n``); read every K_j, V_j once (``2nd``); for each of the ``T_c = ⌈n / B_c⌉`` key
      blocks, read all of Q, O, ℓ, m and write back O, ℓ, m (``3nd + 4n``):
      ``3nd + 2n + T_c (3nd + 4n)``, which is Θ(n²d²/M) since ``T_c ≈ 4nd/M``.

    Both are exact counts of the paper's pseudo-code, not measurements of a real kernel.
    """
    for name, val in (("n", n), ("d", d), ("sram", sram)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"hbm_accesses: {name} must be a positive integer, got {val!r}")
    if algorithm == "standard":
        return 4 * n * d + 4 * n * n
    _, b_c = flash_block_sizes(d, sram)
    if algorithm == "flash":
        t_c = -(-n // b_c)                                   # number of key/value blocks
        return 3 * n * d + 2 * n + t_c * (3 * n * d + 4 * n)
    raise ValueError(f"hbm_accesses: algorithm must be 'standard' or 'flash', got {algorithm!r}")


# ------------------------------------------------------------------------ torch's fused kernels
#: name used in the course and in benchmark results -> ``torch.nn.attention.SDPBackend`` member
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


def sdpa_backend(name):
    """The ``SDPBackend`` member for a course name (``"flash"``, ...) or a member itself."""
    from torch.nn.attention import SDPBackend

    if isinstance(name, SDPBackend):
        return name
    member = getattr(SDPBackend, SDPA_BACKENDS.get(name, str(name).upper()), None)
    if member is None:
        raise ValueError(f"unknown SDPA backend {name!r}; choose from {sorted(SDPA_BACKENDS)} "
                         f"(this torch, {torch.__version__}, may also lack it)")
    return member


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend=None, mask: torch.Tensor | None = None,
         causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
         enable_gqa: bool = False) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention``, optionally pinned to one backend.

    Args:
        q, k, v: ``(B, H, Tq, D)``, ``(B, Hkv, Tk, D)``, ``(B, Hkv, Tk, Dv)``.
        backend: ``None`` lets torch choose; ``"flash"``, ``"efficient"``, ``"cudnn"`` or ``"math"``
            (or an ``SDPBackend``) allows only that kernel, which raises ``RuntimeError`` if it
            cannot run these inputs (device, dtype, mask, head dim...).
        mask: bool, True = may attend (the course's convention, which is also SDPA's).
        causal: the course's bottom-right causal mask. For ``Tq == Tk`` this is SDPA's
            ``is_causal=True`` (no mask tensor, so fused kernels stay available); for ``Tq != Tk``
            SDPA's ``is_causal`` would align top-left, so an explicit mask is built instead.
        scale, dropout_p, enable_gqa: as in SDPA.
    """
    F = torch.nn.functional
    is_causal = False
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        if mask is None and tq == tk:
            is_causal = True
        else:
            keep = masks.causal_mask(tq, tk, device=q.device)
            mask = keep if mask is None else (mask & keep)
    kwargs = dict(attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([sdpa_backend(backend)]):    # only this backend
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def probe_sdpa_backends(names: Sequence[str] = tuple(SDPA_BACKENDS), *, device="cpu", dtype=torch.float32,
                        D: int = 64) -> tuple[list[str], dict[str, str]]:
    """Which pinned backends run here: ``(["flash", "math"], {"cudnn": "why it cannot run"})``.

    Each backend is tried on a tiny ``(1, 1, 8, D)`` input of the given device and dtype; the
    reason for a refusal is torch's error plus the warnings it gives while choosing.
    """
    import warnings

    ok, skipped = [], {}
    for name in names:
        try:
            sdpa_backend(name)
        except (ValueError, ImportError) as exc:
            skipped[name] = str(exc)
            continue
        x = torch.randn(1, 1, 8, D, device=device, dtype=dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # torch explains *why* a backend was refused in warnings
            try:
                sdpa(x, x, x, backend=name)
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                why = [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
                if why:
                    reason += " — " + "; ".join(dict.fromkeys(why))
                hint = " (torch implements only the flash and math backends on CPU)" \
                    if torch.device(device).type == "cpu" else ""
                skipped[name] = f"cannot run on {device} with {str(dtype).replace('torch.', '')}{hint}: {reason}"
                continue
        ok.append(name)
    return ok, skipped


def sdpa_kernel_name(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> str:
    """The fused kernel (``aten::_scaled_dot_product_*``) that ``sdpa(q, k, v, **kwargs)`` ran.

    ``"math"`` when SDPA fell back to its composite implementation (matmul + softmax).
    """
    from attncourse.bench import dispatched_ops

    ops = dispatched_ops(lambda: sdpa(q, k, v, **kwargs), contains="_scaled_dot_product")
    fused = [o for o in ops if "math" not in o]
    return fused[0].replace("aten::", "") if fused else "math"
