"""Pre-norm vs post-norm on the tiny model: how often does training work, with and without warmup?

    python benchmarks/norm_placement.py                   # the sweep chapter 04 plots (several minutes)
    python benchmarks/norm_placement.py --seeds 2 --out /tmp/norm.json

For each seed, each block layout (``prenorm=True``: ``x + f(norm(x))``; ``prenorm=False``:
``norm(x + f(x))``, the original Transformer) and each learning-rate schedule (no warmup, or a
linear warmup), it trains :class:`attncourse.model.TinyGPT` on :func:`attncourse.data.copying`
with :func:`attncourse.model.train` (AdamW, cosine decay, **no gradient clipping**, so that the
layouts are compared without the usual safety net) and records the loss every few steps, the
final loss and the held-out accuracy (500 sequences from a seed training never uses).
Everything except the layout and the schedule is the same within a seed: the same initial
weights (``torch.manual_seed(seed)`` before building) and the same batches.

The result is JSON with :func:`attncourse.bench.metadata` (device, torch version, threads,
date). ``book/04_multihead/transformer_block.ipynb`` loads and plots it. One thread, CPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attncourse import bench, data
from attncourse.model import TinyGPT, accuracy, train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "norm_placement.json"


def run(*, prenorm: bool, warmup: int, seed: int, n_layers: int, d_model: int, n_heads: int, lr: float,
        steps: int, batch: int, length: int, vocab: int, every: int, norm: str = "layer") -> dict:
    """Train one model; return its loss curve (every ``every`` steps), final loss and accuracy."""
    torch.manual_seed(seed)
    model = TinyGPT(vocab + 1, 2 * length, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    norm=norm, prenorm=prenorm)
    g = torch.Generator().manual_seed(1000 + seed)
    res = train(model, lambda step: data.copying(batch, length, vocab, generator=g), steps=steps, lr=lr,
                warmup=warmup, grad_clip=None)
    test = data.copying(500, length, vocab, seed=10**6)
    return {"prenorm": prenorm, "warmup": warmup, "seed": seed, "norm": norm,
            "losses": [round(x, 4) for x in res.losses[::every]] + [round(res.losses[-1], 4)],
            "final_loss": res.losses[-1], "accuracy": accuracy(model, test), "seconds": res.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=50, help="warmup steps of the warmup schedule")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--every", type=int, default=5, help="keep the loss every N steps")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    torch.set_num_threads(1)
    config = {"task": "copying", "length": args.length, "vocab": args.vocab, "n_layers": args.layers,
              "d_model": args.d_model, "n_heads": args.heads, "lr": args.lr, "steps": args.steps,
              "batch": args.batch, "warmups": [0, args.warmup], "grad_clip": None, "every": args.every}
    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        for prenorm in (True, False):
            for warmup in (0, args.warmup):
                r = run(prenorm=prenorm, warmup=warmup, seed=seed, n_layers=args.layers, d_model=args.d_model,
                        n_heads=args.heads, lr=args.lr, steps=args.steps, batch=args.batch,
                        length=args.length, vocab=args.vocab, every=args.every)
                runs.append(r)
                print(f"seed {seed} {'pre ' if prenorm else 'post'}-norm warmup {warmup:>3}: "
                      f"loss {r['final_loss']:.3f}, accuracy {r['accuracy']:.1%} ({r['seconds']:.1f} s)", flush=True)
    result = {"config": config, "runs": runs,
              "metadata": bench.metadata("cpu", total_seconds=round(time.perf_counter() - start, 1),
                                         command="python benchmarks/norm_placement.py " +
                                         " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                  if k != "out"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['metadata']['total_seconds']} s")


if __name__ == "__main__":
    main()
