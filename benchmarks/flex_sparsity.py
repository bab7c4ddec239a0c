"""Does a sparse pattern make attention faster? Dense SDPA with a boolean mask vs compiled FlexAttention.

    python benchmarks/flex_sparsity.py                      # T = 2048 and 4096, writes the JSON below
    python benchmarks/flex_sparsity.py --lengths 2048 --out /tmp/flex.json

For each length ``T`` and each pattern (full, causal, causal windows, BigBird, Longformer,
Sparse Transformer strided/fixed, block-diagonal) it measures, forward only, on the CPU:

* ``sdpa_mask``: ``torch.nn.functional.scaled_dot_product_attention`` with the pattern as a dense
  ``(T, T)`` boolean mask — the kernel computes every score and then masks it;
* ``flex``: ``torch.compile(flex_attention)`` with the pattern's ``BlockMask`` (128 × 128 tiles),
  which visits only the tiles that are not empty;
* ``sdpa_nomask``: SDPA without a mask, once per length, the dense baseline;

plus the pattern's element density (fraction of the ``T × T`` scores kept), its tile density
(fraction of tiles computed, :func:`attncourse.sparse.block_density`), the compile time of the
first FlexAttention call of each pattern, and ``max |flex - sdpa_mask|`` as a correctness check.
Times are medians of ``--repeats`` calls, FlexAttention and SDPA alternating so that both
see the same load. The result is written as JSON with
:func:`attncourse.bench.metadata` (device, torch version, threads, date) to
``benchmarks/results/flex_sparsity.json``; chapter 06 plots it. Run it on an otherwise idle
machine: compilation takes tens of seconds per pattern on 2 cores, the whole run several minutes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attncourse import bench
from attncourse import masks as M
from attncourse import sparse as S

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flex_sparsity.json"


def patterns(t: int, block: int) -> dict[str, M.MaskMod]:
    """The patterns measured at length ``t``: name -> mask_mod (self-attention, Tq = Tk = t)."""
    pats = {"full": M.full(), "causal": M.causal()}
    w = t // 2
    while w >= block:
        pats[f"causal window {w}"] = M.and_masks(M.causal(), M.sliding_window(w))
        w //= 2
    l = round(t ** 0.5)
    pats[f"strided l={l}"] = S.strided(l)
    pats[f"fixed l={block} c=8"] = S.fixed(block, 8)
    pats[f"longformer w={block} +global"] = S.longformer(block, global_positions=[0])
    pats[f"bigbird b={block} w=3 g=1 r=2"] = S.bigbird(t, block, window=3, n_global=1, n_random=2, seed=0)
    pats[f"block diagonal {block}"] = M.document(torch.arange(t).div(block, rounding_mode="floor")[None])
    return pats


def interleaved(fa, fb, *, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fa()`` and ``fb()``, timed alternately (a, b, a, b, ...).

    On a shared machine the load drifts; alternating gives both the same conditions, so their
    ratio is more trustworthy than two medians taken one after the other.
    """
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def run(lengths, *, heads: int, head_dim: int, block: int, repeats: int, seed: int) -> dict:
    from torch.nn.attention.flex_attention import flex_attention

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in lengths:
        q, k, v = (torch.randn(1, heads, t, head_dim, generator=gen) for _ in range(3))  # (B, H, T, D)
        with torch.no_grad():
            nomask = bench.time_fn(F.scaled_dot_product_attention, q, k, v, repeats=repeats)
        print(f"T={t}: sdpa without a mask {1e3 * nomask:.1f} ms", flush=True)
        for name, mod in patterns(t, block).items():
            mask = S.pattern_mask(mod, t)                                       # (T, T) bool
            block_mask = S.flex_block_mask(mod, t, block=block)
            # A fresh compilation per pattern. Without the reset, dynamo stops recompiling after its
            # recompile limit (8) and silently runs flex_attention *eagerly*, which materialises the
            # scores and is many times slower. dynamic=False: one specialised kernel per (pattern, T);
            # with "automatic dynamic" the constants of later mask_mods became symbolic and torch 2.13's
            # CPU template generated C++ that does not compile (seen with the fixed pattern).
            torch._dynamo.reset()
            flex = torch.compile(flex_attention, dynamic=False, fullgraph=True)
            with torch.no_grad():
                t0 = time.perf_counter()
                out_flex = flex(q, k, v, block_mask=block_mask)                 # compiles (or recompiles)
                first = time.perf_counter() - t0
                out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                t_flex, t_sdpa = interleaved(
                    lambda: flex(q, k, v, block_mask=block_mask),
                    lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), repeats=repeats)
            # Rows with no key at all: SDPA gives NaN, FlexAttention zeros; none of these patterns has one.
            err = float((out_flex - out_sdpa).abs().max())
            row = {"T": t, "pattern": name, "density": S.density(mask),
                   "tile_density": S.block_density(mask, block), "sdpa_mask_s": t_sdpa, "flex_s": t_flex,
                   "sdpa_nomask_s": nomask, "flex_first_call_s": first, "max_abs_diff": err}
            rows.append(row)
            print(f"  {name:<30} density {row['density']:6.1%}  tiles {row['tile_density']:6.1%}  "
                  f"sdpa+mask {1e3 * t_sdpa:7.1f} ms  flex {1e3 * t_flex:7.1f} ms  "
                  f"ratio {t_flex / t_sdpa:5.2f}  (first call {first:5.1f} s, diff {err:.1e})", flush=True)
    return {"suite": "flex_sparsity", "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block", type=int, default=128, help="tile size of the BlockMask (default 128)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. how loaded the machine was)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args.lengths, heads=args.heads, head_dim=args.head_dim, block=args.block,
                 repeats=args.repeats, seed=args.seed)
    result["metadata"] = bench.metadata(
        "cpu", B=1, H=args.heads, D=args.head_dim, dtype="float32", block=args.block, repeats=args.repeats,
        statistic="median seconds, forward only, torch.no_grad(); flex and sdpa_mask timed alternately",
        command="python benchmarks/flex_sparsity.py" + ("" if args.lengths == [2048, 4096]
                                                        else " --lengths " + " ".join(map(str, args.lengths))),
        total_seconds=round(time.perf_counter() - start, 1), note=args.note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} in {result['metadata']['total_seconds']} s")


if __name__ == "__main__":
    main()
