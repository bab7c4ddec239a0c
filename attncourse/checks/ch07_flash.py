"""Public checks for chapter 07 (FlashAttention).

Each case builds small inputs, calls the learner's function, and compares with the reference in
``attncourse.flash`` through :func:`attncourse.testing.compare`. Cases are arranged so that the
classic mistakes fail a specific case with a specific hint: scores whose row maximum grows block
after block (an accumulator that is not rescaled, or rescaled twice), ``lse`` compared with
``log l`` (the maximum forgotten), a causal case whose last visible key starts a new key block
(an off-by-one in the causal skip), and a backward case where ``dV`` is right but ``dQ`` is not
(``D_i`` without the ``O`` factor). The hidden tests (``tests/autograder/test_07_flash.py``) use
larger and odder grids.

The Triton exercise is checked under Triton's interpreter on a CPU; where Triton is not installed
it has one case that says so (and still reports "not implemented yet" for an unfinished kernel).
"""
from __future__ import annotations

import importlib.util

import torch

from attncourse.checks import case
from attncourse.core import attention
from attncourse.flash import flash_attention_backward, flash_attention_forward, hbm_accesses, online_softmax_stats
from attncourse.testing import compare


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(out, what: str):
    """The learner's result must be a tuple (a, b) of tensors; returns (a, b, None) or (None, None, msg)."""
    if not isinstance(out, tuple) or len(out) != 2:
        kind = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
        return None, None, f"{what} should return a tuple of two tensors, but it returned {kind}"
    return out[0], out[1], None


def _rising(B, H, T, D, seed):
    """q, k, v where each query's scores grow with the key index: the row maximum sits in the last block."""
    g = _gen(seed)
    q = torch.randn(B, H, T, D, generator=g).abs() + 0.5
    k = torch.linspace(0.0, 3.0, T)[:, None] * torch.ones(D) + 0.1 * torch.randn(T, D, generator=g)
    v = torch.randn(B, H, T, D, generator=g)
    return q, k.expand(B, H, T, D).contiguous(), v


def _falling(B, H, T, D, seed):
    """The same, with the keys reversed: the row maximum sits in the first block (no rescaling happens)."""
    q, k, v = _rising(B, H, T, D, seed)
    return q, k.flip(-2).contiguous(), v.flip(-2).contiguous()


# --------------------------------------------------------------------- online_softmax
@case("online_softmax", "one row of 10 scores in blocks of 4: m is the max, l = Σ exp(x - m)")
def _(fn):
    x = torch.randn(1, 10, generator=_gen(1))
    m, l, err = _pair(fn(x, 4), "online_softmax_stats(x, 4)")
    if err:
        return err
    want_m, want_l = online_softmax_stats(x, 4)
    return compare(m, want_m, what="m (the row maximum)") or compare(l, want_l, what="l (the normalizer)")


@case("online_softmax", "the maximum sits in the last block (the running sum must be rescaled)")
def _(fn):
    x = torch.arange(12.0).repeat(3, 1) + torch.randn(3, 12, generator=_gen(2))   # rising rows
    m, l, err = _pair(fn(x, 4), "online_softmax_stats(x, 4)")
    if err:
        return err
    msg = compare(m, online_softmax_stats(x, 4)[0], what="m")
    if msg:
        return msg
    want = online_softmax_stats(x, 4)[1]
    msg = compare(l, want, what="l")
    if msg and isinstance(l, torch.Tensor) and l.shape == want.shape:
        way = "too large" if bool((l > want).all()) else "too small" if bool((l < want).all()) else "wrong"
        msg += (f" — l is {way} although m is right: when the maximum grows from m to m', multiply the sum "
                "so far by exp(m - m') exactly once, then add the new block's exp(x - m')")
    return msg


@case("online_softmax", "an all -inf row gives m = -inf and l = 0, and leading -inf blocks give no NaN")
def _(fn):
    x = torch.randn(3, 9, generator=_gen(3))
    x[0] = float("-inf")
    x[2, :6] = float("-inf")
    m, l, err = _pair(fn(x, 3), "online_softmax_stats(x, 3)")
    if err:
        return err
    want_m, want_l = online_softmax_stats(x, 3)
    hint = "(-inf) - (-inf) is NaN: while the running max is still -inf, shift by 0 instead"
    return compare(m, want_m, what="m with -inf rows") or compare(l, want_l, what="l with -inf rows", nan_hint=hint)


@case("online_softmax", "float16 scores as large as 10⁴: statistics in float32, no overflow")
def _(fn):
    x = (torch.randn(2, 2, 20, generator=_gen(4)) * 1e4).half()
    m, l, err = _pair(fn(x, 8), "online_softmax_stats(x, 8)")
    if err:
        return err
    want_m, want_l = online_softmax_stats(x, 8)
    return compare(m, want_m, what="m for float16 x (float32 expected)") or \
        compare(l, want_l, what="l for float16 x (float32 expected)")


# ------------------------------------------------------------------------ flash_forward
def _forward_case(fn, q, k, v, causal, bq, bk, what, check_lse=True):
    o, lse, err = _pair(fn(q, k, v, causal, bq, bk), "flash_forward")
    if err:
        return err
    want_o, want_lse = flash_attention_forward(q, k, v, causal=causal, block_q=bq, block_k=bk)
    msg = compare(o, want_o, what=f"o ({what})")
    if msg or not check_lse:
        return msg
    return compare(lse, want_lse, what=f"lse ({what})")


@case("flash_forward", "a single tile (T = 8 < both block sizes) is plain attention")
def _(fn):
    g = _gen(5)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=g) for _ in range(3))
    return _forward_case(fn, q, k, v, False, 16, 16, "B=1, H=2, T=8, D=4")


@case("flash_forward", "four key blocks, each row's maximum in the first block")
def _(fn):
    q, k, v = _falling(1, 2, 32, 8, seed=6)
    return _forward_case(fn, q, k, v, False, 16, 8, "maximum in the first key block", check_lse=False)


@case("flash_forward", "four key blocks, each row's maximum in the last block (acc must be rescaled once per block)")
def _(fn):
    q, k, v = _rising(1, 2, 32, 8, seed=6)
    msg = _forward_case(fn, q, k, v, False, 16, 8, "maximum in the last key block", check_lse=False)
    if msg:
        qf, kf, vf = _falling(1, 2, 32, 8, seed=6)
        ok_when_falling = _forward_case(fn, qf, kf, vf, False, 16, 8, "", check_lse=False) is None
        if ok_when_falling:
            msg += (" — right when the maximum never changes, wrong when it grows: multiply acc (and l) by "
                    "alpha = exp(m - m_new) exactly once per key block, before adding p @ v")
    return msg


@case("flash_forward", "lse = m + log(l) for each row, Tq = 13, Tk = 20, blocks of 8")
def _(fn):
    g = _gen(7)
    q, k, v = torch.randn(2, 1, 13, 6, generator=g) * 3, torch.randn(2, 1, 20, 6, generator=g), \
        torch.randn(2, 1, 20, 5, generator=g)
    o, lse, err = _pair(fn(q, k, v, False, 8, 8), "flash_forward")
    if err:
        return err
    want_o, want_lse = flash_attention_forward(q, k, v, block_q=8, block_k=8)
    msg = compare(o, want_o, what="o (Tq = 13, Tk = 20, Dv = 5)") or compare(lse, want_lse, what="lse")
    if msg and isinstance(lse, torch.Tensor) and lse.shape == want_lse.shape:
        row_max = (q @ k.transpose(-2, -1) / 6 ** 0.5).amax(-1)
        if compare(lse, want_lse - row_max) is None:
            msg += " — your lse is log(l) alone: add the running maximum, lse = m + log(l)"
    return msg


@case("flash_forward", "causal, Tq = Tk = 17, blocks of 8 (row 16 needs the third key block)")
def _(fn):
    g = _gen(8)
    q, k, v = (torch.randn(1, 2, 17, 4, generator=g) for _ in range(3))
    msg = _forward_case(fn, q, k, v, True, 8, 8, "causal, T = 17")
    if msg:
        msg += (" (hint: a query block ending at q_end sees keys up to Tk - Tq + q_end - 1, so the key loop "
                "must run up to Tk - Tq + q_end, exclusive)")
    return msg


@case("flash_forward", "causal with Tq = 5 < Tk = 11: bottom-right, the last query sees every key")
def _(fn):
    g = _gen(9)
    q, k, v = torch.randn(1, 1, 5, 4, generator=g), torch.randn(1, 1, 11, 4, generator=g), \
        torch.randn(1, 1, 11, 4, generator=g)
    msg = _forward_case(fn, q, k, v, True, 4, 4, "causal, Tq = 5, Tk = 11")
    if msg:
        o = fn(q, k, v, True, 4, 4)[0]
        top_left = attention(q, k, v, mask=torch.ones(5, 11, dtype=torch.bool).tril())
        if compare(o, top_left) is None:
            msg += " — that is top-left alignment; query i sits at position Tk - Tq + i"
    return msg


@case("flash_forward", "causal with Tq = 9 > Tk = 4: the first 5 rows see no key (zeros, lse = -inf)")
def _(fn):
    g = _gen(10)
    q, k, v = torch.randn(1, 2, 9, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g), \
        torch.randn(1, 2, 4, 4, generator=g)
    return _forward_case(fn, q, k, v, True, 4, 2, "causal, Tq = 9, Tk = 4")


@case("flash_forward", "float16 in: o in float16, lse in float32")
def _(fn):
    g = _gen(11)
    q, k, v = (torch.randn(1, 2, 20, 8, generator=g).half() for _ in range(3))
    return _forward_case(fn, q, k, v, True, 8, 8, "float16, causal")


# ----------------------------------------------------------------------- flash_backward
def _backward_case(fn, q, k, v, causal, bq, bk, what, seed=0):
    o, lse = flash_attention_forward(q, k, v, causal=causal)
    do = torch.randn(o.shape, generator=_gen(seed), dtype=o.dtype)
    out = fn(q, k, v, o, lse, do, causal, bq, bk)
    if not isinstance(out, tuple) or len(out) != 3:
        return f"flash_backward should return a tuple (dq, dk, dv), but it returned a {type(out).__name__}"
    want = flash_attention_backward(q, k, v, o, lse, do, causal=causal)
    msgs = {name: compare(g, w, what=f"{name} ({what})") for name, g, w in zip(("dq", "dk", "dv"), out, want)}
    if msgs["dv"] is None and (msgs["dq"] or msgs["dk"]):
        return (msgs["dq"] or msgs["dk"]) + (" — dv is right, so P is: check dS = P ∘ (dP - D) with "
                                             "D_i = rowsum(dO ∘ O) (the product with O, not rowsum(dO)), "
                                             "and the 1/√D in dq and dk")
    return msgs["dq"] or msgs["dk"] or msgs["dv"]


@case("flash_backward", "one tile, float64: matches autograd through attention")
def _(fn):
    g = _gen(12)
    q, k, v = (torch.randn(1, 1, 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    return _backward_case(fn, q, k, v, False, 8, 8, "T = 6, one tile", seed=1)


@case("flash_backward", "several tiles, Tq = 11, Tk = 14, Dv = 3, blocks of 4")
def _(fn):
    g = _gen(13)
    q, k = torch.randn(2, 1, 11, 5, generator=g, dtype=torch.float64), torch.randn(2, 1, 14, 5, generator=g,
                                                                                    dtype=torch.float64)
    v = torch.randn(2, 1, 14, 3, generator=g, dtype=torch.float64)
    return _backward_case(fn, q, k, v, False, 4, 4, "Tq = 11, Tk = 14", seed=2)


@case("flash_backward", "causal with Tq = 9 > Tk = 4: rows without keys get zero gradient, no NaN")
def _(fn):
    g = _gen(14)
    q, k, v = torch.randn(1, 2, 9, 4, generator=g, dtype=torch.float64), \
        torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(1, 2, 4, 4, generator=g,
                                                                                dtype=torch.float64)
    return _backward_case(fn, q, k, v, True, 4, 2, "causal, Tq = 9, Tk = 4", seed=3)


@case("flash_backward", "causal, Tq = Tk = 17, blocks of 8, float32")
def _(fn):
    g = _gen(15)
    q, k, v = (torch.randn(1, 2, 17, 8, generator=g) for _ in range(3))
    return _backward_case(fn, q, k, v, True, 8, 8, "causal, T = 17", seed=4)


# ------------------------------------------------------------------------ hbm_accesses
def _int(got, want: int, what: str):
    if type(got) is not int:
        return f"{what} should be a Python int, but it is a {type(got).__name__}"
    if got != want:
        return f"{what} is {got:,}, expected {want:,}"
    return None


@case("hbm_accesses", "standard attention: n = 1024, d = 64 (4nd + 4n²)")
def _(fn):
    return _int(fn(1024, 64, 98_304, "standard"), hbm_accesses(1024, 64, 98_304, "standard"),
                what='hbm_accesses(1024, 64, 98_304, "standard")')


@case("hbm_accesses", "flash: n = 1024, d = 64, M = 4096 (B_c = 16 divides n)")
def _(fn):
    return _int(fn(1024, 64, 4096, "flash"), hbm_accesses(1024, 64, 4096, "flash"),
                what='hbm_accesses(1024, 64, 4096, "flash")')


@case("hbm_accesses", "flash: n = 1000, d = 64, M = 98,304 (B_c = 384, T_c = ⌈1000 / 384⌉ = 3)")
def _(fn):
    msg = _int(fn(1000, 64, 98_304, "flash"), hbm_accesses(1000, 64, 98_304, "flash"),
               what='hbm_accesses(1000, 64, 98_304, "flash")')
    if msg and "expected" in msg:
        msg += " (hint: the number of key blocks rounds up: a last, partial block costs a full inner loop)"
    return msg


@case("hbm_accesses", "flash: n = 1004, d = 64, M = 64,001 (B_c = ⌈64001 / 256⌉ = 251, T_c = 4)")
def _(fn):
    msg = _int(fn(1004, 64, 64_001, "flash"), hbm_accesses(1004, 64, 64_001, "flash"),
               what='hbm_accesses(1004, 64, 64_001, "flash")')
    if msg and "expected" in msg:
        msg += " (hint: the block size rounds up too, B_c = ⌈M / 4d⌉)"
    return msg


@case("hbm_accesses", "the default algorithm is flash")
def _(fn):
    return _int(fn(512, 32, 8192), hbm_accesses(512, 32, 8192, "flash"), what="hbm_accesses(512, 32, 8192)")


# ------------------------------------------------------------------------ triton_flash
_TRITON = importlib.util.find_spec("triton") is not None


def _triton_case(fn, q, k, v, causal, what):
    o, lse, err = _pair(fn(q, k, v, causal), "triton_flash_forward")
    if err:
        return err
    want_o, want_lse = flash_attention_forward(q, k, v, causal=causal)
    return compare(o, want_o, what=f"o ({what})") or compare(lse, want_lse.float(), what=f"lse ({what})")


if _TRITON:
    @case("triton_flash", "one program, T = 8: plain attention")
    def _(fn):
        g = _gen(16)
        q, k, v = (torch.randn(1, 1, 8, 16, generator=g) for _ in range(3))
        return _triton_case(fn, q, k, v, False, "T = 8, D = 16")

    @case("triton_flash", "the row maximum in the last key tile (rescaling), Tq = 16, Tk = 48")
    def _(fn):
        q, k, v = _rising(1, 1, 48, 16, seed=17)
        return _triton_case(fn, q[..., -16:, :].contiguous(), k, v, False, "Tq = 16, Tk = 48")

    @case("triton_flash", "causal, Tq = 20 > Tk = 12, B = 2: bottom-right, empty rows are zeros")
    def _(fn):
        g = _gen(18)
        q, k, v = torch.randn(2, 1, 20, 8, generator=g), torch.randn(2, 1, 12, 8, generator=g), \
            torch.randn(2, 1, 12, 8, generator=g)
        return _triton_case(fn, q, k, v, True, "causal, Tq = 20, Tk = 12")
else:
    @case("triton_flash", "Triton is available to run your kernel")
    def _(fn):
        from attncourse.triton_support import INSTALL_HINT, TritonUnavailable

        q = torch.zeros(1, 1, 4, 4)
        try:
            fn(q, q, q)                      # an unfinished kernel raises NotImplementedError here
        except TritonUnavailable:
            return f"Triton is not installed here, so your kernel cannot run; to run it: {INSTALL_HINT}"
        return None
