"""Chapter 09: quality vs KV-cache size for Hkv = H .. 1, and MHA -> GQA conversion by mean-pooling.

    python benchmarks/gqa_sweep.py               # writes benchmarks/results/gqa_sweep.json

Task: :func:`attncourse.data.lookback` with lags (1, 3, 5) over 4 input tokens — every scored position
needs three lookups at fixed offsets, and its answer is one of 64 tuples. Model: a one-layer
``TinyGPT`` of width 32 with H = 8 query heads (D = 4), trained with :func:`attncourse.model.train`
(AdamW, lr 3e-3, batch 64) for the same number of steps for every configuration, several seeds;
held-out accuracy on 1000 fixed test sequences.

1. **Sweep**: Hkv in {8, 4, 2, 1}, with the KV cache per token and layer (2·Hkv·D numbers) and the
   parameter count. **Control**: one query head of width 32 (H = Hkv = 1, D = 32): one K/V head
   like MQA, but with as many cached numbers per token as MHA — it separates "how many K/V heads"
   from "how many cached numbers".
2. **Conversion** (Ainslie et al. 2023): train MHA (Hkv = 8), convert to Hkv = 2 by mean-pooling
   each group's K/V projection heads (:func:`attncourse.gqa.convert_to_gqa`), measure accuracy at
   once and after ``uptrain`` more steps; against GQA-2 trained from scratch for the same ``uptrain``
   steps, and (controls) the same conversion keeping only the first head of each group, and random
   K/V projections.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from attncourse import data  # noqa: E402
from attncourse.bench import metadata, write_result  # noqa: E402
from attncourse.gqa import convert_to_gqa  # noqa: E402
from attncourse.model import TinyGPT, accuracy, train  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gqa_sweep.json")
TASK = dict(length=16, lags=(1, 3, 5), vocab_size=4)
VOCAB = data.lookback_vocab(TASK["vocab_size"], len(TASK["lags"]))
MODEL = dict(vocab_size=VOCAB, block_size=TASK["length"], d_model=32, n_layers=1)
BATCH, LR = 64, 3e-3


def batches(seed: int):
    g = torch.Generator().manual_seed(1000 + seed)
    return lambda step: data.lookback(BATCH, generator=g, **TASK)


def new_model(n_heads: int, n_kv_heads: int, seed: int) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(n_heads=n_heads, n_kv_heads=n_kv_heads, **MODEL)


def cache_numbers(m: TinyGPT) -> int:
    a = m.blocks[0].attn
    return 2 * a.n_kv_heads * a.d_head                     # K and V numbers per token and layer


def sweep(steps: int, seeds, test) -> list[dict]:
    rows = []
    for H, hkv, label in [(8, 8, "MHA"), (8, 4, "GQA-4"), (8, 2, "GQA-2"), (8, 1, "MQA"), (1, 1, "control: 1 head")]:
        for seed in seeds:
            m = new_model(H, hkv, seed)
            res = train(m, batches(seed), steps=steps, lr=LR)
            acc = accuracy(m, test)
            rows.append({"label": label, "n_heads": H, "n_kv_heads": hkv, "head_dim": MODEL["d_model"] // H,
                         "seed": seed, "steps": steps, "accuracy": acc, "final_loss": res.losses[-1],
                         "cache_numbers_per_token": cache_numbers(m),
                         "parameters": sum(p.numel() for p in m.parameters()), "seconds": res.seconds})
            print(f"{label:<16} seed {seed}: accuracy {acc:.3f}  ({res.seconds:.0f} s)", flush=True)
    return rows


@torch.no_grad()
def _first_head(model: TinyGPT, new_kv: int) -> TinyGPT:
    """Control: keep the first K/V head of each group instead of the mean."""
    out = convert_to_gqa(model, new_kv)
    for src, dst in zip(model.blocks, out.blocks):
        a, b = src.attn, dst.attn
        r, D = a.n_kv_heads // new_kv, a.d_head
        for name in ("w_k", "w_v"):
            w = getattr(a, name).weight.view(a.n_kv_heads, D, -1)[::r]      # heads 0, r, 2r, ...
            getattr(b, name).weight.copy_(w.reshape(new_kv * D, -1))
    return out


@torch.no_grad()
def _random_kv(model: TinyGPT, new_kv: int, seed: int) -> TinyGPT:
    """Control: freshly initialised K/V projections (everything else kept)."""
    out = convert_to_gqa(model, new_kv)
    torch.manual_seed(seed)
    for blk in out.blocks:
        for name in ("w_k", "w_v"):
            nn.init.normal_(getattr(blk.attn, name).weight, std=0.02)
    return out


def conversion(steps: int, uptrain: int, seeds, test, new_kv: int = 2) -> list[dict]:
    rows = []
    for seed in seeds:
        mha = new_model(8, 8, seed)
        train(mha, batches(seed), steps=steps, lr=LR)
        base = accuracy(mha, test)
        variants = {"mean-pool": convert_to_gqa(mha, new_kv), "first head": _first_head(mha, new_kv),
                    "random K/V": _random_kv(mha, new_kv, seed)}
        row = {"seed": seed, "steps": steps, "uptrain_steps": uptrain, "n_kv_heads": new_kv, "mha_accuracy": base}
        for name, m in variants.items():
            row[f"{name}: converted"] = accuracy(m, test)
            train(m, batches(10_000 + seed), steps=uptrain, lr=LR)
            row[f"{name}: uptrained"] = accuracy(m, test)
        scratch = new_model(8, new_kv, seed)
        train(scratch, batches(10_000 + seed), steps=uptrain, lr=LR)
        row["from scratch, uptrain steps"] = accuracy(scratch, test)
        mha_more = new_model(8, 8, seed)                   # control: MHA given the extra steps too
        mha_more.load_state_dict(mha.state_dict())
        train(mha_more, batches(10_000 + seed), steps=uptrain, lr=LR)
        row["MHA + uptrain steps"] = accuracy(mha_more, test)
        rows.append(row)
        print("conversion, seed", seed, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--uptrain", type=int, default=60)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    test = data.lookback(1000, seed=12345, **TASK)
    t0 = time.perf_counter()
    result = {"suite": "gqa_sweep",
              "metadata": metadata("cpu", task={**TASK, "function": "attncourse.data.lookback"}, model=MODEL,
                                   batch=BATCH, lr=LR, test_sequences=1000,
                                   command="python benchmarks/gqa_sweep.py"),
              "sweep": sweep(args.steps, seeds, test),
              "conversion": conversion(args.steps, args.uptrain, seeds, test)}
    result["metadata"]["total_seconds"] = time.perf_counter() - t0
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
