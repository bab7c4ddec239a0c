"""attncourse.viz: the pictures carry a colorbar, one shared scale per figure, and labels that do not collide."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from attncourse.masks import causal_mask  # noqa: E402
from attncourse.viz import plot_attention, plot_heads, plot_mask  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _weights(h, tq, tk, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(h, tq, tk, generator=g), -1)


def test_plot_attention_has_colorbar_labels_and_integer_ticks():
    w = _weights(1, 3, 5)[0]
    ax = plot_attention(w, title="t")
    assert len(ax.figure.axes) == 2                                      # the map and its colorbar
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    ax = plot_attention(w, ["a", "b", "c"], list("vwxyz"), colorbar=False, xlabel="source", ylabel="target")
    assert len(ax.figure.axes) == 1
    assert ax.get_xlabel() == "source" and ax.get_ylabel() == "target"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]


def test_plot_attention_rejects_wrong_shapes_and_label_counts():
    with pytest.raises(ValueError, match="2-D"):
        plot_attention(_weights(2, 3, 3))
    with pytest.raises(ValueError, match="key labels: expected 5, got 4"):
        plot_attention(_weights(1, 3, 5)[0], None, list("abcd"))


def test_plot_mask_draws_bool_masks_with_custom_axis_names():
    ax = plot_mask(causal_mask(2, 6), [4, 5], range(6), ylabel="query (position)")
    assert ax.get_ylabel() == "query (position)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4", "5"]


def test_long_sequences_without_labels_get_few_integer_ticks():
    ax = plot_attention(_weights(1, 40, 40)[0], annotate=False)
    ticks = ax.get_xticks()
    assert len(ticks) <= 12 and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("h,t,ncols", [(4, 17, None), (4, 5, None), (2, 9, 2), (3, 6, 2)])
def test_plot_heads_shares_one_scale_and_one_colorbar_and_labels_outer_axes(h, t, ncols):
    w = _weights(h, t, t)
    w[1] *= 0.5                                                          # heads with different maxima
    labels = [f"tok{i}" for i in range(t)]
    fig = plot_heads(w, labels, labels, ncols=ncols, title="heads", xlabel="source", ylabel="target")
    maps = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(maps) == h and len(colorbars) == 1
    for ax in maps:
        assert ax.images[0].get_clim() == pytest.approx((0.0, float(w.max())))
    n_cols = ncols or (4 if t <= 10 else 2)
    n_cols = min(n_cols, h)
    for i, ax in enumerate(maps):
        left, bottom = i % n_cols == 0, i + n_cols >= h
        assert ax.get_ylabel() == ("target" if left else "")
        assert ax.get_xlabel() == ("source" if bottom else "")
        assert ax.yaxis.get_tick_params()["labelleft"] == left
        assert ax.xaxis.get_tick_params()["labelbottom"] == bottom
    assert fig._suptitle.get_text() == "heads"


def test_plot_heads_tick_labels_do_not_overlap():
    t = 17
    labels = [str(i % 10) for i in range(t)]
    fig = plot_heads(_weights(4, t, t), labels, labels)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        for axis_labels, coord in ((ax.get_yticklabels(), 1), (ax.get_xticklabels(), 0)):
            boxes = [lab.get_window_extent(renderer) for lab in axis_labels if lab.get_visible() and lab.get_text()]
            for a, b in zip(boxes, boxes[1:]):
                lo, hi = sorted((a, b), key=lambda bb: bb.get_points()[0][coord])
                assert lo.get_points()[1][coord] <= hi.get_points()[0][coord] + 0.5, "tick labels overlap"


def test_plot_heads_rejects_2d_weights_and_wrong_title_counts():
    with pytest.raises(ValueError, match=r"\(H, Tq, Tk\)"):
        plot_heads(_weights(1, 3, 3)[0])
    with pytest.raises(ValueError, match="3 maps but 2 titles"):
        plot_heads(_weights(3, 3, 3), titles=["a", "b"])


def test_plot_heads_custom_titles():
    fig = plot_heads(_weights(2, 4, 4), titles=["head 0", "control"])
    assert [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"] == ["head 0", "control"]
