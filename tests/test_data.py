"""attncourse.data: shapes, determinism, and labels checked by explicit loops."""
from __future__ import annotations

import pytest
import torch

from attncourse import data
from attncourse.data import BOS, EOS, IGNORE, PAD


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("make", [
    lambda **kw: data.associative_recall(5, 4, 8, 8, n_queries=3, **kw),
    lambda **kw: data.associative_recall_pairs(5, 4, 8, 8, **kw),
    lambda **kw: data.copying(5, 7, 10, **kw),
    lambda **kw: data.induction(5, 7, 10, **kw),
    lambda **kw: data.reversal(5, 9, 10, min_length=2, **kw),
])
def test_deterministic_by_seed_and_generator_advances(make):
    assert _same(make(seed=3), make(seed=3))
    assert not _same(make(seed=3), make(seed=4))
    assert _same(make(), make(seed=0))
    g = torch.Generator().manual_seed(7)
    first, second = make(generator=g), make(generator=g)
    assert not _same(first, second)
    assert _same(first, make(generator=torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="seed or generator"):
        make(seed=1, generator=g)


@pytest.mark.parametrize("B,N,K,V,M", [(3, 1, 1, 1, 1), (4, 5, 9, 3, 1), (2, 8, 8, 16, 4)])
def test_associative_recall_labels_by_loop(B, N, K, V, M):
    x, y = data.associative_recall(B, N, K, V, n_queries=M, seed=1)
    T = 2 * N + 2 * M - 1
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.long
    assert data.associative_recall_vocab(K, V) == K + V
    for b in range(B):
        table = {}
        for i in range(N):
            k, v = int(x[b, 2 * i]), int(x[b, 2 * i + 1])
            assert 0 <= k < K and K <= v < K + V and k not in table
            table[k] = v
        for t in range(T):
            if t >= 2 * N and (t - 2 * N) % 2 == 0:       # a query key
                assert int(x[b, t]) in table
                assert int(y[b, t]) == table[int(x[b, t])]
                if t + 1 < T:                                  # the answer follows in x
                    assert int(x[b, t + 1]) == table[int(x[b, t])]
            else:
                assert int(y[b, t]) == IGNORE


@pytest.mark.parametrize("B,N,K,V", [(3, 1, 1, 1), (4, 6, 9, 5)])
def test_associative_recall_pairs_labels_by_loop(B, N, K, V):
    x, y = data.associative_recall_pairs(B, N, K, V, seed=2)
    assert x.shape == y.shape == (B, N + 1)
    assert data.associative_recall_pairs_vocab(K, V) == K + K * V + V
    for b in range(B):
        table = {}
        for i in range(N):
            tok = int(x[b, i])
            assert K <= tok < K + K * V
            k, v = divmod(tok - K, V)
            assert k not in table
            table[k] = v
            assert int(y[b, i]) == IGNORE
        q = int(x[b, N])
        assert 0 <= q < K and q in table
        assert int(y[b, N]) == K + K * V + table[q]


@pytest.mark.parametrize("B,L,V", [(3, 1, 1), (2, 13, 5)])
def test_copying_labels_by_loop(B, L, V):
    x, y = data.copying(B, L, V, seed=1)
    assert x.shape == y.shape == (B, 2 * L)
    for b in range(B):
        assert int(x[b, L]) == V                               # the separator
        for t in range(2 * L):
            if t < L:
                assert 0 <= int(x[b, t]) < V and int(y[b, t]) == IGNORE
            else:
                assert int(y[b, t]) == int(x[b, t - L])        # copy of token t - L
        if L > 1:
            assert torch.equal(x[b, L + 1:], x[b, :L - 1])


@pytest.mark.parametrize("B,L,V", [(3, 2, 2), (2, 11, 20)])
def test_induction_labels_by_loop(B, L, V):
    x, y = data.induction(B, L, V, seed=1)
    assert x.shape == y.shape == (B, 2 * L - 1)
    for b in range(B):
        first = x[b, :L].tolist()
        assert len(set(first)) == L                            # distinct, so unambiguous
        for t in range(2 * L - 1):
            if t < L:
                assert int(y[b, t]) == IGNORE
            else:
                # the token after x[t]'s earlier occurrence
                j = first.index(int(x[b, t]))
                assert int(y[b, t]) == first[j + 1]
    with pytest.raises(ValueError, match="length=5.*vocab_size >= 5"):
        data.induction(1, 5, 4)


@pytest.mark.parametrize("B,L,V,min_len", [(3, 1, 1, None), (4, 6, 5, None), (8, 9, 4, 1)])
def test_reversal_by_loop(B, L, V, min_len):
    src, lengths, tgt_in, tgt_out = data.reversal(B, L, V, min_length=min_len, seed=5)
    assert src.shape == (B, L) and tgt_in.shape == tgt_out.shape == (B, L + 1) and lengths.shape == (B,)
    assert data.reversal_vocab(V) == V + 3
    for b in range(B):
        n = int(lengths[b])
        assert (min_len or L) <= n <= L
        seq = src[b, :n].tolist()
        assert all(3 <= t < 3 + V for t in seq) and all(t == PAD for t in src[b, n:].tolist())
        rev = seq[::-1]
        assert tgt_in[b].tolist() == [BOS] + rev + [PAD] * (L - n)
        assert tgt_out[b].tolist() == rev + [EOS] + [IGNORE] * (L - n)


def test_reversal_lengths_vary_and_cover_range():
    _, lengths, _, _ = data.reversal(400, 6, 4, min_length=2, seed=0)
    assert set(lengths.tolist()) == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("call,pattern", [
    (lambda: data.associative_recall(2, 5, 4, 4), "n_pairs=5.*n_keys=4"),
    (lambda: data.associative_recall_pairs(2, 5, 4, 4), "n_pairs=5.*n_keys=4"),
    (lambda: data.copying(0, 3), "batch_size"),
    (lambda: data.reversal(2, 4, min_length=5), "min_length"),
])
def test_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_reversal_alignment_matches_explicit_loop():
    g = torch.Generator().manual_seed(7)
    w = torch.rand(3, 2, 6, 5, generator=g)
    lengths = torch.tensor([5, 2, 4])
    w[0, :, 0, 4] = 10.0  # a hit: step 0 of example 0 (n = 5) looks at source 4
    hits = total = 0
    for b in range(3):
        for h in range(2):
            for i in range(int(lengths[b])):
                total += 1
                hits += int(w[b, h, i].argmax()) == int(lengths[b]) - 1 - i
    got = data.reversal_alignment(w, lengths)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert abs(float(got) - hits / total) < 1e-7
    perfect = torch.eye(5).flip(1).expand(2, 1, 5, 5)
    assert float(data.reversal_alignment(perfect)) == 1.0
    assert float(data.reversal_alignment(perfect[:, 0])) == 1.0  # (B, Tt, Ts) also accepted
    with pytest.raises(ValueError, match="shape"):
        data.reversal_alignment(torch.rand(5, 5))
