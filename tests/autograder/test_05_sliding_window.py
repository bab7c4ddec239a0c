"""Hidden tests for chapter 05 (local / sliding-window attention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here by the reference (``attncourse.masks``, ``attncourse.local``) and compared
with ``expect`` (no hidden values in messages). Points: ``EXERCISES[id]["points"]`` is split over
the exercise's tests in proportion to their ``points`` marker (default 1).

Coverage:
    - window_mask: causal and bidirectional (positional and keyword flag); Tq = Tk, Tq < Tk (down to a
      single decoding query), Tq > Tk (all-False rows; weighted, catches an offset clamped at 0);
      W = 1, W > Tk, lengths 1 and 97; exactly W keys per query (catches ``<=``), no future key
      (catches ``|i - j| < W`` used as causal), bottom-right alignment (catches top-left); bool dtype
      and (Tq, Tk) shape; rule (no course masks).
    - streaming_mask: n_sinks 0, 1, 4 and > Tk; W = 1 and W > Tk; Tq = Tk prefill (sinks must not be
      visible to earlier queries), Tq = 1 decoding, Tq < Tk, Tq > Tk (negative positions see nothing,
      sinks included); bool dtype; rule.
    - sliding_window_attention: from scratch; batch and head dims (1 and >1), Tq = Tk, Tq < Tk, Tq > Tk
      (fully masked rows -> zeros), lengths 1 and 97, block 1, blocks that do not divide T, block > T,
      W = 1, W > Tk, W > block (catches a block that forgets the previous block's keys, or only one
      previous block), head dim odd; Dv != D both ways, weighted (catches 1/√Dv); float32 and float64
      (dtype kept); scores of magnitude ~20 (masking before the softmax); float64 gradients w.r.t. q,
      k, v incl. fully masked rows (catches weights zeroed in place, which breaks backward); keys no
      query can see hold NaN (catches dense attention and blocks against all keys); structural:
      T = 65,536, W = 16 in the sandbox's ~1 GiB address space, where a T×T tensor needs 4 GiB even as
      bool (16 GiB as float32) but the blocked computation needs a few MiB, so any O(T²) tensor fails
      with out-of-memory and an O(T·W) one passes in well under a second.
      Weights: about a third each for values (the case grid), gradients, and structure (unread keys
      and the long sequence), so a dense solution with right values, or a right one that cannot be
      trained, keeps at most two thirds.
    - receptive_field: a grid of W and L against L·(W - 1) + 1 (catches L·W and L·(W - 1)); W = 1; L = 1;
      Mistral's W = 4096, L = 32 -> 131,041; bidirectional 2·L·(W - 1) + 1 with as much weight as the
      causal cases (catches L·(2W - 1)); large values exact; the exact return type (a Python int, not
      float/tensor/numpy); agreement with the reach measured from gradients of a real stack of window
      layers (attncourse.local.gradient_reach); rule.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from attncourse.checks.ch05_sliding_window import reference_receptive_field, reference_sliding_window_attention
from attncourse.grading.testkit import SDPA_CALLS, Foreign, LearnerFailure, dname, expect, expect_true, rand
from attncourse.local import gradient_reach
from attncourse.masks import sliding_window_mask, streaming_mask

EXERCISES = {
    "window_mask": {"function": "window_mask", "points": 2},
    "streaming_mask": {"function": "streaming_mask", "points": 2,
                       "uses": {"window_mask": "attncourse.masks.sliding_window_mask"}},
    "sliding_window_attention": {"function": "sliding_window_attention", "points": 4, "from_scratch": True,
                                 "uses": {"window_mask": "attncourse.masks.sliding_window_mask"}},
    "receptive_field": {"function": "receptive_field", "points": 2},
}

# Run-time tripwires in the sandbox: calling one of these from the listed exercises fails the test.
_MASKS = ["attncourse.masks.sliding_window_mask", "attncourse.masks.materialize", "attncourse.masks.causal_mask"]
_SINKS = ["attncourse.masks.streaming_mask", "attncourse.masks.sinks"]
_ATTENTION = ["attncourse.core.attention", "attncourse.core.stable_softmax", "attncourse.core.masked_scores",
              "attncourse.local.sliding_window_attention", "torch.nn.attention.flex_attention.flex_attention"]
_FORMULA = ["attncourse.local.receptive_field", "attncourse.local.gradient_reach"]
FORBIDDEN = {
    **{name: ["window_mask", "streaming_mask"] for name in _MASKS},
    **{name: ["streaming_mask"] for name in _SINKS},
    **{name: ["sliding_window_attention"] for name in SDPA_CALLS + _ATTENTION},
    **{name: ["receptive_field"] for name in _FORMULA},
}


# ============================================================================== window_mask
WINDOW_CASES = [  # (Tq, Tk, W)
    (1, 1, 1), (6, 6, 1), (6, 6, 3), (9, 9, 20), (97, 97, 16), (4, 11, 3), (1, 17, 5), (2, 30, 30),
    (11, 4, 2), (13, 6, 4), (31, 17, 7), (5, 5, 5),
]


def _wid(case):
    return "Tq{}-Tk{}-W{}".format(*case)


@pytest.mark.exercise("window_mask")
@pytest.mark.parametrize("case", WINDOW_CASES, ids=_wid)
def test_window_mask_causal(learner, case):
    tq, tk, w = case
    expect(learner.window_mask(tq, tk, w), sliding_window_mask(tq, tk, w),
           what=f"window_mask({tq}, {tk}, {w}) (causal: 0 <= position - j < W)")


@pytest.mark.exercise("window_mask")
@pytest.mark.parametrize("case", [WINDOW_CASES[i] for i in (1, 2, 3, 4, 5, 6, 8, 9, 10)], ids=_wid)
def test_window_mask_bidirectional(learner, case):
    tq, tk, w = case
    expect(learner.window_mask(tq, tk, w, False), sliding_window_mask(tq, tk, w, causal=False),
           what=f"window_mask({tq}, {tk}, {w}, causal=False) (|position - j| < W)")


@pytest.mark.exercise("window_mask")
def test_window_mask_keyword_flag(learner):
    expect(learner.window_mask(7, 12, 3, causal=False), sliding_window_mask(7, 12, 3, causal=False),
           what="window_mask(7, 12, 3, causal=False) called with the keyword")


@pytest.mark.exercise("window_mask")
@pytest.mark.points(2)
def test_window_mask_exactly_w_keys_itself_included(learner):
    for w in (1, 2, 5, 8):
        out = learner.window_mask(20, 20, w)
        expect(out, sliding_window_mask(20, 20, w), what=f"window_mask(20, 20, {w})")
        expect_true(bool((out[w - 1:].sum(-1) == w).all()),
                    f"window_mask(20, 20, {w}): every query with enough history must see exactly W = {w} keys")


@pytest.mark.exercise("window_mask")
@pytest.mark.points(2)
def test_window_mask_never_looks_ahead(learner):
    out = learner.window_mask(12, 12, 4)
    expect(out, sliding_window_mask(12, 12, 4), what="window_mask(12, 12, 4)")
    expect_true(not bool(out.triu(1).any()), "window_mask(12, 12, 4): a causal window must never show a future key")


@pytest.mark.exercise("window_mask")
@pytest.mark.points(2)
@pytest.mark.parametrize("tq, tk", [(1, 10), (3, 10), (10, 3)])
def test_window_mask_bottom_right(learner, tq, tk):
    expect(learner.window_mask(tq, tk, 3), sliding_window_mask(tq, tk, 3),
           what=f"window_mask({tq}, {tk}, 3) (query i sits at position Tk - Tq + i)")


@pytest.mark.exercise("window_mask")
@pytest.mark.points(4)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_window_mask_more_queries_than_keys(learner, causal):
    for tq, tk, w in ((9, 4, 3), (20, 5, 2), (8, 1, 4)):
        out = learner.window_mask(tq, tk, w, causal)
        expect(out, sliding_window_mask(tq, tk, w, causal=causal),
               what=f"window_mask({tq}, {tk}, {w}, causal={causal}) (Tq > Tk: query i sits at position "
                    f"{tk - tq} + i, so the first {tq - tk} queries sit at negative positions)")


# =========================================================================== streaming_mask
STREAM_CASES = [  # (Tq, Tk, W, n_sinks)
    (8, 8, 3, 2), (12, 12, 4, 4), (1, 20, 4, 4), (5, 12, 2, 1), (12, 5, 2, 3), (9, 9, 1, 0), (6, 6, 10, 2),
    (4, 4, 2, 6), (97, 97, 16, 4), (3, 30, 5, 40), (7, 7, 1, 3),
]


def _sid(case):
    return "Tq{}-Tk{}-W{}-sinks{}".format(*case)


@pytest.mark.exercise("streaming_mask")
@pytest.mark.parametrize("case", STREAM_CASES, ids=_sid)
def test_streaming_mask_matches_reference(learner, case):
    tq, tk, w, n = case
    expect(learner.streaming_mask(tq, tk, w, n), streaming_mask(tq, tk, w, n),
           what=f"streaming_mask({tq}, {tk}, {w}, {n})")


@pytest.mark.exercise("streaming_mask")
@pytest.mark.points(2)
def test_streaming_mask_sinks_are_causal(learner):
    out = learner.streaming_mask(10, 10, 2, 5)
    expect(out, streaming_mask(10, 10, 2, 5), what="streaming_mask(10, 10, 2, 5)")
    expect_true(not bool(out.triu(1).any()),
                "streaming_mask(10, 10, 2, 5): the first queries of a prompt must not see sink keys after them")


@pytest.mark.exercise("streaming_mask")
@pytest.mark.points(2)
def test_streaming_mask_decoding_query(learner):
    out = learner.streaming_mask(1, 50, 8, 4)
    expect(out, streaming_mask(1, 50, 8, 4), what="streaming_mask(1, 50, 8, 4) (one query after 49 cached keys)")


@pytest.mark.exercise("streaming_mask")
def test_streaming_mask_no_sinks_is_the_window(learner):
    expect(learner.streaming_mask(6, 15, 4, 0), sliding_window_mask(6, 15, 4),
           what="streaming_mask(6, 15, 4, 0) (no sinks: the causal window)")


@pytest.mark.exercise("streaming_mask")
@pytest.mark.points(2)
def test_streaming_mask_queries_before_key_zero_see_nothing(learner):
    out = learner.streaming_mask(9, 4, 2, 2)
    expect(out, streaming_mask(9, 4, 2, 2), what="streaming_mask(9, 4, 2, 2)")
    expect_true(not bool(out[:5].any()), "streaming_mask(9, 4, 2, 2): queries at negative positions see no key, "
                                         "not even a sink")


# ================================================================== sliding_window_attention
SWA_CASES = [  # (lead dims, Tq, Tk, D, Dv, W, block)
    ((1, 1), 1, 1, 4, 4, 1, 64), ((2, 3), 6, 6, 5, 5, 2, 4), ((1, 2), 97, 97, 8, 8, 16, 32),
    ((2, 1), 97, 97, 3, 7, 5, 7), ((1, 1), 3, 11, 7, 7, 4, 2), ((2, 2), 1, 40, 6, 3, 9, 64),
    ((1, 1), 12, 5, 5, 5, 3, 4), ((1, 3), 9, 2, 1, 2, 2, 3), ((1, 1), 33, 33, 4, 4, 100, 8),
    ((3, 1), 20, 20, 4, 4, 6, 5), ((1, 1), 29, 29, 9, 9, 1, 3), ((2, 2), 50, 50, 4, 4, 13, 4),
    ((1, 1), 40, 40, 4, 4, 3, 1), ((1, 2), 10, 10, 4, 4, 4, 1000),
]


def _aid(case):
    lead, tq, tk, d, dv, w, b = case
    return f"{'x'.join(map(str, lead))}-Tq{tq}-Tk{tk}-D{d}-Dv{dv}-W{w}-b{b}"


def _qkv(lead, tq, tk, d, dv, seed, dtype=torch.float32, scale=1.0):
    return (rand(*lead, tq, d, seed=seed, dtype=dtype, scale=scale), rand(*lead, tk, d, seed=seed + 1, dtype=dtype,
            scale=scale), rand(*lead, tk, dv, seed=seed + 2, dtype=dtype))


def _call_swa(learner, q, k, v, w, block, what):
    try:
        return learner.sliding_window_attention(q, k, v, w, block=block)
    except LearnerFailure as exc:
        raise LearnerFailure(f"{what}: {exc}", exc.kind) from None


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(0.5)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("case", SWA_CASES, ids=_aid)
def test_swa_matches_reference(learner, case, dtype):
    lead, tq, tk, d, dv, w, block = case
    q, k, v = _qkv(lead, tq, tk, d, dv, seed=10, dtype=dtype)
    expect(learner.sliding_window_attention(q, k, v, w, block=block),
           reference_sliding_window_attention(q, k, v, w, block),
           what=f"output for q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, W = {w}, block = {block}, "
                f"{dname(dtype)}")


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("tq, tk", [(12, 5), (30, 7)])
def test_swa_fully_masked_rows_are_zero(learner, tq, tk):
    q, k, v = _qkv((2, 2), tq, tk, 4, 4, seed=20)
    out = learner.sliding_window_attention(q, k, v, 3, block=4)
    expect(out, reference_sliding_window_attention(q, k, v, 3, 4),
           what=f"output for Tq = {tq} > Tk = {tk} (the first {tq - tk} queries see no key: zeros, not NaN)")


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(2)
@pytest.mark.parametrize("w, block", [(13, 4), (6, 5), (2, 2)], ids=["W>block", "W~block", "W=block=2"])
def test_swa_blocks_see_the_keys_before_them(learner, w, block):
    q, k, v = _qkv((1, 2), 45, 45, 4, 4, seed=30)
    expect(learner.sliding_window_attention(q, k, v, w, block=block), reference_sliding_window_attention(q, k, v, w, block),
           what=f"output for T = 45, W = {w}, block = {block} (the first queries of a block also see keys of "
                "earlier blocks)")


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(4)
@pytest.mark.parametrize("d, dv", [(3, 12), (16, 2)], ids=["D3-Dv12", "D16-Dv2"])
def test_swa_scales_by_the_key_width(learner, d, dv):
    q, k, v = _qkv((1, 2), 14, 19, d, dv, seed=35, dtype=torch.float64, scale=2.0)
    expect(learner.sliding_window_attention(q, k, v, 5, block=4), reference_sliding_window_attention(q, k, v, 5, 4),
           what=f"float64 output for D = {d}, Dv = {dv} (the scale is 1/√D, D the width of q and k)")


@pytest.mark.exercise("sliding_window_attention")
def test_swa_block_size_does_not_matter(learner):
    q, k, v = _qkv((1, 1), 37, 41, 4, 4, seed=40, dtype=torch.float64)
    want = reference_sliding_window_attention(q, k, v, 6, 64)
    for block in (1, 6, 7, 37, 500):
        expect(learner.sliding_window_attention(q, k, v, 6, block=block), want,
               what=f"float64 output for Tq = 37, Tk = 41, W = 6, block = {block}")


@pytest.mark.exercise("sliding_window_attention")
def test_swa_large_scores(learner):
    q, k, v = _qkv((1, 2), 23, 23, 8, 8, seed=50, scale=4.5)          # scores of magnitude ~20
    expect(learner.sliding_window_attention(q, k, v, 5, block=6), reference_sliding_window_attention(q, k, v, 5, 6),
           rtol=1e-3, atol=1e-4, what="output with scores of magnitude about 20 (mask before the softmax)")


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(12)     # a third of the exercise: attention that cannot be trained is not usable
@pytest.mark.parametrize("tq, tk", [(11, 11), (6, 14), (10, 4)])
def test_swa_gradients(learner, tq, tk):
    q, k, v = _qkv((2, 1), tq, tk, 3, 4, seed=60, dtype=torch.float64)
    g = rand(2, 1, tq, 4, seed=64, dtype=torch.float64)
    out, grads = learner.sliding_window_attention.grad(q, k, v, 3, block=4, wrt=(0, 1, 2), grad_output=g)
    ref_in = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = reference_sliding_window_attention(*ref_in, 3, 4)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    expect(out, ref.detach(), what=f"output in the gradient test (Tq = {tq}, Tk = {tk}, W = 3, block = 4)")
    for name, got, want in zip("qkv", grads, ref_grads):
        expect(got, want, what=f"the gradient with respect to {name} (Tq = {tq}, Tk = {tk})")


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(6)      # with the long sequence below, a third of the exercise: its title is "without T × T"
@pytest.mark.parametrize("block", [4, 16])
def test_swa_never_reads_keys_no_query_can_see(learner, block):
    tq, tk, w = 40, 300, 16
    q, k, v = _qkv((1, 2), tq, tk, 4, 4, seed=70)
    first = tk - tq - w + 1                                            # the first key any query can see
    k[..., :first - block, :] = float("nan")                           # leave a block of slack before it
    v[..., :first - block, :] = float("nan")
    out = _call_swa(learner, q, k, v, w, block, "keys no query can see hold NaN")
    expect(out, reference_sliding_window_attention(q, k, v, w, block),
           what=f"output for Tq = {tq}, Tk = {tk}, W = {w}, block = {block}, where the keys no query can see hold "
                "NaN (read only the keys each block can see; dense attention gives 0 · NaN = NaN)")


@contextlib.contextmanager
def _one_thread():
    """Many small operations: one thread is fastest, and on a busy machine 2 threads were 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.exercise("sliding_window_attention")
@pytest.mark.points(24)
def test_swa_long_sequence_without_t_squared_memory(learner):
    T, w, block = 65536, 16, 128
    q, k, v = _qkv((1, 1), T, T, 4, 4, seed=80)
    out = _call_swa(learner, q, k, v, w, block,
                    f"on T = {T:,} tokens (W = {w}, block = {block}) a T×T tensor needs {T * T / 2**30:.0f} GiB even as "
                    "bool, more than the grader allows")
    with _one_thread():
        want = reference_sliding_window_attention(q, k, v, w, block)
    expect(out, want, what=f"output for T = {T:,}, W = {w}")


@pytest.mark.exercise("sliding_window_attention")
def test_swa_keeps_float64(learner):
    q, k, v = _qkv((2, 1), 7, 9, 5, 5, seed=90, dtype=torch.float64)
    out = learner.sliding_window_attention(q, k, v, 4, block=3)
    expect(out, reference_sliding_window_attention(q, k, v, 4, 3), what="float64 output (keep the dtype of q)")


# =========================================================================== receptive_field
def expect_int(got, want: int, what: str) -> None:
    if isinstance(got, Foreign) or type(got) is not int:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        expect_true(False, f"{what} should return a Python int, but it returned {kind}")
    expect_true(got == want, f"{what} is not the right count")


RF_CASES = [(2, 1), (2, 2), (3, 1), (3, 2), (3, 5), (4, 3), (5, 4), (8, 2), (16, 6), (128, 12), (7, 100)]


@pytest.mark.exercise("receptive_field")
@pytest.mark.parametrize("w, layers", RF_CASES, ids=lambda v: str(v))
def test_receptive_field_causal(learner, w, layers):
    expect_int(learner.receptive_field(w, layers), reference_receptive_field(w, layers),
               what=f"receptive_field({w}, {layers})")


@pytest.mark.exercise("receptive_field")
@pytest.mark.points(2)
def test_receptive_field_mistral(learner):
    expect_int(learner.receptive_field(4096, 32), 131_041, what="receptive_field(4096, 32) (Mistral 7B)")


@pytest.mark.exercise("receptive_field")
def test_receptive_field_edges(learner):
    for layers in (1, 2, 9):
        expect_int(learner.receptive_field(1, layers), 1, what=f"receptive_field(1, {layers}) (W = 1: only itself)")
    for w in (1, 5, 33):
        expect_int(learner.receptive_field(w, 1), w, what=f"receptive_field({w}, 1) (one layer: the window)")


@pytest.mark.exercise("receptive_field")
@pytest.mark.points(3)      # half of the function's contract: as much weight as the causal tests
@pytest.mark.parametrize("w, layers", [(2, 1), (3, 2), (5, 3), (4096, 2), (2, 7), (9, 4)], ids=lambda v: str(v))
def test_receptive_field_bidirectional(learner, w, layers):
    expect_int(learner.receptive_field(w, layers, causal=False), reference_receptive_field(w, layers, causal=False),
               what=f"receptive_field({w}, {layers}, causal=False)")


@pytest.mark.exercise("receptive_field")
def test_receptive_field_large_values_exact(learner):
    w, layers = 10**12 + 7, 10**6 + 3
    expect_int(learner.receptive_field(w, layers), reference_receptive_field(w, layers),
               what=f"receptive_field({w}, {layers}) (an exact integer)")


@pytest.mark.exercise("receptive_field")
@pytest.mark.points(2)
def test_receptive_field_matches_gradient_reach(learner):
    for w, layers in ((2, 3), (3, 2), (4, 3)):
        T = reference_receptive_field(w, layers) + 3
        measured = int(gradient_reach(w, layers, T, block=8)[-1].sum())
        expect_int(learner.receptive_field(w, layers), measured,
                   what=f"receptive_field({w}, {layers}) against the reach measured from gradients of {layers} layers")
