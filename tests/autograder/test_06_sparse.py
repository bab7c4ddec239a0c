"""Hidden tests for chapter 06 (sparse attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here, by the reference (``attncourse.sparse`` through the adapters of
``attncourse.checks.ch06_sparse``) or by FlexAttention's own ``create_block_mask``, and compared
with ``expect`` (no hidden values in messages). Points: ``EXERCISES[id]["points"]`` is split over
the exercise's tests in proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- strided_mask: Tq = Tk (1 to 97), Tq < Tk and Tq > Tk (rows before the first key all False),
  strides 1, 2..10, a stride longer than T; the stride counted back from the query (j % stride
  fails), the local part of exactly `stride` keys (stride - 1 fails), causality, bool dtype and shape.
- fixed_mask: the same size grid; c = 1, 2 < stride, c = stride (the causal mask); the last c keys
  of a block (first c / off by one fail), the query's own block, causality, bottom-right
  alignment, bool dtype and shape.
- bigbird_mask: T a multiple of the block and not (last block shorter), block 1..8, window 1, 3, 5
  blocks, n_global 0..2, r = 0..3 random blocks drawn by the reference's seeded draw, rows padded
  with -1, random part one-way (mirroring fails), globals both ways, window in blocks, bool (T, T).
- block_tiles: against torch's create_block_mask (partial = kv_num_blocks, full =
  full_kv_num_blocks): Tq = Tk and Tq != Tk, lengths that are not block multiples (edge tiles
  never full; floor tiling fails), square and non-square tiles, a block larger than T, block 1,
  all-empty and all-True masks, single True entries away from a tile's corner; int64 dtype.
- layers_to_reach: causal windows (ceil((T - 1) / (W - 1))), strided and fixed (2), a
  bidirectional window with a global token (causal=False, 2) and without, masks without their
  diagonal (the residual identity), patterns that never connect (None), max_layers respected,
  T = 1, the exact return type (int / None).
"""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.checks.ch06_sparse import (reference_bigbird_mask, reference_block_tiles, reference_fixed_mask,
                                           reference_layers_to_reach, reference_strided_mask)
from attncourse.grading.testkit import Foreign, expect, expect_true
from attncourse.sparse import bigbird_random_blocks

EXERCISES = {
    "strided_mask": {"function": "strided_mask", "points": 2},
    "fixed_mask": {"function": "fixed_mask", "points": 2},
    "bigbird_mask": {"function": "bigbird_mask", "points": 3},
    "block_tiles": {"function": "block_tiles", "points": 3},
    "layers_to_reach": {"function": "layers_to_reach", "points": 2},
}

# Run-time tripwires in the sandbox (and the static check of the same names): calling one of these
# from the listed exercises fails the test. The notebook states the torch ones on a "Not allowed"
# line; the attncourse ones fall under its "Not allowed in any exercise: attncourse" line.
_REF_PATTERNS = ["attncourse.sparse.strided", "attncourse.sparse.fixed", "attncourse.sparse.bigbird",
                 "attncourse.sparse.pattern_mask", "attncourse.masks.materialize"]
_REF_TILES = ["attncourse.sparse.block_tiles", "attncourse.sparse.block_density",
              "torch.nn.attention.flex_attention.create_block_mask",
              "torch.nn.attention.flex_attention.create_mask",
              "torch.nn.attention.flex_attention._convert_mask_to_block_mask",
              "torch.nn.attention.flex_attention._create_sparse_block_from_block_mask"]
_REF_REACH = ["attncourse.sparse.reachable", "attncourse.sparse.layers_to_reach"]
FORBIDDEN = {
    **{name: ["strided_mask", "fixed_mask", "bigbird_mask"] for name in _REF_PATTERNS},
    **{name: ["block_tiles"] for name in _REF_TILES},
    **{name: ["layers_to_reach"] for name in _REF_REACH},
}


def _loop(tq, tk, rule):
    return torch.tensor([[bool(rule(i + tk - tq, j)) for j in range(tk)] for i in range(tq)],
                        dtype=torch.bool).reshape(tq, tk)


# =========================================================================== strided_mask
STRIDED_CASES = [  # (tq, tk, stride)
    (1, 1, 1), (8, 8, 3), (20, 20, 4), (97, 97, 10), (64, 64, 8), (5, 17, 5), (13, 40, 7),
    (17, 5, 3), (30, 30, 31), (9, 9, 1), (12, 12, 2),
]


def _sid(case):
    return "x".join(map(str, case))


@pytest.mark.exercise("strided_mask")
@pytest.mark.parametrize("case", STRIDED_CASES, ids=_sid)
def test_strided_matches_reference(learner, case):
    tq, tk, s = case
    expect(learner.strided_mask(tq, tk, s), reference_strided_mask(tq, tk, s),
           what=f"strided_mask({tq}, {tk}, {s})")


@pytest.mark.exercise("strided_mask")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", [(40, 40, 6), (7, 50, 9)], ids=_sid)
def test_strided_counts_back_from_the_query(learner, case):
    tq, tk, s = case
    expect(learner.strided_mask(tq, tk, s), reference_strided_mask(tq, tk, s),
           what=f"strided_mask({tq}, {tk}, {s}) (query i sits at p = Tk - Tq + i; its strided keys are p - stride, "
                "p - 2·stride, ...: (p - j) % stride == 0, not j % stride == 0)")


@pytest.mark.exercise("strided_mask")
@pytest.mark.points(2)
def test_strided_local_part_is_stride_keys(learner):
    out = learner.strided_mask(16, 16, 5)
    expect(out, reference_strided_mask(16, 16, 5), what="strided_mask(16, 16, 5)")
    expect_true(int(out[15, 11:].sum()) == 5,
                "strided_mask(16, 16, 5): the last query must see its last 5 keys (itself included)")


@pytest.mark.exercise("strided_mask")
@pytest.mark.points(2)
def test_strided_is_causal(learner):
    out = learner.strided_mask(33, 33, 4)
    expect_true(isinstance(out, torch.Tensor) and out.shape == (33, 33) and not bool(out.triu(1).any()),
                "strided_mask(33, 33, 4) must not let a query see a later key (the pattern is causal)")
    expect(out, reference_strided_mask(33, 33, 4), what="strided_mask(33, 33, 4)")


@pytest.mark.exercise("strided_mask")
@pytest.mark.points(4)
@pytest.mark.parametrize("case", [(11, 4, 2), (6, 1, 3)], ids=_sid)
def test_strided_more_queries_than_keys(learner, case):
    tq, tk, s = case
    out = learner.strided_mask(tq, tk, s)
    expect(out, reference_strided_mask(tq, tk, s), what=f"strided_mask({tq}, {tk}, {s})")
    expect_true(not bool(out[: tq - tk].any()),
                f"strided_mask({tq}, {tk}, {s}): the first tq - tk queries come before every key; their rows "
                "must be all False")


# ============================================================================= fixed_mask
FIXED_CASES = [  # (tq, tk, stride, c)
    (1, 1, 1, 1), (8, 8, 3, 1), (24, 24, 6, 2), (97, 97, 16, 4), (4, 19, 5, 2), (19, 4, 3, 1),
    (33, 33, 8, 8), (40, 25, 7, 3), (25, 40, 7, 3), (50, 50, 10, 1),
]


@pytest.mark.exercise("fixed_mask")
@pytest.mark.parametrize("case", FIXED_CASES, ids=_sid)
def test_fixed_matches_reference(learner, case):
    tq, tk, s, c = case
    expect(learner.fixed_mask(tq, tk, s, c), reference_fixed_mask(tq, tk, s, c),
           what=f"fixed_mask({tq}, {tk}, {s}, {c})")


@pytest.mark.exercise("fixed_mask")
@pytest.mark.points(3)
@pytest.mark.parametrize("case", [(30, 30, 6, 2), (12, 36, 8, 3)], ids=_sid)
def test_fixed_summary_keys_are_the_last_c(learner, case):
    tq, tk, s, c = case
    expect(learner.fixed_mask(tq, tk, s, c), reference_fixed_mask(tq, tk, s, c),
           what=f"fixed_mask({tq}, {tk}, {s}, {c}) (query i sits at p = Tk - Tq + i; the summary keys of a block "
                "are its last c: j % stride >= stride - c)")


@pytest.mark.exercise("fixed_mask")
@pytest.mark.points(2)
def test_fixed_is_causal(learner):
    out = learner.fixed_mask(30, 30, 5, 2)
    expect_true(isinstance(out, torch.Tensor) and out.shape == (30, 30) and not bool(out.triu(1).any()),
                "fixed_mask(30, 30, 5, 2) must not let a query see a later key (the pattern is causal)")
    expect(out, reference_fixed_mask(30, 30, 5, 2), what="fixed_mask(30, 30, 5, 2)")


@pytest.mark.exercise("fixed_mask")
@pytest.mark.points(2)
def test_fixed_full_summary_is_causal_mask(learner):
    expect(learner.fixed_mask(14, 14, 4, 4), torch.ones(14, 14, dtype=torch.bool).tril(),
           what="fixed_mask(14, 14, 4, 4) (c = stride: every key is a summary key, the causal mask)")


@pytest.mark.exercise("fixed_mask")
@pytest.mark.points(4)
@pytest.mark.parametrize("case", [(6, 23, 5, 1), (23, 6, 5, 1)], ids=_sid)
def test_fixed_bottom_right(learner, case):
    tq, tk, s, c = case
    expect(learner.fixed_mask(tq, tk, s, c), reference_fixed_mask(tq, tk, s, c),
           what=f"fixed_mask({tq}, {tk}, {s}, {c}) (query i sits at position p = tk - tq + i)")


# =========================================================================== bigbird_mask
BIGBIRD_CASES = [  # (t, block, window, n_global, r, seed)
    (64, 8, 3, 1, 2, 0), (61, 8, 3, 1, 2, 1), (40, 4, 5, 2, 3, 2), (30, 3, 1, 0, 1, 3), (17, 5, 3, 1, 3, 4),
    (12, 1, 3, 1, 2, 5), (7, 8, 3, 1, 2, 6), (50, 6, 3, 0, 0, 7),
]


def _bid(case):
    return "T{}b{}w{}g{}r{}".format(*case[:5])


def _random_blocks(t, block, window, g, r, seed):
    return bigbird_random_blocks(t, block, r, window=window, n_global=g, seed=seed)


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.parametrize("case", BIGBIRD_CASES, ids=_bid)
def test_bigbird_matches_reference(learner, case):
    t, block, window, g, r, seed = case
    rb = _random_blocks(t, block, window, g, r, seed)
    expect(learner.bigbird_mask(t, block, window, g, rb), reference_bigbird_mask(t, block, window, g, rb),
           what=f"bigbird_mask({t}, {block}, {window}, {g}, random_blocks of shape {tuple(rb.shape)})")


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.points(3)
def test_bigbird_random_part_is_one_way(learner):
    t, block = 48, 4
    rb = torch.full((12, 1), -1, dtype=torch.long)
    rb[2, 0], rb[9, 0] = 10, 4
    out = learner.bigbird_mask(t, block, 1, 0, rb)
    expect(out, reference_bigbird_mask(t, block, 1, 0, rb),
           what="bigbird_mask(48, 4, 1, 0, two random blocks) (query block qb sees key block random_blocks[qb]; "
                "not the reverse)")


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.points(5)
def test_bigbird_minus_one_is_no_block(learner):
    t, block = 24, 4
    rb = torch.tensor([[3, -1], [-1, -1], [0, -1], [-1, -1], [1, 2], [-1, -1]])
    expect(learner.bigbird_mask(t, block, 1, 0, rb), reference_bigbird_mask(t, block, 1, 0, rb),
           what="bigbird_mask(24, 4, 1, 0, random_blocks with -1 entries) (-1 means no block, not the last block)")


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.points(2)
def test_bigbird_globals_both_ways(learner):
    t, block = 30, 5
    rb = torch.zeros(6, 0, dtype=torch.long)
    out = learner.bigbird_mask(t, block, 1, 2, rb)
    expect(out, reference_bigbird_mask(t, block, 1, 2, rb),
           what="bigbird_mask(30, 5, 1, 2, no random blocks) (the global blocks see every key and every query "
                "sees them)")


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.points(2)
def test_bigbird_window_counted_in_blocks(learner):
    t, block = 36, 6
    rb = torch.zeros(6, 0, dtype=torch.long)
    expect(learner.bigbird_mask(t, block, 3, 0, rb), reference_bigbird_mask(t, block, 3, 0, rb),
           what="bigbird_mask(36, 6, 3, 0, no random blocks) (the window is |qb - kb| <= window // 2 blocks)")


@pytest.mark.exercise("bigbird_mask")
@pytest.mark.points(5)
def test_bigbird_last_block_shorter(learner):
    t, block, window, g, r = 43, 8, 3, 1, 2
    rb = _random_blocks(t, block, window, g, r, seed=11)
    out = learner.bigbird_mask(t, block, window, g, rb)
    expect(out, reference_bigbird_mask(t, block, window, g, rb),
           what="bigbird_mask(43, 8, 3, 1, ...) (T is not a multiple of the block: the last block has 3 tokens)")


# ============================================================================ block_tiles
def flex_tiles(mask: torch.Tensor, bq: int, bk: int) -> torch.Tensor:
    """0 empty / 1 partial / 2 full per tile, read from torch's create_block_mask index lists."""
    from torch.nn.attention.flex_attention import create_block_mask

    m = mask.clone()
    blk = create_block_mask(lambda b, h, q, kv: m[q, kv], None, None, *mask.shape, device="cpu",
                            BLOCK_SIZE=(bq, bk))
    nq, nk = -(-mask.shape[0] // bq), -(-mask.shape[1] // bk)
    out = torch.zeros(nq, nk, dtype=torch.long)
    for num, idx, kind in ((blk.kv_num_blocks, blk.kv_indices, 1), (blk.full_kv_num_blocks, blk.full_kv_indices, 2)):
        for qb in range(nq):
            for kb in idx[0, 0, qb, : int(num[0, 0, qb])].tolist():
                out[qb, kb] = kind
    return out


def _tiles_mask(kind, tq, tk, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "causal":
        return reference_strided_mask(tq, tk, 1)
    if kind == "strided":
        return reference_strided_mask(tq, tk, 5)
    if kind == "fixed":
        return reference_fixed_mask(tq, tk, 8, 2)
    if kind == "window":
        return _loop(tq, tk, lambda p, j: 0 <= p - j < 6)
    if kind == "random":
        return torch.rand(tq, tk, generator=g) < 0.02
    if kind == "all":
        return torch.ones(tq, tk, dtype=torch.bool)
    if kind == "none":
        return torch.zeros(tq, tk, dtype=torch.bool)
    raise ValueError(kind)


TILE_CASES = [  # (kind, tq, tk, bq, bk)
    ("causal", 64, 64, 16, 16), ("causal", 70, 70, 16, 16), ("window", 97, 97, 16, 16), ("strided", 50, 70, 8, 16),
    ("fixed", 70, 45, 32, 8), ("random", 40, 40, 8, 8), ("all", 37, 23, 8, 8), ("none", 20, 20, 4, 4),
    ("causal", 5, 5, 16, 16), ("strided", 13, 13, 1, 1), ("fixed", 64, 64, 8, 32),
]


def _tid(case):
    return "{}-{}x{}-b{}x{}".format(*case)


@pytest.mark.exercise("block_tiles")
@pytest.mark.points(2)
@pytest.mark.parametrize("case", TILE_CASES, ids=_tid)
def test_block_tiles_match_create_block_mask(learner, case):
    kind, tq, tk, bq, bk = case
    mask = _tiles_mask(kind, tq, tk)
    expect(learner.block_tiles(mask, bq, bk), flex_tiles(mask, bq, bk),
           what=f"block_tiles of {'an' if kind[0] in 'aeiou' else 'a'} {kind} mask {tq} x {tk} with {bq} x {bk} tiles, compared with torch's "
                "create_block_mask")


@pytest.mark.exercise("block_tiles")
@pytest.mark.points(4)
@pytest.mark.parametrize("tq, tk", [(10, 10), (33, 17)])
def test_block_tiles_edge_tiles_are_partial(learner, tq, tk):
    mask = torch.ones(tq, tk, dtype=torch.bool)
    expect(learner.block_tiles(mask, 4, 8), reference_block_tiles(mask, 4, 8),
           what=f"block_tiles(all True {tq} x {tk}, 4, 8) (tiles that stick out past the matrix are partial, "
                "never full; there are ceil(T / block) of them)")


@pytest.mark.exercise("block_tiles")
@pytest.mark.points(2)
def test_block_tiles_look_at_every_entry(learner):
    mask = torch.zeros(24, 24, dtype=torch.bool)
    for i, j in ((3, 2), (10, 21), (17, 9), (23, 23)):        # none at a tile's first row/column
        mask[i, j] = True
    expect(learner.block_tiles(mask, 8, 8), reference_block_tiles(mask, 8, 8),
           what="block_tiles of a 24 x 24 mask with four True entries away from the tiles' corners")


@pytest.mark.exercise("block_tiles")
@pytest.mark.points(2)
def test_block_tiles_non_square_tiles(learner):
    mask = reference_fixed_mask(40, 40, 10, 3)
    expect(learner.block_tiles(mask, 16, 4), reference_block_tiles(mask, 16, 4),
           what="block_tiles(fixed 40 x 40, block_q=16, block_k=4) (rows of tiles come from block_q, columns "
                "from block_k)")


@pytest.mark.exercise("block_tiles")
def test_block_tiles_block_larger_than_mask(learner):
    mask = reference_strided_mask(6, 9, 2)
    expect(learner.block_tiles(mask, 128, 128), reference_block_tiles(mask, 128, 128),
           what="block_tiles of a 6 x 9 mask with 128 x 128 tiles (one partial tile)")


# ======================================================================== layers_to_reach
def _window(t, w, causal=True):
    i = torch.arange(t)
    d = i[:, None] - i[None, :]
    return ((d >= 0) & (d < w)) if causal else (d.abs() < w)


def expect_reach(got, want, what):
    if isinstance(got, Foreign):
        expect_true(False, f"{what} should return a Python int or None, but it returned {got.description}")
    if want is None:
        expect_true(got is None, f"{what} should be None (the pattern never connects every pair)")
        return
    expect_true(type(got) is int, f"{what} should return a Python int, but it returned {type(got).__name__}")
    expect_true(got == want, f"{what} is not the right number of layers")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.parametrize("t, w", [(16, 4), (40, 8), (50, 2), (9, 9), (33, 5)])
def test_reach_causal_window(learner, t, w):
    expect_reach(learner.layers_to_reach(_window(t, w)), math.ceil((t - 1) / (w - 1)),
                 what=f"layers_to_reach(causal window {w}, T = {t})")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(2)
@pytest.mark.parametrize("kind", ["strided", "fixed"])
def test_reach_sparse_transformer_in_two(learner, kind):
    mask = reference_strided_mask(48, 48, 7) if kind == "strided" else reference_fixed_mask(48, 48, 8, 1)
    expect_reach(learner.layers_to_reach(mask), reference_layers_to_reach(mask),
                 what=f"layers_to_reach({kind} pattern, T = 48)")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(2)
def test_reach_bidirectional_with_and_without_global(learner):
    t = 40
    window = _window(t, 3, causal=False)
    glob = window.clone()
    glob[:, 5] = True
    glob[5, :] = True
    expect_reach(learner.layers_to_reach(glob, causal=False), 2,
                 what="layers_to_reach(bidirectional window 3 + global token 5, T = 40, causal=False)")
    expect_reach(learner.layers_to_reach(window, causal=False), reference_layers_to_reach(window, causal=False),
                 what="layers_to_reach(bidirectional window 3, T = 40, causal=False)")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(3)
def test_reach_residual_identity(learner):
    mask = _window(12, 3) & ~torch.eye(12, dtype=torch.bool)          # the two previous keys, not itself
    expect_reach(learner.layers_to_reach(mask), reference_layers_to_reach(mask),
                 what="layers_to_reach(a mask without its diagonal, T = 12) (each layer keeps its own token: "
                      "the residual connection)")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(2)
def test_reach_never_and_max_layers(learner):
    expect_reach(learner.layers_to_reach(torch.eye(10, dtype=torch.bool)), None,
                 what="layers_to_reach(identity, T = 10)")
    blocks = torch.block_diag(*[torch.ones(4, 4, dtype=torch.bool)] * 3)  # three separate documents
    expect_reach(learner.layers_to_reach(blocks, causal=False), None,
                 what="layers_to_reach(three separate blocks, causal=False)")
    expect_reach(learner.layers_to_reach(_window(20, 4), max_layers=6), None,
                 what="layers_to_reach(causal window 4, T = 20, max_layers=6) (7 layers are needed)")
    expect_reach(learner.layers_to_reach(_window(20, 4), max_layers=7), 7,
                 what="layers_to_reach(causal window 4, T = 20, max_layers=7)")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(4)
def test_reach_max_layers_is_the_limit(learner):
    for limit, want in ((7, None), (8, 8), (30, 8)):                  # a causal window 5 at T = 33 needs 8
        expect_reach(learner.layers_to_reach(_window(33, 5), max_layers=limit), want,
                     what=f"layers_to_reach(causal window 5, T = 33, max_layers={limit})")


@pytest.mark.exercise("layers_to_reach")
@pytest.mark.points(4)      # causal=False is half of the function's contract
@pytest.mark.parametrize("case", ["causal-window", "look-ahead", "strided"])
def test_reach_causal_flag(learner, case):
    if case == "causal-window":
        expect_reach(learner.layers_to_reach(_window(12, 3), causal=False), None,
                     what="layers_to_reach(causal window 3, T = 12, causal=False) (a causal mask never reaches later "
                          "tokens)")
        return
    i = torch.arange(20)
    d = i[:, None] - i[None, :]
    mask = (d >= -1) & (d < 4) if case == "look-ahead" else reference_strided_mask(20, 20, 4) | (d == -1)
    name = "window 4 with one key of look-ahead" if case == "look-ahead" else "strided 4 with one key of look-ahead"
    for causal in (True, False):
        expect_reach(learner.layers_to_reach(mask, causal=causal), reference_layers_to_reach(mask, causal=causal),
                     what=f"layers_to_reach({name}, T = 20, causal={causal})")


@pytest.mark.exercise("layers_to_reach")
def test_reach_single_token(learner):
    expect_reach(learner.layers_to_reach(torch.ones(1, 1, dtype=torch.bool)), 1, what="layers_to_reach(T = 1)")
