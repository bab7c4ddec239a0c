"""Pictures of attention: weight heatmaps and masks, with token labels.

All functions take CPU or GPU tensors (or arrays) of shape ``(Tq, Tk)`` — or ``(H, Tq, Tk)``
for :func:`plot_heads` — and return the matplotlib ``Axes`` (or ``Figure``) they drew on.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_2d(x, name: str) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu")
            x = x.float() if x.dtype != torch.bool else x
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (Tq, Tk); got shape {x.shape}. "
                         "Select one batch element and head first, e.g. w[0, 0].")
    return x


def _label(ax, q_labels, k_labels, shape):
    tq, tk = shape
    for labels, n, axis in ((q_labels, tq, "y"), (k_labels, tk, "x")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{'query' if axis == 'y' else 'key'} labels: expected {n}, got {len(labels)}")
    if k_labels is not None:
        ax.set_xticks(range(tk), [str(t) for t in k_labels], rotation=90 if tk > 8 else 0)
    if q_labels is not None:
        ax.set_yticks(range(tq), [str(t) for t in q_labels])
    ax.set_xlabel("key")
    ax.set_ylabel("query")


def plot_attention(weights, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
                   ax=None, title: str | None = None, annotate: bool | None = None, cmap: str = "viridis",
                   colorbar: bool = True):
    """Heatmap of attention weights ``(Tq, Tk)``; rows are queries, columns keys."""
    import matplotlib.pyplot as plt

    w = _as_2d(weights, "weights")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * w.shape[1] + 2, 0.45 * w.shape[0] + 1.2))
    im = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(1e-12, float(np.nanmax(w))) if w.size else 1.0)
    _label(ax, q_labels, k_labels, w.shape)
    if annotate is None:
        annotate = w.size <= 100
    if annotate:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if w[i, j] < 0.6 * np.nanmax(w) else "black")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_mask(mask, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
              ax=None, title: str | None = None):
    """A boolean mask ``(Tq, Tk)``: filled = may attend, white = masked."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    m = _as_2d(mask, "mask").astype(bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.35 * m.shape[1] + 1.5, 0.35 * m.shape[0] + 1.2))
    ax.imshow(m, cmap=ListedColormap(["white", "#3b6ea5"]), vmin=0, vmax=1)
    ax.set_xticks(np.arange(-0.5, m.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, m.shape[0], 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    _label(ax, q_labels, k_labels, m.shape)
    if title:
        ax.set_title(title)
    return ax


def plot_heads(weights, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
               ncols: int = 4, title: str | None = None):
    """One heatmap per head from weights ``(H, Tq, Tk)``; returns the Figure."""
    import matplotlib.pyplot as plt

    try:
        import torch
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    w = np.asarray(weights)
    if w.ndim != 3:
        raise ValueError(f"plot_heads expects weights of shape (H, Tq, Tk); got {w.shape}")
    n = w.shape[0]
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            plot_attention(w[i], q_labels, k_labels, ax=ax, title=f"head {i}", annotate=False, colorbar=False)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
