"""Chapter 13's table agrees with its sources: every number is recomputed here from the formula
or the committed benchmark JSON it comes from, independently of attncourse.compare."""
from __future__ import annotations

import json
import shutil

import pytest

from attncourse.compare import COLUMNS, RESULTS, comparison_rows, to_markdown

ROWS = {r["mechanism"]: r for r in comparison_rows()}


def load(name):
    return json.loads((RESULTS / f"{name}.json").read_text())


def test_every_mechanism_of_the_course_has_a_row():
    assert list(ROWS) == ["self-attention", "cross-attention", "multi-head", "sliding window", "sparse patterns",
                          "FlashAttention", "MQA", "GQA", "RoPE", "ALiBi", "KV cache"]
    assert [r["chapter"] for r in ROWS.values()] == ["02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
    md = to_markdown(list(ROWS.values()))
    assert md.count("\n") == len(ROWS) + 1 and all(c in md.splitlines()[0] for c in COLUMNS)


@pytest.mark.parametrize("mechanism, kv_heads", [("self-attention", 32), ("MQA", 1), ("GQA", 8), ("KV cache", 32)])
def test_kv_bytes_follow_the_formula(mechanism, kv_heads):
    per_token = 2 * 32 * kv_heads * 128 * 2                      # K and V, 32 layers, D = 128, 16-bit
    assert ROWS[mechanism]["KV bytes/token"].startswith(f"{per_token / 1024:g} KiB")
    assert ROWS[mechanism]["cache at 32k"] == f"{per_token * 32768 / 2**30:.2f} GiB"


def test_sliding_window_cache_is_capped_at_the_window():
    assert ROWS["sliding window"]["cache at 32k"].startswith(f"{2 * 32 * 8 * 128 * 2 * 4096 / 2**30:.2f} GiB")


def test_extrapolation_comes_from_chapter_11s_json():
    summary = load("extrapolation")["summary"]["last_marked"]
    at4 = {v: next(p["mean"] for p in pts if p["multiple"] == 4) for v, pts in summary.items()}
    assert ROWS["ALiBi"]["extrapolation 4×"] == f"{100 * at4['alibi']:.0f}%"
    rope = ROWS["RoPE"]["extrapolation 4×"]
    for v in ("rope", "rope+pi", "rope+yarn"):
        assert f"{100 * at4[v]:.0f}%" in rope
    assert ROWS["self-attention"]["extrapolation 4×"].startswith(f"{100 * at4['nope']:.0f}%")


def test_decode_speedup_comes_from_chapter_12s_json():
    row = next(r for r in load("kv_cache_speed")["generation"] if r["new_tokens"] == 512)
    assert row["identical_tokens"]
    assert abs(row["speedup"] - row["tokens_per_s_cache"] / row["tokens_per_s_no_cache"]) < 0.05 * row["speedup"]
    assert ROWS["KV cache"]["measured"].startswith(f"{row['speedup']:.1f}×")


def test_sparse_kernel_ratio_comes_from_chapter_06s_json():
    row = next(r for r in load("flex_sparsity")["rows"] if r["pattern"] == "causal window 128" and r["T"] == 4096)
    assert f"{row['flex_s'] / row['sdpa_mask_s']:.2f}×" in ROWS["sparse patterns"]["measured"]
    assert f"{row['tile_density']:.0%} of tiles" in ROWS["sparse patterns"]["measured"]


def test_gqa_sweep_comes_from_chapter_09s_json():
    sweep = load("gqa_sweep")["sweep"]
    mean = lambda label: sum(r["accuracy"] for r in sweep if r["label"] == label) / sum(  # noqa: E731
        1 for r in sweep if r["label"] == label)
    assert f"{100 * mean('MQA'):.0f}%" in ROWS["MQA"]["measured"]
    assert f"{100 * mean('GQA-2'):.0f}%" in ROWS["GQA"]["measured"]


def test_the_table_follows_its_sources(tmp_path):
    """Change a source and the table changes with it: nothing in it is typed by hand."""
    for p in RESULTS.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    data = json.loads((tmp_path / "extrapolation.json").read_text())
    for point in data["summary"]["last_marked"]["alibi"]:
        point["mean"] = 0.123
    (tmp_path / "extrapolation.json").write_text(json.dumps(data))
    rows = {r["mechanism"]: r for r in comparison_rows(results=tmp_path, measured={"dense_memory_slope": 1.98})}
    assert rows["ALiBi"]["extrapolation 4×"] == "12%"
    assert "1.98" in rows["self-attention"]["measured"]
    (tmp_path / "kv_cache_speed.json").unlink()
    assert comparison_rows(results=tmp_path)[-1]["measured"].startswith("—")
