"""The comparison of chapter 13: the seed article's lost table, rebuilt from the course's results.

Every number in the table comes from code: a formula of the package evaluated on one fixed model
shape (the KV bytes), a committed benchmark JSON in ``benchmarks/results/`` (extrapolation,
decode speed, sparse-kernel speed, the GQA sweep), or a measurement the notebook makes and passes
in (``measured=``). Nothing is typed by hand; ``tests/test_compare.py`` recomputes each number from
its source and fails if the table and the source disagree.

    rows = comparison_rows()             # list of dicts, one per mechanism
    print(to_markdown(rows))

The columns:

* **changes** — which part of attention the mechanism changes (scores, mask, positions, kernel,
  cache, projections);
* **time** / **memory** — the cost of one attention layer over a sequence of ``T`` tokens
  (``D`` head width, ``W`` window, ``H``/``Hkv`` heads);
* **KV bytes/token** — what one token adds to the KV cache of :data:`SHAPE` (a Llama-2-7B-sized
  model: 32 layers, 32 heads of 128, 16-bit), and the cache of one 32k-token sequence;
* **exact** — whether it computes softmax attention exactly (a different mask or fewer K/V
  heads is a *different model*, trained as such, not an approximation);
* **extrapolation** — held-out accuracy at 4× the training length on chapter 11's recency task;
* **measured** — one measurement that backs the row, with its source;
* **used in** — models that use it (cited on the chapter's page).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from attncourse.kvcache import kv_cache_bytes

__all__ = ["SHAPE", "CONTEXT", "RESULTS", "load_result", "extrapolation_at", "kv_per_token",
           "comparison_rows", "to_markdown", "COLUMNS"]

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass(frozen=True)
class Shape:
    """The fixed model shape the KV-bytes column is computed for."""
    n_layers: int = 32
    n_heads: int = 32
    head_dim: int = 128
    dtype_bytes: int = 2
    window: int = 4096        # the sliding-window row (Mistral 7B's W)
    name: str = "32 layers × 32 heads of 128, 16-bit (Llama-2-7B-sized)"


SHAPE = Shape()
CONTEXT = 32 * 1024           # the context length of the "cache at 32k" figure

COLUMNS = ["mechanism", "chapter", "changes", "time", "memory", "KV bytes/token", "cache at 32k",
           "exact", "extrapolation 4×", "measured", "used in"]


def load_result(name: str, results: str | Path | None = None) -> dict | None:
    """A committed benchmark JSON (``benchmarks/results/<name>.json``), or None if absent."""
    path = Path(results or RESULTS) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def extrapolation_at(result: dict | None, variant: str, multiple: int = 4, task: str = "last_marked") -> float | None:
    """Mean held-out accuracy of ``variant`` at ``multiple`` × the training length (chapter 11's JSON)."""
    if result is None:
        return None
    for point in result["summary"][task][variant]:
        if point["multiple"] == multiple:
            return float(point["mean"])
    return None


def kv_per_token(n_kv_heads: int, shape: Shape = SHAPE) -> int:
    """Bytes one token adds to the cache of ``shape`` with ``n_kv_heads`` key/value heads."""
    return kv_cache_bytes(shape.n_layers, n_kv_heads, shape.head_dim, 1, dtype_bytes=shape.dtype_bytes)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _kib(n: float) -> str:
    return f"{n / 2**10:g} KiB"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _flex_row(flex: dict | None, pattern: str, T: int) -> dict | None:
    if flex is None:
        return None
    return next((row for row in flex["rows"] if row["pattern"] == pattern and row["T"] == T), None)


def _speedup(kv: dict | None, new_tokens: int) -> float | None:
    if kv is None:
        return None
    for row in kv["generation"]:
        if row["new_tokens"] == new_tokens:
            return float(row["speedup"])
    return None


def _sweep_accuracy(sweep: dict | None, label: str) -> float | None:
    if sweep is None:
        return None
    accs = [r["accuracy"] for r in sweep["sweep"] if r["label"] == label]
    return sum(accs) / len(accs) if accs else None


def comparison_rows(results: str | Path | None = None, measured: dict | None = None) -> list[dict]:
    """One row per mechanism; see the module docstring for the columns and their sources.

    ``measured`` may hold the notebook's own measurements: ``"dense_memory_slope"``,
    ``"window_memory_slope"``, ``"sdpa_memory_slope"``, ``"flash_memory_ratio"`` (naive / fused
    at the largest ``T``, with ``"flash_T"``), ``"permutation_changes"`` (dict scheme -> bool).
    """
    m = dict(measured or {})
    extra = load_result("extrapolation", results)
    flex = load_result("flex_sparsity", results)
    kv = load_result("kv_cache_speed", results)
    sweep = load_result("gqa_sweep", results)
    s = SHAPE
    mha, gqa8, mqa = kv_per_token(s.n_heads), kv_per_token(8), kv_per_token(1)
    window_cache = kv_cache_bytes(s.n_layers, 8, s.head_dim, min(CONTEXT, s.window), dtype_bytes=s.dtype_bytes)
    full = lambda per_token: _gib(per_token * CONTEXT)  # noqa: E731

    def fmt(x, spec, suffix=""):
        return "—" if x is None else f"{x:{spec}}{suffix}"

    perm = m.get("permutation_changes", {})
    win = _flex_row(flex, "causal window 128", 4096)
    flex_note = "—" if win is None else (f"FlexAttention takes {win['flex_s'] / win['sdpa_mask_s']:.2f}× the time of "
                                         f"dense-mask SDPA with {win['tile_density']:.0%} of tiles computed "
                                         f"(window 128, T = 4096)")
    from attncourse.multihead import attention_param_count
    c = s.n_heads * s.head_dim
    p1, ph = attention_param_count(c, 1), attention_param_count(c, s.n_heads)
    rows = [
        dict(mechanism="self-attention", chapter="02", changes="— (Q, K, V from one sequence)",
             time="O(T²·D)", memory="O(T²) scores (eager)", **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)},
             exact="yes", **{"extrapolation 4×": _pct(extrapolation_at(extra, "nope"))
                             + " (no positions)"},
             measured=f"eager memory slope {fmt(m.get('dense_memory_slope'), '.2f')} (log-log, this page)",
             **{"used in": "every Transformer"}),
        dict(mechanism="cross-attention", chapter="03", changes="K, V from another sequence",
             time="O(Tq·Tk·D)", memory="O(Tq·Tk)", **{"KV bytes/token": _kib(mha) + " of context",
                                                       "cache at 32k": "context only, computed once"},
             exact="yes", **{"extrapolation 4×": "—"}, measured="—",
             **{"used in": "T5, BART, Whisper, Flamingo, Stable Diffusion"}),
        dict(mechanism="multi-head", chapter="04", changes="scores split into H heads",
             time="O(T²·D·H)", memory="O(H·T²)", **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)},
             exact="yes", **{"extrapolation 4×": "—"}, measured=f"{p1:,} weights with H = 1, {ph:,} with H = {s.n_heads} (C = {c})",
             **{"used in": "every Transformer"}),
        dict(mechanism="sliding window", chapter="05", changes="mask: 0 ≤ i − j < W",
             time="O(T·W·D)", memory="O(T·W)",
             **{"KV bytes/token": _kib(gqa8) + " (GQA-8)", "cache at 32k": _gib(window_cache) + f" (W = {s.window})"},
             exact="yes, for its mask", **{"extrapolation 4×": "—"},
             measured=f"blocked memory slope {fmt(m.get('window_memory_slope'), '.2f')} (this page)",
             **{"used in": "Mistral 7B, Gemma 2/3 (local layers), Longformer"}),
        dict(mechanism="sparse patterns", chapter="06", changes="mask: strided / window + global / random",
             time="O(T·√T·D) strided; O(T·(W+G)·D)", memory="O(T·√T) / O(T·(W+G))",
             **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha) + " (strided keeps all keys)"},
             exact="yes, for its mask", **{"extrapolation 4×": "—"},
             measured=flex_note,
             **{"used in": "Sparse Transformer, GPT-3, Longformer, BigBird"}),
        dict(mechanism="FlashAttention", chapter="07", changes="kernel: tiles + online softmax",
             time="O(T²·D), fewer memory accesses", memory="O(T) extra",
             **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)}, exact="yes",
             **{"extrapolation 4×": "—"},
             measured=(f"fused SDPA memory slope {fmt(m.get('sdpa_memory_slope'), '.2f')}; naive needs "
                       f"{fmt(m.get('flash_memory_ratio'), '.0f', '×')} the memory at T = {m.get('flash_T', '—')}"),
             **{"used in": "PyTorch SDPA, training and serving stacks"}),
        dict(mechanism="MQA", chapter="08", changes="projections: 1 K/V head",
             time="O(T²·D·H)", memory="cache ÷ H", **{"KV bytes/token": _kib(mqa), "cache at 32k": full(mqa)},
             exact="a different model", **{"extrapolation 4×": "—"},
             measured=f"tiny lookback task: {_pct(_sweep_accuracy(sweep, 'MQA'))} (MHA {_pct(_sweep_accuracy(sweep, 'MHA'))})",
             **{"used in": "PaLM, Falcon 7B"}),
        dict(mechanism="GQA", chapter="09", changes="projections: Hkv K/V heads",
             time="O(T²·D·H)", memory="cache ÷ (H/Hkv)", **{"KV bytes/token": _kib(gqa8) + " (Hkv = 8)",
                                                              "cache at 32k": full(gqa8)},
             exact="a different model", **{"extrapolation 4×": "—"},
             measured=f"tiny lookback task, GQA-2: {_pct(_sweep_accuracy(sweep, 'GQA-2'))}",
             **{"used in": "Llama 2 70B, Llama 3, Mistral 7B"}),
        dict(mechanism="RoPE", chapter="10", changes="positions: rotate q, k",
             time="+O(T·D)", memory="—", **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)},
             exact="yes", **{"extrapolation 4×": f"{_pct(extrapolation_at(extra, 'rope'))}; with PI "
                                                  f"{_pct(extrapolation_at(extra, 'rope+pi'))}, YaRN "
                                                  f"{_pct(extrapolation_at(extra, 'rope+yarn'))}"},
             measured="order-sensitive: " + ("yes" if perm.get("rope") else "—" if "rope" not in perm else "no"),
             **{"used in": "Llama, Mistral, Falcon, Pythia, PaLM"}),
        dict(mechanism="ALiBi", chapter="11", changes="scores: bias −m·(i − j)",
             time="O(T²·D) (still quadratic)", memory="—", **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)},
             exact="yes", **{"extrapolation 4×": _pct(extrapolation_at(extra, "alibi"))},
             measured="order-sensitive: " + ("yes" if perm.get("alibi") else "—" if "alibi" not in perm else "no"),
             **{"used in": "BLOOM, MPT"}),
        dict(mechanism="KV cache", chapter="12", changes="cache: reuse past K, V",
             time="decode step O(T·D) not O(T²·D)", memory="2·L·Hkv·D per token",
             **{"KV bytes/token": _kib(mha), "cache at 32k": full(mha)}, exact="yes (identical tokens)",
             **{"extrapolation 4×": "—"},
             measured=f"{fmt(_speedup(kv, 512), '.1f', '×')} tokens/s at 512 new tokens",
             **{"used in": "every decoder at inference"}),
    ]
    for r in rows:
        assert set(r) == set(COLUMNS), set(r) ^ set(COLUMNS)
    return rows


def to_markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of ``rows`` (for ``IPython.display.Markdown``)."""
    cols = columns or COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)
