"""attncourse.kvcache and cached decoding in attncourse.model, against independent oracles.

Oracles: the model's own uncached forward pass over the whole sequence (float64), attention
with an explicitly built sliding-window mask over all keys, an explicit loop over a block table,
the tensors' own ``nbytes``, and the formula written out by hand.
"""
from __future__ import annotations

import math

import pytest
import torch

from attncourse.core import attention
from attncourse.kvcache import (MODEL_CONFIGS, ConcatKVCache, KVCache, PagedKVCache, RollingKVCache,
                                cache_bytes_per_token, gather_blocks, kv_cache_bytes, model_cache_bytes,
                                paged_reservation, position_mask, preallocated_reservation)
from attncourse.masks import causal_mask, sliding_window_mask
from attncourse.model import TinyGPT
from attncourse.multihead import MultiHeadAttention
from attncourse.testing import assert_matches


pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gpt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=13, block_size=64, d_model=24, n_heads=4, n_layers=2)
    cfg.update(kw)
    return TinyGPT(**cfg).double().eval()


def _tokens(B, T, V=13, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ position mask
@pytest.mark.parametrize("tq,tk", [(1, 1), (1, 9), (4, 9), (7, 7)])
def test_position_mask_is_bottom_right_causal(tq, tk):
    q_pos = torch.arange(tk - tq, tk)
    assert torch.equal(position_mask(q_pos, torch.arange(tk)), causal_mask(tq, tk))


@pytest.mark.parametrize("tq,tk,w", [(1, 9, 3), (5, 9, 1), (9, 9, 4)])
def test_position_mask_window_and_empty_slots(tq, tk, w):
    q_pos = torch.arange(tk - tq, tk)
    assert torch.equal(position_mask(q_pos, torch.arange(tk), window=w), sliding_window_mask(tq, tk, w))
    k_pos = torch.tensor([-1, 0, 1])
    assert position_mask(torch.tensor([0]), k_pos, window=5).tolist() == [[False, True, False]]


# ------------------------------------------------------------------------ the buffer
def test_kvcache_writes_slots_and_returns_views():
    c = KVCache(2, 3, 10, 4, dtype=torch.float64)
    k1, v1 = _randn(2, 3, 4, 4), _randn(2, 3, 4, 4, seed=1)
    k, v, pos = c.update(k1, v1, 0)
    assert k.shape == (2, 3, 4, 4) and pos.tolist() == [0, 1, 2, 3]
    assert k.data_ptr() == c.k.data_ptr()                       # a view of the buffer, not a copy
    k2, v2 = _randn(2, 3, 1, 4, seed=2), _randn(2, 3, 1, 4, seed=3)
    k, v, pos = c.update(k2, v2, 4)
    assert torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    assert c.length == 5 and pos.tolist() == list(range(5))


def test_kvcache_errors_name_the_numbers():
    c = KVCache(1, 2, 5, 4)
    c.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match=r"past the cache's capacity: positions 3\.\.5 do not fit in 5 slots"):
        c.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 3)
    with pytest.raises(ValueError, match="start_pos=4 but the cache holds 3 tokens"):
        c.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 4)
    with pytest.raises(ValueError, match=r"mismatched head counts"):
        c.update(torch.zeros(1, 4, 1, 4), torch.zeros(1, 4, 1, 4), 3)
    with pytest.raises(ValueError, match="positive integer"):
        KVCache(1, 0, 5, 4)


def test_concat_cache_equals_buffer_and_copies():
    a, b = KVCache(1, 2, 8, 3), ConcatKVCache(1, 2, 3)
    for t, n in ((0, 3), (3, 1), (4, 1)):
        k, v = _randn(1, 2, n, 3, seed=t, dtype=torch.float32), _randn(1, 2, n, 3, seed=t + 9, dtype=torch.float32)
        ka, va, pa = a.update(k, v, t)
        kb, vb, pb = b.update(k, v, t)
        assert torch.equal(ka, kb) and torch.equal(va, vb) and torch.equal(pa, pb)
    with pytest.raises(ValueError, match="only append"):
        b.update(k, v, 2)


# ----------------------------------------------------------------------- cached model
@pytest.mark.parametrize("cfg", [
    dict(), dict(n_kv_heads=2), dict(n_kv_heads=1), dict(norm="rms"), dict(prenorm=False),
    dict(n_kv_heads=2, window=5), dict(n_heads=3, d_model=15, n_layers=3),
], ids=["mha", "gqa", "mqa", "rms", "postnorm", "window", "odd-dims"])
@pytest.mark.parametrize("prompt", [1, 7])
def test_cached_logits_equal_full_forward(cfg, prompt):
    m = _gpt(**cfg)
    seq = _tokens(3, 16)
    full = m(seq)                                                     # (B, 16, V), no cache
    for kind in ("buffer", "paged") + (("rolling",) if m.window else ()):
        caches = m.make_caches(3, 16, kind=kind, block_size=4)
        parts = [m(seq[:, :prompt], caches=caches)]
        for t in range(prompt, 16):
            parts.append(m(seq[:, t:t + 1], caches=caches, start_pos=t))
        assert_matches(torch.cat(parts, 1), full, what=f"{kind} cache")


def test_chunked_prefill_equals_full_forward():
    m = _gpt(n_kv_heads=2, window=4)
    seq = _tokens(2, 25)
    for kind in ("buffer", "rolling"):
        caches = m.make_caches(2, 25, kind=kind)
        parts, t = [], 0
        for n in (6, 1, 9, 2, 7):                                    # chunks longer and shorter than W
            parts.append(m(seq[:, t:t + n], caches=caches, start_pos=t))
            t += n
        assert_matches(torch.cat(parts, 1), m(seq), what=f"chunked prefill through a {kind} cache")


@pytest.mark.parametrize("cfg", [dict(), dict(n_kv_heads=1), dict(n_kv_heads=2, window=3)])
def test_generate_cached_equals_uncached(cfg):
    m = _gpt(**cfg)
    prompt = _tokens(3, 5, seed=1)
    ref = m.generate(prompt, 20, use_cache=False)
    assert torch.equal(m.generate(prompt, 20), ref)
    for kind in ("buffer", "cat", "paged") + (("rolling",) if m.window else ()):
        assert torch.equal(m.generate(prompt, 20, caches=m.make_caches(3, 25, kind=kind, block_size=8)), ref), kind
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = m.generate(prompt, 15, temperature=1.0, generator=g1)
    b = m.generate(prompt, 15, use_cache=False, temperature=1.0, generator=g2)
    assert torch.equal(a, b) and not torch.equal(a, m.generate(prompt, 15))


def test_generate_float32_tokens_identical():
    torch.manual_seed(0)
    m = TinyGPT(50, 64, d_model=64, n_heads=4, n_layers=2, n_kv_heads=2).eval()
    prompt = _tokens(2, 8, V=50)
    assert torch.equal(m.generate(prompt, 50), m.generate(prompt, 50, use_cache=False))


def test_generate_beyond_positions_and_cache_errors():
    m = _gpt(block_size=6)
    prompt = _tokens(2, 3)
    assert torch.equal(m.generate(prompt, 5), m.generate(prompt, 5, use_cache=False))  # falls back
    with pytest.raises(ValueError, match="exceed the model's 6 positions"):
        m.generate(prompt, 5, caches=m.make_caches(2, 8))
    m = _gpt()
    with pytest.raises(ValueError, match="past the cache's capacity"):
        m.generate(prompt, 10, caches=m.make_caches(2, 8))
    with pytest.raises(ValueError, match=r"positions 63\.\.65 are outside the model's 64 positions"):
        m(prompt, start_pos=63)
    with pytest.raises(ValueError, match="one per layer"):
        m(prompt, caches=m.make_caches(2, 8)[:1])
    with pytest.raises(ValueError, match="needs a model with a sliding window"):
        m.make_caches(2, 8, kind="rolling")
    with pytest.raises(ValueError, match="kind must be"):
        m.make_caches(2, 8, kind="ring")
    gqa = _gpt(n_kv_heads=2)
    with pytest.raises(ValueError, match="cache holds Hkv=4"):
        gqa(prompt, caches=m.make_caches(2, 8))


def test_attention_module_cache_rules():
    with pytest.raises(ValueError, match="needs causal=True"):
        MultiHeadAttention(8, 2, window=3)
    enc = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="KV cache needs causal=True"):
        enc(torch.zeros(1, 2, 8), cache=KVCache(1, 2, 4, 4))
    dec = MultiHeadAttention(8, 2, causal=True, window=5)
    with pytest.raises(ValueError, match="rolling cache of 3 slots cannot serve window=5"):
        dec(torch.zeros(1, 1, 8), cache=RollingKVCache(1, 2, 3, 4))
    full = MultiHeadAttention(8, 2, causal=True)
    with pytest.raises(ValueError, match="window=None"):
        full(torch.zeros(1, 1, 8), cache=RollingKVCache(1, 2, 3, 4))


def test_window_module_matches_masked_attention():
    torch.manual_seed(0)
    m = MultiHeadAttention(12, 3, 1, causal=True, window=4).double()
    x = _randn(2, 11, 12)
    free = MultiHeadAttention(12, 3, 1, causal=True).double()
    free.load_state_dict(m.state_dict())
    assert_matches(m(x), free(x, mask=sliding_window_mask(11, 11, 4)))


# ----------------------------------------------------------------------- ring buffer
@pytest.mark.parametrize("W", [1, 3, 8])
@pytest.mark.parametrize("prefill", [1, 5, 13])
def test_rolling_decode_equals_full_sliding_window_attention(W, prefill):
    B, H, Hkv, D, T = 2, 4, 2, 5, 30
    q, k, v = _randn(B, H, T, D, seed=1), _randn(B, Hkv, T, D, seed=2), _randn(B, Hkv, T, D, seed=3)
    ref = attention(q, k, v, mask=sliding_window_mask(T, T, W), enable_gqa=True)  # every key, masked
    c = RollingKVCache(B, Hkv, W, D, dtype=torch.float64)
    outs = []
    for t0, n in [(0, prefill)] + [(t, 1) for t in range(prefill, T)]:
        kk, vv, kpos = c.update(k[:, :, t0:t0 + n], v[:, :, t0:t0 + n], t0)
        mask = position_mask(torch.arange(t0, t0 + n), kpos, window=W)
        outs.append(attention(q[:, :, t0:t0 + n], kk, vv, mask=mask, enable_gqa=True))
        assert c.k.shape[2] == W                                     # never grows
    assert_matches(torch.cat(outs, 2), ref)


def test_rolling_slots_wrap_around():
    c = RollingKVCache(1, 1, 4, 1)
    for p in range(10):
        c.update(torch.full((1, 1, 1, 1), float(p)), torch.zeros(1, 1, 1, 1), p)
    assert c.pos.tolist() == [8, 9, 6, 7] and c.k.flatten().tolist() == [8.0, 9.0, 6.0, 7.0]
    assert c.slot(9) == 1 and c.nbytes == 2 * 4 * 4
    with pytest.raises(ValueError, match="only append"):
        c.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 3)


# ---------------------------------------------------------------------------- paging
def _loop_gather(pool, table, length):
    S = pool.shape[2]
    return torch.stack([pool[table[p // S], :, p % S] for p in range(length)], dim=1)  # (Hkv, length, D)


@pytest.mark.parametrize("S,length", [(1, 5), (4, 1), (4, 9), (16, 16), (5, 23)])
def test_gather_blocks_matches_loop(S, length):
    pool = _randn(12, 3, S, 2)
    table = torch.randperm(12, generator=torch.Generator().manual_seed(S))[: -(-length // S) + 1]
    assert torch.equal(gather_blocks(pool, table, length), _loop_gather(pool, table, length))
    with pytest.raises(ValueError, match="need"):
        gather_blocks(pool, table[:0], length)
    with pytest.raises(ValueError, match="pool has blocks 0..11"):
        gather_blocks(pool, torch.full((20,), 12), length)


@pytest.mark.parametrize("S", [1, 3, 4, 16])
def test_paged_cache_equals_contiguous(S):
    B, Hkv, D, T = 2, 2, 3, 19
    k, v = _randn(B, Hkv, T, D, seed=4), _randn(B, Hkv, T, D, seed=5)
    paged = PagedKVCache(B * -(-T // S) + 2, S, B, Hkv, D, dtype=torch.float64)
    flat = KVCache(B, Hkv, T, D, dtype=torch.float64)
    for t0, n in [(0, 6)] + [(t, 1) for t in range(6, T)]:
        kp, vp, pp = paged.update(k[:, :, t0:t0 + n], v[:, :, t0:t0 + n], t0)
        kf, vf, pf = flat.update(k[:, :, t0:t0 + n], v[:, :, t0:t0 + n], t0)
        assert torch.equal(kp, kf) and torch.equal(vp, vf) and torch.equal(pp, pf)
    assert all(len(t) == -(-T // S) for t in paged.block_tables)      # a block only when needed
    used = [b for t in paged.block_tables for b in t]
    assert len(set(used)) == len(used) and not set(used) & set(paged.free)


def test_paged_errors_and_free():
    c = PagedKVCache(3, 2, 1, 1, 1)
    c.update(torch.zeros(1, 1, 4, 1), torch.zeros(1, 1, 4, 1), 0)     # 2 blocks
    c.block_tables[0][1] = c.free[0]                                 # a table naming a free block
    with pytest.raises(ValueError, match=r"names block 2 \(entry 1\), which is free"):
        c.read(0)
    c.block_tables[0][1] = 1
    c.update(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1), 4)     # the third block
    with pytest.raises(ValueError, match="all in use"):
        c.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 6)
    c.free_sequence(0)
    assert sorted(c.free) == [0, 1, 2] and c.block_tables[0] == []


# ----------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("dtype,nb", [(torch.float32, 4), (torch.float16, 2), (torch.float64, 8)])
@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_formula_equals_real_tensors(dtype, nb, hkv):
    m = TinyGPT(13, 64, d_model=24, n_heads=4, n_layers=3, n_kv_heads=hkv)
    caches = m.make_caches(2, 37, dtype=dtype)
    got = kv_cache_bytes(3, hkv, 6, 37, dtype_bytes=nb, batch=2)
    assert type(got) is int and got == sum(c.nbytes for c in caches) == 2 * 3 * hkv * 6 * nb * 37 * 2


def test_model_table():
    by = {c.name: c for c in MODEL_CONFIGS}
    assert cache_bytes_per_token(by["Llama 2 7B"]) == 2 * 32 * 32 * 128 * 2 == 512 * 1024
    assert cache_bytes_per_token(by["Llama 3 8B"]) * 4 == cache_bytes_per_token(by["Llama 2 7B"])
    assert cache_bytes_per_token(by["Falcon 7B"]) == 2 * 32 * 64 * 2
    assert cache_bytes_per_token(by["DeepSeek-V2"]) == 60 * 576 * 2
    mistral = by["Mistral 7B"]
    assert model_cache_bytes(mistral, 128 * 1024) == model_cache_bytes(mistral, 4096) == 4096 * 131072
    assert {c.attention for c in MODEL_CONFIGS} == {"MHA", "GQA", "MQA", "MLA"}
    assert by["Llama 3 8B"].attention == "GQA" and by["Falcon 7B"].attention == "MQA"
    with pytest.raises(ValueError, match="tokens must be"):
        kv_cache_bytes(1, 1, 1, -1)


def test_reservations():
    lengths = [5, 16, 17, 1]
    assert preallocated_reservation(lengths, 32) == 128
    assert paged_reservation(lengths, 16) == 16 + 16 + 32 + 16
    assert paged_reservation(lengths, 1) == sum(lengths)
    with pytest.raises(ValueError, match="does not fit"):
        preallocated_reservation(lengths, 8)
    assert math.isclose(1 - sum(lengths) / paged_reservation(lengths, 16), 1 - 39 / 80)
