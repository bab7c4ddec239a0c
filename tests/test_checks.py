"""Public checks: pass the reference, name what is wrong otherwise, never crash on learner code."""
import pytest
import torch

from attncourse import attention, stable_softmax
from attncourse.checks import check, registered_exercises
from attncourse.masks import causal_mask, padding_mask
from check_helpers import assert_passes

GOOD = {
    "stable_softmax": stable_softmax,
    "causal_mask": causal_mask,
    "padding_mask": padding_mask,
    "sdpa": lambda q, k, v, mask=None: attention(q, k, v, mask=mask),
}


def naive_softmax(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)


def no_masked_row_softmax(x, dim=-1):
    return torch.softmax(x, dim)


def top_left_causal(tq, tk):
    return torch.ones(tq, tk, dtype=torch.bool).tril()


def unscaled(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return stable_softmax(s) @ v


def float32_always(q, k, v, mask=None):
    return attention(q.float(), k.float(), v.float(), mask=mask)


@pytest.mark.parametrize("ex_id", sorted(GOOD))
def test_reference_passes(ex_id, capsys):
    assert_passes(ex_id, GOOD[ex_id], capsys)


@pytest.mark.parametrize("ex_id, fn, expect", [
    ("stable_softmax", naive_softmax, "NaN"),
    ("stable_softmax", no_masked_row_softmax, "fully -inf row"),
    ("causal_mask", top_left_causal, "bottom-right"),
    ("causal_mask", lambda tq, tk: top_left_causal(tq, tk).int(), "dtype torch.int32, expected torch.bool"),
    ("padding_mask", lambda lengths, t: padding_mask(lengths, t)[:, 0, 0], "shape (3, 4), expected (3, 1, 1, 4)"),
    ("sdpa", unscaled, "differs from the expected values"),
    ("sdpa", float32_always, "dtype torch.float32, expected torch.float64"),
    ("sdpa", lambda q, k, v, mask=None: (q @ k.transpose(-2, -1)).tolist(), "should be a torch.Tensor"),
    ("sdpa", lambda q, k, v, mask=None: 1 / 0, "ZeroDivisionError"),
])
def test_wrong_answers_get_specific_messages(ex_id, fn, expect, capsys):
    result = check(ex_id, fn)
    assert not result and result.status == "failed"
    out = capsys.readouterr().out
    assert expect in out and "❌" in out, out


def test_stub_says_not_implemented(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("exercise sdpa: not implemented yet")
    result = check("sdpa", stub)
    assert result.status == "not implemented" and not result
    assert "not implemented yet" in capsys.readouterr().out


def test_unknown_exercise_and_non_callable(capsys):
    with pytest.raises(KeyError, match="known exercises"):
        check("no_such_exercise", print)
    assert not check("sdpa", 42)
    assert "expects your function" in capsys.readouterr().out


def test_every_exercise_in_the_solutions_has_checks():
    from pathlib import Path

    import nbformat

    from attncourse.grading.release import parse_exercises
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "solutions").glob("*.ipynb")):
        for ex in parse_exercises(nbformat.read(path, 4), path):
            assert ex.id in registered_exercises(), f"{path.name}: exercise {ex.id!r} has no public checks"


def _exercise_namespace(path):
    """Run a notebook's setup cell and exercise cells (no checks, no demos) in a fresh namespace."""
    from pathlib import Path

    import nbformat

    nb = nbformat.read(Path(path), 4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "setup" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(compile(setup.source, f"{path}:setup", "exec"), ns)
    cells = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    for c in cells:
        exec(compile(c.source, f"{path}:{c.metadata['attncourse']['id']}", "exec"), ns)
    return ns, [(c.metadata["attncourse"]["id"], c.metadata["attncourse"]["function"]) for c in cells]


def _notebooks(folder):
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    return sorted((root / folder).glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks("solutions"), ids=lambda p: p.stem)
def test_every_solution_passes_its_public_checks(path, capsys):
    """nbval only checks that cells run; here a ❌ in a solution notebook fails the suite."""
    ns, exercises = _exercise_namespace(path)
    for ex_id, function in exercises:
        result = check(ex_id, ns[function], verbose=False)
        assert result, f"{path.name}: the solution of {ex_id!r} fails its public checks: {result.messages}"


@pytest.mark.parametrize("path", _notebooks("notebooks"), ids=lambda p: p.stem)
def test_every_stub_reports_not_implemented(path):
    ns, exercises = _exercise_namespace(path)
    for ex_id, function in exercises:
        assert check(ex_id, ns[function], verbose=False).status == "not implemented", ex_id


# --- wrong answers for chapters 02-04: each public check must notice a classic mistake -----------
def _sa_unscaled(x, w_q, w_k, w_v, causal=False):
    t = x.shape[-2]
    return attention(x @ w_q, x @ w_k, x @ w_v, mask=causal_mask(t, t) if causal else None, scale=1.0)


def _sa_top_right(x, w_q, w_k, w_v, causal=False):  # masks the past instead of the future
    t = x.shape[-2]
    return attention(x @ w_q, x @ w_k, x @ w_v, mask=causal_mask(t, t).T if causal else None)


def _xattn_ignores_lengths(x, context, w_q, w_k, w_v, context_lengths=None):
    return attention(x @ w_q, context @ w_k, context @ w_v)


def _split_interleaved(x, n_heads):  # channel c goes to head c % H: the wrong head order
    b, t, c = x.shape
    return x.reshape(b, t, c // n_heads, n_heads).permute(0, 3, 1, 2)


def _mha_scaled_by_model_width(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    from attncourse.multihead import merge_heads, split_heads
    t, c = x.shape[-2], x.shape[-1]
    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))
    out = attention(q, k, v, mask=causal_mask(t, t) if causal else None, scale=c ** -0.5)
    return merge_heads(out) @ w_o


@pytest.mark.parametrize("ex_id, fn", [
    ("sa_self_attention", _sa_unscaled),
    ("sa_self_attention", _sa_top_right),
    ("sa_attention_flops", lambda n, d_model, d_k, d_v=None: n * n * (d_k + (d_v or d_k))),  # no projections, 1 per MAC
    ("cross_attention", _xattn_ignores_lengths),
    ("split_heads", _split_interleaved),
    ("multi_head_attention", _mha_scaled_by_model_width),
    ("mha_param_count", lambda d_model, n_heads, n_kv_heads=None, bias=False: 4 * d_model * d_model * n_heads),
])
def test_later_chapters_catch_classic_mistakes(ex_id, fn, capsys):
    result = check(ex_id, fn)
    assert result.status == "failed", f"{ex_id}: a wrong implementation passed the public checks"
    assert "❌" in capsys.readouterr().out
