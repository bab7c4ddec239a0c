"""The capstone decoder (attncourse.llama) against Hugging Face transformers, built from configs.

Nothing is downloaded: ``LlamaForCausalLM`` / ``MistralForCausalLM`` get random weights from a
config written here, ``TinyLlama.from_hf`` copies them, and the two must agree on logits (a left-
padded batch, with and without a sliding window) and on greedy tokens generated with the cache.
Skipped, with the reason, when ``transformers`` is not installed (``pip install attncourse[hf]``).
"""
from __future__ import annotations

import pytest
import torch

from attncourse.llama import LlamaConfig, TinyLlama, positions_from_mask
from attncourse.testing import assert_matches

transformers = pytest.importorskip("transformers", reason="the Hugging Face checks need `pip install attncourse[hf]`")

SMALL = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False)


def hf_model(kind: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**SMALL, attn_implementation="eager", **extra)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.MistralConfig(**SMALL, sliding_window=extra.pop("sliding_window", 4),
                                         attn_implementation="eager", **extra)
        model = transformers.MistralForCausalLM(cfg)
    with torch.no_grad():                      # norms start at 1: make them random so they are tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.float().eval()   # HF computes RoPE angles in float32 whatever the dtype: compare in float32


def batch(seed=1, T=11):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, SMALL["vocab_size"], (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, :4] = 0                            # left padding
    mask[2, :1] = 0
    return idx, mask


@pytest.mark.parametrize("kind", ["llama", "mistral"])
@pytest.mark.parametrize("use_sdpa", [False, True], ids=["core", "sdpa"])
def test_logits_match_transformers_on_a_padded_batch(kind, use_sdpa):
    hf = hf_model(kind)
    ours = TinyLlama.from_hf(hf, use_sdpa=use_sdpa).eval()
    assert ours.cfg.window == (4 if kind == "mistral" else None)
    idx, mask = batch()
    with torch.no_grad():
        want = hf(input_ids=idx, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        got = ours(idx, attention_mask=mask)
    real = mask.bool()
    assert_matches(got[real], want[real])


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_greedy_generation_matches_transformers(kind):
    hf = hf_model(kind, seed=3)
    ours = TinyLlama.from_hf(hf).eval()
    idx, mask = batch(seed=4, T=7)
    want = hf.generate(input_ids=idx, attention_mask=mask, max_new_tokens=12, do_sample=False,
                       pad_token_id=0, eos_token_id=None)
    got = ours.generate(idx, 12, attention_mask=mask)
    assert torch.equal(got, want)


def test_cached_and_uncached_generation_agree_and_gqa_configs_load():
    hf = hf_model("llama", seed=5, )
    ours = TinyLlama.from_hf(hf).eval()
    idx, mask = batch(seed=6, T=5)
    assert torch.equal(ours.generate(idx, 9, attention_mask=mask), ours.generate(idx, 9, attention_mask=mask, use_cache=False))
    assert ours.cfg == LlamaConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                                   max_seq_len=64, rope_base=10000.0, norm_eps=1e-6)
