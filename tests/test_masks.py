"""Masks against explicit loops over (i, j), the conventions written in book/conventions.md."""
import pytest
import torch

from attncourse import masks as M


def loop_mask(tq, tk, rule):
    return torch.tensor([[rule(i + tk - tq, j) for j in range(tk)] for i in range(tq)], dtype=torch.bool)


@pytest.mark.parametrize("tq, tk", [(1, 1), (4, 4), (2, 5), (1, 97), (97, 97), (7, 3)])
def test_causal_bottom_right(tq, tk):
    assert torch.equal(M.causal_mask(tq, tk), loop_mask(tq, tk, lambda i, j: j <= i))


def test_causal_matches_tril_and_drawing():
    assert torch.equal(M.causal_mask(5), torch.ones(5, 5, dtype=torch.bool).tril())
    assert M.causal_mask(2, 5).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("tq, tk, w", [(6, 6, 1), (6, 6, 3), (3, 9, 4), (97, 97, 16), (5, 5, 10)])
def test_sliding_window_causal_is_w_keys_including_self(tq, tk, w):
    m = M.sliding_window_mask(tq, tk, w)
    assert torch.equal(m, loop_mask(tq, tk, lambda i, j: 0 <= i - j < w))
    # every query with enough history sees exactly w keys
    assert int(m[-1].sum()) == min(w, tk)


@pytest.mark.parametrize("t, w", [(6, 1), (6, 2), (11, 4)])
def test_sliding_window_bidirectional(t, w):
    m = M.sliding_window_mask(t, t, w, causal=False)
    assert torch.equal(m, loop_mask(t, t, lambda i, j: abs(i - j) < w))


def test_sliding_window_is_window_and_causal_composed():
    t, w = 9, 3
    composed = M.and_masks(M.causal(), M.sliding_window(w, causal=False))
    assert torch.equal(M.materialize(composed, 1, 1, t, t)[0, 0], M.sliding_window_mask(t, t, w))


def test_padding_mask_shape_and_values():
    m = M.padding_mask([3, 0, 5], 5)
    assert m.shape == (3, 1, 1, 5) and m.dtype == torch.bool
    assert m[:, 0, 0].int().tolist() == [[1, 1, 1, 0, 0], [0] * 5, [1] * 5]


@pytest.mark.parametrize("lengths, t, match", [([6], 5, r"in \[0, 5\]"), ([-1], 5, r"in \[0, 5\]"),
                                               ([[1, 2]], 5, "1-D")])
def test_padding_mask_errors(lengths, t, match):
    with pytest.raises(ValueError, match=match):
        M.padding_mask(lengths, t)


def test_padding_mask_rejects_float_lengths():
    with pytest.raises(TypeError, match="integers"):
        M.padding_mask(torch.tensor([2.5]), 4)


def test_or_not_and_document_and_prefix():
    t = 6
    longformer_like = M.or_masks(M.sliding_window(2, causal=False), lambda b, h, q, k: (q == 0) | (k == 0))
    m = M.materialize(longformer_like, 1, 1, t, t)[0, 0]
    assert m[0].all() and m[:, 0].all() and not m[5, 2]
    assert torch.equal(M.materialize(M.not_mask(M.full()), 1, 1, 2, 3), torch.zeros(1, 1, 2, 3, dtype=torch.bool))
    docs = torch.tensor([[0, 0, 1, 1, 1, 2]])
    d = M.materialize(M.and_masks(M.causal(), M.document(docs)), 1, 1, t, t)[0, 0]
    assert torch.equal(d, loop_mask(t, t, lambda i, j: j <= i and docs[0, i] == docs[0, j]))
    p = M.materialize(M.or_masks(M.causal(), M.prefix_lm(3)), 1, 1, t, t)[0, 0]
    assert torch.equal(p, loop_mask(t, t, lambda i, j: j <= i or j < 3))


def test_materialize_per_batch_and_head():
    lengths = torch.tensor([2, 4])
    mod = M.and_masks(M.padding(lengths), lambda b, h, q, k: (k % 2 == h) | (h == 2))
    m = M.materialize(mod, 2, 3, 3, 4)
    for b in range(2):
        for h in range(3):
            for i in range(3):
                for j in range(4):
                    assert bool(m[b, h, i, j]) == (j < lengths[b] and (j % 2 == h or h == 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        M.sliding_window_mask(4, 4, 0)
    with pytest.raises(ValueError, match="Tq must be a positive integer"):
        M.materialize(M.full(), 1, 1, 0, 3)
    with pytest.raises(ValueError, match="at least one"):
        M.and_masks()
