"""attncourse.bench returns sane structures. No test here asserts a timing."""
from __future__ import annotations

import json
import math

import pytest
import torch

import attncourse
from attncourse import bench
from attncourse.cli import main

ROW_KEYS = {"impl", "T", "seconds", "peak_bytes"}
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_time_fn_returns_positive_median_and_counts_calls():
    calls = []
    t = bench.time_fn(lambda x: calls.append(x), 1, repeats=3, warmup=2)
    assert isinstance(t, float) and t >= 0.0 and math.isfinite(t)
    assert len(calls) == 5  # 2 warmup + 3 timed


def test_time_fn_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        bench.time_fn(lambda: None, repeats=0)


@pytest.mark.parametrize("n", [1_000, 250_000])
def test_peak_memory_at_least_the_allocated_tensor(n):
    peak = bench.peak_memory(lambda: torch.empty(n, dtype=torch.float32))
    assert isinstance(peak, int)
    assert peak >= 4 * n


def test_peak_memory_counts_a_temporary_that_is_freed():
    def temp():
        x = torch.ones(500_000)  # 2 MB, freed before returning
        return float(x.sum())

    assert bench.peak_memory(temp) >= 4 * 500_000


def test_peak_memory_of_nothing_is_small():
    assert 0 <= bench.peak_memory(lambda: None) < 4096


def test_eager_attention_holds_the_score_matrix_and_sdpa_does_not():
    T, D = 512, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, T, D, generator=g) for _ in range(3))
    scores = 4 * T * T  # one float32 (Tq, Tk) matrix
    eager = bench.peak_memory(attncourse.attention, q, k, v)
    fused = bench.peak_memory(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert eager >= scores
    assert fused < eager


def test_sweep_attention_rows():
    rows = bench.sweep_attention([8, 16], B=1, H=2, D=8, repeats=1, warmup=0)
    assert [(r["impl"], r["T"]) for r in rows] == [
        ("attncourse", 8), ("sdpa", 8), ("attncourse", 16), ("sdpa", 16)]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["seconds"] >= 0 and isinstance(r["peak_bytes"], int) and r["peak_bytes"] >= 0


def test_sweep_attention_custom_impl_and_no_memory():
    rows = bench.sweep_attention([4], H=1, D=4, impls={"zeros": lambda q, k, v: torch.zeros_like(q)},
                                 repeats=1, warmup=0, memory=False)
    assert rows == [{"impl": "zeros", "T": 4, "seconds": rows[0]["seconds"], "peak_bytes": None}]


def test_sweep_attention_records_errors_when_asked():
    def broken(q, k, v):
        raise RuntimeError("out of memory (simulated)")

    impls = {"ok": lambda q, k, v: q, "broken": broken}
    with pytest.raises(RuntimeError, match="simulated"):
        bench.sweep_attention([4], H=1, D=4, impls=impls, repeats=1, warmup=0)
    rows = bench.sweep_attention([4], H=1, D=4, impls=impls, repeats=1, warmup=0, on_error="record")
    assert rows[0]["impl"] == "ok" and rows[0]["seconds"] is not None
    assert rows[1]["seconds"] is None and rows[1]["peak_bytes"] is None and "simulated" in rows[1]["error"]
    assert "failed" in bench.format_table(rows)


def test_sweep_attention_rejects_bad_length():
    with pytest.raises(ValueError, match="lengths"):
        bench.sweep_attention([0], repeats=1, warmup=0)


def test_loglog_slope_of_a_power_law():
    xs = [64, 128, 256, 512]
    assert bench.loglog_slope(xs, [3.0 * x**2 for x in xs]) == pytest.approx(2.0)
    assert bench.loglog_slope(xs, [x for x in xs]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bench.loglog_slope([1], [1])


def test_format_table_has_one_line_per_row():
    rows = [{"impl": "a", "T": 8, "seconds": 1e-3, "peak_bytes": 2**20},
            {"impl": "b", "T": 8, "seconds": 2e-3, "peak_bytes": None}]
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 3 and "1.00" in lines[1] and "n/a" in lines[2]


def test_metadata_names_device_torch_date_threads():
    meta = bench.metadata("cpu")
    assert meta["device"] == "cpu" and meta["device_name"]
    assert meta["torch_version"] == torch.__version__
    assert meta["threads"] == torch.get_num_threads()
    assert "T" in meta["date"]  # ISO 8601


def test_cpu_backend_probe_reports_skips_with_reasons():
    impls, skipped = bench.sdpa_backend_impls(["math", "cudnn"], device="cpu", D=8)
    assert "sdpa[math]" in impls  # the math backend runs everywhere
    assert set(impls) | set(skipped) == {"sdpa[math]", "sdpa[cudnn]"}
    assert all(isinstance(why, str) and why for why in skipped.values())


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "results.json"
    rc = main(["bench", "sdpa", "--lengths", "8", "16", "--device", "cpu", "--heads", "1",
               "--head-dim", "8", "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"suite", "metadata", "rows", "skipped"}
    assert data["suite"] == "sdpa" and data["skipped"] == []
    meta = data["metadata"]
    for key in ("device", "device_name", "torch_version", "date", "threads", "dtype", "B", "H", "D"):
        assert key in meta, key
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["H"] == 1
    assert {(r["impl"], r["T"]) for r in data["rows"]} == {
        ("attncourse", 8), ("sdpa", 8), ("attncourse", 16), ("sdpa", 16)}
    assert all(set(r) == ROW_KEYS for r in data["rows"])
    printed = capsys.readouterr().out
    assert "attncourse" in printed and "wrote" in printed


def test_cli_cuda_without_gpu_exits_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["bench", "sdpa", "--lengths", "8", "--device", "cuda"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err and "Traceback" not in err


def test_cli_invalid_device_is_a_message(capsys):
    assert main(["bench", "sdpa", "--lengths", "8", "--device", "tpu9"]) == 2
    assert "--device" in capsys.readouterr().err


def test_cli_rejects_unknown_suite(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nope"])
    assert exc.value.code == 2


@cuda_only
@pytest.mark.gpu
def test_cuda_peak_memory_and_backends():
    n = 1 << 20
    assert bench.peak_memory(lambda x: torch.empty(n, device="cuda") + 0, torch.zeros(1, device="cuda")) >= 4 * n
    impls, skipped = bench.sdpa_backend_impls(device="cuda", dtype=torch.float16)
    assert "sdpa[math]" in impls
    assert len(impls) + len(skipped) == 4
    rows = bench.sweep_attention([64], H=1, D=64, dtype=torch.float16, device="cuda", impls=impls,
                                 repeats=1, warmup=0)
    assert all(set(r) == ROW_KEYS and r["peak_bytes"] >= 0 for r in rows)


@pytest.mark.parametrize("n, c, dk, dv", [(1, 8, 8, 8), (17, 12, 5, 3), (96, 64, 64, 64)])
def test_attention_flops_equals_torch_flop_counter(n, c, dk, dv):
    from torch.utils.flop_counter import FlopCounterMode

    from attncourse.multihead import self_attention

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, c, generator=g)
    w_q, w_k, w_v = torch.randn(c, dk, generator=g), torch.randn(c, dk, generator=g), torch.randn(c, dv, generator=g)
    with FlopCounterMode(display=False) as counter:
        self_attention(x, w_q, w_k, w_v)
    assert bench.attention_flops(n, c, dk, dv) == counter.get_total_flops()
