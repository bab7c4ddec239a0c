"""A Llama/Mistral-style decoder assembled from the course's own parts (the capstone of chapter 13).

Every piece is one the chapters built and tested on its own:

* :class:`attncourse.model.RMSNorm` before each sublayer (pre-norm, chapter 04's block page);
* grouped-query attention (chapter 09): ``n_kv_heads`` key/value heads, query head ``h`` reading
  K/V head ``h // (H // Hkv)``, through :func:`attncourse.core.attention` (or torch's SDPA);
* rotary positions (chapter 10) on queries and keys, half-split layout, after the projection;
* an optional causal sliding window of ``W`` keys (chapter 05, Mistral);
* a preallocated :class:`attncourse.kvcache.KVCache` per layer for generation (chapter 12);
* a SwiGLU MLP, ``down(silu(gate(x)) * up(x))``.

The parameter names are Hugging Face's (``model.layers.0.self_attn.q_proj.weight`` …), so
:meth:`TinyLlama.from_hf` copies a ``LlamaForCausalLM`` or ``MistralForCausalLM`` one to one, and
``tests/test_llama_hf.py`` checks that the logits and the greedy tokens agree with
``transformers`` (an optional dependency: ``pip install attncourse[hf]``).

Padding follows the usual generation convention: ``attention_mask: (B, T)`` is 1 on real
tokens, 0 on padding on the **left**; a token's position counts real tokens only
(``cumsum(mask) - 1``), and padding keys are masked out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from attncourse.core import attention
from attncourse.kvcache import KVCache
from attncourse.masks import causal_mask, sliding_window_mask
from attncourse.model import RMSNorm
from attncourse.multihead import merge_heads, split_heads
from attncourse.rope import apply_rope

__all__ = ["LlamaConfig", "SwiGLU", "LlamaAttention", "LlamaLayer", "TinyLlama", "positions_from_mask",
           "decoder_mask"]


@dataclass(frozen=True)
class LlamaConfig:
    """Shapes of a Llama/Mistral decoder. ``window=None`` is Llama; an int is Mistral's sliding window."""
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 128
    max_seq_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    window: int | None = None
    tie_embeddings: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"the head dim {self.d_model // self.n_heads} must be even for RoPE")
        if self.window is not None and (int(self.window) != self.window or self.window < 1):
            raise ValueError(f"window must be None or a positive integer, got {self.window!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` positions that count real tokens only: ``cumsum(mask) - 1`` (0 on left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_mask(tq: int, tk: int, key_valid: torch.Tensor | None, window: int | None, device=None) -> torch.Tensor:
    """Keep-mask ``(B or 1, 1, Tq, Tk)``: causal (bottom-right), the window, and no padding keys."""
    keep = causal_mask(tq, tk, device=device) if window is None else \
        sliding_window_mask(tq, tk, window, causal=True, device=device)      # (Tq, Tk)
    keep = keep[None, None]                                                  # (1, 1, Tq, Tk)
    if key_valid is not None:
        keep = keep & key_valid[:, None, None, :tk]                          # (B, 1, Tq, Tk)
    return keep


class SwiGLU(nn.Module):
    """``(B, T, C) -> (B, T, C)``: ``down(silu(gate(x)) * up(x))`` (Shazeer 2020; Llama)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with RoPE; ``forward(x, positions, mask, cache=None, start_pos=0)``."""

    def __init__(self, cfg: LlamaConfig, *, use_sdpa: bool = False):
        super().__init__()
        self.cfg, self.use_sdpa = cfg, use_sdpa
        d, hd = cfg.d_model, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)

    def forward(self, x, positions, mask, cache: KVCache | None = None, start_pos: int = 0):
        cfg = self.cfg
        q = split_heads(self.q_proj(x), cfg.n_heads)                       # (B, T, C) -> (B, H, T, D)
        k = split_heads(self.k_proj(x), cfg.n_kv_heads)                    # (B, T, Hkv·D) -> (B, Hkv, T, D)
        v = split_heads(self.v_proj(x), cfg.n_kv_heads)
        q = apply_rope(q, positions, base=cfg.rope_base)                   # positions: (B, T)
        k = apply_rope(k, positions, base=cfg.rope_base)                   # rotate keys before caching them
        if cache is not None:
            k, v, _ = cache.update(k, v, start_pos)                        # (B, Hkv, start_pos + T, D)
        if self.use_sdpa:
            # SDPA returns NaN for a row with no visible key (a left-padding query); let such rows
            # see every key instead: their outputs are finite garbage that nothing reads.
            keep = mask | ~mask.any(-1, keepdim=True)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
        else:
            out = attention(q, k, v, mask=mask, enable_gqa=True)           # (B, H, T, D)
        return self.o_proj(merge_heads(out))                               # (B, H, T, D) -> (B, T, C)


class LlamaLayer(nn.Module):
    """Pre-norm decoder layer: ``h = x + attn(norm(x))``, ``out = h + mlp(norm(h))``."""

    def __init__(self, cfg: LlamaConfig, *, use_sdpa: bool = False):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = LlamaAttention(cfg, use_sdpa=use_sdpa)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, positions, mask, cache=None, start_pos: int = 0):
        h = x + self.self_attn(self.input_layernorm(x), positions, mask, cache, start_pos)
        return h + self.mlp(self.post_attention_layernorm(h))


class _Model(nn.Module):
    def __init__(self, cfg: LlamaConfig, use_sdpa: bool):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(LlamaLayer(cfg, use_sdpa=use_sdpa) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class TinyLlama(nn.Module):
    """A Llama (``window=None``) or Mistral (``window=W``) decoder with Hugging Face's parameter names.

    ``forward(idx: (B, T), *, attention_mask=None) -> logits (B, T, vocab)``;
    ``generate(idx, n, *, attention_mask=None, use_cache=True)`` is greedy.
    """

    def __init__(self, cfg: LlamaConfig, *, use_sdpa: bool = False):
        super().__init__()
        self.cfg = cfg
        self.model = _Model(cfg, use_sdpa)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _run(self, idx, positions, key_valid, caches=None, start_pos: int = 0):
        tq = idx.shape[1]
        tk = start_pos + tq
        mask = decoder_mask(tq, tk, key_valid, self.cfg.window, device=idx.device)
        x = self.model.embed_tokens(idx)                                     # (B, T, C)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, positions, mask, None if caches is None else caches[i], start_pos)
        return self.lm_head(self.model.norm(x))                              # (B, T, vocab)

    def forward(self, idx: torch.Tensor, *, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"idx must be (B, T) with T <= {self.cfg.max_seq_len}, got {tuple(idx.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        if attention_mask.shape != idx.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match idx {tuple(idx.shape)}")
        return self._run(idx, positions_from_mask(attention_mask), attention_mask.bool())

    def new_caches(self, batch: int, capacity: int, *, dtype=None, device=None) -> list[KVCache]:
        """One preallocated cache per layer: ``2 · layers · Hkv · D · capacity`` numbers per sequence."""
        p = self.lm_head.weight
        return [KVCache(batch, self.cfg.n_kv_heads, capacity, self.cfg.head_dim,
                        dtype=dtype or p.dtype, device=device or p.device) for _ in self.model.layers]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, attention_mask: torch.Tensor | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding; with the cache: one prefill, then one token per step."""
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        mask = attention_mask.long()
        if max_new_tokens < 0 or idx.shape[1] + max_new_tokens > self.cfg.max_seq_len:
            raise ValueError(f"{idx.shape[1]} + {max_new_tokens} tokens exceed max_seq_len={self.cfg.max_seq_len}")
        if not use_cache:
            for _ in range(max_new_tokens):
                nxt = self(idx, attention_mask=mask)[:, -1].argmax(-1, keepdim=True)    # (B, 1)
                idx, mask = torch.cat([idx, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
            return idx
        total = idx.shape[1] + max_new_tokens
        caches = self.new_caches(idx.shape[0], total)
        key_valid = torch.cat([mask, mask.new_ones(idx.shape[0], max_new_tokens)], 1).bool()  # (B, total)
        positions = positions_from_mask(mask)                                  # (B, T)
        logits = self._run(idx, positions, key_valid, caches, 0)               # prefill
        out, start = idx, idx.shape[1]
        pos = positions[:, -1:]                                                # (B, 1)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)                       # (B, 1)
            out = torch.cat([out, nxt], 1)
            if out.shape[1] == total:
                break
            pos = pos + 1
            logits = self._run(nxt, pos, key_valid, caches, start)             # one token, T = 1
            start += 1
        return out

    # ------------------------------------------------------------------ Hugging Face
    @classmethod
    def config_from_hf(cls, hf_config) -> LlamaConfig:
        """The :class:`LlamaConfig` of a transformers ``LlamaConfig``/``MistralConfig``."""
        rope = getattr(hf_config, "rope_parameters", None) or {}
        base = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"only the default RoPE is supported, got {rope.get('rope_type')!r}")
        return LlamaConfig(vocab_size=hf_config.vocab_size, d_model=hf_config.hidden_size,
                           n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
                           n_kv_heads=hf_config.num_key_value_heads, d_ff=hf_config.intermediate_size,
                           max_seq_len=hf_config.max_position_embeddings, rope_base=float(base),
                           norm_eps=hf_config.rms_norm_eps, window=getattr(hf_config, "sliding_window", None),
                           tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)))

    @classmethod
    def from_hf(cls, hf_model, *, use_sdpa: bool = False) -> "TinyLlama":
        """Copy a transformers ``LlamaForCausalLM``/``MistralForCausalLM``: the names match one to one."""
        model = cls(cls.config_from_hf(hf_model.config), use_sdpa=use_sdpa)
        state = {k: v for k, v in hf_model.state_dict().items() if "rotary_emb" not in k}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
        return model.to(next(hf_model.parameters()).dtype)
