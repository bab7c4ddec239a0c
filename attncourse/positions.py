"""Absolute position encodings (rotary and linear-bias positions get their own modules).

Self-attention without positions is permutation equivariant (chapter 02), so order must be
injected. The original Transformer adds fixed sinusoids to the token vectors:

    PE[p, 2i] = sin(p · w_i),   PE[p, 2i+1] = cos(p · w_i),   w_i = base^(-2i/d),  base = 10000.
"""
from __future__ import annotations

import torch

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(n: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """``(n, d)`` float32 table of sinusoidal positions; for odd ``d`` the last column is a sine.

    Angles are computed in float64 and rounded once at the end, so large positions keep
    their accuracy.
    """
    if int(n) != n or n < 1 or int(d) != d or d < 1:
        raise ValueError(f"sinusoidal_positions needs positive integers n and d, got n={n!r}, d={d!r}")
    p = torch.arange(n, dtype=torch.float64).unsqueeze(1)        # (n, 1)
    two_i = torch.arange(0, d, 2, dtype=torch.float64)            # (ceil(d/2),): 0, 2, 4, ...
    angles = p * base ** (-two_i / d)                             # (n, ceil(d/2))
    pe = torch.empty(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d // 2])                  # odd d: one cosine fewer
    return pe.float()
