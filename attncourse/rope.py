"""Rotary position embedding (RoPE): rotate 2-D pairs of q and k by position-dependent angles.

RoFormer (Su et al.) splits a head of even width ``D`` into ``D/2`` pairs and rotates pair ``i``
of the vector at position ``m`` by the angle ``m·θ_i``::

    θ_i = base^(-2i/D),  i = 0 .. D/2 - 1,  base = 10000

    [y_a]   [cos mθ_i  -sin mθ_i] [x_a]
    [y_b] = [sin mθ_i   cos mθ_i] [x_b]

Because rotations compose, ``⟨R_m q, R_n k⟩ = ⟨q, R_{n-m} k⟩``: the score depends on the
offset ``m - n`` only. RoPE is applied to q and k after their projections (never to v), and it
is a few elementwise operations, ``O(T·D)``, before any attention kernel.

Two pairings are used by real checkpoints (see book/conventions.md):

* **half-split** (the default; ``rotate_half`` in Hugging Face Llama, GPT-NeoX): dimension ``i``
  pairs with ``i + D/2``;
* **interleaved** (``interleaved=True``; the RoFormer paper, Meta's original Llama code, GPT-J):
  dimension ``2i`` pairs with ``2i + 1``.

They are the same map up to a fixed permutation of the head dimensions
(:func:`half_split_permutation`); :func:`interleaved_to_half_split` converts the rows of a
q/k projection weight so a checkpoint of one layout runs with the other.

Context extension transforms the frequencies ``θ`` (each returns a new ``(D/2,)`` tensor to pass
as ``inv_freq=``): position interpolation :func:`pi_frequencies` (Chen et al. 2023),
NTK-aware base scaling :func:`ntk_frequencies` (bloc97, 2023) and :func:`yarn_frequencies`
(Peng et al. 2023, which also returns an attention factor).

Angles are computed in float32 (float64 for float64 inputs); low-precision inputs are rotated
in float32 and cast back.
"""
from __future__ import annotations

import math

import torch

__all__ = ["rope_frequencies", "apply_rope", "rotate_half", "half_split_permutation",
           "interleaved_to_half_split", "half_split_to_interleaved",
           "pi_frequencies", "ntk_frequencies", "yarn_frequencies", "yarn_ramp"]


# ----------------------------------------------------------------------------- frequencies
def _check_dim(dim) -> int:
    if isinstance(dim, bool) or int(dim) != dim or dim < 2 or dim % 2:
        raise ValueError(f"RoPE needs an even head dimension D >= 2 (it rotates D/2 pairs), got {dim!r}")
    return int(dim)


def _check_base(base) -> float:
    if not base > 1:
        raise ValueError(f"RoPE base must be > 1, got {base!r}")
    return float(base)


def _check_scale(scale) -> float:
    if not scale >= 1:
        raise ValueError(f"the context-extension scale s (new length / trained length) must be >= 1, got {scale!r}")
    return float(scale)


def rope_frequencies(dim: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
                     device=None) -> torch.Tensor:
    """``θ_i = base^(-2i/D)`` for ``i = 0 .. D/2 - 1``: a ``(D/2,)`` tensor, from 1 down to ``base^(-(D-2)/D)``.

    Computed in float64 and rounded once to ``dtype``. Pair ``i`` turns by ``θ_i`` radians per
    position: its wavelength is ``2π/θ_i`` positions.
    """
    dim, base = _check_dim(dim), _check_base(base)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64, device=device)  # 0, 2, 4, ..., D-2
    return (base ** (-two_i / dim)).to(dtype)


def pi_frequencies(dim: int, scale: float, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
                   device=None) -> torch.Tensor:
    """Position interpolation (Chen et al. 2023): ``θ_i / s``.

    Rotating position ``m`` by ``m·θ_i/s`` is rotating position ``m/s``: a sequence ``s`` times
    longer than the training length is squeezed into the trained range of angles. Every
    frequency, the highest included, is slowed down by ``s``.
    """
    scale = _check_scale(scale)
    return (rope_frequencies(dim, base, dtype=torch.float64, device=device) / scale).to(dtype)


def ntk_frequencies(dim: int, scale: float, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
                    device=None) -> torch.Tensor:
    """NTK-aware scaling (bloc97 2023): the frequencies of the base ``base · s^(D/(D-2))``.

    The highest frequency (``θ_0 = 1``) is unchanged and the lowest, ``θ_{D/2-1}``, is divided by
    exactly ``s``; in between the slowdown grows geometrically with ``i``. Needs ``D >= 4``
    (with one pair there is nothing between the two ends).
    """
    dim, scale = _check_dim(dim), _check_scale(scale)
    if dim < 4:
        raise ValueError(f"NTK-aware scaling needs a head dimension D >= 4, got {dim} "
                         "(the base change is s^(D/(D-2)))")
    return rope_frequencies(dim, _check_base(base) * scale ** (dim / (dim - 2)), dtype=dtype, device=device)


def yarn_ramp(r: torch.Tensor, alpha: float = 1.0, beta: float = 32.0) -> torch.Tensor:
    """YaRN's ``γ(r)``: 0 for ``r < α``, 1 for ``r > β``, linear in between (Peng et al. 2023)."""
    return ((r - alpha) / (beta - alpha)).clamp(0.0, 1.0)


def yarn_frequencies(dim: int, scale: float, original_length: int, base: float = 10000.0, *,
                     alpha: float = 1.0, beta: float = 32.0, dtype: torch.dtype = torch.float32,
                     device=None) -> tuple[torch.Tensor, float]:
    """YaRN ("NTK-by-parts" + attention temperature), Peng et al. 2023. Returns ``(θ', factor)``.

    ``r_i = L / λ_i`` counts how many full turns pair ``i`` makes over the trained length ``L``
    (``λ_i = 2π/θ_i``). Pairs that turn often (``r > β``) keep their frequency, pairs that turn
    less than once (``r < α``) are interpolated like PI, and in between the two are mixed::

        θ'_i = (1 - γ(r_i)) · θ_i / s + γ(r_i) · θ_i

    ``factor = 0.1·ln(s) + 1`` multiplies the rotated q and k (so the logits by ``factor²``).
    This is the paper's ramp, linear in ``r``; the authors' and Hugging Face's code ramp linearly
    in the dimension index between the (rounded) dimensions where ``r = β`` and ``r = α``, which
    gives slightly different frequencies in the transition band.
    """
    dim, scale = _check_dim(dim), _check_scale(scale)
    if not original_length >= 1:
        raise ValueError(f"yarn_frequencies: original_length must be >= 1, got {original_length!r}")
    if not 0 <= alpha < beta:
        raise ValueError(f"yarn_frequencies needs 0 <= alpha < beta, got alpha={alpha!r}, beta={beta!r}")
    theta = rope_frequencies(dim, base, dtype=torch.float64, device=device)   # (D/2,)
    r = original_length * theta / (2 * math.pi)                               # turns over the trained length
    gamma = yarn_ramp(r, alpha, beta)
    new = (1 - gamma) * theta / scale + gamma * theta
    return new.to(dtype), 0.1 * math.log(scale) + 1.0


# ------------------------------------------------------------------------------ rotation
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim (halves of width D/2): the 90° turn of every half-split pair.

    With ``cos``/``sin`` repeated over both halves, half-split RoPE is ``x·cos + rotate_half(x)·sin``
    (Hugging Face's formulation).
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _angle_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_positions(x: torch.Tensor, positions) -> torch.Tensor:
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"apply_rope: positions must be a tensor of shape (T,) or (B, T), "
                        f"got {type(positions).__name__}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"apply_rope: positions must be integers or real numbers, got {positions.dtype}")
    T = x.shape[-2]
    if positions.dim() == 1:
        if positions.shape[0] != T:
            raise ValueError(f"apply_rope: positions has shape {tuple(positions.shape)} but x "
                             f"{tuple(x.shape)} has T = {T} positions (dim -2)")
        return positions
    if positions.dim() == 2:
        if x.dim() != 4 or positions.shape != (x.shape[0], T):
            raise ValueError(f"apply_rope: per-sequence positions of shape {tuple(positions.shape)} need "
                             f"x of shape (B, H, T, D) with (B, T) = {tuple(positions.shape)}; got x {tuple(x.shape)}")
        return positions[:, None, :]                                          # (B, T) -> (B, 1, T)
    raise ValueError(f"apply_rope: positions must have shape (T,) or (B, T), got {tuple(positions.shape)}")


def apply_rope(x: torch.Tensor, positions: torch.Tensor, *, base: float = 10000.0,
               interleaved: bool = False, inv_freq: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each pair of ``x``'s last dimension by ``position · θ_i``.

    Args:
        x: ``(..., T, D)`` queries or keys, e.g. ``(B, H, T, D)``; ``D`` even.
        positions: ``(T,)`` shared by every sequence, or ``(B, T)`` per sequence (then ``x`` is
            ``(B, H, T, D)``); integers, or reals for interpolated positions. Decoding with a KV
            cache passes the absolute positions of the new tokens, e.g. ``arange(t0, t0 + T)``.
        base: the RoPE base of ``θ_i = base^(-2i/D)``.
        interleaved: pair ``(2i, 2i+1)`` (RoFormer, Meta Llama) instead of ``(i, i + D/2)``
            (half-split, Hugging Face Llama; the default).
        inv_freq: ``(D/2,)`` frequencies to use instead of ``rope_frequencies(D, base)``, e.g.
            from :func:`pi_frequencies`, :func:`ntk_frequencies`, :func:`yarn_frequencies`.

    Returns:
        ``(..., T, D)`` in ``x``'s dtype. Angles are float32 (float64 for a float64 ``x``).

    Raises:
        ValueError for an odd or zero head dimension, positions of the wrong shape, or
        ``inv_freq`` of the wrong shape; TypeError for a non-float ``x`` or non-tensor positions.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"apply_rope: x must be a floating-point tensor, got {got}")
    if x.dim() < 2:
        raise ValueError(f"apply_rope: x must have shape (..., T, D), got {tuple(x.shape)}")
    D = x.shape[-1]
    if D % 2 or D == 0:
        raise ValueError(f"apply_rope: the head dimension D = {D} must be even and > 0 (RoPE rotates pairs)")
    pos = _check_positions(x, positions)
    adt = _angle_dtype(x)
    if inv_freq is None:
        inv_freq = rope_frequencies(D, base, dtype=adt, device=x.device)
    elif tuple(inv_freq.shape) != (D // 2,):
        raise ValueError(f"apply_rope: inv_freq must have shape (D/2,) = ({D // 2},), got {tuple(inv_freq.shape)}")
    angles = pos.to(device=x.device, dtype=adt)[..., None] * inv_freq.to(device=x.device, dtype=adt)  # (..., T, D/2)
    cos, sin = angles.cos(), angles.sin()
    xf = x.to(adt) if x.dtype in (torch.float16, torch.bfloat16) else x
    cos, sin = cos.to(xf.dtype), sin.to(xf.dtype)
    if interleaved:
        a, b = xf[..., 0::2], xf[..., 1::2]                                   # pairs (2i, 2i+1)
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)  # (..., T, D/2, 2) -> (..., T, D)
    else:
        a, b = xf[..., : D // 2], xf[..., D // 2:]                            # pairs (i, i + D/2)
        out = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)       # (..., T, D)
    return out.to(x.dtype)


# ------------------------------------------------------------------- the two layouts
def half_split_permutation(dim: int) -> torch.Tensor:
    """Indices ``p`` with ``x_half = x_interleaved[..., p]``: ``[0, 2, 4, ..., D-2, 1, 3, ..., D-1]``.

    Then ``apply_rope(x[..., p]) == apply_rope(x, interleaved=True)[..., p]``: the interleaved pair
    ``(2i, 2i+1)`` lands on the half-split pair ``(i, i + D/2)``. Scores ``q·k`` do not change
    when q and k are permuted alike, so attention is the same.
    """
    dim = _check_dim(dim)
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def _check_weight(w: torch.Tensor, n_heads: int) -> int:
    if isinstance(n_heads, bool) or int(n_heads) != n_heads or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    if w.dim() < 1 or w.shape[0] % n_heads:
        raise ValueError(f"a q/k projection weight needs H·D rows (dim 0) for n_heads={n_heads}; "
                         f"got shape {tuple(w.shape)}")
    return _check_dim(w.shape[0] // n_heads)


def interleaved_to_half_split(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the output rows of a q or k projection from the interleaved to the half-split layout.

    ``w``: ``(H·D, ...)`` — an ``nn.Linear`` weight ``(H·D, C)`` (rows are outputs) or a bias
    ``(H·D,)``. Within each head, row ``2i + a`` moves to ``a·D/2 + i`` (``a = 0, 1``); heads stay
    in place. For keys of a GQA model pass ``n_heads = n_kv_heads``. This is the permutation that
    Hugging Face's Llama conversion script applies to Meta's checkpoints.
    """
    D = _check_weight(w, n_heads)
    rest = w.shape[1:]
    return w.reshape(n_heads, D // 2, 2, *rest).transpose(1, 2).reshape(n_heads * D, *rest)  # (H, D/2, 2) -> (H, 2, D/2)


def half_split_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_half_split`: row ``a·D/2 + i`` moves to ``2i + a``."""
    D = _check_weight(w, n_heads)
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, D // 2, *rest).transpose(1, 2).reshape(n_heads * D, *rest)  # (H, 2, D/2) -> (H, D/2, 2)
