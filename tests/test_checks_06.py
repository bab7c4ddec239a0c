"""Chapter 06 public checks: the references pass; each classic mistake fails with a specific message."""
import pytest
import torch

from attncourse.checks import check
from attncourse.checks import ch06_sparse as C
from attncourse.sparse import block_tiles, layers_to_reach
from check_helpers import assert_fails_saying, assert_passes

GOOD = {
    "strided_mask": C.reference_strided_mask,
    "fixed_mask": C.reference_fixed_mask,
    "bigbird_mask": C.reference_bigbird_mask,
    "block_tiles": C.reference_block_tiles,
    "layers_to_reach": C.reference_layers_to_reach,
}


def positions(tq, tk):
    return torch.arange(tq)[:, None] + (tk - tq), torch.arange(tk)[None, :]   # (Tq, 1), (1, Tk)


def strided_j_mod(tq, tk, s):
    p, j = positions(tq, tk)
    return (j <= p) & ((p - j < s) | (j % s == 0))


def strided_short_window(tq, tk, s):
    p, j = positions(tq, tk)
    return (j <= p) & ((p - j < s - 1) | ((p - j) % s == 0))


def strided_not_causal(tq, tk, s):
    p, j = positions(tq, tk)
    return ((p - j).abs() < s) | ((p - j) % s == 0)


def strided_top_left(tq, tk, s):
    return C.reference_strided_mask(tq, tq, s)[:, :tk] if tk <= tq else \
        torch.nn.functional.pad(C.reference_strided_mask(tq, tq, s), (0, tk - tq))


def fixed_first_c(tq, tk, s, c):
    p, j = positions(tq, tk)
    return (j <= p) & ((p // s == j // s) | (j % s < c))


def fixed_not_causal(tq, tk, s, c):
    p, j = positions(tq, tk)
    return (p // s == j // s) | (j % s >= s - c)


def fixed_one_short(tq, tk, s, c):
    p, j = positions(tq, tk)
    return (j <= p) & ((p // s == j // s) | (j % s > s - c))


def bigbird_mirrored(t, block, window, g, rb):
    ref = C.reference_bigbird_mask(t, block, window, g, rb)
    no_random = C.reference_bigbird_mask(t, block, window, g, torch.full_like(rb, -1))
    return ref | (ref & ~no_random).T


def bigbird_minus_one_is_last(t, block, window, g, rb):
    nb = rb.shape[0]
    return C.reference_bigbird_mask(t, block, window, g, torch.where(rb < 0, nb - 1, rb))


def bigbird_global_rows_only(t, block, window, g, rb):
    m = C.reference_bigbird_mask(t, block, window, 0, rb)
    m[: g * block] = True
    return m


def tiles_floor(mask, bq, bk):
    return block_tiles(mask[: mask.shape[0] // bq * bq, : mask.shape[1] // bk * bk], bq, bk)


def tiles_corner(mask, bq, bk):
    ref = block_tiles(mask, bq, bk)
    corner = torch.nn.functional.pad(mask, (0, bk, 0, bq))[: ref.shape[0] * bq: bq, : ref.shape[1] * bk: bk]
    return torch.where(ref == 2, ref, corner.long())


def tiles_edge_full(mask, bq, bk):
    ref = block_tiles(mask, bq, bk)
    nq, nk = ref.shape
    for a in range(nq):
        for b in range(nk):
            if ref[a, b] == 1 and mask[a * bq:(a + 1) * bq, b * bk:(b + 1) * bk].all():
                ref[a, b] = 2
    return ref


def reach_one_short(mask, causal=True, max_layers=None):
    n = layers_to_reach(mask, causal=causal, max_layers=max_layers)
    return None if n is None else n - 1


def reach_no_identity(mask, causal=True, max_layers=None):
    t = mask.shape[0]
    target = torch.ones(t, t, dtype=torch.bool)
    target = target.tril() if causal else target
    step = reach = mask.float()
    for layers in range(1, (max_layers or t) + 1):
        if bool((reach > 0)[target].all()):
            return layers
        reach = ((reach @ step) > 0).float()
    return None


def reach_tensor(mask, causal=True, max_layers=None):
    n = layers_to_reach(mask, causal=causal, max_layers=max_layers)
    return None if n is None else torch.tensor(n)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("strided_mask", strided_j_mod, "counted from position 0"),
    ("strided_mask", strided_short_window, "the local part has stride - 1 keys"),
    ("strided_mask", strided_not_causal, "the pattern is causal"),
    ("strided_mask", strided_top_left, "aligned top-left"),
    ("strided_mask", lambda tq, tk, s: C.reference_strided_mask(tq, tk, s).int(), "dtype torch.int32, expected torch.bool"),
    ("fixed_mask", fixed_first_c, "they are the last c"),
    ("fixed_mask", fixed_not_causal, "the pattern is causal"),
    ("fixed_mask", fixed_one_short, "one summary key too few"),
    ("bigbird_mask", bigbird_mirrored, "random attention is one-way"),
    ("bigbird_mask", bigbird_minus_one_is_last, "-1 in random_blocks means *no block*"),
    ("bigbird_mask", bigbird_global_rows_only, "every query must also see the global blocks"),
    ("block_tiles", tiles_floor, "ceil(T / block)"),
    ("block_tiles", tiles_corner, "away from its corner"),
    ("block_tiles", tiles_edge_full, "sticks out past Tq or Tk is counted as full"),
    ("block_tiles", lambda m, bq, bk: block_tiles(m, bq, bk).int(), "dtype torch.int32, expected torch.int64"),
    ("layers_to_reach", reach_one_short, "one layer short"),
    ("layers_to_reach", reach_no_identity, "residual connection"),
    ("layers_to_reach", reach_tensor, "should be a Python int"),
])
def test_mistakes_get_specific_messages(ex_id, fn, expect, capsys):
    assert_fails_saying(ex_id, fn, expect, capsys)


def test_stub_says_not_implemented(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("exercise block_tiles: not implemented yet")
    assert check("block_tiles", stub).status == "not implemented"
    assert "not implemented yet" in capsys.readouterr().out
