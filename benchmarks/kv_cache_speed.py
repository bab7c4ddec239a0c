"""Chapter 12: generation speed with and without a KV cache, and growing the cache by cat vs a buffer.

    python benchmarks/kv_cache_speed.py            # writes benchmarks/results/kv_cache_speed.json

Two measurements, each in one run on one machine (ratios are what to compare):

1. **tokens/s of TinyGPT.generate** for 64 .. 1024 new tokens after a 16-token prompt, greedy,
   batch 1: without a cache (every step recomputes the whole prefix), with the preallocated
   :class:`~attncourse.kvcache.KVCache`, and with :class:`~attncourse.kvcache.ConcatKVCache`
   (``torch.cat`` every step). The model (d_model 256, 8 heads, 4 layers, 3.2 M parameters) is
   large enough that its matrix products, not Python, dominate a full forward pass; every run
   checks that the three produce identical tokens.
2. **one cache append** at context ``t`` (one layer, ``Hkv = 8``, ``D = 128``, float32 — a
   Llama-3-8B-shaped layer): time of ``update`` for the buffer (writes one slot) and for cat
   (copies all ``t`` keys and values), and the bytes each allocates.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from attncourse.bench import metadata, peak_memory, time_fn, write_result  # noqa: E402
from attncourse.kvcache import ConcatKVCache, KVCache  # noqa: E402
from attncourse.model import TinyGPT  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "kv_cache_speed.json")
MODEL = dict(vocab_size=256, block_size=1040, d_model=256, n_heads=8, n_layers=4)
PROMPT = 16


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def generation_rows(ns, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = TinyGPT(**MODEL).eval()
    prompt = torch.randint(0, MODEL["vocab_size"], (1, PROMPT), generator=torch.Generator().manual_seed(1))
    model.generate(prompt, 8)                                         # warm-up
    rows = []
    for n in ns:
        cached = [_timed(lambda: model.generate(prompt, n)) for _ in range(repeats)]
        cat = [_timed(lambda: model.generate(prompt, n, caches=model.make_caches(1, PROMPT + n, kind="cat")))
               for _ in range(repeats)]
        plain = _timed(lambda: model.generate(prompt, n, use_cache=False))   # once: it is the slow one
        same = all(torch.equal(o, plain[0]) for o, _ in cached + cat)
        row = {"new_tokens": n, "prompt": PROMPT,
               "seconds_cache": min(s for _, s in cached), "seconds_cat": min(s for _, s in cat),
               "seconds_no_cache": plain[1], "identical_tokens": same}
        for k in ("cache", "cat", "no_cache"):
            row[f"tokens_per_s_{k}"] = n / row[f"seconds_{k}"]
        row["speedup"] = row["seconds_no_cache"] / row["seconds_cache"]
        rows.append(row)
        print(f"{n:>5} new tokens: cache {row['tokens_per_s_cache']:8.1f} tok/s, cat {row['tokens_per_s_cat']:8.1f}, "
              f"no cache {row['tokens_per_s_no_cache']:8.1f}  -> {row['speedup']:6.1f}x  identical={same}", flush=True)
    return rows


def append_rows(contexts, Hkv: int = 8, D: int = 128) -> list[dict]:
    rows = []
    k1 = torch.randn(1, Hkv, 1, D)
    for t in contexts:
        fill = torch.randn(1, Hkv, t, D)
        buf = KVCache(1, Hkv, t + 1, D)
        buf.update(fill, fill, 0)
        cat = ConcatKVCache(1, Hkv, D)
        cat.update(fill, fill, 0)

        def step_buf():
            buf.length = t                                            # rewrite slot t each time
            buf.update(k1, k1, t)

        def step_cat():
            cat.k, cat.v = cat.k[:, :, :t], cat.v[:, :, :t]          # back to t tokens (views)
            cat.update(k1, k1, t)

        row = {"context": t, "Hkv": Hkv, "D": D,
               "seconds_buffer": time_fn(step_buf, repeats=21, warmup=3),
               "seconds_cat": time_fn(step_cat, repeats=21, warmup=3),
               "alloc_bytes_buffer": peak_memory(step_buf), "alloc_bytes_cat": peak_memory(step_cat),
               "cache_bytes": 2 * fill.nbytes}
        rows.append(row)
        print(f"context {t:>6}: buffer {1e6 * row['seconds_buffer']:8.1f} us, cat {1e6 * row['seconds_cat']:9.1f} us, "
              f"cat allocates {row['alloc_bytes_cat'] / 2**20:7.2f} MiB per step", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=3, help="runs of the cached paths per point (the fastest kept)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        gen = generation_rows(args.tokens, args.repeats)
        app = append_rows(args.contexts)
    n_params = sum(p.numel() for p in TinyGPT(**MODEL).parameters())
    result = {"suite": "kv_cache_speed",
              "metadata": metadata("cpu", model=MODEL, parameters=n_params, dtype="float32", batch=1,
                                   statistic="generation: fastest of repeats (no cache: one run); append: median",
                                   command="python benchmarks/kv_cache_speed.py"),
              "generation": gen, "append": app}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
