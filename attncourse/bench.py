"""Measure attention instead of describing it: time, peak memory and sweeps over length.

Used by the book (chapter 01 measures the O(T²) cost) and by the command line::

    attncourse bench sdpa --lengths 128 256 512 --device cpu --out results.json

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
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Iterable, Sequence

import torch

__all__ = [
    "time_fn", "peak_memory", "dispatched_ops", "sweep_attention", "default_impls", "sdpa_backend_impls",
    "loglog_slope", "format_table", "device_name", "metadata", "run_sdpa_suite", "add_parser",
    "attention_flops",
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


_BACKENDS = {  # name in results -> SDPBackend member name
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def _pinned_sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def fn(q, k, v):
        with sdpa_kernel([backend]):  # only this backend; raises if it cannot run these inputs
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return fn


def sdpa_backend_impls(names: Sequence[str] = tuple(_BACKENDS), *, device="cpu", dtype=torch.float32,
                       D: int = 64) -> tuple[dict[str, Callable], dict[str, str]]:
    """SDPA pinned to each backend that can run here: ``({"sdpa[flash]": fn, ...}, {skipped: why})``.

    Each backend is probed on a tiny input of the given device/dtype/head dim; one that raises
    (not compiled in, wrong GPU, unsupported dtype) is reported in the second dict instead.
    """
    try:
        from torch.nn.attention import SDPBackend
    except ImportError as exc:  # very old torch
        return {}, {f"sdpa[{n}]": f"torch.nn.attention is unavailable ({exc})" for n in names}
    impls, skipped = {}, {}
    for name in names:
        label = f"sdpa[{name}]"
        member = getattr(SDPBackend, _BACKENDS.get(name, name.upper()), None)
        if member is None:
            skipped[label] = f"this torch ({torch.__version__}) has no SDPBackend for {name!r}"
            continue
        fn = _pinned_sdpa(member)
        x = torch.randn(1, 1, 8, D, device=device, dtype=dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # torch explains *why* a backend was refused in warnings
            try:
                fn(x, x, x)
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                why = [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
                if why:
                    reason += " — " + "; ".join(dict.fromkeys(why))
                hint = " (torch implements only the flash and math backends on CPU)" \
                    if torch.device(device).type == "cpu" else ""
                skipped[label] = f"cannot run on {device} with {str(dtype).replace('torch.', '')}{hint}: {reason}"
                continue
        impls[label] = fn
    return impls, skipped


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
        backends = tuple(_BACKENDS) if device.type == "cuda" else ()
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
    if any(t < 1 for t in args.lengths):
        print(f"{prog}: every --lengths value must be >= 1, got {args.lengths}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = None if args.dtype == "auto" else _DTYPES[args.dtype]
    result = run_sdpa_suite(args.lengths, device=device, dtype=dtype, B=args.batch, H=args.heads,
                            D=args.head_dim, repeats=args.repeats, warmup=args.warmup,
                            backends=args.backends)
    for s in result["skipped"]:
        print(f"skipped {s['impl']}: {s['reason']}", file=sys.stderr)
    m = result["metadata"]
    print(f"# {m['device_name']} ({m['device']}), torch {m['torch_version']}, {m['threads']} threads, "
          f"{m['dtype']}, B={m['B']} H={m['H']} D={m['D']}, {m['date']}")
    print(format_table(result["rows"]))
    if args.out:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``attncourse bench`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help="time and measure peak memory of attention implementations",
        description="Benchmark attention: median time and peak memory against sequence length. "
                    "Results are printed as a table and, with --out, written as JSON with the "
                    "device, torch version, date and thread count.")
    p.add_argument("suite", choices=["sdpa"],
                   help="sdpa: the eager reference (attncourse.attention) vs torch SDPA, "
                        "and on CUDA SDPA pinned to each backend (flash, efficient, cudnn, math)")
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024],
                   help="sequence lengths T (default: 128 256 512 1024)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", *_DTYPES],
                   help="auto = float16 on CUDA, float32 on CPU")
    p.add_argument("--batch", "-B", type=int, default=1, help="batch size B (default: 1)")
    p.add_argument("--heads", type=int, default=4, help="heads H (default: 4)")
    p.add_argument("--head-dim", type=int, default=64, help="head dim D (default: 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per point; the median is kept")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--backends", nargs="*", choices=list(_BACKENDS), default=None,
                   help="SDPA backends to pin and measure (default: all on CUDA, none on CPU)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.set_defaults(func=_bench)
    return p
