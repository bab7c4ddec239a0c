"""Tiny transformers for demos that train on a CPU in seconds.

* :class:`Block` — pre-norm ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GPT-2 / nanoGPT).
* :class:`TinyGPT` — decoder-only: token + learned position embeddings, causal blocks, a head.
* :class:`DecoderBlock`, :class:`TinySeq2Seq` — encoder–decoder: the decoder adds
  :class:`~attncourse.multihead.CrossAttention` over the encoder's output.
* :func:`train`, :func:`accuracy` — a plain AdamW loop and the scored-token accuracy.

No hidden state: attention weights are *returned* (``return_weights=True``), never stored on the
module. Weights are stacked per layer: ``(n_layers, B, H, Tq, Tk)``, so ``w[layer, b, head]``
is one ``(Tq, Tk)`` map for :func:`attncourse.viz` functions. Seed with ``torch.manual_seed``
before building a model; the same seed gives the same model.

Recipes measured on a 2-core CPU with ``torch.set_num_threads(1)`` (tiny models gain nothing
from more threads, and on a busy machine two threads ran up to 10x slower), AdamW via
:func:`train`, held-out accuracy on 1000 examples, seeds 0-4:

* :func:`attncourse.data.associative_recall_pairs` ``(N=8, 16 keys, 16 values)``:
  ``TinyGPT(..., d_model=64, n_heads=1, n_layers=1)``, batch 128, 400 steps, lr 3e-3: 100 %, ~4 s.
* :func:`attncourse.data.copying` ``(L=8, vocab 16)``: ``d_model=32, n_heads=2, n_layers=1``,
  batch 64, 200 steps, lr 3e-3: 100 %, ~1.3 s.
* :func:`attncourse.data.reversal` ``(L=8, vocab 16)``: ``TinySeq2Seq(..., d_model=32, n_heads=2,
  n_layers=1)``, batch 64, 300 steps, lr 3e-3: 100 %, ~3 s; cross-attention argmax on the
  anti-diagonal for 100 % of target positions.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from attncourse.data import IGNORE, LMBatch, Seq2SeqBatch
from attncourse.kvcache import ConcatKVCache, KVCache, PagedKVCache, RollingKVCache
from attncourse.masks import padding_mask
from attncourse.multihead import CrossAttention, MultiHeadAttention
from attncourse.positions import sinusoidal_positions

__all__ = ["RMSNorm", "rms_norm", "make_norm", "MLP", "Block", "DecoderBlock", "TinyGPT", "TinySeq2Seq", "Seq2SeqWeights",
           "train", "accuracy", "TrainResult"]


class MLP(nn.Module):
    """``(B, T, C) -> (B, T, C)``: Linear ``C -> r·C``, GELU, Linear ``r·C -> C``."""

    def __init__(self, d_model: int, ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model)
        self.proj = nn.Linear(ratio * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019; Llama): ``x / rms(x) * g``, no mean, no bias.

    ``rms(x) = sqrt(mean(x², last dim) + eps)``; computed in float32 for fp16/bf16 inputs.
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(mean(x², last dim) + eps) * weight``; statistics in float32 for fp16/bf16, dtype kept."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.to(y.dtype)).to(x.dtype)


def make_norm(kind: str, d_model: int) -> nn.Module:
    """``"layer"`` -> :class:`torch.nn.LayerNorm`, ``"rms"`` -> :class:`RMSNorm`."""
    if kind == "layer":
        return nn.LayerNorm(d_model)
    if kind == "rms":
        return RMSNorm(d_model)
    raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")


class Block(nn.Module):
    """A transformer block: attention and MLP, each with a residual connection and a norm.

    ``Block(d_model, n_heads, n_kv_heads=None, *, causal=True, mlp_ratio=4, dropout=0.0,
    norm="layer", prenorm=True, window=None)``.

    * pre-norm (GPT-2, Llama; the default): ``x = x + attn(ln1(x))``, then ``x = x + mlp(ln2(x))``
      — the residual stream itself is never normalised;
    * post-norm (the original Transformer): ``x = ln1(x + attn(x))``, then ``x = ln2(x + mlp(x))``.

    ``norm`` is ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm); ``window`` gives a causal sliding window.
    ``forward(x: (B, T, C), *, mask=None, return_weights=False, cache=None, start_pos=0) -> (B, T, C)``
    and the attention weights ``(B, H, T, Tk)`` if asked; ``mask`` is a bool keep-mask (True = attend).
    ``cache``/``start_pos``: this layer's KV cache and the position of ``x``'s first token
    (see :class:`~attncourse.multihead.MultiHeadAttention`).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, *,
                 causal: bool = True, mlp_ratio: int = 4, dropout: float = 0.0,
                 norm: str = "layer", prenorm: bool = True, window: int | None = None,
                 rope: bool = False, rope_base: float = 10000.0, alibi: bool = False):
        super().__init__()
        self.prenorm = prenorm
        self.ln1 = make_norm(norm, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, causal=causal, dropout=dropout, window=window,
                                       rope=rope, rope_base=rope_base, alibi=alibi)
        self.ln2 = make_norm(norm, d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, return_weights: bool = False,
                cache=None, start_pos: int = 0):
        kw = dict(mask=mask, return_weights=True, cache=cache, start_pos=start_pos)
        if self.prenorm:
            a, w = self.attn(self.ln1(x), **kw)
            x = x + a
            x = x + self.mlp(self.ln2(x))
        else:
            a, w = self.attn(x, **kw)
            x = self.ln1(x + a)
            x = self.ln2(x + self.mlp(x))
        return (x, w) if return_weights else x


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over ``memory``, MLP; each pre-norm with a residual.

    ``forward(x: (B, Tt, C), memory: (B, Ts, C), *, memory_mask=None, return_weights=False)``
    returns ``(B, Tt, C)``, and ``(self_w: (B, H, Tt, Tt), cross_w: (B, H, Tt, Ts))`` if asked.
    ``memory_mask``: bool keep-mask over the source, e.g. ``padding_mask(src_lengths, Ts)``.
    """

    def __init__(self, d_model: int, n_heads: int, *, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, causal=True, dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, n_heads, dropout=dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x, memory, *, memory_mask=None, return_weights: bool = False):
        a, self_w = self.self_attn(self.ln1(x), return_weights=True)
        x = x + a
        a, cross_w = self.cross_attn(self.ln2(x), memory, mask=memory_mask, return_weights=True)
        x = x + a
        x = x + self.mlp(self.ln3(x))
        return (x, self_w, cross_w) if return_weights else x


def _init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: normal(0, 0.02) for linear and embedding weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _check_tokens(idx: torch.Tensor, max_len: int, what: str) -> None:
    if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what} must be an integer tensor (B, T), got {idx.dtype} {tuple(idx.shape)}")
    if idx.shape[1] > max_len:
        raise ValueError(f"{what} has length {idx.shape[1]} but the model has {max_len} positions")


# ------------------------------------------------------------------------ decoder-only
POSITION_SCHEMES = ("learned", "sinusoidal", "none", "rope", "alibi")


class TinyGPT(nn.Module):
    """A tiny decoder-only transformer (causal; learned absolute positions).

    ``TinyGPT(vocab_size, block_size, d_model=64, n_heads=4, n_layers=2, n_kv_heads=None,
    *, mlp_ratio=4, dropout=0.0, norm="layer", prenorm=True, window=None)``; ``block_size`` is the
    number of positions (the longest sequence, cache included). ``norm``/``prenorm`` choose the
    block's normalisation (see :class:`Block`); a post-norm model has no final norm (its last block
    already ends in one). ``n_kv_heads`` gives GQA/MQA; ``window`` a causal sliding window.

    ``pos`` chooses the position scheme (chapters 02, 10, 11): ``"learned"`` (the default, a table of
    ``block_size`` vectors added to the tokens), ``"sinusoidal"`` (the fixed sinusoids times 0.02, added),
    ``"none"`` (NoPE: only the causal mask tells positions apart), ``"rope"`` (q and k rotated in
    every layer, base ``rope_base``) or ``"alibi"`` (a linear bias on every layer's scores).
    :meth:`set_rope_frequencies` switches a RoPE model to context-extension frequencies.

    ``forward(idx: (B, T) int, *, return_weights=False, caches=None, start_pos=0) -> logits (B, T, vocab_size)``,
    and the weights ``(n_layers, B, H, T, Tk)`` if ``return_weights``. Position ``t``'s logits depend
    on tokens ``0..t`` only. With ``caches`` (one per layer, from :meth:`make_caches`), ``idx`` holds
    the tokens at positions ``start_pos .. start_pos+T-1`` and the earlier ones come from the caches.
    """

    def __init__(self, vocab_size: int, block_size: int, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2, n_kv_heads: int | None = None, *, mlp_ratio: int = 4,
                 dropout: float = 0.0, norm: str = "layer", prenorm: bool = True, window: int | None = None,
                 pos: str = "learned", rope_base: float = 10000.0):
        super().__init__()
        if pos not in POSITION_SCHEMES:
            raise ValueError(f"pos must be one of {', '.join(map(repr, POSITION_SCHEMES))}, got {pos!r}")
        self.vocab_size, self.block_size, self.window, self.pos = vocab_size, block_size, window, pos
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model) if pos == "learned" else None
        if pos == "sinusoidal":
            # Scaled by the token embeddings' init std (0.02): tokens and positions start at the ratio of the
            # original Transformer, which scales its embeddings up by √C instead. Unscaled sinusoids (entries
            # of size 1) drown the tokens, and the tiny models then failed to train.
            self.register_buffer("pos_table", 0.02 * sinusoidal_positions(block_size, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads, causal=True, mlp_ratio=mlp_ratio, dropout=dropout,
                  norm=norm, prenorm=prenorm, window=window, rope=pos == "rope", rope_base=rope_base,
                  alibi=pos == "alibi")
            for _ in range(n_layers))
        self.ln_f = make_norm(norm, d_model) if prenorm else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, idx: torch.Tensor, *, return_weights: bool = False, caches=None, start_pos: int = 0):
        _check_tokens(idx, self.block_size, "TinyGPT input idx")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"TinyGPT: got {len(caches)} caches for {len(self.blocks)} layers (one per layer)")
        T = idx.shape[1]
        if start_pos < 0 or start_pos + T > self.block_size:
            raise ValueError(f"TinyGPT: positions {start_pos}..{start_pos + T - 1} are outside the model's "
                             f"{self.block_size} positions (block_size)")
        pos = torch.arange(start_pos, start_pos + T, device=idx.device)  # absolute positions of idx
        x = self.tok_emb(idx)                                         # (B, T, C)
        if self.pos == "learned":
            x = x + self.pos_emb(pos)
        elif self.pos == "sinusoidal":
            x = x + self.pos_table[pos]
        x = self.drop(x)                                              # rope/alibi act inside attention
        weights = []
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            x, w = block(x, return_weights=True, cache=cache, start_pos=start_pos)  # w: (B, H, T, Tk)
            weights.append(w)
        logits = self.head(self.ln_f(x))                              # (B, T, vocab)
        return (logits, torch.stack(weights)) if return_weights else logits

    def set_rope_frequencies(self, inv_freq: torch.Tensor | None = None, attention_factor: float = 1.0) -> None:
        """Use ``inv_freq: (D/2,)`` instead of ``base^(-2i/D)`` in every layer (``None`` restores them).

        For context extension at inference, e.g. ``attncourse.rope.pi_frequencies(D, s)``; YaRN's
        ``(inv_freq, factor) = yarn_frequencies(D, s, L)`` also passes ``attention_factor=factor``.
        """
        if self.pos != "rope":
            raise ValueError(f"set_rope_frequencies needs a RoPE model (pos='rope'), this one has pos={self.pos!r}")
        for block in self.blocks:
            block.attn.rope_inv_freq, block.attn.rope_attention_factor = inv_freq, float(attention_factor)

    def loss(self, batch: LMBatch) -> torch.Tensor:
        """Mean cross-entropy over the scored positions of ``batch = (x, y)``."""
        logits = self(batch.x)
        return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def predict(self, batch: LMBatch) -> torch.Tensor:
        """Greedy next-token predictions ``(B, T)`` under teacher forcing."""
        return self(batch.x).argmax(-1)

    def make_caches(self, batch: int, capacity: int, *, kind: str = "buffer", block_size: int = 16,
                    dtype: torch.dtype | None = None, device=None) -> list:
        """One empty KV cache per layer for ``batch`` sequences of up to ``capacity`` tokens.

        ``kind``: ``"buffer"`` (:class:`~attncourse.kvcache.KVCache`, preallocated), ``"cat"``
        (:class:`~attncourse.kvcache.ConcatKVCache`, grows by ``torch.cat``), ``"rolling"``
        (:class:`~attncourse.kvcache.RollingKVCache` of ``window`` slots; needs a model with a
        window) or ``"paged"`` (:class:`~attncourse.kvcache.PagedKVCache`, blocks of ``block_size``).
        dtype and device default to the model's.
        """
        attn = self.blocks[0].attn
        p = self.head.weight
        dtype = p.dtype if dtype is None else dtype
        device = p.device if device is None else device
        shape = dict(n_kv_heads=attn.n_kv_heads, head_dim=attn.d_head)
        if kind == "buffer":
            return [KVCache(batch, capacity=capacity, dtype=dtype, device=device, **shape) for _ in self.blocks]
        if kind == "cat":
            return [ConcatKVCache(batch, dtype=dtype, device=device, **shape) for _ in self.blocks]
        if kind == "rolling":
            if self.window is None:
                raise ValueError("a rolling cache needs a model with a sliding window (TinyGPT(..., window=W))")
            return [RollingKVCache(batch, window=self.window, dtype=dtype, device=device, **shape)
                    for _ in self.blocks]
        if kind == "paged":
            n_blocks = batch * -(-capacity // block_size)
            return [PagedKVCache(n_blocks, block_size, batch, dtype=dtype, device=device, **shape)
                    for _ in self.blocks]
        raise ValueError(f"kind must be 'buffer', 'cat', 'rolling' or 'paged', got {kind!r}")

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True, caches=None,
                 temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to ``idx: (B, T)``; greedy when ``temperature == 0``,
        else sampled from ``softmax(logits / temperature)`` with ``generator``.

        ``use_cache=True`` (the default): prefill the prompt once, then run one token per step
        against the per-layer KV caches (``caches``, or preallocated buffers of ``T + max_new_tokens``
        slots, or ring buffers for a model with a window). ``use_cache=False`` recomputes the whole
        prefix every step. Both give the same tokens.

        Learned absolute positions end at ``block_size``: a longer sequence is generated from its
        last ``block_size`` tokens, which moves every token to a new position at each step, so
        nothing cached stays valid. When ``T + max_new_tokens > block_size`` and no ``caches`` are
        given, generation therefore recomputes (as ``use_cache=False``); passing ``caches`` then
        raises ``ValueError``.
        """
        B, T = idx.shape
        total = T + max_new_tokens
        if total > self.block_size and caches is not None:
            raise ValueError(f"TinyGPT.generate: {T} prompt + {max_new_tokens} new tokens exceed the model's "
                             f"{self.block_size} positions, so a KV cache cannot be used")
        if not use_cache or total > self.block_size:
            for _ in range(max_new_tokens):
                logits = self(idx[:, -self.block_size:])[:, -1]       # (B, vocab): the whole prefix again
                idx = torch.cat([idx, self._pick(logits, temperature, generator)], dim=1)
            return idx
        if caches is None:
            caches = self.make_caches(B, total, kind="buffer" if self.window is None else "rolling")
        out = [idx]
        logits = self(idx, caches=caches, start_pos=0)[:, -1]         # prefill: the prompt at positions 0..T-1
        for step in range(max_new_tokens):
            nxt = self._pick(logits, temperature, generator)         # (B, 1)
            out.append(nxt)
            if step + 1 < max_new_tokens:                             # decode: one token, at position T + step
                logits = self(nxt, caches=caches, start_pos=T + step)[:, -1]
        return torch.cat(out, dim=1)

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """The next token ``(B, 1)`` from ``logits: (B, vocab)``."""
        if temperature == 0:
            return logits.argmax(-1, keepdim=True)
        probs = F.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)


# ---------------------------------------------------------------------- encoder–decoder
class Seq2SeqWeights(NamedTuple):
    """Attention maps of :class:`TinySeq2Seq`, stacked per layer."""
    encoder: torch.Tensor  # (n_layers, B, H, Ts, Ts) encoder self-attention
    decoder: torch.Tensor  # (n_layers, B, H, Tt, Tt) decoder causal self-attention
    cross: torch.Tensor    # (n_layers, B, H, Tt, Ts) decoder queries over encoder outputs


class TinySeq2Seq(nn.Module):
    """A tiny encoder–decoder with cross-attention (one vocabulary for source and target).

    ``TinySeq2Seq(vocab_size, max_src_len, max_tgt_len, d_model=64, n_heads=4, n_layers=2,
    *, mlp_ratio=4, dropout=0.0)``; encoder and decoder both have ``n_layers`` blocks.

    ``forward(src: (B, Ts), tgt_in: (B, Tt), *, src_lengths=None, return_weights=False)``
    returns logits ``(B, Tt, vocab_size)`` and, if asked, :class:`Seq2SeqWeights`.
    ``src_lengths: (B,)`` masks the source padding in encoder self-attention and in
    cross-attention (``padding_mask(src_lengths, Ts)``), so padded positions change nothing.
    """

    def __init__(self, vocab_size: int, max_src_len: int, max_tgt_len: int, d_model: int = 64,
                 n_heads: int = 4, n_layers: int = 2, *, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.max_src_len, self.max_tgt_len = vocab_size, max_src_len, max_tgt_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)        # shared by encoder and decoder
        self.src_pos = nn.Embedding(max_src_len, d_model)
        self.tgt_pos = nn.Embedding(max_tgt_len, d_model)
        self.encoder = nn.ModuleList(
            Block(d_model, n_heads, causal=False, mlp_ratio=mlp_ratio, dropout=dropout)
            for _ in range(n_layers))
        self.ln_enc = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            DecoderBlock(d_model, n_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(_init_weights)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None):
        """``src: (B, Ts) -> memory (B, Ts, C)``, the key mask ``(B, 1, 1, Ts)`` or None, weights."""
        _check_tokens(src, self.max_src_len, "TinySeq2Seq src")
        Ts = src.shape[1]
        mask = None if src_lengths is None else padding_mask(src_lengths, Ts, device=src.device)
        x = self.tok_emb(src) + self.src_pos(torch.arange(Ts, device=src.device))  # (B, Ts, C)
        weights = []
        for block in self.encoder:
            x, w = block(x, mask=mask, return_weights=True)               # w: (B, H, Ts, Ts)
            weights.append(w)
        return self.ln_enc(x), mask, torch.stack(weights)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None):
        """``tgt_in: (B, Tt)`` -> logits ``(B, Tt, V)``, self weights, cross weights (stacked)."""
        _check_tokens(tgt_in, self.max_tgt_len, "TinySeq2Seq tgt_in")
        Tt = tgt_in.shape[1]
        y = self.tok_emb(tgt_in) + self.tgt_pos(torch.arange(Tt, device=tgt_in.device))  # (B, Tt, C)
        self_ws, cross_ws = [], []
        for block in self.decoder:
            y, sw, cw = block(y, memory, memory_mask=memory_mask, return_weights=True)
            self_ws.append(sw)                                            # (B, H, Tt, Tt)
            cross_ws.append(cw)                                           # (B, H, Tt, Ts)
        return self.head(self.ln_f(y)), torch.stack(self_ws), torch.stack(cross_ws)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, *, src_lengths: torch.Tensor | None = None,
                return_weights: bool = False):
        memory, mask, enc_w = self.encode(src, src_lengths)
        logits, dec_w, cross_w = self.decode(tgt_in, memory, mask)
        return (logits, Seq2SeqWeights(enc_w, dec_w, cross_w)) if return_weights else logits

    def loss(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """Mean cross-entropy over the scored target positions."""
        logits = self(batch.src, batch.tgt_in, src_lengths=batch.src_lengths)
        return F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def predict(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """Greedy predictions ``(B, Tt)`` under teacher forcing."""
        return self(batch.src, batch.tgt_in, src_lengths=batch.src_lengths).argmax(-1)

    @torch.no_grad()
    def generate(self, src: torch.Tensor, max_new_tokens: int, *, bos: int,
                 src_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding: ``(B, 1 + max_new_tokens)`` starting with ``bos`` (no early stop)."""
        memory, mask, _ = self.encode(src, src_lengths)
        out = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
        for _ in range(max_new_tokens):
            logits, _, _ = self.decode(out, memory, mask)
            out = torch.cat([out, logits[:, -1:].argmax(-1)], dim=1)
        return out


# ------------------------------------------------------------------------ training loop
class TrainResult(NamedTuple):
    losses: list[float]   # loss at every step
    seconds: float        # wall time of the loop


def train(model: nn.Module, batch_fn: Callable[[int], object], steps: int, lr: float = 3e-3, *,
          weight_decay: float = 0.0, warmup: int = 0, grad_clip: float | None = 1.0) -> TrainResult:
    """Train ``model`` with AdamW on ``batch_fn(step)`` for ``steps`` steps; returns the losses.

    ``model.loss(batch)`` gives the scalar loss (see :class:`TinyGPT`, :class:`TinySeq2Seq`).
    The learning rate rises linearly over ``warmup`` steps, then decays by cosine to ``lr/10``.
    Deterministic given the model's initial weights and ``batch_fn``.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item()))

    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model.loss(batch_fn(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return TrainResult(losses, time.perf_counter() - start)


@torch.no_grad()
def accuracy(model: nn.Module, batch, *, per_sequence: bool = False) -> float:
    """Fraction of scored target tokens the model predicts (greedy, teacher forcing).

    ``per_sequence=True`` counts a sequence as right only when all its scored tokens are.
    """
    was_training = model.training
    model.eval()
    pred = model.predict(batch)
    model.train(was_training)
    target = batch.y if isinstance(batch, LMBatch) else batch.tgt_out
    scored = target != IGNORE
    right = (pred == target) & scored
    if per_sequence:
        return (right.sum(1) == scored.sum(1)).float().mean().item()
    return (right.sum() / scored.sum()).item()
