"""Attention sinks (StreamingLLM) as a composed mask_mod, against an explicit loop over (i, j)."""
import pytest
import torch

from attncourse import masks as M


def loop_streaming(tq, tk, w, n):
    def ok(p, j):   # query at position p = tk - tq + i: never a future key; the window, or a sink
        return j <= p and (p - j < w or j < n)
    return torch.tensor([[ok(tk - tq + i, j) for j in range(tk)] for i in range(tq)], dtype=torch.bool)


@pytest.mark.parametrize("tq, tk, w, n", [(8, 8, 3, 2), (1, 20, 4, 4), (5, 12, 2, 1), (12, 5, 2, 3),
                                          (9, 9, 1, 0), (6, 6, 10, 2), (4, 4, 2, 6), (97, 97, 16, 4)])
def test_streaming_mask_matches_loop(tq, tk, w, n):
    m = M.streaming_mask(tq, tk, w, n)
    assert m.dtype == torch.bool and m.shape == (tq, tk)
    assert torch.equal(m, loop_streaming(tq, tk, w, n))


def test_sinks_never_see_the_future_and_zero_sinks_is_the_window():
    m = M.streaming_mask(6, 6, 2, 3)
    assert m.int().tolist() == [[1, 0, 0, 0, 0, 0],
                                [1, 1, 0, 0, 0, 0],
                                [1, 1, 1, 0, 0, 0],
                                [1, 1, 1, 1, 0, 0],
                                [1, 1, 1, 1, 1, 0],
                                [1, 1, 1, 0, 1, 1]]
    assert torch.equal(M.streaming_mask(7, 10, 3, 0), M.sliding_window_mask(7, 10, 3))


def test_sinks_compose_with_or_masks():
    t, w, n = 10, 3, 2
    composed = M.and_masks(M.causal(), M.or_masks(M.sliding_window(w), M.sinks(n)))
    assert torch.equal(M.materialize(composed, 1, 1, t, t)[0, 0], M.streaming_mask(t, t, w, n))
    alone = M.materialize(M.sinks(n), 1, 1, 3, 5)[0, 0]
    assert alone.int().tolist() == [[1, 1, 0, 0, 0]] * 3          # the first n keys, for every query


@pytest.mark.parametrize("n", [-1, 2.5])
def test_sinks_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="non-negative integer"):
        M.sinks(n)
