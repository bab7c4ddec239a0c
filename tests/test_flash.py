"""attncourse.flash against independent oracles.

Oracles: ``attncourse.attention`` with an explicit bottom-right causal mask, torch SDPA pinned to
the MATH backend, ``torch.logsumexp`` of the masked scores, autograd through the eager reference
(and ``torch.autograd.gradcheck`` in float64), and an explicit simulation of the paper's
Algorithm 1 that counts every HBM transfer one block at a time.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from attncourse import bench
from attncourse.core import attention, stable_softmax
from attncourse.flash import (SDPA_BACKENDS, FlashAttentionFunction, flash_attention, flash_attention_backward,
                              flash_attention_forward, flash_block_sizes, hbm_accesses, online_softmax,
                              online_softmax_stats, online_softmax_update, probe_sdpa_backends, sdpa,
                              sdpa_kernel_name)
from attncourse.masks import causal_mask
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).mul(scale).to(dtype)


def _qkv(B, H, Tq, Tk, D, Dv=None, dtype=torch.float64, seed=0, scale=1.0):
    Dv = D if Dv is None else Dv
    return (_randn(B, H, Tq, D, dtype=dtype, seed=seed, scale=scale), _randn(B, H, Tk, D, dtype=dtype, seed=seed + 1),
            _randn(B, H, Tk, Dv, dtype=dtype, seed=seed + 2))


def _mask(Tq, Tk, causal):
    return causal_mask(Tq, Tk) if causal else None


def _lse_oracle(q, k, causal, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[-2], k.shape[-2]), float("-inf"))
    return torch.logsumexp(s, dim=-1)


# (B, H, Tq, Tk, D, Dv, block_q, block_k): lengths 1 and 97, Tq != Tk both ways, odd head dims,
# blocks that do not divide the lengths, blocks larger than the lengths, blocks of 1.
SHAPES = [
    (1, 1, 1, 1, 4, 4, 64, 64), (1, 2, 97, 97, 16, 16, 16, 32), (1, 2, 37, 53, 8, 5, 16, 16),
    (1, 2, 53, 37, 8, 8, 16, 16), (2, 1, 64, 64, 3, 7, 16, 16), (1, 1, 5, 130, 59, 3, 4, 64),
    (1, 2, 130, 5, 6, 6, 64, 4), (1, 1, 9, 9, 2, 2, 1, 1), (2, 2, 33, 33, 8, 8, 32, 32),
]
ids = ["x".join(map(str, s[:6])) + f"-b{s[6]}x{s[7]}" for s in SHAPES]


# ------------------------------------------------------------------------ online softmax
@pytest.mark.parametrize("block", [1, 3, 7, 50, 64])
def test_online_stats_equal_max_and_logsumexp(block):
    x = _randn(4, 50, scale=30.0)
    m, l = online_softmax_stats(x, block)
    assert_matches(m, x.amax(-1))
    assert_matches(m + torch.log(l), torch.logsumexp(x, -1))
    assert_matches(online_softmax(x, block), stable_softmax(x))


def test_online_stats_all_masked_row_and_huge_scores():
    x = _randn(3, 20, scale=1e4, dtype=torch.float32)
    x[1] = float("-inf")
    x[2, :15] = float("-inf")                        # the first blocks of the row are all masked
    m, l = online_softmax_stats(x, 4)
    assert m[1] == float("-inf") and l[1] == 0 and torch.isfinite(l).all()
    assert_matches(online_softmax(x, 4), stable_softmax(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_online_stats_keep_float32_for_low_precision(dtype):
    x = _randn(2, 3, 33, dtype=dtype, scale=4.0)
    m, l = online_softmax_stats(x, 8)
    assert m.dtype == l.dtype == torch.float32
    assert_matches(m + torch.log(l), torch.logsumexp(x.float(), -1))
    assert online_softmax(x, 8).dtype == dtype


def test_online_update_merges_two_halves_exactly():
    # The update on [a | b] equals folding b into the statistics of a: the rescaling step.
    x = _randn(5, 16, scale=5.0)
    m0 = torch.full((5,), float("-inf"), dtype=x.dtype)
    l0 = torch.zeros(5, dtype=x.dtype)
    m1, l1, alpha1, _ = online_softmax_update(m0, l0, x[:, :8])
    assert (alpha1 == 0).all()                        # nothing to rescale before the first block
    m2, l2, alpha2, p2 = online_softmax_update(m1, l1, x[:, 8:])
    assert_matches(alpha2, torch.exp(m1 - m2))
    assert_matches(p2, torch.exp(x[:, 8:] - m2[:, None]))
    assert_matches(m2 + torch.log(l2), torch.logsumexp(x, -1))


# ------------------------------------------------------------------------ forward
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_forward_matches_attention_and_logsumexp(shape, causal):
    B, H, Tq, Tk, D, Dv, bq, bk = shape
    q, k, v = _qkv(B, H, Tq, Tk, D, Dv)
    o, lse = flash_attention_forward(q, k, v, causal=causal, block_q=bq, block_k=bk)
    assert_matches(o, attention(q, k, v, mask=_mask(Tq, Tk, causal)))
    want = _lse_oracle(q, k, causal)
    assert lse.dtype == torch.float64 and torch.equal(torch.isinf(lse), torch.isinf(want))
    assert_matches(torch.where(torch.isinf(want), 0.0, lse), torch.where(torch.isinf(want), 0.0, want))


@pytest.mark.parametrize("Tq,Tk", [(7, 7), (3, 11), (11, 3), (97, 64)])
def test_forward_matches_sdpa_math_backend(Tq, Tk):
    q, k, v = _qkv(2, 2, Tq, Tk, 8, dtype=torch.float32, seed=3)
    keep = causal_mask(Tq, Tk)
    with sdpa_kernel([SDPBackend.MATH]):
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    rows = keep.any(-1)                               # SDPA's math backend: rows with no key are not compared
    got, _ = flash_attention_forward(q, k, v, causal=True, block_q=4, block_k=8)
    assert_matches(got[..., rows, :], want[..., rows, :])


def test_causal_is_bottom_right_when_tq_differs_from_tk():
    # One query and five keys: under the bottom-right rule the single query sees every key.
    q, k, v = _qkv(1, 1, 1, 5, 4)
    o, _ = flash_attention_forward(q, k, v, causal=True, block_q=1, block_k=2)
    assert_matches(o, attention(q, k, v))
    # Top-left alignment would let it see only key 0: that is a different answer.
    assert not torch.allclose(o, v[..., :1, :])


def test_fully_masked_rows_give_zeros_and_minus_inf_lse():
    q, k, v = _qkv(2, 2, 9, 4, 6)                    # Tq > Tk, causal: queries 0..4 see no key
    o, lse = flash_attention_forward(q, k, v, causal=True, block_q=4, block_k=2)
    assert torch.equal(o[..., :5, :], torch.zeros_like(o[..., :5, :]))
    assert (lse[..., :5] == float("-inf")).all() and torch.isfinite(lse[..., 5:]).all()
    assert_matches(o, attention(q, k, v, mask=causal_mask(9, 4)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_keeps_dtype_and_float32_statistics(dtype):
    q, k, v = _qkv(1, 2, 40, 40, 16, dtype=dtype, seed=5)
    o, lse = flash_attention_forward(q, k, v, causal=True, block_q=16, block_k=8)
    assert o.dtype == dtype and lse.dtype == torch.float32
    assert_matches(o, attention(q.float(), k.float(), v.float(), mask=causal_mask(40, 40)).to(dtype))


def test_scale_argument():
    q, k, v = _qkv(1, 1, 10, 12, 4)
    o, lse = flash_attention_forward(q, k, v, scale=0.3, block_q=4, block_k=5)
    assert_matches(o, attention(q, k, v, scale=0.3))
    assert_matches(lse, _lse_oracle(q, k, False, scale=0.3))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op creates while active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_and_backward_hold_no_score_matrix(causal):
    # Every tensor the tiled passes create is at most a tile or a (T, D) slab, never (T, T).
    T, D, b = 128, 8, 32
    q, k, v = _qkv(1, 1, T, T, D, dtype=torch.float32)
    with _LargestTensor() as seen:
        o, lse = flash_attention_forward(q, k, v, causal=causal, block_q=b, block_k=b)
        flash_attention_backward(q, k, v, o, lse, torch.ones_like(o), causal=causal, block_q=b, block_k=b)
    assert seen.numel <= max(b * b, T * D) < T * T
    with _LargestTensor() as eager:
        attention(q, k, v)
    assert eager.numel == T * T


def test_causal_skips_key_blocks_past_the_diagonal():
    # NaN keys that no query may see sit in blocks the tiled loop must never read.
    q, k, v = _qkv(1, 1, 32, 32, 4, dtype=torch.float32)
    k2, v2 = k.clone(), v.clone()
    k2[..., 8:, :] = float("nan")
    v2[..., 8:, :] = float("nan")
    o, _ = flash_attention_forward(q, k2, v2, causal=True, block_q=8, block_k=8)
    assert torch.isfinite(o[..., :8, :]).all()        # the first query block never touched keys 8..31
    assert_matches(o[..., :8, :], attention(q[..., :8, :], k[..., :8, :], v[..., :8, :], mask=causal_mask(8, 8)))


# ------------------------------------------------------------------------ backward
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [SHAPES[i] for i in (2, 3, 5, 6)], ids=[ids[i] for i in (2, 3, 5, 6)])
def test_backward_matches_autograd_through_attention(shape, causal):
    B, H, Tq, Tk, D, Dv, bq, bk = shape
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, H, Tq, Tk, D, Dv, seed=7))
    do = _randn(B, H, Tq, Dv, seed=11)
    want = torch.autograd.grad(attention(q, k, v, mask=_mask(Tq, Tk, causal)), (q, k, v), do)
    got = torch.autograd.grad(flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk), (q, k, v), do)
    for name, g, w in zip("qkv", got, want):
        assert_matches(g, w, what=f"d{name}")


def test_backward_function_directly_and_masked_rows_have_zero_gradient():
    q, k, v = _qkv(1, 2, 9, 4, 5, 3, seed=2)
    o, lse = flash_attention_forward(q, k, v, causal=True, block_q=2, block_k=3)
    do = _randn(1, 2, 9, 3, seed=4)
    dq, dk, dv = flash_attention_backward(q, k, v, o, lse, do, causal=True, block_q=2, block_k=3)
    assert torch.equal(dq[..., :5, :], torch.zeros_like(dq[..., :5, :]))
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    want = torch.autograd.grad(attention(qr, kr, vr, mask=causal_mask(9, 4)), (qr, kr, vr), do)
    for g, w in zip((dq, dk, dv), want):
        assert_matches(g, w)


@pytest.mark.parametrize("causal,Tq,Tk", [(False, 5, 7), (True, 7, 4)])
def test_gradcheck_float64(causal, Tq, Tk):
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 2, Tq, Tk, 3, 2, seed=9))
    assert torch.autograd.gradcheck(lambda a, b, c: flash_attention(a, b, c, causal=causal, block_q=2, block_k=3),
                                    (q, k, v))


def test_autograd_function_saves_no_probability_matrix():
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 1, 20, 30, 4))
    o = FlashAttentionFunction.apply(q, k, v, True, 8, 8, None)
    saved = o.grad_fn.saved_tensors
    assert all(t.shape[-1] != 30 or t.dim() < 4 or t.shape[-2] != 20 for t in saved)
    assert {tuple(t.shape) for t in saved} == {(1, 1, 20, 4), (1, 1, 30, 4), (1, 1, 20)}


def test_low_precision_gradients_keep_dtype():
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 1, 16, 16, 8, dtype=torch.bfloat16))
    flash_attention(q, k, v, causal=True, block_q=4, block_k=4).sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16


# ------------------------------------------------------------------------ input errors
@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "8"])
def test_bad_block_sizes_name_the_value(bad):
    q, k, v = _qkv(1, 1, 4, 4, 2)
    with pytest.raises(ValueError, match=f"block_q must be a positive integer, got {bad!r}"):
        flash_attention(q, k, v, block_q=bad)
    with pytest.raises(ValueError, match="block_k"):
        flash_attention_forward(q, k, v, block_k=bad)


@pytest.mark.parametrize("shapes,match", [
    (((1, 1, 4, 8), (1, 1, 5, 6), (1, 1, 5, 6)), r"head dim D.*q \(1, 1, 4, 8\), k \(1, 1, 5, 6\)"),
    (((1, 1, 4, 8), (1, 1, 5, 8), (1, 1, 6, 8)), r"number of keys Tk.*v \(1, 1, 6, 8\)"),
    (((2, 1, 4, 8), (1, 1, 5, 8), (1, 1, 5, 8)), r"leading .*q \(2, 1, 4, 8\)"),
])
def test_mismatched_shapes_name_the_numbers(shapes, match):
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v)


def test_mixed_dtypes_are_a_type_error():
    with pytest.raises(TypeError, match="share a dtype"):
        flash_attention(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 4))


# ------------------------------------------------------------------------ IO count
def _simulate_algorithm_1(n, d, sram):
    """Walk the paper's Algorithm 1 block by block and count every element moved to/from HBM."""
    b_c = math.ceil(sram / (4 * d))
    b_r = min(b_c, d)
    rows = lambda start, size: min(size, n - start)            # noqa: E731
    moved = n * d + 2 * n                                       # line 2: O = 0, l = 0, m = -inf in HBM
    for j in range(0, n, b_c):
        moved += 2 * rows(j, b_c) * d                           # line 6: K_j, V_j
        for i in range(0, n, b_r):
            r = rows(i, b_r)
            moved += 2 * r * d + 2 * r                          # line 8: Q_i, O_i, l_i, m_i
            moved += r * d + 2 * r                              # lines 12-13: O_i, l_i, m_i
    return moved


@pytest.mark.parametrize("n,d,sram", [(1, 1, 1), (97, 8, 100), (1024, 64, 100_000), (1000, 64, 98_304),
                                      (4096, 128, 49_152), (300, 16, 64), (513, 64, 1 << 20)])
def test_flash_io_equals_a_block_by_block_simulation(n, d, sram):
    assert hbm_accesses(n, d, sram, "flash") == _simulate_algorithm_1(n, d, sram)


def test_standard_io_and_the_asymptotics_of_theorem_2():
    assert hbm_accesses(3, 2, 10, "standard") == 4 * 3 * 2 + 4 * 9
    d, sram = 64, 98_304
    ratios = [hbm_accesses(n, d, sram, "flash") / (n * n * d * d / sram) for n in (8192, 16384, 32768, 65536)]
    # Θ(N²d²/M): the ratio falls towards its limit 3·(4d/M)·(M/d)... = 12 + 16/d (T_c ≈ 4nd/M)
    assert ratios == sorted(ratios, reverse=True) and 12 + 16 / d < ratios[-1] < 1.01 * (12 + 16 / d)
    assert hbm_accesses(4096, d, sram, "flash") < hbm_accesses(4096, d, sram, "standard")
    assert flash_block_sizes(64, 98_304) == (64, 384)


@pytest.mark.parametrize("args", [(0, 8, 100), (8, 0, 100), (8, 8, -1), (8.0, 8, 100)])
def test_io_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="positive integer"):
        hbm_accesses(*args)
    with pytest.raises(ValueError, match="algorithm"):
        hbm_accesses(8, 8, 100, "naive")


# ------------------------------------------------------------------------ SDPA with a backend
@pytest.mark.parametrize("backend", [None, "flash", "math"])
@pytest.mark.parametrize("Tq,Tk", [(9, 9), (4, 11)])
def test_sdpa_pinned_backends_match_attention(backend, Tq, Tk):
    q, k, v = _qkv(2, 3, Tq, Tk, 8, dtype=torch.float32, seed=1)
    assert_matches(sdpa(q, k, v, backend=backend), attention(q, k, v))
    assert_matches(sdpa(q, k, v, backend=backend, causal=True), attention(q, k, v, mask=causal_mask(Tq, Tk)))


def test_sdpa_unknown_backend_and_refused_backend():
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="unknown SDPA backend 'fastest'"):
        sdpa(q, q, q, backend="fastest")
    ok, skipped = probe_sdpa_backends(device="cpu", D=8)
    assert "math" in ok and set(ok) | set(skipped) == set(SDPA_BACKENDS)
    for name in skipped:
        with pytest.raises(RuntimeError):
            sdpa(q, q, q, backend=name)


def test_sdpa_kernel_name_on_cpu():
    q = _randn(1, 2, 16, 8, dtype=torch.float32)
    assert sdpa_kernel_name(q, q, q, backend="math") == "math"
    assert sdpa_kernel_name(q, q, q, dropout_p=0.5) == "math"          # no fused CPU kernel takes dropout
    if "flash" in probe_sdpa_backends(["flash"], device="cpu", D=8)[0]:
        assert sdpa_kernel_name(q, q, q) == "_scaled_dot_product_flash_attention_for_cpu"


def test_bench_backend_helpers_are_built_on_flash_sdpa():
    impls, skipped = bench.sdpa_backend_impls(["math", "cudnn"], device="cpu", D=8)
    q = _randn(1, 1, 5, 8, dtype=torch.float32)
    assert_matches(impls["sdpa[math]"](q, q, q), attention(q, q, q))
    assert "sdpa[cudnn]" in skipped


# ------------------------------------------------------------------------ the flash benchmark suite
def test_flash_suite_on_cpu_has_every_field_and_plots(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    result = bench.run_flash_suite([16], device="cpu", D=8, tokens=32, width=16, repeats=1, warmup=0,
                                   matmul_sizes=(64,))
    assert result["suite"] == "flash" and result["metadata"]["matmul_tflops"] > 0
    assert {r["impl"] for r in result["rows"]} == {"naive", "sdpa", "sdpa[flash]", "sdpa[math]", "attncourse.flash"}
    for r in result["rows"]:
        assert r["B"] == 32 // r["T"] and r["H"] == 2 and r["mode"] in ("fwd", "fwd+bwd")
        assert r["seconds"] > 0 and r["peak_bytes"] >= 0
        flops = bench.attention_core_flops(r["T"], 8, B=r["B"], H=2, mode=r["mode"])
        assert r["tflops"] == pytest.approx(flops / r["seconds"] / 1e12)
        assert r["fraction_of_matmul_peak"] == pytest.approx(r["tflops"] / result["metadata"]["matmul_tflops"])
    cases = {(d["dtype"], d["case"]): d["kernel"] for d in result["dispatch"]}
    assert cases[("float32", "dropout_p = 0.1")] == "math"
    assert "failed" not in bench.format_flash_table(result["rows"])
    bench.plot_flash_suite(result).savefig(tmp_path / "flash.png")


def test_attention_core_flops_convention():
    assert bench.attention_core_flops(128, 64) == 4 * 128 * 128 * 64 == bench.attention_flops(128, 0, 64)
    assert bench.attention_core_flops(128, 64, B=2, H=3, causal=True, mode="fwd+bwd") == 3.5 * 6 * 4 * 128 * 128 * 64 / 2
    with pytest.raises(ValueError, match="mode"):
        bench.attention_core_flops(8, 8, mode="backward")


def test_cli_flash_suite_writes_json(tmp_path):
    from attncourse.cli import main

    out = tmp_path / "flash.json"
    assert main(["bench", "flash", "--lengths", "16", "--tokens", "16", "--width", "8", "--head-dim", "8",
                 "--repeats", "1", "--warmup", "0", "--modes", "fwd", "--no-tiled", "--out", str(out)]) == 0
    import json
    data = json.loads(out.read_text())
    assert data["suite"] == "flash" and {r["impl"] for r in data["rows"]} == {"naive", "sdpa", "sdpa[flash]", "sdpa[math]"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU benchmark of chapter 07)")
@pytest.mark.gpu
def test_flash_suite_on_cuda_runs_every_backend():
    result = bench.run_flash_suite([256], device="cuda", D=64, tokens=512, width=128, repeats=1, warmup=1,
                                   matmul_sizes=(1024,))
    assert {"naive", "sdpa", "sdpa[math]"} <= {r["impl"] for r in result["rows"]}
    assert len({r["impl"] for r in result["rows"]}) + len(result["skipped"]) == 6
