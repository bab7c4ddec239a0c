"""Length extrapolation of position schemes, measured on tiny models (chapters 10 and 11).

    python benchmarks/extrapolation.py                       # about 45 trainings; tens of minutes on 2 CPU cores
    python benchmarks/extrapolation.py --seeds 0 --steps 50  # a quick smoke run (writes to --out!)

The same ``TinyGPT`` (2 layers, d_model 32, 4 heads of width 8) is trained at length ``L`` with
each position scheme — none (NoPE), learned absolute, sinusoidal, RoPE, ALiBi — on three synthetic
tasks, then evaluated at 1x, 2x, 4x and 8x ``L``. The RoPE model is also evaluated with position
interpolation, NTK-aware scaling and YaRN applied at test time (scale ``s`` = the length multiple,
no fine-tuning). Tasks (vocabulary: 16 plain tokens, and 16 "marked" tokens carrying a value):

* ``last_marked`` — each token is marked with probability 1/8; predict the value of the **most
  recent** marked token. Needs positions (recency: which marked token is the latest).
* ``lag_copy`` — random tokens; predict the token **3 positions back**. Needs exact offsets.
* ``one_marked`` — the **control**: one marked token somewhere; predict its value from there on.
  Needs no positions at all (the marked token is found by content), so a failure at long lengths
  here is not a position failure.

Writes ``benchmarks/results/extrapolation.json``: config, seeds, ``attncourse.bench.metadata``
(device, torch version, threads, date), per-run training time and loss, accuracy per task,
variant and length (mean, std and per seed), and per-position accuracy curves at the longest length.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attncourse import bench  # noqa: E402
from attncourse.data import IGNORE, LMBatch  # noqa: E402
from attncourse.model import TinyGPT, train  # noqa: E402
from attncourse.rope import ntk_frequencies, pi_frequencies, yarn_frequencies  # noqa: E402

V = 16                      # plain tokens 0..15; marked tokens 16..31 carry the value token - 16
EVAL_SEED = 12345           # the same evaluation sequences for every variant and seed


# ----------------------------------------------------------------------------- tasks
def last_marked(batch: int, T: int, g: torch.Generator, p: float = 1 / 8) -> LMBatch:
    """Predict the value of the most recent marked token (scored from the first marked token on)."""
    x = torch.randint(0, V, (batch, T), generator=g)
    marked = torch.rand(batch, T, generator=g) < p
    x = torch.where(marked, x + V, x)
    idx = torch.where(marked, torch.arange(T).expand(batch, T), torch.full((batch, T), -1))
    last = torch.cummax(idx, dim=1).values                               # (B, T): position of the latest marked token
    value = torch.gather(x, 1, last.clamp(min=0)) - V
    y = torch.where(last >= 0, value, torch.full_like(x, IGNORE))
    return LMBatch(x, y)


def lag_copy(batch: int, T: int, g: torch.Generator, lag: int = 3) -> LMBatch:
    """Predict the token ``lag`` positions back (scored from position ``lag`` on)."""
    x = torch.randint(0, V, (batch, T), generator=g)
    y = torch.full_like(x, IGNORE)
    y[:, lag:] = x[:, :-lag]
    return LMBatch(x, y)


def one_marked(batch: int, T: int, g: torch.Generator) -> LMBatch:
    """Control: one marked token at a random position; predict its value from there on."""
    x = torch.randint(0, V, (batch, T), generator=g)
    p = torch.randint(0, T, (batch,), generator=g)
    value = torch.randint(0, V, (batch,), generator=g)
    x[torch.arange(batch), p] = V + value
    after = torch.arange(T)[None, :] >= p[:, None]
    y = torch.where(after, value[:, None].expand(batch, T), torch.full_like(x, IGNORE))
    return LMBatch(x, y)


TASKS = {"last_marked": last_marked, "lag_copy": lag_copy, "one_marked": one_marked}
TASK_DESCRIPTIONS = {
    "last_marked": "the value of the most recent marked token (needs positions: recency)",
    "lag_copy": "the token 3 positions back (needs positions: an exact offset)",
    "one_marked": "control: the value of the only marked token (needs no positions)",
}
TRAINED = {"nope": "none", "learned": "learned", "sinusoidal": "sinusoidal", "rope": "rope", "alibi": "alibi"}
TEST_TIME = ("rope+pi", "rope+ntk", "rope+yarn")
VARIANT_DESCRIPTIONS = {
    "nope": "no position information (causal mask only)",
    "learned": "learned absolute position table (rows beyond L never trained)",
    "sinusoidal": "fixed sinusoids added to the token embeddings",
    "rope": "RoPE, base 10000, half-split",
    "rope+pi": "the RoPE model with position interpolation at test time (theta / s)",
    "rope+ntk": "the RoPE model with NTK-aware base scaling at test time",
    "rope+yarn": "the RoPE model with YaRN at test time (alpha 1, beta 32, attention factor 0.1 ln s + 1)",
    "alibi": "ALiBi, slopes 2^(-8k/4) = 1/4, 1/16, 1/64, 1/256",
}


# ----------------------------------------------------------------------------- one run
@torch.no_grad()
def evaluate(model: TinyGPT, task: str, T: int, n: int, bucket: int) -> dict:
    """Accuracy over the scored tokens of ``n`` evaluation sequences of length ``T``, overall and per bucket."""
    batch = TASKS[task](n, T, torch.Generator().manual_seed(EVAL_SEED + T))
    pred = torch.cat([model(batch.x[i:i + 16]).argmax(-1) for i in range(0, n, 16)])   # (n, T)
    scored = batch.y != IGNORE
    right = ((pred == batch.y) & scored).sum(0).double()                  # (T,) correct per position
    count = scored.sum(0).double()
    rb, cb = right.view(-1, bucket).sum(1), count.view(-1, bucket).sum(1)
    return {"accuracy": (right.sum() / count.sum()).item(),
            "per_bucket": [(r / c).item() if c > 0 else None for r, c in zip(rb, cb)]}


def run_one(job: dict) -> dict:
    torch.set_num_threads(1)
    task, variant, seed, cfg = job["task"], job["variant"], job["seed"], job["config"]
    L, m = cfg["L"], cfg["model"]
    torch.manual_seed(seed)
    model = TinyGPT(2 * V, L * max(cfg["multiples"]), d_model=m["d_model"], n_heads=m["n_heads"],
                    n_layers=m["n_layers"], pos=TRAINED[variant])
    g = torch.Generator().manual_seed(1000 + seed)
    res = train(model, lambda step: TASKS[task](cfg["batch"], L, g), steps=cfg["steps"], lr=cfg["lr"],
                warmup=cfg["warmup"])
    model.eval()
    out = {"task": task, "variant": variant, "seed": seed, "train_seconds": res.seconds,
           "final_loss": sum(res.losses[-20:]) / len(res.losses[-20:]), "eval": {}}
    D = m["d_model"] // m["n_heads"]
    for name in ([variant] + list(TEST_TIME)) if variant == "rope" else [variant]:
        per_mult = {}
        for mult in cfg["multiples"]:
            if name != "rope" and variant == "rope":
                s = float(mult)
                if mult == 1:
                    model.set_rope_frequencies(None)
                elif name == "rope+pi":
                    model.set_rope_frequencies(pi_frequencies(D, s))
                elif name == "rope+ntk":
                    model.set_rope_frequencies(ntk_frequencies(D, s))
                else:
                    model.set_rope_frequencies(*yarn_frequencies(D, s, L))
            per_mult[str(mult)] = evaluate(model, task, mult * L, cfg["eval_sequences"], cfg["bucket"])
        if variant == "rope":
            model.set_rope_frequencies(None)
        out["eval"][name] = per_mult
    print(f"  {task:<12} {variant:<11} seed {seed}: {res.seconds:5.1f} s, loss {out['final_loss']:.3f}, "
          + " ".join(f"{out['eval'][variant][str(k)]['accuracy']:.3f}" for k in cfg["multiples"]), flush=True)
    return out


# ----------------------------------------------------------------------------- summary
def summarize(runs: list[dict], cfg: dict) -> tuple[dict, dict]:
    summary, curves = {}, {}
    top = str(max(cfg["multiples"]))
    for task in TASKS:
        summary[task], curves[task] = {}, {}
        for variant in list(TRAINED) + list(TEST_TIME):
            src = "rope" if variant in TEST_TIME else variant
            mine = sorted((r for r in runs if r["task"] == task and r["variant"] == src), key=lambda r: r["seed"])
            if not mine:
                continue
            cells = []
            for mult in cfg["multiples"]:
                accs = torch.tensor([r["eval"][variant][str(mult)]["accuracy"] for r in mine], dtype=torch.float64)
                cells.append({"multiple": mult, "mean": accs.mean().item(),
                              "std": accs.std().item() if len(accs) > 1 else 0.0, "per_seed": accs.tolist()})
            summary[task][variant] = cells
            per = [r["eval"][variant][top]["per_bucket"] for r in mine]
            curves[task][variant] = [None if any(p[i] is None for p in per) else sum(p[i] for p in per) / len(per)
                                     for i in range(len(per[0]))]
    return summary, curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--eval-sequences", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "extrapolation.json"))
    args = ap.parse_args(argv)
    cfg = {"L": args.L, "multiples": [1, 2, 4, 8], "seeds": args.seeds, "steps": args.steps, "batch": 32,
           "lr": 3e-3, "warmup": 50, "optimizer": "AdamW (attncourse.model.train: cosine to lr/10, grad clip 1)",
           "model": {"d_model": 32, "n_heads": 4, "n_layers": 2, "mlp_ratio": 4, "norm": "LayerNorm, pre-norm"},
           "vocab": 2 * V, "eval_sequences": args.eval_sequences, "bucket": args.L // 4,
           "eval_seed": EVAL_SEED, "data_seed": "1000 + seed", "init_seed": "seed"}
    jobs = [{"task": t, "variant": v, "seed": s, "config": cfg} for t in args.tasks for v in TRAINED for s in args.seeds]
    print(f"{len(jobs)} trainings, {args.jobs} at a time", flush=True)
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(run_one, jobs))
    else:
        runs = [run_one(j) for j in jobs]
    summary, curves = summarize(runs, cfg)
    command = "python benchmarks/extrapolation.py" + "".join(
        f" {flag} {' '.join(map(str, val)) if isinstance(val, list) else val}"
        for flag, val, default in (("--seeds", args.seeds, [0, 1, 2]), ("--steps", args.steps, 400),
                                   ("--L", args.L, 32), ("--eval-sequences", args.eval_sequences, 128),
                                   ("--tasks", args.tasks, list(TASKS)))
        if val != default)
    torch.set_num_threads(1)
    result = {
        "benchmark": "extrapolation",
        "command": command,
        "metadata": bench.metadata("cpu", wall_seconds=round(time.perf_counter() - start, 1), jobs=args.jobs,
                                   threads_per_job=1, load_average=list(os.getloadavg())),
        "config": cfg,
        "tasks": list(args.tasks),
        "task_descriptions": {t: TASK_DESCRIPTIONS[t] for t in args.tasks},
        "chance": 1 / V,
        "variants": list(TRAINED) + list(TEST_TIME),
        "variant_descriptions": VARIANT_DESCRIPTIONS,
        "summary": summary,
        "curves_at_longest": {"multiple": max(cfg["multiples"]), "bucket": cfg["bucket"], "accuracy": curves},
        "runs": [{k: r[k] for k in ("task", "variant", "seed", "train_seconds", "final_loss")} for r in runs],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
