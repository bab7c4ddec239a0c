"""Self-, cross- and multi-head attention as modules (chapters 02-04; MQA/GQA in 08-09).

Modules take ``(B, T, C)`` and return ``(B, T, C)``; inside they work in ``(B, H, T, D)`` like
torch SDPA, and the math itself is :func:`attncourse.attention` (one source of the formula)::

    Q = X W_Q,  K = X W_K,  V = X W_V            (self-attention; cross-attention takes K, V
    head_h = softmax(Q_h K_gᵀ / √D) V_g           from a second sequence, the "context")
    out = concat(head_0, ..., head_{H-1}) W_O

Symbols: ``B`` batch, ``T`` length (``Tq``/``Tk`` when they differ), ``C`` = ``d_model``,
``H`` query heads, ``Hkv`` key/value heads, ``D = C / H`` head dim.

* **Grouping (MHA / GQA / MQA).** Query head ``h`` reads key/value head ``g = h // (H // Hkv)``.
  ``Hkv = H`` is multi-head attention, ``Hkv = 1`` multi-query, anything between grouped-query.
* **Parameters.** ``W_Q, W_O: C x C`` and ``W_K, W_V: C x (Hkv·D)``. For MHA that is ``4·C²``
  whatever ``H`` is: splitting into heads reshapes the projections, it adds no weights.
* **Masks** are boolean, **True = may attend**, broadcastable to ``(B, H, Tq, Tk)``;
  ``causal=True`` is AND-ed with any mask you pass, built from absolute positions
  (:func:`attncourse.kvcache.position_mask`; ``window=W`` adds the causal sliding window).
  ``torch.nn.MultiheadAttention`` uses the opposite polarity (True = *ignore*) for both
  ``attn_mask`` and ``key_padding_mask``.
* **Decoding** (chapter 12): ``MultiHeadAttention.forward(x, cache=..., start_pos=p)`` takes the new
  tokens at positions ``p ..`` and the earlier keys/values from a :mod:`attncourse.kvcache` cache.
  Grouped heads are computed by :func:`attncourse.gqa.grouped_attention`, without copying K/V.
"""
from __future__ import annotations

import torch
from torch import nn

from attncourse.alibi import alibi_bias_at, alibi_slopes
from attncourse.core import attention
from attncourse.gqa import grouped_attention
from attncourse.kvcache import position_mask
from attncourse.masks import causal_mask
from attncourse.rope import apply_rope

__all__ = [
    "split_heads", "merge_heads", "self_attention", "SelfAttention",
    "MultiHeadAttention", "CrossAttention", "param_count", "attention_param_count",
]


# ----------------------------------------------------------------------------- helpers
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, C) -> (B, H, T, C/H)``: head ``h`` owns channels ``h·D .. (h+1)·D - 1``."""
    B, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"split_heads: width C={C} is not divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, D) -> (B, T, H·D)``, the inverse of :func:`split_heads` (heads concatenated)."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, H·D)


def _check_positive(**numbers: int) -> None:
    for name, n in numbers.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _check_width(x: torch.Tensor, width: int, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != width:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must have shape (B, T, {width}), got {got}")


def _and(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


# ------------------------------------------------------------ chapter 02: one head
def self_attention(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, *,
                   causal: bool = False, return_weights: bool = False):
    """Single-head self-attention with explicit weight matrices (the chapter 02 formula).

    Args:
        x: ``(B, T, C)`` (or ``(T, C)``) token vectors.
        w_q, w_k: ``(C, Dk)``; w_v: ``(C, Dv)``. Note ``x @ w``: rows are tokens.
        causal: token ``i`` sees tokens ``j <= i`` only.

    Returns:
        ``(B, T, Dv)`` (and the weights ``(B, T, T)`` if ``return_weights``).
    """
    q, k, v = x @ w_q, x @ w_k, x @ w_v  # (B, T, Dk), (B, T, Dk), (B, T, Dv)
    mask = causal_mask(x.shape[-2], device=x.device) if causal else None  # (T, T)
    return attention(q, k, v, mask=mask, return_weights=return_weights)


class SelfAttention(nn.Module):
    """One attention head over a sequence: ``softmax(X W_Q (X W_K)ᵀ / √Dk) X W_V``.

    ``SelfAttention(d_model, d_k=None, d_v=None, *, bias=False, causal=False)``; ``d_k`` and
    ``d_v`` default to ``d_model``. No output projection (that arrives with multi-head in ch. 04).
    ``forward(x: (B, T, C), *, mask=None, return_weights=False) -> (B, T, Dv)`` and the weights
    ``(B, T, T)`` if asked. ``mask``: bool broadcastable to ``(B, T, T)``, True = may attend.
    """

    def __init__(self, d_model: int, d_k: int | None = None, d_v: int | None = None, *,
                 bias: bool = False, causal: bool = False):
        super().__init__()
        d_k = d_model if d_k is None else d_k
        d_v = d_model if d_v is None else d_v
        _check_positive(d_model=d_model, d_k=d_k, d_v=d_v)
        self.d_model, self.d_k, self.d_v, self.causal = d_model, d_k, d_v, causal
        self.w_q = nn.Linear(d_model, d_k, bias=bias)
        self.w_k = nn.Linear(d_model, d_k, bias=bias)
        self.w_v = nn.Linear(d_model, d_v, bias=bias)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, return_weights: bool = False):
        _check_width(x, self.d_model, "SelfAttention input x")
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)  # (B, T, Dk), (B, T, Dk), (B, T, Dv)
        if self.causal:
            mask = _and(causal_mask(x.shape[1], device=x.device), mask)  # (T, T)
        return attention(q, k, v, mask=mask, return_weights=return_weights)


# ------------------------------------------------------------ chapter 04: many heads
class _ProjectedAttention(nn.Module):
    """Shared body of :class:`MultiHeadAttention` and :class:`CrossAttention`.

    Queries come from ``x: (B, Tq, C)``, keys and values from ``context: (B, Tk, d_context)``
    (``context = x`` for self-attention).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None, d_context: int, *,
                 bias: bool, causal: bool, dropout: float, window: int | None = None,
                 rope: bool = False, rope_base: float = 10000.0, alibi: bool = False):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        _check_positive(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, d_context=d_context)
        if window is not None:
            _check_positive(window=window)
            if not causal:
                raise ValueError(f"window={window} needs causal=True (the causal sliding window 0 <= i - j < W)")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads} "
                             f"(each head gets d_model / n_heads channels)")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads} "
                             f"(each key/value head serves a whole group of query heads)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.d_head, self.d_context = d_model // n_heads, d_context
        self.causal, self.dropout, self.window = causal, dropout, window
        # Positions inside attention (chapters 10-11): RoPE rotates q and k, ALiBi adds a bias.
        if rope and alibi:
            raise ValueError("rope=True and alibi=True both inject positions; choose one")
        if rope and self.d_head % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: d_head={self.d_head} must be even")
        self.rope, self.rope_base, self.alibi = rope, rope_base, alibi
        self.rope_inv_freq: torch.Tensor | None = None   # context extension (PI/NTK/YaRN) replaces base^(-2i/D)
        self.rope_attention_factor = 1.0                 # YaRN multiplies the rotated q and k by this
        if alibi:
            self.register_buffer("alibi_slopes", alibi_slopes(n_heads), persistent=False)  # (H,), fixed
        d_kv = n_kv_heads * self.d_head
        self.w_q = nn.Linear(d_model, d_model, bias=bias)   # C -> H·D
        self.w_k = nn.Linear(d_context, d_kv, bias=bias)    # d_context -> Hkv·D
        self.w_v = nn.Linear(d_context, d_kv, bias=bias)    # d_context -> Hkv·D
        self.w_o = nn.Linear(d_model, d_model, bias=bias)   # H·D -> C

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"d_head={self.d_head}, causal={self.causal}"
                + ("" if self.window is None else f", window={self.window}")
                + (", rope" if self.rope else "") + (", alibi" if self.alibi else ""))

    def _rotate(self, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """RoPE (half-split) of ``t: (B, heads, T, D)`` at absolute positions ``pos: (T,)``."""
        t = apply_rope(t, pos, base=self.rope_base, inv_freq=self.rope_inv_freq)
        return t if self.rope_attention_factor == 1.0 else t * self.rope_attention_factor

    def _attend(self, x, context, mask, return_weights, cache=None, start_pos: int = 0):
        B, Tq = x.shape[:2]
        q = split_heads(self.w_q(x), self.n_heads)             # (B, Tq, C) -> (B, H, Tq, D)
        k = split_heads(self.w_k(context), self.n_kv_heads)    # (B, Tk, Hkv·D) -> (B, Hkv, Tk, D)
        v = split_heads(self.w_v(context), self.n_kv_heads)    # (B, Tk, Hkv·D) -> (B, Hkv, Tk, D)
        # Absolute positions of the new queries (start_pos .. start_pos+Tq-1) and of the new keys.
        q_pos = torch.arange(start_pos, start_pos + Tq, device=x.device)
        k_pos = torch.arange(start_pos + Tq - context.shape[1], start_pos + Tq, device=x.device)
        if self.rope:  # chapter 10: rotate q and k at their positions, before k enters the cache
            q, k = self._rotate(q, q_pos), self._rotate(k, k_pos)
        if self.causal:
            if cache is not None:
                k, v, k_pos = cache.update(k, v, start_pos)    # (B, Hkv, Tk, D): cached + new; k_pos: (Tk,)
            mask = _and(position_mask(q_pos, k_pos, window=self.window), mask)  # (Tq, Tk), bottom-right aligned
        # chapter 11: ALiBi's -m·(i - j) from the same positions (-m·|i - j| without a causal mask)
        bias = alibi_bias_at(self.alibi_slopes, q_pos, k_pos, symmetric=not self.causal) if self.alibi else None
        # Grouped heads without copying K/V: query head h reads K/V head h // (H // Hkv).
        out, w = grouped_attention(q, k, v, mask=mask, bias=bias, return_weights=True)  # (B, H, Tq, D), (B, H, Tq, Tk)
        if self.training and self.dropout > 0:
            # Dropout acts on the attention weights (as nn.MultiheadAttention and SDPA's dropout_p).
            G = self.n_heads // self.n_kv_heads
            wd = nn.functional.dropout(w, self.dropout)                      # (B, H, Tq, Tk)
            out = (wd.reshape(B, self.n_kv_heads, G * Tq, -1) @ v).reshape(B, self.n_heads, Tq, -1)
        y = self.w_o(merge_heads(out))                          # (B, H, Tq, D) -> (B, Tq, C)
        return (y, w) if return_weights else y

    # -- weight exchange with torch.nn.MultiheadAttention (chapter 04's numerical agreement)
    def _load_torch(self, mha: nn.MultiheadAttention) -> None:
        if self.n_kv_heads != self.n_heads:
            raise ValueError(f"torch.nn.MultiheadAttention has one K/V head per query head; this module "
                             f"has n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}")
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(f"torch module has embed_dim={mha.embed_dim}, num_heads={mha.num_heads}; "
                             f"expected {self.d_model}, {self.n_heads}")
        if mha.kdim != self.d_context or mha.vdim != self.d_context:
            raise ValueError(f"torch module has kdim={mha.kdim}, vdim={mha.vdim}; expected {self.d_context}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported")
        has_bias = mha.in_proj_bias is not None
        if has_bias != (self.w_q.bias is not None):
            raise ValueError(f"bias mismatch: torch module bias={has_bias}, this module "
                             f"bias={self.w_q.bias is not None}")
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for mine, theirs in ((self.w_q, wq), (self.w_k, wk), (self.w_v, wv), (self.w_o, mha.out_proj.weight)):
                mine.weight.copy_(theirs)
            if has_bias:
                for mine, theirs in zip((self.w_q, self.w_k, self.w_v), mha.in_proj_bias.chunk(3)):
                    mine.bias.copy_(theirs)
                self.w_o.bias.copy_(mha.out_proj.bias)

    def to_torch(self) -> nn.MultiheadAttention:
        """An equivalent ``nn.MultiheadAttention(batch_first=True)`` (MHA only, ``Hkv = H``).

        Its masks use the opposite polarity: pass ``attn_mask=~mask`` and
        ``key_padding_mask=~keep`` (True = ignore there).
        """
        if self.n_kv_heads != self.n_heads:
            raise ValueError(f"torch.nn.MultiheadAttention cannot hold n_kv_heads={self.n_kv_heads} "
                             f"< n_heads={self.n_heads}")
        kdim = None if self.d_context == self.d_model else self.d_context
        mha = nn.MultiheadAttention(self.d_model, self.n_heads, dropout=self.dropout,
                                    bias=self.w_q.bias is not None, kdim=kdim, vdim=kdim, batch_first=True)
        mha = mha.to(device=self.w_q.weight.device, dtype=self.w_q.weight.dtype)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight]))
            else:
                mha.q_proj_weight.copy_(self.w_q.weight)
                mha.k_proj_weight.copy_(self.w_k.weight)
                mha.v_proj_weight.copy_(self.w_v.weight)
            mha.out_proj.weight.copy_(self.w_o.weight)
            if self.w_q.bias is not None:
                mha.in_proj_bias.copy_(torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias]))
                mha.out_proj.bias.copy_(self.w_o.bias)
        return mha


class MultiHeadAttention(_ProjectedAttention):
    """Multi-head self-attention; ``n_kv_heads`` gives GQA (``1 < Hkv < H``) and MQA (``Hkv = 1``).

    ``MultiHeadAttention(d_model, n_heads, n_kv_heads=None, *, bias=False, causal=False, dropout=0.0,
    window=None, rope=False, rope_base=10000.0, alibi=False)``; ``window=W`` (with ``causal=True``)
    limits each query to the causal sliding window ``0 <= i - j < W``.

    Positions inside attention: ``rope=True`` rotates q and k (half-split RoPE, chapter 10) at
    their absolute positions before the cache sees k; ``rope_inv_freq`` / ``rope_attention_factor``
    (attributes) apply a context-extension transform. ``alibi=True`` adds ``-m_h·(i - j)``
    (chapter 11; ``-m_h·|i - j|`` when not causal) computed from the same positions.

    ``forward(x: (B, T, C), *, mask=None, return_weights=False, cache=None, start_pos=0) -> (B, T, C)``,
    and the attention weights ``(B, H, T, Tk)`` (before dropout) if ``return_weights``.
    ``mask``: bool broadcastable to ``(B, H, T, Tk)``, True = may attend (e.g. the key padding
    mask ``attncourse.masks.padding_mask(lengths, T)`` of shape ``(B, 1, 1, T)``).

    Decoding with a KV cache (causal only): ``x`` holds the new tokens at absolute positions
    ``start_pos .. start_pos+T-1``, and ``cache`` (a :mod:`attncourse.kvcache` cache of this
    layer) supplies the earlier keys and values; the mask is built from positions
    (:func:`attncourse.kvcache.position_mask`), so ``Tk`` is whatever the cache returns.

    Raises ValueError naming the numbers for a bad configuration (``d_model % n_heads``,
    ``n_heads % n_kv_heads``, non-positive sizes) and naming the shapes for an input whose
    last dim is not ``d_model``.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, *,
                 bias: bool = False, causal: bool = False, dropout: float = 0.0, window: int | None = None,
                 rope: bool = False, rope_base: float = 10000.0, alibi: bool = False):
        super().__init__(d_model, n_heads, n_kv_heads, d_model, bias=bias, causal=causal, dropout=dropout,
                         window=window, rope=rope, rope_base=rope_base, alibi=alibi)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, return_weights: bool = False,
                cache=None, start_pos: int = 0):
        _check_width(x, self.d_model, "MultiHeadAttention input x")
        if cache is not None:
            if not self.causal:
                raise ValueError("MultiHeadAttention: a KV cache needs causal=True (decoding is causal)")
            ring = getattr(cache, "window", None)
            if ring is not None and (self.window is None or ring < self.window):
                raise ValueError(f"MultiHeadAttention: a rolling cache of {ring} slots cannot serve "
                                 f"window={self.window} (it would drop keys the queries still see)")
            if cache.n_kv_heads != self.n_kv_heads or cache.head_dim != self.d_head:
                raise ValueError(f"MultiHeadAttention: the cache holds Hkv={cache.n_kv_heads}, D={cache.head_dim}; "
                                 f"this layer has n_kv_heads={self.n_kv_heads}, d_head={self.d_head}")
        return self._attend(x, x, mask, return_weights, cache=cache, start_pos=start_pos)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, *, causal: bool = False) -> "MultiHeadAttention":
        """A copy of ``torch.nn.MultiheadAttention``'s weights (``in_proj`` rows are Q, K, V)."""
        if mha.kdim != mha.embed_dim or mha.vdim != mha.embed_dim:
            raise ValueError(f"kdim={mha.kdim}/vdim={mha.vdim} differ from embed_dim={mha.embed_dim}: "
                             "use CrossAttention.from_torch")
        p = mha.out_proj.weight
        m = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, causal=causal,
                dropout=mha.dropout).to(device=p.device, dtype=p.dtype)
        m._load_torch(mha)
        return m


class CrossAttention(_ProjectedAttention):
    """Queries from ``x``, keys and values from another sequence (``context``).

    ``CrossAttention(d_model, n_heads, *, d_context=None, n_kv_heads=None, bias=False, dropout=0.0)``;
    ``d_context`` (the context's width) defaults to ``d_model``.

    ``forward(x: (B, Tq, C), context: (B, Tk, d_context), *, mask=None, return_weights=False)
    -> (B, Tq, C)``, and the weights ``(B, H, Tq, Tk)`` if ``return_weights``. ``mask`` is a
    bool keep-mask broadcastable to ``(B, H, Tq, Tk)``; for a padded context use
    ``attncourse.masks.padding_mask(context_lengths, Tk)`` so padded keys get zero weight.
    No causal option: the queries may look at the whole context.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_context: int | None = None,
                 n_kv_heads: int | None = None, bias: bool = False, dropout: float = 0.0):
        d_context = d_model if d_context is None else d_context
        super().__init__(d_model, n_heads, n_kv_heads, d_context, bias=bias, causal=False, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, *, mask: torch.Tensor | None = None,
                return_weights: bool = False):
        _check_width(x, self.d_model, "CrossAttention queries x")
        _check_width(context, self.d_context, "CrossAttention context")
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"CrossAttention: x {tuple(x.shape)} and context {tuple(context.shape)} "
                             "need the same batch size B")
        return self._attend(x, context, mask, return_weights)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "CrossAttention":
        """A copy of ``torch.nn.MultiheadAttention``'s weights; ``kdim`` becomes ``d_context``."""
        if mha.kdim != mha.vdim:
            raise ValueError(f"kdim={mha.kdim} and vdim={mha.vdim} must be equal (one context width)")
        p = mha.out_proj.weight
        m = cls(mha.embed_dim, mha.num_heads, d_context=mha.kdim, bias=mha.in_proj_bias is not None,
                dropout=mha.dropout).to(device=p.device, dtype=p.dtype)
        m._load_torch(mha)
        return m


# ------------------------------------------------------------------- parameter counts
def param_count(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def attention_param_count(d_model: int, n_heads: int, n_kv_heads: int | None = None, *,
                          bias: bool = False, d_context: int | None = None) -> int:
    """Parameters of :class:`MultiHeadAttention` / :class:`CrossAttention`, by formula.

    ``W_Q, W_O: C·C`` each and ``W_K, W_V: d_context·Hkv·D`` each, ``D = C / H``. For MHA
    (``Hkv = H``, ``d_context = C``) this is ``4·C²`` for every ``H``; MQA saves
    ``2·C·(C - D)``. Biases add ``2·C + 2·Hkv·D``.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    d_context = d_model if d_context is None else d_context
    _check_positive(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, d_context=d_context)
    d_kv = n_kv_heads * (d_model // n_heads)
    n = 2 * d_model * d_model + 2 * d_context * d_kv
    if bias:
        n += 2 * d_model + 2 * d_kv
    return n

