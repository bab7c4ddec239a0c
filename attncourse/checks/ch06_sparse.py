"""Public checks for chapter 06 (sparse attention).

Each case builds a small pattern, calls the learner's function and compares with the reference in
:mod:`attncourse.sparse`; where a classic mistake is recognisable, the message names it. The hidden
tests (``tests/autograder/test_06_sparse.py``) use more sizes and FlexAttention's own
``create_block_mask``.

The ``reference_*`` functions are the references with the learner's signatures (used by the hidden
tests and the grading tests).
"""
from __future__ import annotations

import torch

from attncourse.checks import case
from attncourse.sparse import bigbird, block_tiles, fixed, layers_to_reach, pattern_mask, strided
from attncourse.testing import compare


# ------------------------------------------------------------ references, learner signatures
def reference_strided_mask(tq: int, tk: int, stride: int) -> torch.Tensor:
    return pattern_mask(strided(stride, offset=tk - tq), tq, tk)


def reference_fixed_mask(tq: int, tk: int, stride: int, c: int) -> torch.Tensor:
    return pattern_mask(fixed(stride, c, offset=tk - tq), tq, tk)


def reference_bigbird_mask(t: int, block: int, window: int, n_global: int, random_blocks: torch.Tensor) -> torch.Tensor:
    return pattern_mask(bigbird(t, block, window=window, n_global=n_global, random_blocks=random_blocks), t)


def reference_block_tiles(mask: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    return block_tiles(mask, block_q, block_k)


def reference_layers_to_reach(mask: torch.Tensor, causal: bool = True, max_layers: int | None = None):
    return layers_to_reach(mask, causal=causal, max_layers=max_layers)


# ------------------------------------------------------------------------ helpers
def _loop(tq, tk, rule):
    """A (tq, tk) bool mask from rule(p, j), p = tk - tq + i the query's position."""
    return torch.tensor([[bool(rule(i + tk - tq, j)) for j in range(tk)] for i in range(tq)],
                        dtype=torch.bool).reshape(tq, tk)


def _mask_result(got, want, what, mistakes):
    """compare(), but first recognise a known mistake: mistakes = [(mask, hint), ...]."""
    if isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == torch.bool \
            and not torch.equal(got, want):
        for wrong, hint in mistakes:
            if torch.equal(got, wrong):
                return f"{what}: {hint}"
    return compare(got, want, what=what)


# ---------------------------------------------------------------------- strided_mask
def _strided_mistakes(tq, tk, s):
    return [
        (_loop(tq, tk, lambda p, j: j <= p and (p - j < s or j % s == 0)),
         "the strided keys are counted from position 0 (j % stride == 0); count them back from the query: "
         "(p - j) % stride == 0"),
        (_loop(tq, tk, lambda p, j: j <= p and (p - j < s - 1 or (p - j) % s == 0)),
         "the local part has stride - 1 keys; it is the last `stride` keys, the query itself included (p - j < stride)"),
        (_loop(tq, tk, lambda p, j: abs(p - j) < s or (p - j) % s == 0),
         "keys in the future are visible: the pattern is causal (j <= p)"),
        (_loop(tq, tk, lambda p, j: j <= p - (tk - tq) and (p - (tk - tq) - j < s or (p - (tk - tq) - j) % s == 0)),
         "aligned top-left: with Tq != Tk, query i sits at position p = Tk - Tq + i (bottom-right)"),
    ]


@case("strided_mask", "Tq = Tk = 8, stride 3: the drawing in the text")
def _(fn):
    want = reference_strided_mask(8, 8, 3)
    return _mask_result(fn(8, 8, 3), want, "strided_mask(8, 8, 3)", _strided_mistakes(8, 8, 3))


@case("strided_mask", "Tq = Tk = 20, stride 4 (strided keys counted back from the query)")
def _(fn):
    want = reference_strided_mask(20, 20, 4)
    return _mask_result(fn(20, 20, 4), want, "strided_mask(20, 20, 4)", _strided_mistakes(20, 20, 4))


@case("strided_mask", "Tq = 5 queries, Tk = 17 keys, stride 5: bottom-right aligned")
def _(fn):
    want = reference_strided_mask(5, 17, 5)
    return _mask_result(fn(5, 17, 5), want, "strided_mask(5, 17, 5)", _strided_mistakes(5, 17, 5))


@case("strided_mask", "stride 1 is the full causal mask")
def _(fn):
    return compare(fn(6, 6, 1), torch.ones(6, 6, dtype=torch.bool).tril(), what="strided_mask(6, 6, 1)")


# ------------------------------------------------------------------------ fixed_mask
def _fixed_mistakes(tq, tk, s, c):
    return [
        (_loop(tq, tk, lambda p, j: j <= p and (j // s == p // s or j % s < c)),
         "the summary keys are the first c of each block; they are the last c (j % stride >= stride - c)"),
        (_loop(tq, tk, lambda p, j: j // s == p // s or j % s >= s - c),
         "keys in the future are visible: the pattern is causal (j <= p)"),
        (_loop(tq, tk, lambda p, j: j <= p and (j // s == p // s or j % s >= s - c + 1)),
         "one summary key too few: a block's last c keys are j % stride in stride - c, ..., stride - 1"),
        (_loop(tq, tk, lambda p, j: j <= p and (j // s == p // s or j % s >= s - c - 1)),
         "one summary key too many: a block's last c keys are j % stride in stride - c, ..., stride - 1"),
        (_loop(tq, tk, lambda p, j: j <= p - (tk - tq) and (j // s == (p - (tk - tq)) // s or j % s >= s - c)),
         "aligned top-left: with Tq != Tk, query i sits at position p = Tk - Tq + i (bottom-right)"),
    ]


@case("fixed_mask", "Tq = Tk = 8, stride 3, c = 1: the drawing in the text")
def _(fn):
    want = reference_fixed_mask(8, 8, 3, 1)
    return _mask_result(fn(8, 8, 3, 1), want, "fixed_mask(8, 8, 3, 1)", _fixed_mistakes(8, 8, 3, 1))


@case("fixed_mask", "Tq = Tk = 24, stride 6, c = 2")
def _(fn):
    want = reference_fixed_mask(24, 24, 6, 2)
    return _mask_result(fn(24, 24, 6, 2), want, "fixed_mask(24, 24, 6, 2)", _fixed_mistakes(24, 24, 6, 2))


@case("fixed_mask", "Tq = 4 queries, Tk = 19 keys, stride 5, c = 2: bottom-right aligned")
def _(fn):
    want = reference_fixed_mask(4, 19, 5, 2)
    return _mask_result(fn(4, 19, 5, 2), want, "fixed_mask(4, 19, 5, 2)", _fixed_mistakes(4, 19, 5, 2))


@case("fixed_mask", "c = stride makes every earlier key a summary key: the causal mask")
def _(fn):
    return compare(fn(9, 9, 3, 3), torch.ones(9, 9, dtype=torch.bool).tril(), what="fixed_mask(9, 9, 3, 3)")


# ---------------------------------------------------------------------- bigbird_mask
_RB_20 = torch.tensor([[3], [3], [4], [0], [1]])  # T = 20, block 4: 5 blocks, one random block each


def _bigbird_mistakes(t, block, window, g, rb):
    nb = rb.shape[0]
    chosen = {(qb, kb) for qb in range(nb) for kb in rb[qb].tolist() if kb >= 0}
    neg = {(qb, nb - 1) for qb in range(nb) if (rb[qb] < 0).any()}

    def rule(extra=set(), mirror=False, rows_only=False, cols_only=False, tokens=False):
        def r(i, j):
            qb, kb = i // block, j // block
            win = abs(i - j) <= window // 2 if tokens else abs(qb - kb) <= window // 2
            glob = (qb < g) if rows_only else (kb < g) if cols_only else (qb < g or kb < g)
            rnd = (qb, kb) in chosen or (qb, kb) in extra or (mirror and (kb, qb) in chosen)
            return win or glob or rnd
        return r

    return [
        (_loop(t, t, rule(mirror=True)),
         "the random blocks are mirrored; random attention is one-way: query block qb sees key block "
         "random_blocks[qb, r], not the reverse"),
        (_loop(t, t, rule(extra=neg)),
         "an entry -1 in random_blocks means *no block*; indexing with it picks the last block"),
        (_loop(t, t, rule(rows_only=True)),
         "global blocks only attend to everything; every query must also see the global blocks (both ways)"),
        (_loop(t, t, rule(cols_only=True)),
         "global blocks are only seen by everyone; they must also see every key (both ways)"),
        (_loop(t, t, rule(tokens=True)),
         "the window is counted in tokens; it is counted in blocks (|qb - kb| <= window // 2)"),
    ]


@case("bigbird_mask", "T = 20, block 4, window 3, one global block, one random block per row")
def _(fn):
    want = reference_bigbird_mask(20, 4, 3, 1, _RB_20)
    return _mask_result(fn(20, 4, 3, 1, _RB_20.clone()), want, "bigbird_mask(20, 4, 3, 1, random_blocks)",
                        _bigbird_mistakes(20, 4, 3, 1, _RB_20))


@case("bigbird_mask", "T = 22 (the last block has 2 tokens), with -1 (no block) in random_blocks")
def _(fn):
    rb = torch.tensor([[4, 5], [4, -1], [0, 5], [5, -1], [0, 1], [2, -1]])
    want = reference_bigbird_mask(22, 4, 3, 0, rb)
    return _mask_result(fn(22, 4, 3, 0, rb.clone()), want, "bigbird_mask(22, 4, 3, 0, random_blocks)",
                        _bigbird_mistakes(22, 4, 3, 0, rb))


@case("bigbird_mask", "window 1 (the block itself), two global blocks, no random blocks (r = 0)")
def _(fn):
    rb = torch.zeros(6, 0, dtype=torch.long)
    want = reference_bigbird_mask(18, 3, 1, 2, rb)
    return _mask_result(fn(18, 3, 1, 2, rb.clone()), want, "bigbird_mask(18, 3, 1, 2, random_blocks of shape (6, 0))",
                        _bigbird_mistakes(18, 3, 1, 2, rb))


# ----------------------------------------------------------------------- block_tiles
def _tiles_result(got, mask, bq, bk, what):
    want = reference_block_tiles(mask, bq, bk)
    if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape != want.shape \
            and tuple(got.shape) == (mask.shape[0] // bq, mask.shape[1] // bk):
        return (f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}: the number of tiles is "
                "ceil(T / block) — a last, shorter tile still has to be computed")
    if isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype \
            and not torch.equal(got, want):
        nonempty = want > 0
        if torch.equal(got > 0, nonempty) and bool((got[nonempty] == 2).sum() > (want[nonempty] == 2).sum()):
            return (f"{what}: a tile that sticks out past Tq or Tk is counted as full; the part outside the "
                    "matrix counts as masked, so such a tile is partial (1)")
        if bool(((got == 0) & nonempty).any()):
            return (f"{what}: a tile with a True entry away from its corner is reported empty; look at every "
                    "entry of the tile (e.g. any() over the tile), not one of them")
    return compare(got, want, what=what)


@case("block_tiles", "causal 16 x 16 mask, 4 x 4 tiles: full below the diagonal, partial on it")
def _(fn):
    mask = torch.ones(16, 16, dtype=torch.bool).tril()
    return _tiles_result(fn(mask, 4, 4), mask, 4, 4, "block_tiles(causal 16 x 16, 4, 4)")


@case("block_tiles", "all True 10 x 10 with 4 x 4 tiles: 3 x 3 tiles, the edge ones partial")
def _(fn):
    mask = torch.ones(10, 10, dtype=torch.bool)
    return _tiles_result(fn(mask, 4, 4), mask, 4, 4, "block_tiles(all True 10 x 10, 4, 4)")


@case("block_tiles", "one True entry inside a tile (not at its corner) makes it partial")
def _(fn):
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[6, 5] = True
    return _tiles_result(fn(mask, 4, 4), mask, 4, 4, "block_tiles(a single True at (6, 5), 4, 4)")


@case("block_tiles", "Tq != Tk and block_q != block_k: a strided mask 9 x 23 with 4 x 8 tiles")
def _(fn):
    mask = reference_strided_mask(9, 23, 5)
    return _tiles_result(fn(mask, 4, 8), mask, 4, 8, "block_tiles(strided 9 x 23, 4, 8)")


# ------------------------------------------------------------------- layers_to_reach
def _reach_result(got, want, what):
    if want is None:
        if got is None:
            return None
        return f"{what} is {got!r}, expected None (this pattern never connects every pair)"
    if type(got) is not int:
        return f"{what} should be a Python int, but it is {type(got).__name__}"
    if got == want - 1:
        return f"{what} is {got}, expected {want}: one layer short (one attention layer is the mask itself, L = 1)"
    if got != want:
        return f"{what} is {got}, expected {want}"
    return None


@case("layers_to_reach", "causal window W = 4 over T = 16: ceil(15 / 3) = 5 layers")
def _(fn):
    mask = torch.ones(16, 16, dtype=torch.bool).tril().triu(-3)            # 0 <= i - j < 4
    return _reach_result(fn(mask), 5, "layers_to_reach(causal window 4, T = 16)")


@case("layers_to_reach", "a bidirectional window plus a global token 0 (causal=False): 2 layers")
def _(fn):
    i = torch.arange(30)
    mask = ((i[:, None] - i[None, :]).abs() < 2) | (i[:, None] == 0) | (i[None, :] == 0)
    return _reach_result(fn(mask, causal=False), 2, "layers_to_reach(window 2 + global token, causal=False)")


@case("layers_to_reach", "the previous token only (no diagonal): the residual stream keeps each token, T - 1 layers")
def _(fn):
    mask = torch.ones(9, 9, dtype=torch.bool).tril(-1).triu(-1)            # j = i - 1 only
    got = fn(mask)
    if got is None:
        return ("layers_to_reach(previous token only, T = 9) is None, expected 8: each layer keeps its own token "
                "(the residual connection), so multiply by (mask | identity)")
    return _reach_result(got, 8, "layers_to_reach(previous token only, T = 9)")


@case("layers_to_reach", "each token sees only itself: never (None), and max_layers is respected")
def _(fn):
    msg = _reach_result(fn(torch.eye(7, dtype=torch.bool)), None, "layers_to_reach(identity, T = 7)")
    if msg:
        return msg
    mask = torch.ones(16, 16, dtype=torch.bool).tril().triu(-3)
    return _reach_result(fn(mask, max_layers=4), None, "layers_to_reach(causal window 4, T = 16, max_layers=4)")
