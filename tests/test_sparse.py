"""Sparse patterns against explicit loops over (i, j) written from the papers' set definitions,
block tiles against FlexAttention's own create_block_mask, reach against a graph search."""
import math

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from attncourse import masks as M
from attncourse import sparse as S


def loop_mask(tq, tk, rule):
    """rule(p, j) with p = Tk - Tq + i, the query's position (bottom-right alignment)."""
    return torch.tensor([[bool(rule(i + tk - tq, j)) for j in range(tk)] for i in range(tq)],
                        dtype=torch.bool).reshape(tq, tk)


def bm(mod, tq, tk=None):
    tk = tq if tk is None else tk
    return S.pattern_mask(mod, tq, tk)


SIZES = [(1, 1), (8, 8), (5, 12), (97, 97), (33, 20)]


# ----------------------------------------------------------------- Sparse Transformer
@pytest.mark.parametrize("tq, tk", SIZES)
@pytest.mark.parametrize("l", [1, 3, 10])
def test_strided_is_union_of_the_papers_two_heads(tq, tk, l):
    # Child et al. 2019: A1 = {t, ..., i} for t = max(0, i - l); A2 = {j : (i - j) mod l = 0}; causal.
    def rule(p, j):
        a1 = max(0, p - l) <= j <= p
        a2 = j <= p and (p - j) % l == 0
        return a1 or a2
    assert torch.equal(bm(S.strided(l, offset=tk - tq), tq, tk), loop_mask(tq, tk, rule))


@pytest.mark.parametrize("tq, tk", SIZES)
@pytest.mark.parametrize("l, c", [(1, 1), (4, 4), (8, 3), (10, 2)])
def test_fixed_is_union_of_the_papers_two_heads(tq, tk, l, c):
    # A1 = {j : floor(j / l) = floor(i / l)}; A2 = {j : j mod l in {l - c, ..., l}}; causal.
    def rule(p, j):
        return j <= p and (j // l == p // l or j % l >= l - c)
    assert torch.equal(bm(S.fixed(l, c, offset=tk - tq), tq, tk), loop_mask(tq, tk, rule))


def test_docstring_drawings():
    strided8 = ["10000000", "11000000", "11100000", "11110000", "01111000", "00111100", "10011110", "01001111"]
    fixed8 = ["10000000", "11000000", "11100000", "00110000", "00111000", "00111100", "00100110", "00100111"]
    as_rows = lambda m: ["".join("1" if x else "0" for x in r) for r in m.tolist()]  # noqa: E731
    assert as_rows(bm(S.strided(3), 8)) == strided8
    assert as_rows(bm(S.fixed(3, 1), 8)) == fixed8


def test_strided_counts_from_the_query_not_from_zero():
    # The classic mistake j % l == 0 gives a different pattern; the distance (p - j) is what repeats.
    m = bm(S.strided(4), 16)
    assert m[13, 1] and not m[13, 0]        # 13 - 1 = 12 is a multiple of 4; 13 - 0 is not


@pytest.mark.parametrize("n", [64, 256, 1024])
def test_strided_cost_is_n_sqrt_n(n):
    l = math.isqrt(n)
    # row p: the min(p + 1, l) keys of the window p - l + 1 .. p, plus p - l, p - 2l, ... >= 0 (p // l keys)
    by_row = sum(min(p + 1, l) + p // l for p in range(n))
    assert S.count_allowed(S.strided(l), n) == by_row == int(bm(S.strided(l), n).sum())
    assert 1.3 < by_row / n ** 1.5 < 1.6          # ≈ n·l + n²/(2l) = 1.5·n^1.5 for l = √n


# ---------------------------------------------------------------------------- Longformer
@pytest.mark.parametrize("t", [1, 9, 40])
@pytest.mark.parametrize("w, d", [(1, 1), (3, 1), (3, 2), (4, 3)])
def test_dilated_window(t, w, d):
    both = loop_mask(t, t, lambda p, j: abs(p - j) <= (w - 1) * d and (p - j) % d == 0)
    past = loop_mask(t, t, lambda p, j: 0 <= p - j <= (w - 1) * d and (p - j) % d == 0)
    assert torch.equal(bm(S.dilated_window(w, d), t), both)
    assert torch.equal(bm(S.dilated_window(w, d, causal=True), t), past)


def test_dilation_one_is_the_course_window():
    assert torch.equal(bm(S.dilated_window(5), 20), M.sliding_window_mask(20, 20, 5, causal=False))
    assert torch.equal(bm(S.dilated_window(5, causal=True, offset=7), 13, 20), M.sliding_window_mask(13, 20, 5))


@pytest.mark.parametrize("tq, tk, causal", [(30, 30, False), (30, 30, True), (11, 30, True), (1, 1, False)])
def test_longformer_is_window_or_global(tq, tk, causal):
    g, w, d = [0, 4, 17], 3, 2

    def rule(p, j):
        lo = 0 if causal else -(w - 1) * d
        window = lo <= p - j <= (w - 1) * d and (p - j) % d == 0
        return (window or p in g or j in g) and (j <= p or not causal)
    got = bm(S.longformer(w, dilation=d, global_positions=g, causal=causal, offset=tk - tq), tq, tk)
    assert torch.equal(got, loop_mask(tq, tk, rule))


def test_global_tokens_see_and_are_seen_by_all():
    m = bm(S.global_tokens([2]), 6)
    assert m[2].all() and m[:, 2].all() and int(m.sum()) == 11


# ------------------------------------------------------------------------------ BigBird
@pytest.mark.parametrize("t, block, window, g, r", [(64, 8, 3, 1, 2), (97, 8, 3, 2, 3), (10, 4, 1, 0, 5),
                                                    (50, 7, 5, 1, 1), (1, 3, 3, 1, 2)])
def test_bigbird_random_blocks_follow_the_stated_draw(t, block, window, g, r):
    rb = S.bigbird_random_blocks(t, block, r, window=window, n_global=g, seed=5)
    nb = -(-t // block)
    assert rb.shape == (nb, r) and rb.dtype == torch.long
    gen = torch.Generator().manual_seed(5)
    for qb in range(nb):
        cand = [kb for kb in range(nb) if abs(kb - qb) > window // 2 and kb >= g]
        perm = torch.randperm(len(cand), generator=gen)[:r].tolist()
        want = [cand[i] for i in perm] + [-1] * (r - len(perm))
        assert rb[qb].tolist() == want


@pytest.mark.parametrize("t, block, window, g, r", [(64, 8, 3, 1, 2), (97, 8, 3, 2, 3), (10, 4, 1, 0, 5),
                                                    (50, 7, 5, 1, 1), (1, 3, 3, 1, 2)])
def test_bigbird_pattern_by_loop(t, block, window, g, r):
    rb = S.bigbird_random_blocks(t, block, r, window=window, n_global=g, seed=3)
    chosen = {(qb, kb) for qb in range(rb.shape[0]) for kb in rb[qb].tolist() if kb >= 0}

    def rule(i, j):
        qb, kb = i // block, j // block
        return abs(qb - kb) <= window // 2 or qb < g or kb < g or (qb, kb) in chosen
    got = bm(S.bigbird(t, block, window=window, n_global=g, random_blocks=rb), t)
    assert torch.equal(got, loop_mask(t, t, rule))
    assert torch.equal(got, bm(S.bigbird(t, block, window=window, n_global=g, n_random=r, seed=3), t))


def test_bigbird_random_part_is_one_way_and_seeded():
    a = bm(S.bigbird(128, 8, n_random=2, seed=0), 128)
    b = bm(S.bigbird(128, 8, n_random=2, seed=1), 128)
    assert not torch.equal(a, b) and torch.equal(a, bm(S.bigbird(128, 8, n_random=2, seed=0), 128))
    assert not torch.equal(a, a.T)          # random blocks are not mirrored


# -------------------------------------------------------------------------------- tiles
def flex_tiles(mask, bq, bk):
    """EMPTY/PARTIAL/FULL per tile, read back from FlexAttention's BlockMask index lists."""
    m = mask.clone()
    blk = create_block_mask(lambda b, h, q, kv: m[q, kv], None, None, *mask.shape, device="cpu",
                            BLOCK_SIZE=(bq, bk))
    nq, nk = -(-mask.shape[0] // bq), -(-mask.shape[1] // bk)
    out = torch.zeros(nq, nk, dtype=torch.long)
    for num, idx, value in ((blk.kv_num_blocks, blk.kv_indices, S.PARTIAL),
                            (blk.full_kv_num_blocks, blk.full_kv_indices, S.FULL)):
        for qb in range(nq):
            for kb in idx[0, 0, qb, : int(num[0, 0, qb])].tolist():
                out[qb, kb] = value
    return out, blk


PATTERNS = {
    "causal": lambda tq, tk: M.causal(tk - tq),
    "window": lambda tq, tk: M.sliding_window(9, offset=tk - tq),
    "strided": lambda tq, tk: S.strided(6, offset=tk - tq),
    "fixed": lambda tq, tk: S.fixed(8, 2, offset=tk - tq),
    "longformer": lambda tq, tk: S.longformer(4, dilation=2, global_positions=[0, 33], offset=tk - tq),
    "bigbird": lambda tq, tk: S.bigbird(tk, 8, n_random=2),
    "empty": lambda tq, tk: M.not_mask(M.full()),
    "full": lambda tq, tk: M.full(),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("tq, tk, bq, bk", [(64, 64, 16, 16), (97, 97, 16, 16), (50, 70, 8, 16), (5, 5, 16, 16),
                                            (33, 33, 1, 1)])
def test_block_tiles_match_create_block_mask(name, tq, tk, bq, bk):
    if name == "bigbird" and tq != tk:
        pytest.skip("BigBird is defined for self-attention")
    mask = bm(PATTERNS[name](tq, tk), tq, tk)
    want, blk = flex_tiles(mask, bq, bk)
    got = S.block_tiles(mask, bq, bk)
    assert got.dtype == torch.long and torch.equal(got, want)
    assert torch.equal((got > 0).int(), blk.to_dense()[0, 0])
    if tq % bq == 0 and tk % bk == 0:
        assert S.block_density(mask, bq, bk) == pytest.approx(1 - blk.sparsity() / 100)


def test_block_tiles_edge_tiles_are_never_full_and_batches():
    mask = torch.ones(10, 10, dtype=torch.bool)
    tiles = S.block_tiles(mask, 4)
    assert tiles.tolist() == [[2, 2, 1], [2, 2, 1], [1, 1, 1]]
    both = S.block_tiles(torch.stack([mask, ~mask]), 4)
    assert both.shape == (2, 3, 3) and torch.equal(both[0], tiles) and not both[1].any()


def test_block_tiles_sees_a_single_entry_away_from_the_corner():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[6, 5] = True                     # inside tile (1, 1) of 4x4 tiles, not at its corner
    t = S.block_tiles(mask, 4)
    assert t[1, 1] == S.PARTIAL and int((t > 0).sum()) == 1


def test_flex_block_mask_wrapper():
    blk = S.flex_block_mask(S.strided(8), 256, block=64)
    assert blk.BLOCK_SIZE == (64, 64)
    assert torch.equal(blk.to_dense()[0, 0].bool(), S.block_tiles(bm(S.strided(8), 256), 64) > 0)


# -------------------------------------------------------------------------------- reach
def reach_by_search(mask, layers):
    t = mask.shape[0]
    adj = [[j for j in range(t) if mask[i, j] or i == j] for i in range(t)]
    out = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        frontier = {i}
        for _ in range(layers):
            frontier = {j for k in frontier for j in adj[k]}
        out[i, sorted(frontier)] = True
    return out


@pytest.mark.parametrize("mod", [M.sliding_window(3), S.strided(4), S.fixed(5, 1), S.bigbird(24, 4, n_random=1),
                                 M.and_masks(M.causal(), M.sliding_window(2))])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_reachable_matches_graph_search(mod, layers):
    mask = bm(mod, 24)
    assert torch.equal(S.reachable(mask, layers), reach_by_search(mask, layers))


@pytest.mark.parametrize("t, w", [(2, 2), (17, 2), (64, 8), (100, 16), (33, 33)])
def test_layers_to_reach_window_is_ceil(t, w):
    assert S.layers_to_reach(M.sliding_window_mask(t, t, w)) == math.ceil((t - 1) / (w - 1))


def test_layers_to_reach_global_strided_fixed_and_never():
    t = 64
    window = M.sliding_window(4, causal=False)
    assert S.layers_to_reach(bm(M.or_masks(window, S.global_tokens([0])), t), causal=False) == 2
    assert S.layers_to_reach(bm(window, t), causal=False) == math.ceil((t - 1) / 3)
    # In a decoder the "global" token 0 sees only itself: it is no hub, reach stays the window's.
    causal_global = M.and_masks(M.causal(), M.or_masks(M.sliding_window(4), S.global_tokens([0])))
    assert S.layers_to_reach(bm(causal_global, t)) == S.layers_to_reach(M.sliding_window_mask(t, t, 4)) == 21
    assert S.layers_to_reach(bm(S.strided(8), t)) == 2
    assert S.layers_to_reach(bm(S.fixed(8, 1), t)) == 2
    assert S.layers_to_reach(bm(S.longformer(3), t), causal=False) == 2
    assert S.layers_to_reach(bm(M.sliding_window(1), t)) is None          # only itself: never
    assert S.layers_to_reach(M.sliding_window_mask(t, t, 4), max_layers=5) is None
    assert S.layers_to_reach(torch.ones(1, 1, dtype=torch.bool)) == 1


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("call, match", [
    (lambda: S.strided(0), "stride must be a positive integer, got 0"),
    (lambda: S.fixed(4, 5), "c = 5 summary keys do not fit in a block of stride 4"),
    (lambda: S.fixed(4, 0), "c .* must be a positive integer, got 0"),
    (lambda: S.dilated_window(0), "window W must be a positive integer, got 0"),
    (lambda: S.dilated_window(3, -2), "dilation must be a positive integer, got -2"),
    (lambda: S.bigbird(64, 8, window=2), "window = 2 blocks must be odd"),
    (lambda: S.bigbird(64, 0), "block must be a positive integer, got 0"),
    (lambda: S.bigbird(64, 8, random_blocks=torch.zeros(3, 2, dtype=torch.long)), r"shape \(8, r\)"),
    (lambda: S.bigbird(64, 8, random_blocks=torch.full((8, 1), 9)), r"\[0, 8\)"),
    (lambda: S.block_tiles(torch.ones(4, 4, dtype=torch.bool), 0), "block_q must be a positive integer, got 0"),
    (lambda: S.block_tiles(torch.ones(4, 4, dtype=torch.bool), 2, -1), "block_k must be a positive integer, got -1"),
    (lambda: S.reachable(torch.ones(3, 4, dtype=torch.bool), 1), r"square bool \(T, T\)"),
    (lambda: S.global_tokens([-1]), "positions must be >= 0"),
])
def test_bad_arguments_name_the_numbers(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_block_tiles_needs_a_bool_mask():
    with pytest.raises(TypeError, match="bool tensor"):
        S.block_tiles(torch.ones(4, 4), 2)
    with pytest.raises(TypeError, match="bool"):
        S.density(torch.ones(2, 2))
