"""attncourse.model: shapes, causality, padding, returned weights, determinism, training."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attncourse import data
from attncourse.data import BOS, IGNORE, LMBatch
from attncourse.masks import padding_mask
from attncourse.model import Block, DecoderBlock, TinyGPT, TinySeq2Seq, accuracy, train
from attncourse.testing import assert_matches


def _tokens(B, T, V, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _gpt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=11, block_size=97, d_model=12, n_heads=3, n_layers=2)
    cfg.update(kw)
    return TinyGPT(**cfg).double().eval()


def _s2s(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=9, max_src_len=13, max_tgt_len=8, d_model=12, n_heads=2, n_layers=2)
    cfg.update(kw)
    return TinySeq2Seq(**cfg).double().eval()


# ------------------------------------------------------------------------------ blocks
def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    blk = Block(8, 2, causal=True).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    h = x + blk.attn(blk.ln1(x))
    expected = h + blk.mlp(blk.ln2(h))
    out, w = blk(x, return_weights=True)
    assert_matches(out, expected)
    assert w.shape == (3, 2, 5, 5)
    assert torch.equal(out, blk(x))


def test_decoder_block_shapes():
    torch.manual_seed(0)
    blk = DecoderBlock(8, 2).double().eval()
    x, mem = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 6, 8, dtype=torch.float64)
    y, sw, cw = blk(x, mem, memory_mask=padding_mask([6, 3, 1], 6), return_weights=True)
    assert y.shape == (3, 4, 8) and sw.shape == (3, 2, 4, 4) and cw.shape == (3, 2, 4, 6)
    assert float(cw[1, :, :, 3:].detach().abs().max()) == 0.0


# ----------------------------------------------------------------------------- TinyGPT
@pytest.mark.parametrize("T", [1, 97])
@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_tinygpt_shapes_and_weights(T, n_kv_heads):
    m = _gpt(n_kv_heads=n_kv_heads)
    idx = _tokens(3, T, 11)
    logits, w = m(idx, return_weights=True)
    assert logits.shape == (3, T, 11) and logits.dtype == torch.float64
    assert w.shape == (2, 3, 3, T, T)                             # (layers, B, H, T, T)
    assert_matches(w.sum(-1), torch.ones(2, 3, 3, T, dtype=torch.float64), what="row sums")
    assert float(w.detach().triu(1).abs().max()) == 0.0                    # no weight on the future
    assert torch.equal(logits, m(idx))


def test_tinygpt_does_not_look_at_the_future():
    m = _gpt()
    idx = _tokens(3, 40, 11)
    base = m(idx)
    for t in (0, 17, 39):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        out = m(changed)
        assert_matches(out[:, :t], base[:, :t], what=f"logits before the changed token {t}")
        assert (out[:, t:] - base[:, t:]).abs().max() > 1e-6      # and the change is seen


def test_tinygpt_rejects_too_long_or_float_input():
    m = _gpt(block_size=8)
    with pytest.raises(ValueError, match="length 9.*8 positions"):
        m(_tokens(1, 9, 11))
    with pytest.raises(ValueError, match="integer"):
        m(torch.zeros(1, 3))


def test_same_seed_same_model_and_no_hidden_state():
    a, b = _gpt(seed=5), _gpt(seed=5)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert not torch.equal(_gpt(seed=6).tok_emb.weight, a.tok_emb.weight)
    keys = set(vars(a))
    a(_tokens(2, 5, 11), return_weights=True)
    assert set(vars(a)) == keys                                  # nothing stored on the module


def test_generate_keeps_prefix_and_is_greedy():
    m = _gpt(block_size=6)
    prefix = _tokens(2, 3, 11)
    out = m.generate(prefix, 5)
    assert out.shape == (2, 8) and torch.equal(out[:, :3], prefix)
    assert torch.equal(out[:, 3], m(prefix)[:, -1].argmax(-1))
    assert torch.equal(out, m.generate(prefix, 5))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(m.generate(prefix, 4, temperature=1.0, generator=g1),
                       m.generate(prefix, 4, temperature=1.0, generator=g2))


# ------------------------------------------------------------------------- TinySeq2Seq
def test_seq2seq_shapes_and_weights():
    m = _s2s()
    src, tgt = _tokens(3, 13, 9), _tokens(3, 5, 9, seed=1)
    logits, w = m(src, tgt, src_lengths=torch.tensor([13, 4, 1]), return_weights=True)
    assert logits.shape == (3, 5, 9)
    assert w.encoder.shape == (2, 3, 2, 13, 13)
    assert w.decoder.shape == (2, 3, 2, 5, 5)
    assert w.cross.shape == (2, 3, 2, 5, 13)                      # Tq = 5 != Tk = 13
    for maps in w:
        assert_matches(maps.sum(-1), torch.ones(maps.shape[:-1], dtype=torch.float64))
    assert float(w.cross[:, 1, :, :, 4:].detach().abs().max()) == 0.0     # padding gets no weight
    assert float(w.cross[:, 2, :, :, 1:].detach().abs().max()) == 0.0


def test_seq2seq_padding_tokens_have_no_influence():
    m = _s2s()
    lengths = torch.tensor([13, 6, 2])
    src, tgt = _tokens(3, 13, 9), _tokens(3, 7, 9, seed=1)
    base = m(src, tgt, src_lengths=lengths)
    noisy = src.clone()
    pad = torch.arange(13)[None, :] >= lengths[:, None]
    noisy[pad] = _tokens(1, int(pad.sum()), 9, seed=2)[0]
    assert_matches(m(noisy, tgt, src_lengths=lengths), base)
    # ...and equals running the unpadded source alone
    for b, n in enumerate(lengths.tolist()):
        assert_matches(m(src[b:b + 1, :n], tgt[b:b + 1]), base[b:b + 1])


def test_seq2seq_decoder_is_causal():
    m = _s2s()
    src, tgt = _tokens(2, 10, 9), _tokens(2, 8, 9, seed=1)
    base = m(src, tgt)
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 9
    assert_matches(m(src, changed)[:, :5], base[:, :5])


def test_seq2seq_generate():
    m = _s2s()
    src = _tokens(2, 6, 9)
    out = m.generate(src, 4, bos=BOS, src_lengths=torch.tensor([6, 3]))
    assert out.shape == (2, 5) and bool((out[:, 0] == BOS).all())
    assert torch.equal(out[:, 1], m(src, out[:, :1], src_lengths=torch.tensor([6, 3]))[:, 0].argmax(-1))


# ---------------------------------------------------------------------------- training
@pytest.mark.usefixtures("one_thread")
def test_training_reduces_loss_tinygpt_copying():
    torch.manual_seed(0)
    m = TinyGPT(9, 12, d_model=32, n_heads=2, n_layers=1)
    g = torch.Generator().manual_seed(0)
    result = train(m, lambda step: data.copying(32, 6, 8, generator=g), steps=40, lr=3e-3)
    assert len(result.losses) == 40
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5
    assert not m.training


@pytest.mark.usefixtures("one_thread")
def test_training_reduces_loss_seq2seq_reversal():
    torch.manual_seed(0)
    m = TinySeq2Seq(data.reversal_vocab(8), 6, 7, d_model=32, n_heads=2, n_layers=1)
    g = torch.Generator().manual_seed(0)
    result = train(m, lambda step: data.reversal(32, 6, 8, min_length=3, generator=g), steps=40, lr=3e-3)
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5


def test_training_is_deterministic():
    def run():
        torch.manual_seed(1)
        m = TinyGPT(9, 12, d_model=16, n_heads=2, n_layers=1)
        return train(m, lambda s: data.copying(8, 6, 8, seed=s), steps=5).losses
    assert run() == run()


def test_accuracy_counts_only_scored_positions():
    class Oracle(nn.Module):
        def predict(self, batch):
            return torch.where(batch.y == IGNORE, 0, batch.y)     # right wherever scored
    batch = data.copying(4, 5, 6, seed=0)
    assert accuracy(Oracle(), batch) == 1.0
    wrong = LMBatch(batch.x, torch.where(batch.y == IGNORE, IGNORE, batch.y))

    class OffByOne(Oracle):
        def predict(self, b):
            p = super().predict(b).clone()
            p[0, -1] += 1                                           # one scored token wrong
            return p
    assert accuracy(OffByOne(), wrong) == pytest.approx(1 - 1 / 20)
    assert accuracy(OffByOne(), wrong, per_sequence=True) == pytest.approx(3 / 4)


# ------------------------------------------------------------------- norms and post-norm
def test_rmsnorm_matches_formula_and_keeps_dtype():
    from attncourse.model import RMSNorm
    torch.manual_seed(0)
    n = RMSNorm(7).double()
    with torch.no_grad():
        n.weight.copy_(torch.randn(7, dtype=torch.float64))
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + n.eps) * n.weight
    assert_matches(n(x), expected)
    h = RMSNorm(7)(x.to(torch.bfloat16))
    assert h.dtype == torch.bfloat16


def test_post_norm_block_matches_formula():
    torch.manual_seed(0)
    blk = Block(8, 2, causal=True, prenorm=False, norm="rms").double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    h = blk.ln1(x + blk.attn(x))
    assert_matches(blk(x), blk.ln2(h + blk.mlp(h)))


def test_norm_kind_is_checked():
    with pytest.raises(ValueError, match="'layer' or 'rms'"):
        Block(8, 2, norm="batch")


@pytest.mark.parametrize("prenorm", [True, False])
def test_tinygpt_norm_options_stay_causal(prenorm):
    m = _gpt(norm="rms", prenorm=prenorm)
    idx = _tokens(2, 9, 11)
    full = m(idx)
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    assert_matches(m(changed)[:, :6], full[:, :6])
    assert isinstance(m.ln_f, nn.Identity) != prenorm
