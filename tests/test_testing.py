"""attncourse.testing.compare: messages that say what is wrong, hints that match the cause."""
import torch

from attncourse.core import attention, stable_softmax
from attncourse.testing import compare


def test_nan_from_overflow_gets_the_overflow_hint():
    x = torch.tensor([[1000.0, 999.0, -3.0], [0.5, 0.1, 0.2]])
    naive = torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)          # inf / inf in row 0
    msg = compare(naive, stable_softmax(x), what="softmax")
    assert "NaN" in msg and "overflow" in msg and "masked" not in msg


def test_nan_from_a_fully_masked_row_gets_the_masked_hint():
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 2)
    mask = torch.ones(1, 3, 5, dtype=torch.bool)
    mask[0, 1] = False
    naive = torch.softmax((q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf")), -1) @ v
    msg = compare(naive, attention(q, k, v, mask=mask), what="attention")
    assert "NaN" in msg and "masked" in msg and "overflow" not in msg


def test_both_causes_in_one_result_get_both_hints():
    expected = torch.tensor([[0.0, 0.0], [0.3, 0.7]])
    got = torch.full((2, 2), float("nan"))
    msg = compare(got, expected, what="w")
    assert "overflow" in msg and "masked" in msg


def test_a_caller_can_name_the_cause():
    msg = compare(torch.tensor([float("nan")]), torch.tensor([0.0]), what="w", nan_hint="custom words")
    assert "hint: custom words" in msg


def test_hidden_values_are_not_revealed():
    msg = compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), what="out", reveal_values=False)
    assert "2.5" not in msg and "differs" in msg


def test_minus_inf_is_not_called_an_overflow():
    want = torch.tensor([1.0, 2.0, 3.0])
    neg = compare(torch.tensor([1.0, float("-inf"), 3.0]), want)
    pos = compare(torch.tensor([1.0, float("inf"), 3.0]), want)
    assert "-inf in 1 entries" in neg and "overflows" not in neg and "skipped" in neg
    assert "contains inf in 1 entries" in pos and "overflows" in pos


def test_one_or_two_entries_hide_the_largest_error():
    assert "largest error" not in compare(torch.tensor([1.5]), torch.tensor([1.0]), reveal_values=False)
    assert "largest error" in compare(torch.tensor([1.5, 2.0, 3.0]), torch.ones(3), reveal_values=False)
    assert "largest error" in compare(torch.tensor([1.5]), torch.tensor([1.0]))
