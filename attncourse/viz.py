"""Pictures of attention: weight heatmaps and masks, with token labels.

All functions take CPU or GPU tensors (or arrays) of shape ``(Tq, Tk)`` — or ``(H, Tq, Tk)``
for :func:`plot_heads` — and return the matplotlib ``Axes`` (or ``Figure``) they drew on.

Rows are queries and columns keys everywhere; the axes are labelled ``query`` and ``key``
unless ``ylabel=``/``xlabel=`` say otherwise. Weight heatmaps start their colour scale at 0 and
carry a colorbar; :func:`plot_heads` draws every head on one shared scale with one colorbar, so
the same colour means the same weight in every head.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_array(x, ndim: int, what: str) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu")
            x = x.float() if x.dtype != torch.bool else x
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{what}; got shape {x.shape}.")
    return x


def _as_2d(x, name: str) -> np.ndarray:
    return _as_array(x, 2, f"{name} must be 2-D (Tq, Tk). Select one batch element and head first, "
                           "e.g. w[0, 0]")


def _tick_fontsize(n: int) -> float:
    """Smaller tick labels when there are many of them (matplotlib's default is 10)."""
    return 9 if n <= 10 else 8 if n <= 16 else 7


def _label(ax, q_labels, k_labels, shape, xlabel: str | None = "key", ylabel: str | None = "query"):
    tq, tk = shape
    for labels, n, axis in ((q_labels, tq, "y"), (k_labels, tk, "x")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{'query' if axis == 'y' else 'key'} labels: expected {n}, got {len(labels)}")
    from matplotlib.ticker import MaxNLocator

    # Without labels: one tick per position up to 16 positions, else a few integer ticks;
    # never fractional positions such as 2.5.
    if k_labels is None and tk > 16:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    else:
        k_text = [str(t) for t in (range(tk) if k_labels is None else k_labels)]
        long_keys = tk > 8 or (tk > 4 and max(map(len, k_text), default=0) > 3)
        ax.set_xticks(range(tk), k_text, rotation=90 if long_keys else 0, fontsize=_tick_fontsize(tk))
    if q_labels is None and tq > 16:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    else:
        q_text = [str(t) for t in (range(tq) if q_labels is None else q_labels)]
        ax.set_yticks(range(tq), q_text, fontsize=_tick_fontsize(tq))
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")


def plot_attention(weights, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
                   ax=None, title: str | None = None, annotate: bool | None = None, cmap: str = "viridis",
                   colorbar: bool = True, vmax: float | None = None, xlabel: str | None = "key",
                   ylabel: str | None = "query"):
    """Heatmap of attention weights ``(Tq, Tk)``; rows are queries, columns keys.

    The colour scale runs from 0 to ``vmax`` (default: the largest weight). ``annotate`` writes
    each weight in its cell (default: when there are at most 100 cells).
    """
    import matplotlib.pyplot as plt

    w = _as_2d(weights, "weights")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * w.shape[1] + 2, 0.45 * w.shape[0] + 1.2))
    top = vmax if vmax is not None else (float(np.nanmax(w)) if w.size else 1.0)
    top = max(1e-12, top)
    im = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=top)
    _label(ax, q_labels, k_labels, w.shape, xlabel, ylabel)
    if annotate is None:
        annotate = w.size <= 100
    if annotate:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if w[i, j] < 0.6 * top else "black")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_mask(mask, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
              ax=None, title: str | None = None, xlabel: str | None = "key", ylabel: str | None = "query"):
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
    _label(ax, q_labels, k_labels, m.shape, xlabel, ylabel)
    if title:
        ax.set_title(title)
    return ax


def plot_heads(weights, q_labels: Sequence | None = None, k_labels: Sequence | None = None, *,
               ncols: int | None = None, title: str | None = None, xlabel: str | None = "key",
               ylabel: str | None = "query", cmap: str = "viridis", titles: Sequence[str] | None = None):
    """One heatmap per head from weights ``(H, Tq, Tk)``; returns the Figure.

    ``titles`` names the maps (default ``head 0``, ``head 1``, ...), e.g. when a control model's
    head is drawn next to the heads of another model.

    All heads share one colour scale (0 to the largest weight of any head) and one colorbar.
    Tick labels and axis labels appear once per row and column: query labels on the left
    column, key labels under the bottom map of each column. ``ncols`` defaults to 4 for short
    sequences and 2 when a side has more than 10 positions, so that the labels stay legible.
    """
    import matplotlib.pyplot as plt

    w = _as_array(weights, 3, "plot_heads expects weights of shape (H, Tq, Tk)")
    n, tq, tk = w.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"plot_heads: {n} maps but {len(titles)} titles")
    if ncols is None:
        ncols = 4 if max(tq, tk) <= 10 else 2
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    side = max(2.6, 0.2 * max(tq, tk) + 1.2)             # inches per map, labels included
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1.0, side * nrows + (0.4 if title else 0)),
                             squeeze=False, layout="constrained")
    vmax = max(1e-12, float(np.nanmax(w))) if w.size else 1.0
    shown = []
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        row, col = divmod(i, ncols)
        bottom = i + ncols >= n                            # no map below this one
        plot_attention(w[i], q_labels, k_labels, ax=ax, title=f"head {i}" if titles is None else titles[i],
                       annotate=False, colorbar=False, vmax=vmax, cmap=cmap,
                       xlabel=xlabel if bottom else None, ylabel=ylabel if col == 0 else None)
        ax.tick_params(labelleft=col == 0, labelbottom=bottom)
        shown.append(ax)
    fig.colorbar(shown[0].images[0], ax=shown, shrink=0.85, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig
