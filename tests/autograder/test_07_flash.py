"""Hidden tests for chapter 07 (FlashAttention). Run by `attncourse grade` only.

Every call ``learner.<function>(...)`` runs the learner's code in the sandbox; every expected
value is computed here, by the reference (``attncourse.flash``), and compared with ``expect``
(no hidden values in messages). Points: ``EXERCISES[id]["points"]`` is split over the exercise's
tests in proportion to their ``points`` marker (default 1).

Coverage (keep it true when tests change):
- online_softmax: n from 1 to 97, blocks of 1, 3, 7, 8, 64 and larger than n (last block shorter),
  1-D to 3-D x; the row maximum in the last block (an unrescaled or twice-rescaled sum fails);
  scores up to ±1e4 (overflow); an all -inf row and rows whose first blocks are all -inf (NaN);
  float16/bfloat16 in -> float32 statistics, float32 and float64 kept; the return type (a tuple
  of two tensors); rule: logsumexp, softmax and the course's online-softmax functions.
- flash_forward: B, H = 1..2, Tq = Tk and Tq != Tk both ways, lengths 1..130 not multiples of the
  blocks, blocks of 1, 4, 5x7, 8, 16, 32, 64 and larger than T, D = 2..59 (odd), Dv != D; causal
  and not, with the last visible key starting a new key block (off-by-one in the causal skip) and
  offset Tk - Tq = 1; rows with no visible key (zeros, lse = -inf); o and lse checked separately
  (lse without the running max fails); the row maximum in the last key block and scores of
  magnitude ~100 (no or double rescaling of the accumulator fails); float64 kept, float16 and
  bfloat16 with float32 lse; no Tq x Tk tensor: causal Tq = 2^20, Tk = 2^12, D = 1 in the ~1 GiB sandbox
  (any float or bool tensor of Tq x Tk elements is >= 4 GiB) with blocks of 256; rule: from
  scratch (SDPA), softmax, logsumexp, the course's attention and flash functions.
- flash_backward: the same shape axes (Tq != Tk both ways, non-multiples, Dv != D), causal and
  not, float64 against autograd through the reference; rows with lse = -inf (zero dq, no NaN);
  large scores; D_i = rowsum(dO o O) (rowsum(dO) fails every case); float32, float16 and bfloat16
  (dtypes kept); no Tq x Tk tensor (the long causal case); rule: autograd (grad, backward, vjp),
  softmax, SDPA, the course's attention and flash backward.
- hbm_accesses: "standard" for n = 1..131072; "flash" with B_c dividing n, ceil(M / 4d) and
  ceil(n / B_c) both rounding up, B_c = 1 (M < 4d) and T_c = 1 (M huge), d from 1 to 256, exact
  Python ints (no float rounding) for large n; the default algorithm; rule: the reference count.
- triton_flash: under Triton's interpreter (skipped where the grader has no Triton): one program,
  Tq != Tk both ways, the row maximum in the last key tile, causal with rows that see no key, B = 2,
  scores of magnitude ~100, float16 (lse float32); rule: SDPA and the reference kernels.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from attncourse.core import attention
from attncourse.flash import flash_attention_backward, flash_attention_forward, hbm_accesses, online_softmax_stats
from attncourse.grading.testkit import Foreign, dname, expect, expect_true, rand
from attncourse.masks import causal_mask

EXERCISES = {
    "online_softmax": {"function": "online_softmax_stats", "points": 2},
    "flash_forward": {"function": "flash_forward", "points": 4, "from_scratch": True},
    "flash_backward": {"function": "flash_backward", "points": 4, "from_scratch": True},
    "hbm_accesses": {"function": "hbm_accesses", "points": 2},
    "triton_flash": {"function": "triton_flash_forward", "points": 2, "from_scratch": True, "optional": True},
}

# Run-time tripwires in the sandbox (and the static check of the same names). The notebook states
# each one on the exercise's "Not allowed" line.
_SOFTMAX = ["torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.special.softmax",
            "torch.ops.aten.softmax", "torch.ops.aten._softmax"]
_LOGSUMEXP = ["torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp", "torch.ops.aten.logsumexp"]
_AUTOGRAD = ["torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
             "torch.autograd.functional.vjp", "torch.func.vjp", "torch.func.grad"]
_ATTENTION = ["attncourse.core.attention", "attncourse.attention", "attncourse.flash.flash_attention"]
FORBIDDEN = {
    **{n: ["online_softmax", "flash_forward"] for n in _LOGSUMEXP},
    **{n: ["online_softmax", "flash_forward", "flash_backward"] for n in _SOFTMAX},
    "attncourse.flash.online_softmax_stats": ["online_softmax"],
    "attncourse.flash.online_softmax_update": ["online_softmax", "flash_forward"],
    **{n: ["flash_forward", "flash_backward"] for n in _ATTENTION},
    "attncourse.flash.flash_attention_forward": ["flash_forward", "triton_flash"],
    "attncourse.flash.flash_attention_backward": ["flash_backward"],
    **{n: ["flash_backward"] for n in _AUTOGRAD},
    "attncourse.flash.hbm_accesses": ["hbm_accesses"],
    "attncourse.flash.flash_block_sizes": ["hbm_accesses"],
    "attncourse.flash_triton.triton_flash_attention": ["triton_flash"],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The references here work on tiny tiles, and the sandboxed child is busy at the same time:
    one intra-op thread in the grading process avoids OpenMP hand-offs that cost more than the work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _parts(out, n: int, what: str):
    """The learner's result must be a tuple of ``n`` tensors."""
    if isinstance(out, Foreign) or not isinstance(out, tuple) or len(out) != n:
        kind = (out.description if isinstance(out, Foreign) else
                f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}")
        expect_true(False, f"{what} should return a tuple of {n} tensors, but it returned {kind}")
    return out


def _qkv(B, H, Tq, Tk, D, Dv, seed, dtype=torch.float32, scale=1.0):
    return (rand(B, H, Tq, D, seed=seed, dtype=dtype, scale=scale), rand(B, H, Tk, D, seed=seed + 1, dtype=dtype),
            rand(B, H, Tk, Dv, seed=seed + 2, dtype=dtype))


def _rising(B, H, Tq, Tk, D, seed, dtype=torch.float32, magnitude=3.0):
    """Keys whose scores grow with the key index for every query: each row's maximum is in the last block."""
    q = rand(B, H, Tq, D, seed=seed).abs() + 0.5
    k = torch.linspace(0.0, magnitude, Tk, dtype=torch.float64)[:, None] * torch.ones(D, dtype=torch.float64)
    k = (k + 0.1 * rand(Tk, D, seed=seed + 1)).expand(B, H, Tk, D).contiguous()
    return q.to(dtype), k.to(dtype), rand(B, H, Tk, D, seed=seed + 2, dtype=dtype)


# ============================================================================ online_softmax
ONLINE_CASES = [  # (shape, block)
    ((1,), 1), ((7,), 3), ((3, 10), 4), ((2, 3, 17), 8), ((4, 64), 64), ((2, 97), 7), ((5, 12), 50), ((3, 33), 1),
]


@pytest.mark.exercise("online_softmax")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dname)
@pytest.mark.parametrize("shape,block", ONLINE_CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"b{v}")
def test_online_stats_match_reference(learner, shape, block, dtype):
    x = rand(*shape, seed=1, dtype=dtype, scale=3.0)
    m, l = _parts(learner.online_softmax_stats(x, block), 2, "online_softmax_stats")
    want_m, want_l = online_softmax_stats(x, block)
    what = f"for x of shape {shape}, {dname(dtype)}, block={block}"
    expect(m, want_m, what=f"m {what}")
    expect(l, want_l, what=f"l {what}")


@pytest.mark.exercise("online_softmax")
@pytest.mark.points(3)
@pytest.mark.parametrize("block", [3, 8])
def test_online_stats_maximum_in_the_last_block(learner, block):
    x = torch.linspace(0.0, 12.0, 40).repeat(4, 1) + rand(4, 40, seed=2, scale=0.5).float()   # rising rows
    m, l = _parts(learner.online_softmax_stats(x, block), 2, "online_softmax_stats")
    want_m, want_l = online_softmax_stats(x, block)
    expect(m, want_m, what=f"m for rows whose maximum is in the last block (block={block})")
    expect(l, want_l, what=f"l for rows whose maximum is in the last block (block={block}): rescale the "
                           "running sum by exp(m - m_new) exactly once whenever the maximum grows")


@pytest.mark.exercise("online_softmax")
@pytest.mark.points(5)      # the point of the running maximum: with the masked rows, half the exercise
def test_online_stats_large_scores(learner):
    x = rand(3, 50, seed=3, scale=1e4)
    m, l = _parts(learner.online_softmax_stats(x, 16), 2, "online_softmax_stats")
    want_m, want_l = online_softmax_stats(x, 16)
    expect(m, want_m, what="m for scores as large as ±1e4")
    expect(l, want_l, what="l for scores as large as ±1e4 (nothing may overflow)")


@pytest.mark.exercise("online_softmax")
@pytest.mark.points(12)     # rows of -inf are what every causal or padded row starts with
def test_online_stats_masked_rows(learner):
    x = rand(4, 20, seed=4, scale=2.0)
    x[0] = float("-inf")                          # all -inf
    x[1, :12] = float("-inf")                     # the first blocks all -inf, then finite values
    x[3, ::2] = float("-inf")
    m, l = _parts(learner.online_softmax_stats(x, 5), 2, "online_softmax_stats")
    want_m, want_l = online_softmax_stats(x, 5)
    hint = "while the running maximum is still -inf, (-inf) - (-inf) is NaN: shift by 0 instead"
    expect(m, want_m, what="m with an all -inf row and leading -inf blocks")
    expect(l, want_l, what="l with an all -inf row (must be 0) and leading -inf blocks", nan_hint=hint)


@pytest.mark.exercise("online_softmax")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dname)
def test_online_stats_low_precision_in_float32(learner, dtype):
    x = rand(2, 3, 45, seed=5, dtype=dtype, scale=300.0)
    m, l = _parts(learner.online_softmax_stats(x, 8), 2, "online_softmax_stats")
    want_m, want_l = online_softmax_stats(x, 8)
    expect(m, want_m, what=f"m for a {dname(dtype)} x (statistics in float32)")
    expect(l, want_l, what=f"l for a {dname(dtype)} x (statistics in float32)")


# ============================================================================ flash_forward
FWD_CASES = [  # (B, H, Tq, Tk, D, Dv, block_q, block_k)
    (1, 1, 1, 1, 4, 4, 64, 64), (2, 2, 37, 53, 8, 5, 16, 16), (1, 2, 53, 37, 8, 8, 16, 16),
    (1, 1, 97, 97, 16, 16, 32, 32), (2, 1, 33, 33, 7, 3, 8, 8), (1, 2, 24, 25, 4, 4, 8, 8),
    (1, 1, 17, 17, 4, 6, 8, 8), (1, 1, 5, 130, 59, 3, 4, 64), (1, 1, 130, 5, 6, 6, 64, 4),
    (1, 1, 9, 9, 2, 2, 1, 1), (1, 2, 12, 12, 3, 3, 5, 7),
]


def _fid(c):
    return "B{}H{}Tq{}Tk{}D{}Dv{}-b{}x{}".format(*c)


def _check_forward(out, q, k, v, causal, bq, bk, what):
    o, lse = _parts(out, 2, "flash_forward")
    want_o, want_lse = flash_attention_forward(q, k, v, causal=causal, block_q=bq, block_k=bk)
    expect(o, want_o, what=f"o {what}")
    expect(lse, want_lse, what=f"lse {what} (lse = m + log l, the log-sum-exp of the row)")


@pytest.mark.exercise("flash_forward")
@pytest.mark.parametrize("case", FWD_CASES, ids=_fid)
def test_forward_full(learner, case):
    B, H, Tq, Tk, D, Dv, bq, bk = case
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv, seed=10)
    _check_forward(learner.flash_forward(q, k, v, False, bq, bk), q, k, v, False, bq, bk,
                   what=f"for q {(B, H, Tq, D)}, k {(B, H, Tk, D)}, v {(B, H, Tk, Dv)}, blocks {bq}x{bk}")


@pytest.mark.exercise("flash_forward")
@pytest.mark.parametrize("case", FWD_CASES, ids=_fid)
def test_forward_causal(learner, case):
    B, H, Tq, Tk, D, Dv, bq, bk = case
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv, seed=20)
    _check_forward(learner.flash_forward(q, k, v, True, bq, bk), q, k, v, True, bq, bk,
                   what=f"causal (bottom-right: query i sits at Tk - Tq + i), Tq={Tq}, Tk={Tk}, blocks {bq}x{bk}")


@pytest.mark.exercise("flash_forward")
@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_maximum_grows_across_key_blocks(learner, causal):
    q, k, v = _rising(2, 1, 24, 40, 8, seed=30, magnitude=4.0)
    _check_forward(learner.flash_forward(q, k, v, causal, 8, 8), q, k, v, causal, 8, 8,
                   what="when each row's maximum grows from key block to key block (rescale acc and l by "
                        "exp(m - m_new) exactly once per key block)")


@pytest.mark.exercise("flash_forward")
@pytest.mark.points(12)     # without a running maximum the forward pass overflows: a third of the exercise
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_large_scores(learner, causal):
    q, k, v = _rising(1, 2, 16, 48, 16, seed=35, magnitude=60.0)
    out = learner.flash_forward(q, k, v, causal, 16, 16)
    o, lse = _parts(out, 2, "flash_forward")
    want_o, want_lse = flash_attention_forward(q.double(), k.double(), v.double(), causal=causal, block_q=16,
                                               block_k=16)
    expect(o, want_o.float(), what="o for scores of magnitude ~100 (nothing may overflow)")
    expect(lse, want_lse.float(), what="lse for scores of magnitude ~100")


@pytest.mark.exercise("flash_forward")
@pytest.mark.points(2)
def test_forward_rows_without_keys(learner):
    q, k, v = _qkv(2, 2, 20, 6, 4, 4, seed=40)
    _check_forward(learner.flash_forward(q, k, v, True, 4, 4), q, k, v, True, 4, 4,
                   what="causal with Tq = 20 > Tk = 6 (the first 14 rows see no key: o = 0, lse = -inf)")


@pytest.mark.exercise("flash_forward")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=dname)
def test_forward_dtypes(learner, dtype):
    q, k, v = _qkv(1, 2, 30, 21, 16, 8, seed=50, dtype=dtype)
    _check_forward(learner.flash_forward(q, k, v, True, 8, 16), q, k, v, True, 8, 16,
                   what=f"for {dname(dtype)} inputs (o in {dname(dtype)}, lse in "
                        f"{'float64' if dtype == torch.float64 else 'float32'})")


LONG_TQ, LONG_TK, LONG_BLOCK = 1 << 20, 1 << 12, 256


def _long_inputs(seed):
    """Head dim 1 keeps the transfers to the sandbox small (4 MiB per Tq-long tensor)."""
    q = rand(1, 1, LONG_TQ, 1, seed=seed)
    k, v = rand(1, 1, LONG_TK, 1, seed=seed + 1), rand(1, 1, LONG_TK, 1, seed=seed + 2)
    return q, k, v


def _long_forward(q, k, v):
    """Reference for the long causal case: only the last Tk rows see keys (cheap to compute here)."""
    o = torch.zeros(1, 1, LONG_TQ, 1)
    lse = torch.full((1, 1, LONG_TQ), float("-inf"))
    o[..., -LONG_TK:, :], lse[..., -LONG_TK:] = flash_attention_forward(q[..., -LONG_TK:, :], k, v, causal=True,
                                                                       block_q=512, block_k=512)
    return o, lse


@pytest.mark.exercise("flash_forward")
@pytest.mark.points(10)
def test_forward_keeps_no_score_matrix(learner):
    q, k, v = _long_inputs(seed=60)
    out = learner.flash_forward(q, k, v, True, LONG_BLOCK, LONG_BLOCK)
    o, lse = _parts(out, 2, "flash_forward")
    want_o, want_lse = _long_forward(q, k, v)
    what = (f"causal with Tq = {LONG_TQ:,} and Tk = {LONG_TK:,}, blocks of {LONG_BLOCK} (only tiles fit in "
            "memory: build no Tq×Tk tensor, and skip the key blocks, and whole query blocks, that see nothing)")
    expect(o, want_o, what=f"o {what}")
    expect(lse, want_lse, what=f"lse {what}")


# ============================================================================ flash_backward
def _check_backward(learner, q, k, v, causal, bq, bk, seed, what):
    o, lse = flash_attention_forward(q, k, v, causal=causal)
    do = rand(*o.shape, seed=seed, dtype=o.dtype)
    grads = _parts(learner.flash_backward(q, k, v, o, lse, do, causal, bq, bk), 3, "flash_backward")
    want = flash_attention_backward(q, k, v, o, lse, do, causal=causal)
    recall = {"dq": "dQ = dS K / √D, with dS = P ∘ (dP - D) and D_i = rowsum(dO ∘ O)",
              "dk": "dK = dSᵀ Q / √D, with dS = P ∘ (dP - D) and D_i = rowsum(dO ∘ O)",
              "dv": "dV = Pᵀ dO, with P = exp(S - lse)"}
    for name, got, w in zip(("dq", "dk", "dv"), grads, want):
        expect(got, w, what=f"{name} {what} (recall: {recall[name]})")


BWD_CASES = [FWD_CASES[i] for i in (0, 1, 2, 4, 5, 7, 8, 10)]


@pytest.mark.exercise("flash_backward")
@pytest.mark.parametrize("case", BWD_CASES, ids=_fid)
def test_backward_full(learner, case):
    B, H, Tq, Tk, D, Dv, bq, bk = case
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv, seed=70, dtype=torch.float64)
    _check_backward(learner, q, k, v, False, bq, bk, seed=71,
                    what=f"for q {(B, H, Tq, D)}, k {(B, H, Tk, D)}, v {(B, H, Tk, Dv)}, blocks {bq}x{bk}")


@pytest.mark.exercise("flash_backward")
@pytest.mark.parametrize("case", BWD_CASES, ids=_fid)
def test_backward_causal(learner, case):
    B, H, Tq, Tk, D, Dv, bq, bk = case
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv, seed=80, dtype=torch.float64)
    _check_backward(learner, q, k, v, True, bq, bk, seed=81,
                    what=f"causal (bottom-right), Tq={Tq}, Tk={Tk}, blocks {bq}x{bk}")


@pytest.mark.exercise("flash_backward")
@pytest.mark.points(2)
def test_backward_matches_autograd_through_attention(learner):
    q, k, v = _qkv(2, 1, 11, 14, 5, 3, seed=85, dtype=torch.float64)
    mask = causal_mask(11, 14)
    o, lse = flash_attention_forward(q, k, v, causal=True)
    do = rand(2, 1, 11, 3, seed=86, dtype=torch.float64)
    grads = _parts(learner.flash_backward(q, k, v, o, lse, do, True, 4, 4), 3, "flash_backward")
    ref_in = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = torch.autograd.grad(attention(*ref_in, mask=mask), ref_in, do)
    for name, got, w in zip(("dq", "dk", "dv"), grads, want):
        expect(got, w, what=f"{name} compared with autograd through plain attention (causal, Tq = 11, Tk = 14)")


@pytest.mark.exercise("flash_backward")
@pytest.mark.points(5)
def test_backward_rows_without_keys(learner):
    q, k, v = _qkv(1, 2, 20, 6, 4, 4, seed=90, dtype=torch.float64)
    _check_backward(learner, q, k, v, True, 4, 4, seed=91,
                    what="causal with Tq = 20 > Tk = 6 (rows with lse = -inf: zero gradient, no NaN)")


@pytest.mark.exercise("flash_backward")
def test_backward_large_scores(learner):
    q, k, v = _rising(1, 1, 16, 40, 8, seed=95, dtype=torch.float64, magnitude=60.0)
    _check_backward(learner, q, k, v, False, 8, 8, seed=96, what="for scores of magnitude ~100")


@pytest.mark.exercise("flash_backward")
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=dname)
def test_backward_dtypes(learner, dtype):
    q, k, v = _qkv(1, 2, 18, 23, 8, 8, seed=100, dtype=dtype)
    _check_backward(learner, q, k, v, True, 8, 8, seed=101, what=f"for {dname(dtype)} inputs (keep the dtypes)")


@pytest.mark.exercise("flash_backward")
@pytest.mark.points(8)
def test_backward_keeps_no_score_matrix(learner):
    q, k, v = _long_inputs(seed=110)
    o, lse = _long_forward(q, k, v)
    do = rand(1, 1, LONG_TQ, 1, seed=111)
    grads = _parts(learner.flash_backward(q, k, v, o, lse, do, True, LONG_BLOCK, LONG_BLOCK), 3, "flash_backward")
    tail = slice(LONG_TQ - LONG_TK, LONG_TQ)
    dq_t, dk, dv = flash_attention_backward(q[..., tail, :], k, v, o[..., tail, :], lse[..., tail], do[..., tail, :],
                                            causal=True, block_q=512, block_k=512)
    dq = torch.zeros_like(q)
    dq[..., tail, :] = dq_t
    what = f"causal with Tq = {LONG_TQ:,} and Tk = {LONG_TK:,}, blocks of {LONG_BLOCK} (only tiles fit in memory)"
    for name, got, w in zip(("dq", "dk", "dv"), grads, (dq, dk, dv)):
        expect(got, w, what=f"{name} {what}")


# ============================================================================ hbm_accesses
def _expect_int(got, want: int, what: str) -> None:
    if isinstance(got, Foreign) or type(got) is not int:
        kind = got.description if isinstance(got, Foreign) else type(got).__name__
        expect_true(False, f"{what} should return a Python int, but it returned {kind}")
    expect_true(got == want, f"{what} is not the right count")


STANDARD_CASES = [(1, 1), (3, 2), (512, 64), (1000, 64), (4096, 128), (131072, 128)]
FLASH_CASES = [  # (n, d, sram)
    (1, 1, 1), (1024, 64, 4096), (1000, 64, 98_304), (4097, 128, 65_536), (513, 64, 255), (100, 16, 10 ** 7),
    (2048, 256, 98_304), (777, 3, 1000), (16384, 64, 98_304), (1004, 64, 64_001),
]


@pytest.mark.exercise("hbm_accesses")
@pytest.mark.parametrize("n,d", STANDARD_CASES, ids=str)
def test_io_standard(learner, n, d):
    _expect_int(learner.hbm_accesses(n, d, 98_304, "standard"), hbm_accesses(n, d, 98_304, "standard"),
                what=f'hbm_accesses({n}, {d}, 98304, "standard")')


@pytest.mark.exercise("hbm_accesses")
@pytest.mark.points(2)
@pytest.mark.parametrize("n,d,sram", FLASH_CASES, ids=str)
def test_io_flash(learner, n, d, sram):
    _expect_int(learner.hbm_accesses(n, d, sram, "flash"), hbm_accesses(n, d, sram, "flash"),
                what=f'hbm_accesses({n}, {d}, {sram}, "flash") (B_c = ceil(M / 4d), T_c = ceil(n / B_c))')


@pytest.mark.exercise("hbm_accesses")
def test_io_default_is_flash(learner):
    _expect_int(learner.hbm_accesses(2000, 32, 12_288), hbm_accesses(2000, 32, 12_288, "flash"),
                what="hbm_accesses(2000, 32, 12288) with the default algorithm")


@pytest.mark.exercise("hbm_accesses")
@pytest.mark.points(2)
@pytest.mark.parametrize("n,d,sram", [((1 << 20) + 1, 128, 98_304 + 1), ((1 << 24) + 1, 256, 1000)], ids=str)
def test_io_exact_for_long_sequences(learner, n, d, sram):
    # the second count is about 2.2e17, past 2^53: float arithmetic is off by a few
    _expect_int(learner.hbm_accesses(n, d, sram, "flash"), hbm_accesses(n, d, sram, "flash"),
                what=f'hbm_accesses({n}, {d}, {sram}, "flash") (exact integer arithmetic, a closed form)')


# ============================================================================ triton_flash
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="Triton is not installed where the grader runs")


def _check_triton(learner, q, k, v, causal, what):
    o, lse = _parts(learner.triton_flash_forward(q, k, v, causal), 2, "triton_flash_forward")
    want_o, want_lse = flash_attention_forward(q, k, v, causal=causal)
    expect(o, want_o, what=f"o {what}")
    expect(lse, want_lse.float(), what=f"lse {what}")


@needs_triton
@pytest.mark.exercise("triton_flash")
def test_triton_one_program(learner):
    q, k, v = _qkv(1, 1, 8, 8, 16, 16, seed=120)
    _check_triton(learner, q, k, v, False, "for T = 8, D = 16 (one program, one key tile)")


@needs_triton
@pytest.mark.exercise("triton_flash")
@pytest.mark.points(2)
def test_triton_maximum_grows(learner):
    q, k, v = _rising(1, 1, 16, 48, 16, seed=121, magnitude=4.0)
    _check_triton(learner, q, k, v, False, "when each row's maximum is in the last key tile (rescale m, l and acc)")


@needs_triton
@pytest.mark.exercise("triton_flash")
@pytest.mark.points(2)
@pytest.mark.parametrize("tq,tk", [(33, 20), (20, 33)], ids=str)
def test_triton_causal(learner, tq, tk):
    q, k, v = _qkv(2, 1, tq, tk, 8, 8, seed=122)
    _check_triton(learner, q, k, v, True, f"causal, Tq = {tq}, Tk = {tk}, B = 2 (rows that see no key: zeros)")


@needs_triton
@pytest.mark.exercise("triton_flash")
@pytest.mark.points(3)
def test_triton_large_scores(learner):
    q, k, v = _rising(1, 1, 16, 32, 16, seed=123, magnitude=60.0)
    o, lse = _parts(learner.triton_flash_forward(q, k, v, False), 2, "triton_flash_forward")
    want_o, want_lse = flash_attention_forward(q.double(), k.double(), v.double())
    expect(o, want_o.float(), what="o for scores of magnitude ~100")
    expect(lse, want_lse.float(), what="lse for scores of magnitude ~100")


@needs_triton
@pytest.mark.exercise("triton_flash")
@pytest.mark.points(2)
def test_triton_float16(learner):
    q, k, v = _qkv(1, 2, 24, 24, 16, 16, seed=124, dtype=torch.float16)
    _check_triton(learner, q, k, v, True, "for float16 inputs (o in float16, lse in float32)")
