"""Measure attention instead of describing it: time, peak memory and sweeps over length.

Used by the book (chapter 01 measures the O(T²) cost) and by the command line::

    attncourse bench sdpa --lengths 128 256 512 --device cpu --out results.json
    attncourse bench flash --device cuda --out benchmarks/results/flash_gpu.json   # chapter 07

The SDPA backends themselves (``sdpa(..., backend=...)``, the probe of which ones run here)
live in :mod:`attncourse.flash`; this module only times them.

Benchmarks are separate from tests: tests check that these helpers return sane structures,
never that something is fast.

How memory is measured
----------------------
* **CUDA**: ``torch.cuda.reset_peak_memory_stats`` then ``max_memory_allocated`` minus what
  was allocated before the call: the peak of *extra* memory held by PyTorch's caching allocator.
* **CPU**: PyTorch has no allocator statistics on CPU, so :func:`peak_memory` runs the call
  under ``torch.profiler.profile(profile_memory=True)``, which records one event per tensor
  allocation (+bytes) and free (-bytes). Sorted by time, their running sum is the memory the
  call holds at each moment; its maximum is the peak. It counts tensor storage only (what the
  allocator hands out), not Python objects or the process's resident size, which the system
  allocator keeps around after frees and so cannot show a peak honestly. For eager attention
  with no mask this gives three ``Tq×Tk`` float32 matrices (``4·Tq·Tk`` bytes each) alive at
  once — the raw scores, the scaled scores and the softmax temporaries; chapter 01 prints
  the ratio and ``tests/test_bench.py`` checks the lower bound of one matrix.
  The profiler prints start/stop lines on the C-level stderr, which a Jupyter kernel would
  show as cell output; the helpers here silence fd 2 while it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Iterable, Sequence

import torch

from attncourse.flash import SDPA_BACKENDS

__all__ = [
    "time_fn", "peak_memory", "dispatched_ops", "sweep_attention", "default_impls", "sdpa_backend_impls",
    "loglog_slope", "format_table", "device_name", "metadata", "run_sdpa_suite", "add_parser",
    "attention_flops", "attention_core_flops", "matmul_tflops", "sdpa_dispatch_table", "DISPATCH_CASES",
    "run_flash_suite", "format_flash_table", "plot_flash_suite",
]


# ------------------------------------------------------------------------- cost model
def attention_flops(n: int, d_model: int, d_k: int, d_v: int | None = None) -> int:
    """Matrix-multiply FLOPs of single-head self-attention on ``n`` tokens (a multiply-add = 2).

    ``X W_Q``, ``X W_K``, ``X W_V`` cost ``2 n C (2 d_k + d_v)`` (linear in ``n``); ``Q Kᵀ`` and
    ``A V`` cost ``2 n² (d_k + d_v)`` (quadratic). Softmax and scaling are not counted: they are
    ``O(n²)`` elementwise work, not matrix multiplies. Equals ``torch.utils.flop_counter``'s count.
    """
    d_v = d_k if d_v is None else d_v
    return 2 * n * d_model * (2 * d_k + d_v) + 2 * n * n * (d_k + d_v)


# ----------------------------------------------------------------------------- helpers
def _cuda_device(args: Iterable) -> torch.device | None:
    """The device of the first CUDA tensor among ``args``, else None."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_cuda:
            return a.device
    return None


def _cuda_in_use(args: Iterable) -> bool:
    """Whether a call may have queued CUDA work we must wait for before reading the clock."""
    if not torch.cuda.is_available():
        return False
    if _cuda_device(args) is not None:
        return True
    return torch.cuda.is_initialized()  # closures over CUDA tensors: a sync is cheap and safe


def _sync_target(args: Iterable):
    """What to synchronise around a timed call: False (CPU only), a CUDA device, or None (current)."""
    args = list(args)
    if not _cuda_in_use(args):
        return False
    return _cuda_device(args)  # None -> the current CUDA device


def _sync(target) -> None:
    if target is not False:
        torch.cuda.synchronize(target)


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence C-level writes to fd 2 (the profiler prints start/stop lines there).

    Python-level ``sys.stderr`` is untouched, so real errors raised inside still show.
    """
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real fd (some embedded shells)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


# ----------------------------------------------------------------------------- time
def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1, **kwargs) -> float:
    """Median wall-clock seconds of ``fn(*args, **kwargs)`` over ``repeats`` runs.

    ``warmup`` untimed calls come first (lazy initialisation, kernel selection, caches).
    On CUDA the device is synchronised before and after each call, because kernel launches
    return before the work is done. The median ignores a single run slowed down by another
    process sharing the machine.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_fn: need repeats >= 1 and warmup >= 0, got {repeats=}, {warmup=}")
    cuda = _sync_target(list(args) + list(kwargs.values()))
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        _sync(cuda)
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        _sync(cuda)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- memory
def _cpu_memory_events(prof) -> list[tuple[int, int]]:
    """``(time_ns, bytes)`` of every CPU allocation (+) and free (-) the profiler recorded."""
    results = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if results is None:
        raise RuntimeError("peak_memory: this torch.profiler exposes no kineto results; "
                           "cannot read allocation events on CPU")
    out = []
    for e in results.events():
        if e.name() != "[memory]":
            continue
        dev = e.device_type()
        if dev is not None and str(dev).split(".")[-1].upper() != "CPU":
            continue
        out.append((e.start_ns(), int(e.nbytes())))
    out.sort(key=lambda x: x[0])  # allocation order; the running sum needs time order
    return out


def peak_memory(fn: Callable, *args, **kwargs) -> int:
    """Peak extra bytes allocated while ``fn(*args, **kwargs)`` runs (tensor storage).

    CUDA, when a tensor argument lives on a GPU: the caching allocator's
    ``max_memory_allocated`` on that GPU minus what was allocated before the call (for a
    closure over CUDA tensors, pass one of them as an argument so the GPU is measured).
    CPU otherwise: the maximum of the running sum of the profiler's allocation/free events
    (see the module docstring). Memory that the call returns (its output) counts, since it is
    held at the end of the call. Never negative.
    """
    dev = _cuda_device(list(args) + list(kwargs.values()))
    if dev is not None:
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn(*args, **kwargs)
        torch.cuda.synchronize(dev)
        return max(0, int(torch.cuda.max_memory_allocated(dev) - base))

    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr_fd():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(*args, **kwargs)
    running = peak = 0
    for _, nbytes in _cpu_memory_events(prof):
        running += nbytes
        peak = max(peak, running)
    return int(peak)


def dispatched_ops(fn: Callable, *args, contains: str = "", **kwargs) -> list[str]:
    """Names of the operators (``aten::...``) one call of ``fn`` dispatched to, in first-call order.

    Shows which kernel really ran, e.g. that CPU SDPA calls
    ``aten::_scaled_dot_product_flash_attention_for_cpu``. ``contains`` filters the names.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if _cuda_in_use(list(args) + list(kwargs.values())):
        activities.append(ProfilerActivity.CUDA)
    with _quiet_stderr_fd():
        with profile(activities=activities) as prof:
            fn(*args, **kwargs)
    names = []
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        if contains in e.name and e.name not in names:
            names.append(e.name)
    return names


# ----------------------------------------------------------------------------- sweeps
def default_impls() -> dict[str, Callable]:
    """The two implementations the course compares: the eager reference and torch SDPA."""
    import attncourse

    return {
        "attncourse": attncourse.attention,
        "sdpa": torch.nn.functional.scaled_dot_product_attention,
    }


def sdpa_backend_impls(names: Sequence[str] = tuple(SDPA_BACKENDS), *, device="cpu", dtype=torch.float32,
                       D: int = 64) -> tuple[dict[str, Callable], dict[str, str]]:
    """SDPA pinned to each backend that can run here: ``({"sdpa[flash]": fn, ...}, {skipped: why})``.

    A thin wrapper over :func:`attncourse.flash.probe_sdpa_backends` and
    :func:`attncourse.flash.sdpa` (the one place the course pins SDPA backends). Each backend is
    probed on a tiny input of the given device/dtype/head dim; one that raises (not compiled in,
    wrong GPU, unsupported dtype) is reported in the second dict instead.
    """
    from attncourse.flash import probe_sdpa_backends, sdpa

    ok, skipped = probe_sdpa_backends(names, device=device, dtype=dtype, D=D)
    impls = {f"sdpa[{name}]": functools.partial(sdpa, backend=name) for name in ok}
    return impls, {f"sdpa[{name}]": why for name, why in skipped.items()}


def sweep_attention(lengths: Sequence[int], *, B: int = 1, H: int = 4, D: int = 64,
                    dtype: torch.dtype = torch.float32, device="cpu",
                    impls: dict[str, Callable] | None = None, repeats: int = 5, warmup: int = 1,
                    memory: bool = True, seed: int = 0, on_error: str = "raise") -> list[dict]:
    """Time and peak memory of each implementation at each length ``T`` (self-attention, Tq = Tk).

    Inputs ``q, k, v: (B, H, T, D)`` are drawn once per length (fixed ``seed``) and shared by
    all implementations; each ``impl(q, k, v)`` must return ``(B, H, T, D)``.

    Returns rows ``{"impl", "T", "seconds", "peak_bytes"}`` (``peak_bytes`` is ``None`` when
    ``memory=False``), ordered by length, then by implementation.
    ``on_error="record"`` turns a ``RuntimeError`` in one implementation (out of memory at a
    large ``T``, a backend refusing a shape) into a row with ``seconds = peak_bytes = None`` and
    an ``"error"`` message, and goes on; the default ``"raise"`` lets it propagate.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"sweep_attention: on_error must be 'raise' or 'record', got {on_error!r}")
    impls = default_impls() if impls is None else impls
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for T in lengths:
        if int(T) != T or T < 1:
            raise ValueError(f"sweep_attention: lengths must be positive integers, got {T!r}")
        # (B, H, T, D), drawn on CPU for reproducibility across devices, then moved
        q, k, v = (torch.randn(B, H, int(T), D, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
        for name, fn in impls.items():
            try:
                with torch.no_grad():
                    seconds = time_fn(fn, q, k, v, repeats=repeats, warmup=warmup)
                    peak = peak_memory(fn, q, k, v) if memory else None
            except RuntimeError as exc:  # includes torch.cuda.OutOfMemoryError
                if on_error == "raise":
                    raise
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                rows.append({"impl": name, "T": int(T), "seconds": None, "peak_bytes": None,
                             "error": f"{type(exc).__name__}: {msg}"})
                if q.is_cuda:
                    torch.cuda.empty_cache()
                continue
            rows.append({"impl": name, "T": int(T), "seconds": seconds, "peak_bytes": peak})
    return rows


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the exponent ``p`` in ``y ∝ x^p``."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    if len(lx) < 2:
        raise ValueError("loglog_slope needs at least two points")
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise ValueError("loglog_slope needs at least two different x values")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of sweep rows: one line per (impl, T)."""
    lines = [f"{'impl':<18}{'T':>7}{'time (ms)':>12}{'peak (MiB)':>13}"]
    for r in rows:
        if r.get("seconds") is None:
            lines.append(f"{r['impl']:<18}{r['T']:>7}   failed: {r.get('error', 'no result')}")
            continue
        mem = "n/a" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.2f}"
        lines.append(f"{r['impl']:<18}{r['T']:>7}{1e3 * r['seconds']:>12.3f}{mem:>13}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- metadata
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device="cpu") -> str:
    """Human-readable name of the device results were measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def write_result(result: dict, path: str | os.PathLike) -> None:
    """Write a benchmark's result as indented JSON (making its folder) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")


def metadata(device="cpu", **extra) -> dict:
    """Where and when a measurement was taken: device, torch version, date, threads."""
    device = torch.device(device)
    meta = {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        meta["cuda_version"] = torch.version.cuda
        meta["cudnn_version"] = torch.backends.cudnn.version()
    meta.update(extra)
    return meta


# ----------------------------------------------------------------------------- CLI
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


_DEFAULT_LENGTHS = {"sdpa": {"cpu": [128, 256, 512, 1024], "cuda": [128, 256, 512, 1024]},
                    "flash": {"cpu": [128, 256, 512], "cuda": [512, 1024, 2048, 4096, 8192, 16384]}}


def run_sdpa_suite(lengths: Sequence[int], *, device="cpu", dtype: torch.dtype | None = None, B: int = 1,
                   H: int = 4, D: int = 64, repeats: int = 5, warmup: int = 1,
                   backends: Sequence[str] | None = None) -> dict:
    """The ``bench sdpa`` suite: the eager reference vs SDPA, plus SDPA pinned to each backend.

    ``backends=None`` means every backend on CUDA and none on CPU. The default dtype is
    float16 on CUDA (the flash backend needs fp16/bf16) and float32 on CPU.
    Returns ``{"suite", "metadata", "rows", "skipped"}``, JSON-serialisable; a point that failed
    (e.g. out of memory) is a row with ``seconds = None`` and an ``"error"`` message.
    """
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    impls = default_impls()
    if backends is None:
        backends = tuple(SDPA_BACKENDS) if device.type == "cuda" else ()
    pinned, skipped = sdpa_backend_impls(backends, device=device, dtype=dtype, D=D) if backends else ({}, {})
    impls.update(pinned)
    rows = sweep_attention(lengths, B=B, H=H, D=D, dtype=dtype, device=device, impls=impls,
                           repeats=repeats, warmup=warmup, on_error="record")
    meta = metadata(device, dtype=str(dtype).replace("torch.", ""), B=B, H=H, D=D,
                    repeats=repeats, warmup=warmup, statistic="median seconds",
                    memory_method=("torch.cuda.max_memory_allocated" if device.type == "cuda"
                                   else "torch.profiler allocation events, running-sum peak"))
    return {"suite": "sdpa", "metadata": meta, "rows": rows,
            "skipped": [{"impl": k, "reason": v} for k, v in skipped.items()]}


# ----------------------------------------------------------------------------- the flash suite
def attention_core_flops(T: int, D: int, *, B: int = 1, H: int = 1, causal: bool = False, mode: str = "fwd") -> float:
    """FLOPs of the attention core ``softmax(QKᵀ)V`` for ``B·H`` heads of ``T`` tokens, head dim ``D``.

    The forward pass is :func:`attention_flops` without projections (``4T²D`` per head), halved
    when causal; the backward pass counts 2.5 forwards (five matrix products instead of two), so
    ``"fwd+bwd"`` is 3.5 forwards — the convention of flash-attention's own benchmark script,
    so TFLOP/s figures compare with the papers'.
    """
    f = B * H * attention_flops(T, 0, D) * (0.5 if causal else 1.0)
    factors = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}
    if mode not in factors:
        raise ValueError(f"attention_core_flops: mode must be one of {sorted(factors)}, got {mode!r}")
    return f * factors[mode]


def matmul_tflops(device="cpu", dtype: torch.dtype = torch.float32, sizes: Sequence[int] = (1024,),
                  repeats: int = 5, warmup: int = 2) -> dict:
    """Measured throughput of a square matmul ``(n, n) @ (n, n)`` (``2n³`` FLOPs): the device's practical peak.

    Returns ``{"tflops": best over sizes, "by_size": {n: tflops}}``.
    """
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = time_fn(torch.matmul, a, b, repeats=repeats, warmup=warmup)
        by_size[int(n)] = 2 * n ** 3 / t / 1e12
        del a, b
    return {"tflops": max(by_size.values()), "by_size": by_size}


def _flash_impls(device: torch.device, dtype: torch.dtype, D: int, backends, tiled: bool):
    from attncourse.flash import flash_attention, sdpa

    impls = {"naive": _naive, "sdpa": functools.partial(sdpa, backend=None)}
    pinned, skipped = sdpa_backend_impls(backends, device=device, dtype=dtype, D=D) if backends else ({}, {})
    impls.update(pinned)
    if tiled:
        impls["attncourse.flash"] = flash_attention
    return impls, skipped


def _naive(q, k, v, causal=False):
    """``attncourse.attention`` called like the fused kernels: ``fn(q, k, v, causal=...)``."""
    from attncourse.core import attention
    from attncourse.masks import causal_mask

    return attention(q, k, v, mask=causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None)


DISPATCH_CASES = {  # name -> keyword arguments of attncourse.flash.sdpa (plus an extra mask kind)
    "no mask": {},
    "causal, Tq = Tk (is_causal)": {"causal": True},
    "bool mask (Tq×Tk)": {"mask": "bool"},
    "float mask (Tq×Tk additive bias)": {"mask": "float"},
    "causal, Tq < Tk (explicit bottom-right mask)": {"causal": True, "tq": "half"},
    "dropout_p = 0.1": {"dropout_p": 0.1},
}


def sdpa_dispatch_table(device="cpu", dtypes: Sequence[torch.dtype] = (torch.float32,), T: int = 256,
                        D: int = 64, H: int = 2) -> list[dict]:
    """Which kernel SDPA runs for each case of :data:`DISPATCH_CASES` and each dtype, on this device.

    Rows ``{"dtype", "case", "kernel"}``; ``kernel`` is the ``aten::_scaled_dot_product_*`` op
    that ran (see :func:`attncourse.flash.sdpa_kernel_name`), ``"math"`` for the eager fallback,
    or ``"error: ..."``.
    """
    from attncourse.flash import sdpa_kernel_name

    rows = []
    for dtype in dtypes:
        for case, spec in DISPATCH_CASES.items():
            kw = dict(spec)
            tq = T // 2 if kw.pop("tq", None) == "half" else T
            q = torch.randn(1, H, tq, D, device=device, dtype=dtype)
            k = torch.randn(1, H, T, D, device=device, dtype=dtype)
            mask_kind = kw.pop("mask", None)
            if mask_kind == "bool":
                kw["mask"] = torch.rand(tq, T, device=device) > 0.2
            elif mask_kind == "float":
                kw["mask"] = torch.randn(tq, T, device=device, dtype=dtype)
            try:
                kernel = sdpa_kernel_name(q, k, k, **kw)
            except RuntimeError as exc:
                kernel = "error: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            rows.append({"dtype": str(dtype).replace("torch.", ""), "case": case, "kernel": kernel})
    return rows


def run_flash_suite(lengths: Sequence[int], *, device="cpu", dtype: torch.dtype | None = None, D: int = 64,
                    tokens: int = 16384, width: int = 2048, causal: bool = False,
                    modes: Sequence[str] = ("fwd", "fwd+bwd"), backends: Sequence[str] | None = None,
                    tiled: bool | None = None, repeats: int = 5, warmup: int = 2,
                    matmul_sizes: Sequence[int] | None = None, seed: int = 0) -> dict:
    """The ``bench flash`` suite: every SDPA backend and the naive reference, forward and forward+backward.

    For each length ``T`` the batch is ``B = max(1, tokens // T)`` and there are
    ``H = max(1, width // D)`` heads (the FlashAttention-2 paper's setup: 16k tokens per batch,
    width 2048). Each row reports the median time, the throughput in TFLOP/s
    (:func:`attention_core_flops`), its fraction of the bf16/fp16/fp32 matmul throughput measured in
    the same run (:func:`matmul_tflops`), and the peak extra memory. Implementations: ``naive``
    (``attncourse.attention``), ``sdpa`` (torch's own choice), ``sdpa[<backend>]`` pinned, and with
    ``tiled`` the course's Python-level tiled reference ``attncourse.flash`` (default: CPU only,
    where it is the point of comparison; on a GPU it launches thousands of tiny kernels).
    ``backends=None``: all four on CUDA, ``flash`` and ``math`` on CPU. A point that fails (out
    of memory, a backend refusing the inputs) is a row with ``seconds = None`` and an ``"error"``.
    Also records :func:`sdpa_dispatch_table` for the dtype used and float32.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if dtype is None:
        dtype = torch.bfloat16 if cuda else torch.float32
    if backends is None:
        backends = tuple(SDPA_BACKENDS) if cuda else ("flash", "math")
    if tiled is None:
        tiled = not cuda
    for m in modes:
        attention_core_flops(1, 1, mode=m)  # validates the mode names
    if matmul_sizes is None:
        matmul_sizes = (4096, 8192) if cuda else (512, 1024)
    H = max(1, width // D)
    impls, skipped = _flash_impls(device, dtype, D, backends, tiled)
    peak = matmul_tflops(device, dtype, matmul_sizes, repeats=repeats, warmup=warmup)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for T in lengths:
        if int(T) != T or T < 1:
            raise ValueError(f"run_flash_suite: lengths must be positive integers, got {T!r}")
        T = int(T)
        B = max(1, tokens // T)
        q, k, v = (torch.randn(B, H, T, D, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
        do = torch.randn(B, H, T, D, generator=gen).to(device=device, dtype=dtype)
        for name, fn in impls.items():
            for mode in modes:
                row = {"impl": name, "T": T, "B": B, "H": H, "mode": mode}
                try:
                    if mode == "fwd":
                        def call(q=q, k=k, v=v, fn=fn):
                            with torch.no_grad():
                                return fn(q, k, v, causal=causal)
                    else:
                        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

                        def call(qg=qg, kg=kg, vg=vg, fn=fn, do=do):
                            fn(qg, kg, vg, causal=causal).backward(do)
                            qg.grad = kg.grad = vg.grad = None
                    seconds = time_fn(call, q, repeats=repeats, warmup=warmup)
                    row["peak_bytes"] = peak_memory(call, q)
                except RuntimeError as exc:  # includes torch.cuda.OutOfMemoryError
                    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    row.update(seconds=None, tflops=None, fraction_of_matmul_peak=None, peak_bytes=None,
                               error=f"{type(exc).__name__}: {msg[:200]}")
                    if cuda:
                        torch.cuda.empty_cache()
                    rows.append(row)
                    continue
                flops = attention_core_flops(T, D, B=B, H=H, causal=causal, mode=mode)
                row.update(seconds=seconds, tflops=flops / seconds / 1e12,
                           fraction_of_matmul_peak=flops / seconds / 1e12 / peak["tflops"])
                rows.append(row)
        del q, k, v, do
        if cuda:
            torch.cuda.empty_cache()
    dtypes = [dtype] if dtype == torch.float32 else [dtype, torch.float32]
    meta = metadata(device, dtype=str(dtype).replace("torch.", ""), D=D, H=H, tokens=tokens, width=width,
                    causal=causal, modes=list(modes), repeats=repeats, warmup=warmup, statistic="median seconds",
                    matmul_tflops=peak["tflops"], matmul_tflops_by_size=peak["by_size"],
                    flop_convention="fwd 4·T²·D per head (halved if causal), fwd+bwd 3.5× fwd",
                    memory_method=("torch.cuda.max_memory_allocated" if cuda
                                   else "torch.profiler allocation events, running-sum peak"))
    return {"suite": "flash", "metadata": meta, "rows": rows,
            "skipped": [{"impl": k, "reason": v} for k, v in skipped.items()],
            "dispatch": sdpa_dispatch_table(device, dtypes, D=D)}


def format_flash_table(rows: Sequence[dict]) -> str:
    """A plain-text table of ``bench flash`` rows."""
    lines = [f"{'impl':<18}{'T':>7}{'mode':>9}{'time (ms)':>12}{'TFLOP/s':>10}{'of peak':>9}{'peak (MiB)':>12}"]
    for r in rows:
        head = f"{r['impl']:<18}{r['T']:>7}{r['mode']:>9}"
        if r.get("seconds") is None:
            lines.append(f"{head}   failed: {r.get('error', 'no result')}")
            continue
        lines.append(f"{head}{1e3 * r['seconds']:>12.3f}{r['tflops']:>10.3f}{100 * r['fraction_of_matmul_peak']:>8.1f}%"
                     f"{r['peak_bytes'] / 2**20:>12.1f}")
    return "\n".join(lines)


def plot_flash_suite(result: dict, modes: Sequence[str] | None = None):
    """Figure of a ``bench flash`` result: TFLOP/s and peak memory against ``T``, one line per implementation.

    One row of panels per mode (``"fwd"``, ``"fwd+bwd"``); the right-hand axis of the throughput
    panel reads as the fraction of the matmul throughput measured in the same run. Failed points
    (out of memory, a refused backend) are left out. Returns the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    meta = result["metadata"]
    modes = list(modes or meta.get("modes", ["fwd"]))
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.4 * len(modes)), squeeze=False)
    impls = list(dict.fromkeys(r["impl"] for r in result["rows"]))
    for row, mode in zip(axes, modes):
        ax_t, ax_m = row
        for name in impls:
            pts = [r for r in result["rows"] if r["impl"] == name and r["mode"] == mode and r.get("seconds")]
            if not pts:
                continue
            ts = [r["T"] for r in pts]
            ax_t.plot(ts, [r["tflops"] for r in pts], "o-", label=name)
            ax_m.plot(ts, [r["peak_bytes"] / 2**20 for r in pts], "o-", label=name)
        ax_t.set_xscale("log", base=2)
        ax_t.set_ylabel("TFLOP/s")
        peak = meta["matmul_tflops"]
        sec = ax_t.secondary_yaxis("right", functions=(lambda y: y / peak, lambda f: f * peak))
        sec.set_ylabel("fraction of matmul peak")
        ax_t.set_title(f"{mode}: throughput ({meta['dtype']}, D={meta['D']}, H={meta['H']}, "
                       f"{meta['tokens']} tokens per batch)", fontsize=9)
        ax_m.set_xscale("log", base=2)
        ax_m.set_yscale("log")
        ax_m.set_ylabel("peak extra memory (MiB)")
        ax_m.set_title(f"{mode}: memory", fontsize=9)
        for ax in row:
            ax.set_xlabel("sequence length T")
        ax_t.legend(fontsize=7)
    fig.suptitle(f"{meta['device_name']}, torch {meta['torch_version']}, {meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    return fig


def _bench(args) -> int:
    prog = "attncourse bench"
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        print(f"{prog}: invalid --device {args.device!r} ({exc}); use cpu or cuda", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: --device {args.device} asked for a GPU, but this torch ({torch.__version__}) "
              "sees no CUDA device. Run on a machine with an NVIDIA GPU and a CUDA build of torch, "
              "or use --device cpu.", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        print(f"{prog}: --device {args.device} does not exist; this machine has "
              f"{torch.cuda.device_count()} CUDA device(s)", file=sys.stderr)
        return 2
    if device.type not in ("cpu", "cuda"):
        print(f"{prog}: unsupported --device {args.device!r} (use cpu or cuda)", file=sys.stderr)
        return 2
    if args.lengths is None:
        args.lengths = _DEFAULT_LENGTHS[args.suite]["cuda" if device.type == "cuda" else "cpu"]
    if any(t < 1 for t in args.lengths):
        print(f"{prog}: every --lengths value must be >= 1, got {args.lengths}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = None if args.dtype == "auto" else _DTYPES[args.dtype]
    if args.suite == "flash":
        result = run_flash_suite(args.lengths, device=device, dtype=dtype, D=args.head_dim, tokens=args.tokens,
                                 width=args.width, causal=args.causal, modes=args.modes, backends=args.backends,
                                 tiled=args.tiled, repeats=args.repeats, warmup=args.warmup)
    else:
        result = run_sdpa_suite(args.lengths, device=device, dtype=dtype, B=args.batch, H=args.heads,
                                D=args.head_dim, repeats=args.repeats, warmup=args.warmup,
                                backends=args.backends)
    for s in result["skipped"]:
        print(f"skipped {s['impl']}: {s['reason']}", file=sys.stderr)
    m = result["metadata"]
    if args.suite == "flash":
        print(f"# {m['device_name']} ({m['device']}), torch {m['torch_version']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, "
              f"{m['dtype']}, {m['tokens']} tokens per batch, H={m['H']} D={m['D']}, causal={m['causal']}, "
              f"matmul {m['matmul_tflops']:.2f} TFLOP/s, {m['date']}")
        print(format_flash_table(result["rows"]))
    else:
        print(f"# {m['device_name']} ({m['device']}), torch {m['torch_version']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, "
              f"{m['dtype']}, B={m['B']} H={m['H']} D={m['D']}, {m['date']}")
        print(format_table(result["rows"]))
    if args.out:
        write_result(result, args.out)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``attncourse bench`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help="time and measure peak memory of attention implementations",
        description="Benchmark attention: median time and peak memory against sequence length. "
                    "Results are printed as a table and, with --out, written as JSON with the "
                    "device, torch version, date and thread count.")
    p.add_argument("suite", nargs="?", default="sdpa", choices=["sdpa", "flash"],
                   help="(default: sdpa) sdpa: the eager reference (attncourse.attention) vs torch SDPA, "
                        "and on CUDA SDPA pinned to each backend (flash, efficient, cudnn, math); "
                        "flash: chapter 07's benchmark — naive and every SDPA backend, forward and "
                        "forward+backward, time, TFLOP/s, fraction of the measured matmul peak, memory")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths T (default: sdpa 128 256 512 1024; "
                        "flash 512 ... 16384 on CUDA, 128 256 512 on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", *_DTYPES],
                   help="auto = float16 (sdpa) or bfloat16 (flash) on CUDA, float32 on CPU")
    p.add_argument("--batch", "-B", type=int, default=1, help="batch size B (default: 1)")
    p.add_argument("--heads", type=int, default=4, help="heads H (default: 4)")
    p.add_argument("--head-dim", type=int, default=64, help="head dim D (default: 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per point; the median is kept (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, printed with every result (default: 1, as the book's pages; "
                        "0 = torch's own default, all cores)")
    p.add_argument("--backends", nargs="*", choices=list(SDPA_BACKENDS), default=None,
                   help="SDPA backends to pin and measure (default: all on CUDA, none on CPU)")
    flash = p.add_argument_group("flash suite")
    flash.add_argument("--tokens", type=int, default=16384, help="B·T per point: B = tokens // T (default: 16384)")
    flash.add_argument("--width", type=int, default=2048, help="model width: H = width // D (default: 2048)")
    flash.add_argument("--causal", action="store_true", help="causal attention (FLOPs halved)")
    flash.add_argument("--modes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"],
                       help="forward only and/or forward+backward (default: both)")
    flash.add_argument("--tiled", action=argparse.BooleanOptionalAction, default=None,
                       help="also time the Python-level tiled reference attncourse.flash (default: CPU only)")
    p.add_argument("--out", help="write the results as JSON to this file (default: print only)")
    p.set_defaults(func=_bench)
    return p
