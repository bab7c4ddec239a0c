"""Chapter 05's hidden tests take points for the classic sliding-window mistakes, and only from the
exercise that makes them: two mutated copies of the solution are graded with the real grader.

Mutant A: the causal window written as |i - j| < W, a blocked attention whose blocks forget the keys
of the previous block, and a receptive field of L·W. Mutant B: top-left alignment of the mask and a
dense attention that builds the full (Tq, Tk) scores. ``streaming_mask`` and
``sliding_window_attention`` call ``window_mask``: the grader supplies the reference for it, so a
wrong mask costs only exercise 1. Mutant C: mistakes on one axis the exercise text names (a mask
offset clamped at 0, wrong only for Tq > Tk; a scale of 1/√Dv; a wrong bidirectional receptive field).
Mutant D: weights zeroed in place, right outputs but no gradient. Each costs at least 30% of its
exercise.
"""
from __future__ import annotations


import pytest

from mutants import assert_mistakes_cost_only_their_exercise, edited, grade_mutants

CH = "05_sliding_window"


ABS_WINDOW = """
p = torch.arange(tq).view(-1, 1) + (tk - tq)
d = p - torch.arange(tk).view(1, -1)
return d.abs() < window
"""
TOP_LEFT = """
d = torch.arange(tq).view(-1, 1) - torch.arange(tk).view(1, -1)
return (d >= 0) & (d < window) if causal else d.abs() < window
"""
FORGETS_PREVIOUS_BLOCK = """
tq, tk = q.shape[-2], k.shape[-2]
outs = []
for i0 in range(0, tq, block):
    i1 = min(i0 + block, tq)
    hi, lo = i1 + tk - tq, max(i0 + tk - tq, 0)          # the block's own keys only
    if hi <= 0:
        outs.append(q.new_zeros(*q.shape[:-2], i1 - i0, v.shape[-1]))
        continue
    s = q[..., i0:i1, :] @ k[..., lo:hi, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
    keep = window_mask(i1 - i0, hi - lo, window)
    w = torch.where(keep.any(-1, keepdim=True), torch.softmax(s.masked_fill(~keep, float("-inf")), -1), 0.0)
    outs.append(w @ v[..., lo:hi, :])
return torch.cat(outs, dim=-2)
"""
DENSE = """
keep = window_mask(q.shape[-2], k.shape[-2], window)   # (Tq, Tk): O(T²)
s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
return torch.where(keep.any(-1, keepdim=True), torch.softmax(s, -1), 0.0) @ v
"""
L_TIMES_W = """
return layers * window if causal else 2 * layers * window
"""

CLAMPED_OFFSET = edited(CH, "window_mask", ("+ (tk - tq)", "+ max(tk - tq, 0)"))      # wrong when Tq > Tk
SCALED_BY_DV = edited(CH, "sliding_window_attention", ("/ math.sqrt(q.shape[-1])", "/ math.sqrt(v.shape[-1])"))
IN_PLACE = edited(CH, "sliding_window_attention", (                                  # backward fails
    "weights = torch.where(keep.any(-1, keepdim=True), weights, 0.0)", "weights[weights.isnan()] = 0.0"))
WRONG_BIDIRECTIONAL = edited(CH, "receptive_field", ("return (reach if causal else 2 * reach) + 1",
                                                    "return reach + 1 if causal else layers * (2 * window - 1)"))

MUTANTS = {  # name: {exercise id: replacement of its solution region}
    "abs_window+forgets_block+LW": {"window_mask": ABS_WINDOW, "sliding_window_attention": FORGETS_PREVIOUS_BLOCK,
                                    "receptive_field": L_TIMES_W},
    "top_left+dense": {"window_mask": TOP_LEFT, "sliding_window_attention": DENSE},
    "clamped_offset+scaled_by_dv+wrong_bidirectional": {"window_mask": CLAMPED_OFFSET,
                                                         "sliding_window_attention": SCALED_BY_DV,
                                                         "receptive_field": WRONG_BIDIRECTIONAL},
    "in_place_zeroing": {"sliding_window_attention": IN_PLACE},
}
MAX_KEPT = {"window_mask": 0.6, "sliding_window_attention": 0.7, "receptive_field": 0.6}  # share of points kept


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_mutants(CH, MUTANTS, tmp_path_factory.mktemp("mutants05"))


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mistakes_lose_points_and_nothing_else_does(graded, name):
    assert_mistakes_cost_only_their_exercise(graded[name], MUTANTS[name], name, MAX_KEPT)


def test_dense_attention_fails_the_memory_and_unread_keys_tests(graded):
    failed = {t.name.split("[")[0] for t in graded["top_left+dense"].tests if t.status != "passed"}
    assert {"test_swa_long_sequence_without_t_squared_memory", "test_swa_never_reads_keys_no_query_can_see"} <= failed
