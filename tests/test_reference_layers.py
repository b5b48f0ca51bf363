"""The building blocks against PyTorch: positions, embeddings, multi-head attention,
feed-forward, encoder and decoder layers.

torch's Transformer layers and nn.MultiheadAttention have an inference "fast path" (fused
kernels, taken in eval mode when autograd is off). We call them with grad enabled and
parameters that require grad, which keeps them on the ordinary path, the one whose maths we
mirror; in eval mode (dropout off) both sides are then deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_course.embeddings import TokenEmbedding
from transformer_course.feedforward import FeedForward
from transformer_course.layers import DecoderLayer, EncoderLayer
from transformer_course.masks import causal_mask, combine_masks, padding_mask, to_torch_module_mask
from transformer_course.multihead import MultiHeadAttention, merge_heads, split_heads
from transformer_course.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)


def _random_ids(batch, seq, device, vocab=11, pad_id=0):
    """Token ids in [1, vocab) with random right padding; every row keeps >= 1 real token."""
    ids = torch.randint(1, vocab, (batch, seq))
    for b, n in enumerate(torch.randint(1, seq + 1, (batch,))):
        ids[b, n:] = pad_id
    return ids.to(device)


def _key_padding(mask):
    """Our padding mask (batch, 1, 1, S), True = real, as torch's key_padding_mask (batch, S),
    True = ignore."""
    return to_torch_module_mask(mask[:, 0, 0, :])


# --- positional encodings ------------------------------------------------------------------


@pytest.mark.parametrize("seq_len, d_model", [(7, 8), (50, 16), (3, 5), (1, 1)])
def test_sinusoidal_table_matches_formula(seq_len, d_model):
    # The formula written independently, element by element, in numpy.
    expected = np.zeros((seq_len, d_model))
    for pos in range(seq_len):
        for col in range(d_model):
            two_i = col - col % 2
            angle = pos / 10000 ** (two_i / d_model)
            expected[pos, col] = math.sin(angle) if col % 2 == 0 else math.cos(angle)
    table = sinusoidal_encoding(seq_len, d_model, dtype=torch.float64)
    assert table.shape == (seq_len, d_model)
    np.testing.assert_allclose(table.numpy(), expected, atol=1e-12, rtol=0)


def test_sinusoidal_table_known_values(device):
    table = sinusoidal_encoding(4, 6, device=device, dtype=torch.float64)
    assert table.device.type == device.type and table.dtype == torch.float64
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # sin 0, cos 0, ...
    assert table[1, 0].item() == pytest.approx(math.sin(1.0))  # column 0 has frequency 1
    assert table[1, 1].item() == pytest.approx(math.cos(1.0))
    assert table[2, 2].item() == pytest.approx(math.sin(2 / 10000 ** (2 / 6)))
    assert table.abs().max() <= 1.0


def test_sinusoidal_module_adds_table_and_checks_length(device):
    module = SinusoidalPositionalEncoding(max_len=10, d_model=6).to(device)
    x = torch.randn(2, 4, 6, device=device)
    torch.testing.assert_close(module(x), x + sinusoidal_encoding(4, 6, device=device))
    with pytest.raises(ValueError, match="exceeds max_len"):
        module(torch.randn(1, 11, 6, device=device))
    assert "pe" not in module.state_dict()  # a non-persistent buffer: not checkpointed
    assert module.double().pe.dtype == torch.float64  # ...but it follows .to()/.double()


def test_learned_positions_add_one_row_per_position(device):
    module = LearnedPositionalEmbedding(max_len=8, d_model=4).to(device)
    x = torch.randn(3, 5, 4, device=device)
    torch.testing.assert_close(module(x), x + module.embedding.weight[:5])
    with pytest.raises(ValueError, match="exceeds max_len"):
        module(torch.randn(1, 9, 4, device=device))


def test_token_embedding_scales_by_sqrt_d_model(device):
    embed = TokenEmbedding(vocab_size=10, d_model=16, padding_idx=0).to(device)
    ids = torch.tensor([[3, 1, 0]], device=device)
    out = embed(ids)
    assert out.shape == (1, 3, 16)
    torch.testing.assert_close(out, embed.embedding.weight[ids] * 4.0)
    assert (out[0, 2] == 0).all()  # the padding row is zero


# --- splitting heads -----------------------------------------------------------------------


def test_split_heads_gives_each_head_its_columns():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):
        torch.testing.assert_close(heads[:, h], x[:, :, 4 * h : 4 * (h + 1)], atol=0, rtol=0)
    assert torch.equal(merge_heads(heads), x)
    with pytest.raises(ValueError, match="divisible"):
        split_heads(x, 5)


# --- multi-head attention ------------------------------------------------------------------

# (batch, L, S, d_model, n_heads); S != L is cross-attention, length 1 included.
MHA_SHAPES = [(2, 5, 5, 16, 4), (3, 4, 7, 12, 3), (1, 1, 6, 8, 2), (2, 6, 1, 8, 8), (4, 3, 3, 10, 1)]


@pytest.mark.parametrize("shape", MHA_SHAPES, ids=str)
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "causal+padding"])
def test_mha_matches_torch(shape, mask_kind, device, precise):
    batch, L, S, d_model, n_heads = shape
    kw = dict(device=device, dtype=precise.dtype)
    theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True, **kw).eval()
    with torch.no_grad():  # torch zeroes the in-projection bias; make it count
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = MultiHeadAttention.from_torch(theirs).eval()

    query = torch.randn(batch, L, d_model, **kw)
    memory = query if L == S else torch.randn(batch, S, d_model, **kw)
    causal = torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S)
    padding = padding_mask(_random_ids(batch, S, device), pad_id=0)  # (batch, 1, 1, S)
    use_causal = "causal" in mask_kind
    use_padding = "padding" in mask_kind
    mask = combine_masks(causal if use_causal else None, padding if use_padding else None)

    out, weights = ours(query, memory, memory, mask)
    expected, expected_weights = theirs(
        query,
        memory,
        memory,
        attn_mask=to_torch_module_mask(causal) if use_causal else None,  # True = blocked
        key_padding_mask=_key_padding(padding) if use_padding else None,  # True = ignore
        need_weights=True,
        average_attn_weights=False,
    )
    assert out.shape == (batch, L, d_model) and weights.shape == (batch, n_heads, L, S)
    torch.testing.assert_close(out, expected, atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(weights, expected_weights, atol=precise.atol, rtol=precise.rtol)


def test_mha_fully_masked_row_is_zero_where_torch_gives_nan():
    theirs = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    mask = padding_mask(torch.tensor([[1, 2, 3], [0, 0, 0]]), pad_id=0)  # batch 1: all padding
    out, weights = ours(x, x, x, mask)
    expected, _ = theirs(x, x, x, key_padding_mask=_key_padding(mask))
    assert expected[1].isnan().all()  # torch: NaN for the all-padding sequence
    assert (weights[1] == 0).all()  # ours: no weight anywhere ...
    torch.testing.assert_close(out[1], theirs.out_proj.bias.expand(3, 8))  # ... so only W^O's bias
    torch.testing.assert_close(out[0], expected[0], atol=1e-10, rtol=1e-10)


def test_mha_with_other_key_and_value_widths(precise):
    kw = dict(dtype=precise.dtype)
    theirs = nn.MultiheadAttention(12, 3, kdim=5, vdim=7, batch_first=True, **kw).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    q, k, v = torch.randn(2, 4, 12, **kw), torch.randn(2, 6, 5, **kw), torch.randn(2, 6, 7, **kw)
    out, weights = ours(q, k, v)
    expected, expected_weights = theirs(q, k, v, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(weights, expected_weights, atol=precise.atol, rtol=precise.rtol)


def test_mha_without_bias():
    theirs = nn.MultiheadAttention(8, 2, bias=False, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(theirs)
    assert ours.q_proj.bias is None and ours.out_proj.bias is None
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x, x, x)[0], theirs(x, x, x)[0], atol=1e-10, rtol=1e-10)


def test_mha_rejects_what_it_cannot_copy_or_compute():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="batch_first"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True))
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="ambiguous"):
        MultiHeadAttention(8, 2)(x, x, x, torch.ones(2, 3, 3, dtype=torch.bool))


def test_mha_gradients_match_torch(precise):
    kw = dict(dtype=precise.dtype)
    theirs = nn.MultiheadAttention(8, 2, batch_first=True, **kw)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(3, 4, 8, **kw, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    mask = causal_mask(4)
    ours(x, x, x, mask)[0].square().sum().backward()
    theirs(y, y, y, attn_mask=to_torch_module_mask(mask))[0].square().sum().backward()
    torch.testing.assert_close(x.grad, y.grad, atol=precise.atol, rtol=precise.rtol)
    w_q = theirs.in_proj_weight.grad[:8]  # torch's W^Q rows
    torch.testing.assert_close(ours.q_proj.weight.grad, w_q, atol=precise.atol, rtol=precise.rtol)


def test_mha_dropout_acts_only_in_training():
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 5, 8)
    mha.train()
    out1, w1 = mha(x, x, x)
    out2, _ = mha(x, x, x)
    assert not torch.allclose(out1, out2)  # a different random set of weights dropped
    torch.testing.assert_close(w1.sum(-1), torch.ones(2, 2, 5))  # weights shown pre-dropout
    mha.eval()
    assert torch.equal(mha(x, x, x)[0], mha(x, x, x)[0])


# --- feed-forward --------------------------------------------------------------------------


@pytest.mark.parametrize("activation, fn", [("relu", F.relu), ("gelu", F.gelu)])
def test_feed_forward_is_linear_activation_linear(activation, fn, device):
    ff = FeedForward(6, 10, activation=activation).to(device)
    x = torch.randn(2, 3, 6, device=device)
    expected = fn(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    torch.testing.assert_close(ff(x), expected)
    with pytest.raises(ValueError, match="activation"):
        FeedForward(6, 10, activation="tanh")


def test_feed_forward_dropout_is_on_the_hidden_activations():
    ff = FeedForward(6, 10, dropout=0.5, activation="gelu").train()
    x = torch.randn(2, 3, 6)
    torch.manual_seed(1)
    out = ff(x)
    torch.manual_seed(1)  # the same random mask, drawn at the same place
    hidden = F.dropout(F.gelu(ff.linear1(x)), p=0.5, training=True)
    torch.testing.assert_close(out, ff.linear2(hidden))


# --- encoder and decoder layers ------------------------------------------------------------

LAYER_VARIANTS = [
    pytest.param(norm_first, activation, id=f"{'pre' if norm_first else 'post'}LN-{name}")
    for norm_first in (False, True)
    for name, activation in (("relu", "relu"), ("gelu", F.gelu), ("GELU-module", nn.GELU()))
]


@pytest.mark.parametrize("norm_first, activation", LAYER_VARIANTS)
@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "padding+causal"])
def test_encoder_layer_matches_torch(norm_first, activation, with_mask, device, precise):
    kw = dict(device=device, dtype=precise.dtype)
    theirs = nn.TransformerEncoderLayer(
        16, 4, 24, dropout=0.1, activation=activation, norm_first=norm_first,
        layer_norm_eps=1e-6, batch_first=True, **kw,
    ).eval()  # dropout off; grad stays on, so no fast path (see the module docstring)
    ours = EncoderLayer.from_torch(theirs).eval()
    assert ours.norm1.eps == 1e-6 and ours.norm_first == norm_first

    x = torch.randn(3, 5, 16, **kw)
    pad = padding_mask(_random_ids(3, 5, device), pad_id=0)  # (3, 1, 1, 5)
    causal = causal_mask(5, device=device)
    mask = combine_masks(pad, causal) if with_mask else None
    expected = theirs(
        x,
        src_mask=to_torch_module_mask(causal) if with_mask else None,
        src_key_padding_mask=_key_padding(pad) if with_mask else None,
    )
    torch.testing.assert_close(ours(x, mask), expected, atol=precise.atol, rtol=precise.rtol)


@pytest.mark.parametrize("norm_first, activation", LAYER_VARIANTS)
@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "masks"])
def test_decoder_layer_matches_torch(norm_first, activation, with_mask, device, precise):
    kw = dict(device=device, dtype=precise.dtype)
    theirs = nn.TransformerDecoderLayer(
        16, 4, 24, dropout=0.1, activation=activation, norm_first=norm_first,
        batch_first=True, **kw,
    ).eval()
    ours = DecoderLayer.from_torch(theirs).eval()

    x = torch.randn(3, 4, 16, **kw)  # T = 4 target positions
    memory = torch.randn(3, 6, 16, **kw)  # S = 6 source positions
    tgt_pad = padding_mask(_random_ids(3, 4, device), pad_id=0)  # (3, 1, 1, 4)
    src_pad = padding_mask(_random_ids(3, 6, device), pad_id=0)  # (3, 1, 1, 6)
    causal = causal_mask(4, device=device)
    if with_mask:
        got = ours(x, memory, self_mask=combine_masks(tgt_pad, causal), memory_mask=src_pad)
        expected = theirs(
            x,
            memory,
            tgt_mask=to_torch_module_mask(causal),
            tgt_key_padding_mask=_key_padding(tgt_pad),
            memory_key_padding_mask=_key_padding(src_pad),
        )
    else:
        got, expected = ours(x, memory), theirs(x, memory)
    torch.testing.assert_close(got, expected, atol=precise.atol, rtol=precise.rtol)


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_gradients_match_torch(norm_first, precise):
    kw = dict(dtype=precise.dtype)
    theirs = nn.TransformerDecoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first, batch_first=True, **kw)
    ours = DecoderLayer.from_torch(theirs)
    x = torch.randn(2, 3, 8, **kw, requires_grad=True)
    memory = torch.randn(2, 4, 8, **kw, requires_grad=True)
    x2, memory2 = (t.detach().clone().requires_grad_(True) for t in (x, memory))
    causal = causal_mask(3)
    ours(x, memory, self_mask=causal).square().sum().backward()
    theirs(x2, memory2, tgt_mask=to_torch_module_mask(causal)).square().sum().backward()
    for a, b in ((x.grad, x2.grad), (memory.grad, memory2.grad)):
        torch.testing.assert_close(a, b, atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(ours.feed_forward.linear1.weight.grad, theirs.linear1.weight.grad)


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_dropout_placement_matches_torch(norm_first):
    """In training mode, with the same seed, the residual and feed-forward dropouts drop the
    same entries as torch's: they sit at the same places and are drawn in the same order.

    torch's attention dropout is set to 0 here: its fused kernel draws random numbers
    differently from nn.Dropout, so only the sublayer dropouts can be compared exactly.
    A batch of one, because torch's attention output is laid out (seq, batch, d_model) in
    memory and dropout draws its mask in memory order: with batch 1 the orders coincide.
    """
    kw = dict(dropout=0.3, norm_first=norm_first, batch_first=True, dtype=torch.float64)
    encoder = nn.TransformerEncoderLayer(8, 2, 12, **kw).train()
    decoder = nn.TransformerDecoderLayer(8, 2, 12, **kw).train()
    for attn in (encoder.self_attn, decoder.self_attn, decoder.multihead_attn):
        attn.dropout = 0.0
    ours_encoder = EncoderLayer.from_torch(encoder).train()
    ours_decoder = DecoderLayer.from_torch(decoder).train()
    x, memory = torch.randn(1, 5, 8, dtype=torch.float64), torch.randn(1, 4, 8, dtype=torch.float64)

    for ours, theirs, args in ((ours_encoder, encoder, (x,)), (ours_decoder, decoder, (x, memory))):
        torch.manual_seed(5)
        got = ours(*args)
        torch.manual_seed(5)
        expected = theirs(*args)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
        torch.manual_seed(6)
        assert not torch.allclose(got, theirs(*args))  # a different seed does differ


def test_layer_backward_has_no_nan_with_fully_masked_row():
    layer = EncoderLayer(8, 2, 12, norm_first=True)
    x = torch.randn(2, 3, 8, requires_grad=True)
    mask = padding_mask(torch.tensor([[4, 5, 0], [0, 0, 0]]), pad_id=0)  # sequence 1: all pad
    out = layer(x, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_from_torch_rejects_unsupported_layers():
    with pytest.raises(ValueError, match="batch_first"):
        EncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 12))
    tanh_gelu = nn.TransformerEncoderLayer(8, 2, 12, activation=nn.GELU("tanh"), batch_first=True)
    with pytest.raises(ValueError, match="activation"):
        EncoderLayer.from_torch(tanh_gelu)
    with pytest.raises(ValueError, match="bias=False"):
        DecoderLayer.from_torch(nn.TransformerDecoderLayer(8, 2, 12, bias=False, batch_first=True))
