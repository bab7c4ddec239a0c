"""Synthetic tasks for the tiny demo models, generated in code with fixed seeds.

Every task returns integer tensors, and the targets hold :data:`IGNORE` (``-100``, the default
``ignore_index`` of ``torch.nn.functional.cross_entropy``) at positions that are not scored.

Decoder-only tasks (for :class:`attncourse.model.TinyGPT`) return an :class:`LMBatch`
``(x, y)``: a sequence ``s`` is cut into ``x = s[:, :-1]`` and ``y = s[:, 1:]`` (predict the next
token), then ``y`` is set to ``IGNORE`` except where the answer is determined by the past.

The encoder–decoder task (for :class:`attncourse.model.TinySeq2Seq`) returns a
:class:`Seq2SeqBatch` ``(src, src_lengths, tgt_in, tgt_out)`` with padding.

Randomness: pass ``seed`` (default 0; the same seed gives the same batch) or a
``torch.Generator`` (which advances, so successive calls differ). Tensors are made on the CPU.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "IGNORE", "PAD", "BOS", "EOS", "N_SPECIAL", "LMBatch", "Seq2SeqBatch",
    "associative_recall", "associative_recall_vocab", "associative_recall_pairs",
    "associative_recall_pairs_vocab", "copying", "induction", "lookback", "lookback_vocab", "reversal",
    "reversal_vocab", "reversal_alignment",
]

IGNORE = -100                 #: target value of positions that are not scored
PAD, BOS, EOS = 0, 1, 2       #: special tokens of :func:`reversal`
N_SPECIAL = 3                 #: content tokens of :func:`reversal` start after the specials


class LMBatch(NamedTuple):
    """``x: (B, T)`` input tokens; ``y: (B, T)`` next-token targets, ``IGNORE`` where unscored."""
    x: torch.Tensor
    y: torch.Tensor


class Seq2SeqBatch(NamedTuple):
    """Padded source and teacher-forcing target pair (see :func:`reversal`)."""
    src: torch.Tensor          # (B, Ts) source tokens, PAD after the length
    src_lengths: torch.Tensor  # (B,) true source lengths
    tgt_in: torch.Tensor       # (B, Tt) decoder input: BOS then the answer shifted right, PAD after
    tgt_out: torch.Tensor      # (B, Tt) decoder targets: answer then EOS, IGNORE after


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if seed is not None:
            raise ValueError("pass either seed or generator, not both")
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def _check(**numbers: int) -> None:
    for name, n in numbers.items():
        if int(n) != n or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _lm(s: torch.Tensor, scored: torch.Tensor) -> LMBatch:
    """Next-token pair from sequences ``s: (B, L)``; ``scored: (B, L)`` marks tokens to predict."""
    x, y = s[:, :-1], s[:, 1:].clone()                         # (B, L-1) each
    y[~scored[:, 1:]] = IGNORE
    return LMBatch(x.contiguous(), y)


# ----------------------------------------------------------------- associative recall
def associative_recall_vocab(n_keys: int, n_values: int) -> int:
    """Vocabulary size of :func:`associative_recall`: keys ``0..n_keys-1``, then the values."""
    return n_keys + n_values


def associative_recall(batch_size: int, n_pairs: int, n_keys: int = 16, n_values: int = 16, *,
                       n_queries: int = 1, seed: int | None = None,
                       generator: torch.Generator | None = None) -> LMBatch:
    """Key–value pairs, then query keys: predict each query's value.

    Keys are tokens ``0..n_keys-1`` (distinct within a sequence), values are tokens
    ``n_keys..n_keys+n_values-1`` (drawn with replacement). The sequence is::

        k_1 v_1 k_2 v_2 ... k_N v_N  q_1 a_1 ... q_M a_M        (N = n_pairs, M = n_queries)

    with each ``q_m`` one of the keys (uniformly) and ``a_m`` its value. Returns
    ``LMBatch(x, y)`` of shape ``(B, 2N + 2M - 1)``; the scored targets are the answers: in ``x``
    coordinates, position ``2N + 2m`` (which holds ``q_{m+1}``) has target ``a_{m+1}``,
    everything else is ``IGNORE``. With ``n_queries=1`` only the last position is scored.
    """
    _check(batch_size=batch_size, n_pairs=n_pairs, n_keys=n_keys, n_values=n_values, n_queries=n_queries)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} distinct keys need n_keys >= {n_pairs}, got n_keys={n_keys}")
    g = _generator(seed, generator)
    B, N, M = batch_size, n_pairs, n_queries
    keys = torch.rand(B, n_keys, generator=g).argsort(dim=1)[:, :N]                # (B, N) distinct
    values = n_keys + torch.randint(0, n_values, (B, N), generator=g)              # (B, N)
    which = torch.randint(0, N, (B, M), generator=g)                               # (B, M)
    queries, answers = keys.gather(1, which), values.gather(1, which)              # (B, M) each
    pairs = torch.stack([keys, values], dim=2).view(B, 2 * N)                      # (B, N, 2) -> (B, 2N)
    asks = torch.stack([queries, answers], dim=2).view(B, 2 * M)                   # (B, M, 2) -> (B, 2M)
    s = torch.cat([pairs, asks], dim=1)                                            # (B, 2N + 2M)
    scored = torch.zeros_like(s, dtype=torch.bool)
    scored[:, 2 * N + 1::2] = True                                                 # the answers
    return _lm(s, scored)


def associative_recall_pairs_vocab(n_keys: int, n_values: int) -> int:
    """Vocabulary size of :func:`associative_recall_pairs`: queries, pair tokens, answers."""
    return n_keys + n_keys * n_values + n_values


def associative_recall_pairs(batch_size: int, n_pairs: int, n_keys: int = 16, n_values: int = 16, *,
                             seed: int | None = None, generator: torch.Generator | None = None) -> LMBatch:
    """Associative recall with **one token per key–value pair**: a single attention head solves it.

    Token ids: a query for key ``k`` is ``k`` (``0..n_keys-1``); the pair ``(k, v)`` is the single
    token ``n_keys + k·n_values + v``; the answer ``v`` is ``n_keys + n_keys·n_values + v``.
    The sequence is ``pair_1 .. pair_N  q`` (keys distinct, ``q`` one of them) and
    ``LMBatch(x, y)`` has shape ``(B, N + 1)``: only the last position (the query) is scored,
    with target the answer token of ``q``'s value.

    Why a second layout: in :func:`associative_recall` the value sits one position after its
    key, so a model must first copy each key into its value's position (a previous-token head)
    and then match (two layers, an induction circuit); that takes minutes of CPU training.
    Here the query matches the pair token directly: ``q·k`` finds the pair, ``v`` carries the
    value — self-attention's query/key/value in one head, learned in seconds.
    """
    _check(batch_size=batch_size, n_pairs=n_pairs, n_keys=n_keys, n_values=n_values)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} distinct keys need n_keys >= {n_pairs}, got n_keys={n_keys}")
    g = _generator(seed, generator)
    B, N = batch_size, n_pairs
    keys = torch.rand(B, n_keys, generator=g).argsort(dim=1)[:, :N]                # (B, N) distinct
    values = torch.randint(0, n_values, (B, N), generator=g)                       # (B, N)
    which = torch.randint(0, N, (B, 1), generator=g)                               # (B, 1)
    pairs = n_keys + keys * n_values + values                                      # (B, N)
    answer = n_keys + n_keys * n_values + values.gather(1, which)                  # (B, 1)
    s = torch.cat([pairs, keys.gather(1, which), answer], dim=1)                   # (B, N + 2)
    scored = torch.zeros_like(s, dtype=torch.bool)
    scored[:, -1] = True
    return _lm(s, scored)


# ------------------------------------------------------------------- copying, induction
def copying(batch_size: int, length: int, vocab_size: int = 16, *, seed: int | None = None,
            generator: torch.Generator | None = None) -> LMBatch:
    """Random tokens, a separator, then the same tokens again: predict the copy.

    Content tokens are ``0..vocab_size-1``, the separator is token ``vocab_size`` (so the model
    needs ``vocab_size + 1`` embeddings). The sequence is ``t_1 .. t_L SEP t_1 .. t_L`` and
    ``LMBatch(x, y)`` has shape ``(B, 2L)``: positions ``L .. 2L-1`` of ``x`` (``SEP``,
    ``t_1 .. t_{L-1}``) are scored with targets ``t_1 .. t_L``; the first half is ``IGNORE``.
    """
    _check(batch_size=batch_size, length=length, vocab_size=vocab_size)
    g = _generator(seed, generator)
    t = torch.randint(0, vocab_size, (batch_size, length), generator=g)               # (B, L)
    sep = torch.full((batch_size, 1), vocab_size)                                      # (B, 1)
    s = torch.cat([t, sep, t], dim=1)                                                  # (B, 2L + 1)
    scored = torch.zeros_like(s, dtype=torch.bool)
    scored[:, length + 1:] = True
    return _lm(s, scored)


def induction(batch_size: int, length: int, vocab_size: int = 32, *, seed: int | None = None,
              generator: torch.Generator | None = None) -> LMBatch:
    """A random segment seen twice: after ``... A B ... A`` predict ``B`` (induction heads).

    Each sequence is ``r_1 .. r_L r_1 .. r_L`` with ``r`` distinct tokens from
    ``0..vocab_size-1`` (so every next token in the repeat is unambiguous); no separator.
    ``LMBatch(x, y)`` has shape ``(B, 2L - 1)``; positions ``L .. 2L-2`` of ``x``
    (``r_1 .. r_{L-1}`` of the repeat) are scored with targets ``r_2 .. r_L``. The first
    token of the repeat is not predictable and is ``IGNORE`` like the whole first half.
    """
    _check(batch_size=batch_size, length=length, vocab_size=vocab_size)
    if length > vocab_size:
        raise ValueError(f"length={length} distinct tokens need vocab_size >= {length}, got {vocab_size}")
    g = _generator(seed, generator)
    r = torch.rand(batch_size, vocab_size, generator=g).argsort(dim=1)[:, :length]    # (B, L) distinct
    s = torch.cat([r, r], dim=1)                                                       # (B, 2L)
    scored = torch.zeros_like(s, dtype=torch.bool)
    scored[:, length + 1:] = True
    return _lm(s, scored)


def lookback_vocab(vocab_size: int, n_lags: int) -> int:
    """Vocabulary size of :func:`lookback`: the inputs, then one answer token per tuple of looked-up inputs."""
    return vocab_size + vocab_size ** n_lags


def lookback(batch_size: int, length: int, lags=(1, 3, 5), vocab_size: int = 4, *, seed: int | None = None,
             generator: torch.Generator | None = None) -> LMBatch:
    """Random tokens; at each position predict the tuple of the tokens ``lags`` positions back.

    Inputs are tokens ``0..vocab_size-1``; ``LMBatch(x, y)`` has shape ``(B, length)``: for
    ``t >= max(lags)`` the target of position ``t`` is the answer token
    ``vocab_size + sum_i x[t - lags[i]] · vocab_size^(n-1-i)`` (one token per ordered tuple), earlier
    positions are ``IGNORE``. Every scored position needs ``len(lags)`` lookups at fixed offsets
    (used by chapter 09 to compare numbers of key/value heads).
    """
    lags = tuple(int(lag) for lag in lags)
    _check(batch_size=batch_size, length=length, vocab_size=vocab_size)
    if not lags or min(lags) < 1 or max(lags) >= length:
        raise ValueError(f"lags must be in 1..length-1={length - 1}, got {lags}")
    g = _generator(seed, generator)
    x = torch.randint(0, vocab_size, (batch_size, length), generator=g)                # (B, T)
    m = max(lags)
    answer = torch.zeros_like(x[:, m:])                                                 # (B, T - m)
    for lag in lags:
        answer = answer * vocab_size + x[:, m - lag:length - lag]
    y = torch.full_like(x, IGNORE)
    y[:, m:] = vocab_size + answer
    return LMBatch(x, y)


# --------------------------------------------------------------- reversal (encoder–decoder)
def reversal_vocab(vocab_size: int) -> int:
    """Vocabulary size of :func:`reversal`: ``PAD, BOS, EOS`` then ``vocab_size`` content tokens."""
    return N_SPECIAL + vocab_size


def reversal(batch_size: int, length: int, vocab_size: int = 16, *, min_length: int | None = None,
             seed: int | None = None, generator: torch.Generator | None = None) -> Seq2SeqBatch:
    """Reverse a sequence: the encoder reads ``x``, the decoder writes ``x`` backwards.

    Tokens: ``PAD=0, BOS=1, EOS=2``, content ``3 .. 3+vocab_size-1``. Each source has a length
    ``n`` (``length`` for all when ``min_length`` is None, else uniform in
    ``[min_length, length]``) and is padded to ``Ts = length``; ``Tt = length + 1``::

        src     = x_0  x_1 ... x_{n-1}  PAD ...                     (B, Ts)
        tgt_in  = BOS  x_{n-1} ... x_1  x_0  PAD ...                (B, Tt)
        tgt_out = x_{n-1}  ...  x_0     EOS  IGNORE ...             (B, Tt)

    Every ``tgt_out`` position up to and including ``EOS`` is scored. Decoder step ``i < n``
    writes ``x_{n-1-i}``, so a model that solves it by looking up the source puts its
    cross-attention on source position ``n - 1 - i``: an anti-diagonal.
    Pass ``attncourse.masks.padding_mask(src_lengths, Ts)`` so no query attends to padding.
    """
    _check(batch_size=batch_size, length=length, vocab_size=vocab_size)
    min_length = length if min_length is None else min_length
    if not 1 <= min_length <= length:
        raise ValueError(f"min_length must be in [1, length={length}], got {min_length}")
    g = _generator(seed, generator)
    B, L = batch_size, length
    lengths = torch.randint(min_length, length + 1, (B,), generator=g)              # (B,)
    tokens = N_SPECIAL + torch.randint(0, vocab_size, (B, L), generator=g)           # (B, L)
    pos = torch.arange(L)                                                            # (L,)
    valid = pos[None, :] < lengths[:, None]                                          # (B, L)
    src = torch.where(valid, tokens, PAD)                                            # (B, Ts)
    # Reversed content: out[b, i] = src[b, n_b - 1 - i] for i < n_b.
    idx = (lengths[:, None] - 1 - pos[None, :]).clamp(min=0)                         # (B, L)
    rev = torch.where(valid, src.gather(1, idx), PAD)                                # (B, L)
    tgt_in = torch.cat([torch.full((B, 1), BOS), rev], dim=1)                        # (B, L+1)
    tgt_out = torch.cat([rev, torch.full((B, 1), PAD)], dim=1)                       # (B, L+1)
    tgt_out[torch.arange(B), lengths] = EOS
    after = torch.arange(L + 1)[None, :] > lengths[:, None]                          # (B, L+1)
    tgt_out[after] = IGNORE
    return Seq2SeqBatch(src, lengths, tgt_in, tgt_out)


def reversal_alignment(weights: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """How anti-diagonal a cross-attention map of :func:`reversal` is: a 0-dim float32 tensor.

    ``weights: (B, H, Tt, Ts)`` (or ``(B, Tt, Ts)`` for one head); ``lengths: (B,)`` source
    lengths (default: all ``Ts``). The result is the fraction of (example, head, decoder step
    ``i < n``) whose largest weight is on source position ``n - 1 - i``, the token that step
    must write. Steps at or after ``EOS`` are not scored. Chance is about ``1 / n``.
    """
    if weights.dim() == 3:
        weights = weights.unsqueeze(1)                                   # (B, Tt, Ts) -> (B, 1, Tt, Ts)
    if weights.dim() != 4:
        raise ValueError(f"weights must be (B, H, Tt, Ts) or (B, Tt, Ts), got shape {tuple(weights.shape)}")
    b, h, tq, tk = weights.shape
    lengths = torch.full((b,), tk) if lengths is None else lengths.to(torch.long).cpu()
    i = torch.arange(tq)
    target = lengths[:, None] - 1 - i[None, :]                           # (B, Tt) source position to find
    scored = i[None, :] < lengths[:, None]                               # (B, Tt) steps that copy a token
    hit = (weights.detach().cpu().argmax(-1) == target[:, None]) & scored[:, None]  # (B, H, Tt)
    return (hit.sum().double() / (scored.sum() * h)).to(torch.float32)
