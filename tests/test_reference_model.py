"""The full encoder-decoder and greedy decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transformer_course.decoding import greedy_decode
from transformer_course.layers import DecoderLayer, EncoderLayer
from transformer_course.masks import causal_mask, padding_mask, to_torch_module_mask
from transformer_course.model import (
    Decoder,
    Encoder,
    EncoderDecoder,
    TransformerConfig,
    make_model,
)

PAD, START, END = 0, 1, 2


def small_config(**changes) -> TransformerConfig:
    base = dict(src_vocab=13, tgt_vocab=11, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                dropout=0.1, max_len=32, pad_id=PAD)
    return TransformerConfig(**{**base, **changes})


def small_model(device, dtype=torch.float64, **changes) -> EncoderDecoder:
    return make_model(small_config(**changes)).to(device=device, dtype=dtype).eval()


def random_ids(batch, seq, vocab, device, min_len=1):
    """Ids in [3, vocab) (no pad/start/end), right-padded to random lengths >= min_len."""
    ids = torch.randint(3, vocab, (batch, seq))
    for b, n in enumerate(torch.randint(min_len, seq + 1, (batch,))):
        ids[b, n:] = PAD
    return ids.to(device)


# --- the model -----------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_gives_log_probabilities(norm_first, device):
    model = small_model(device, norm_first=norm_first)
    src, tgt = random_ids(3, 7, 13, device), random_ids(3, 5, 11, device)
    log_probs = model(src, tgt)
    assert log_probs.shape == (3, 5, 11)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 5, dtype=torch.float64, device=device))


def test_make_model_uses_xavier_and_zero_padding_rows():
    model = make_model(small_config())
    for name, p in model.named_parameters():
        if p.dim() > 1:
            fan_out, fan_in = p.shape
            bound = math.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform's range
            assert p.abs().max() <= bound, name
            assert p.abs().max() > 0.8 * bound, name  # and it fills that range
    assert (model.src_embed.embedding.weight[PAD] == 0).all()
    assert (model.tgt_embed.embedding.weight[PAD] == 0).all()
    assert isinstance(model.encoder.norm, nn.Identity)  # post-LN: no final norm
    assert isinstance(make_model(small_config(norm_first=True)).decoder.norm, nn.LayerNorm)


def test_decoder_is_causal(device):
    """Changing target token t changes no prediction before t: the future is masked."""
    model = small_model(device)
    src, tgt = random_ids(2, 6, 13, device), random_ids(2, 5, 11, device, min_len=5)
    changed = tgt.clone()
    changed[:, 3] = (changed[:, 3] + 1 - 3) % 8 + 3  # another non-special token
    before, after = model(src, tgt), model(src, changed)
    torch.testing.assert_close(before[:, :3], after[:, :3], atol=1e-12, rtol=0)
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_source_padding_is_ignored(device):
    """Appending more padding to the source changes nothing."""
    model = small_model(device)
    src, tgt = random_ids(3, 5, 13, device), random_ids(3, 4, 11, device)
    longer = torch.cat([src, torch.full((3, 4), PAD, device=device)], dim=1)
    torch.testing.assert_close(model(src, tgt), model(longer, tgt), atol=1e-12, rtol=0)


def test_teacher_forcing_equals_step_by_step(device):
    """Position t of one teacher-forced pass = the last position of decoding t + 1 tokens."""
    model = small_model(device)
    src, tgt = random_ids(2, 6, 13, device), random_ids(2, 5, 11, device, min_len=5)
    full = model(src, tgt)  # (2, 5, 11)
    src_mask = model.make_src_mask(src)
    memory = model.encode(src, src_mask)
    for t in range(1, 6):
        prefix = tgt[:, :t]
        hidden = model.decode(prefix, memory, model.make_tgt_mask(prefix), src_mask)
        torch.testing.assert_close(model.generator(hidden[:, -1]), full[:, t - 1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_match_torch(norm_first, precise):
    """Our Encoder/Decoder stacks with copied layers equal nn.TransformerEncoder/Decoder.

    torch's stacks take a final norm as an argument; ours has one exactly when pre-LN.
    Grad stays enabled, which keeps torch off its fast path.
    """
    config = small_config(norm_first=norm_first, dropout=0.0, layer_norm_eps=1e-5)
    kw = dict(dtype=precise.dtype)
    layer_kw = dict(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0,
                    norm_first=norm_first, batch_first=True, **kw)
    final = (lambda: nn.LayerNorm(16, **kw)) if norm_first else (lambda: None)
    torch_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer_kw), 2, norm=final(),
                                          enable_nested_tensor=False)
    torch_decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer_kw), 2, norm=final())
    for t_layer in (*torch_encoder.layers, *torch_decoder.layers):  # make copies differ
        with torch.no_grad():
            for p in t_layer.parameters():
                p.add_(0.1 * torch.randn_like(p))

    encoder, decoder = Encoder(config).to(**kw), Decoder(config).to(**kw)
    encoder.layers = nn.ModuleList(EncoderLayer.from_torch(t) for t in torch_encoder.layers)
    decoder.layers = nn.ModuleList(DecoderLayer.from_torch(t) for t in torch_decoder.layers)
    if norm_first:
        encoder.norm.load_state_dict(torch_encoder.norm.state_dict())
        decoder.norm.load_state_dict(torch_decoder.norm.state_dict())

    src = torch.randn(2, 6, 16, **kw)
    tgt = torch.randn(2, 4, 16, **kw)
    src_pad = padding_mask(random_ids(2, 6, 13, "cpu"), PAD)  # (2, 1, 1, 6)
    causal = causal_mask(4)
    memory = encoder(src, src_pad)
    expected_memory = torch_encoder(src, src_key_padding_mask=to_torch_module_mask(src_pad[:, 0, 0]))
    torch.testing.assert_close(memory, expected_memory, atol=precise.atol, rtol=precise.rtol)
    out = decoder(tgt, memory, causal, src_pad)
    expected = torch_decoder(tgt, memory, tgt_mask=to_torch_module_mask(causal),
                             memory_key_padding_mask=to_torch_module_mask(src_pad[:, 0, 0]))
    torch.testing.assert_close(out, expected, atol=precise.atol, rtol=precise.rtol)


def test_gradients_flow_even_with_an_all_padding_source(device):
    model = make_model(small_config()).to(device).train()
    src = random_ids(3, 6, 13, device, min_len=3)  # >= 3 keys: softmax depends on the query
    src[2] = PAD  # one source that is nothing but padding: every attention row to it is empty
    tgt = random_ids(3, 5, 11, device, min_len=3)
    log_probs = model(src, tgt[:, :-1])
    loss = nn.functional.nll_loss(log_probs.transpose(1, 2), tgt[:, 1:], ignore_index=PAD)
    loss.backward()
    assert torch.isfinite(log_probs).all() and torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert (model.src_embed.embedding.weight.grad[PAD] == 0).all()  # padding row stays put


# --- greedy decoding -----------------------------------------------------------------------


def forced_model(device, token: int) -> EncoderDecoder:
    """A model whose generator always prefers ``token``, whatever the decoder says."""
    model = small_model(device)
    with torch.no_grad():
        model.generator.proj.weight.zero_()
        model.generator.proj.bias.zero_()
        model.generator.proj.bias[token] = 10.0
    return model


def test_greedy_stops_at_end_token(device):
    model = forced_model(device, END)
    out = greedy_decode(model, random_ids(3, 5, 13, device), max_len=10, start_id=START, end_id=END)
    assert out.tolist() == [[START, END]] * 3  # stopped at once, not after 10 steps


def test_greedy_stops_at_max_len(device):
    model = forced_model(device, 7)
    out = greedy_decode(model, random_ids(3, 5, 13, device), max_len=6, start_id=START, end_id=END)
    assert out.dtype == torch.long and out.device.type == device.type
    assert out.tolist() == [[START, 7, 7, 7, 7, 7]] * 3


class CopySource(nn.Module):
    """A stand-in model that emits its source one token per step: decoding's control flow
    (per-sequence end, padding, early stop) can then be checked with known answers."""

    pad_id = PAD

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def make_src_mask(self, src):
        return padding_mask(src, self.pad_id)

    def make_tgt_mask(self, tgt):
        return causal_mask(tgt.shape[1], device=tgt.device)

    def encode(self, src, src_mask=None):
        return src  # the "memory" is the source itself

    def decode(self, tgt, memory, tgt_mask=None, memory_mask=None):
        t = tgt.shape[1]  # t tokens so far: the next one is source token t - 1
        source_token = memory[:, t - 1] if t - 1 < memory.shape[1] else memory[:, -1]
        return source_token[:, None].expand(-1, t)  # (batch, t) "hidden states"

    def generator(self, hidden):
        return nn.functional.one_hot(hidden, self.vocab).float().log()  # argmax = that token


def test_greedy_ends_each_sequence_on_its_own():
    src = torch.tensor([[5, END, 9, 9, 9, 9], [6, 7, 8, END, 9, 9], [4, 4, 4, 4, 4, 4]])
    model = CopySource(vocab=10)
    out = greedy_decode(model, src, max_len=10, start_id=START, end_id=END)
    assert out.tolist() == [
        [START, 5, END, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
        [START, 6, 7, 8, END, PAD, PAD, PAD, PAD, PAD],
        [START, 4, 4, 4, 4, 4, 4, 4, 4, 4],  # never ends: cut at max_len
    ]
    early = greedy_decode(model, src[:2], max_len=10, start_id=START, end_id=END)
    assert early.shape == (2, 5)  # both ended: the loop stopped without reaching max_len


def test_greedy_batch_equals_one_at_a_time(device):
    model = small_model(device)
    src = random_ids(4, 7, 13, device)
    src[0, 3:] = PAD  # lengths differ, so the batch is padded
    # Choose as end token what sequence 0 emits at step 2, so it ends early and the others
    # (probably) do not: both kinds of row are then covered.
    probe = greedy_decode(model, src, max_len=12, start_id=START, end_id=-1)
    end = probe[0, 2].item()
    first = int((probe[0, 1:] == end).nonzero()[0]) + 1  # where sequence 0 first emits it
    batched = greedy_decode(model, src, max_len=12, start_id=START, end_id=end)
    assert batched[0, : first + 1].tolist() == probe[0, : first + 1].tolist()
    assert (batched[0, first + 1 :] == PAD).all()
    assert batched.shape[1] <= 12

    for b in range(4):
        alone_src = src[b : b + 1, : int((src[b] != PAD).sum())]  # no padding at all
        alone = greedy_decode(model, alone_src, max_len=12, start_id=START, end_id=end)[0]
        n = alone.shape[0]
        assert batched[b, :n].tolist() == alone.tolist(), b
        assert (batched[b, n:] == PAD).all(), b  # after its end: padding only
        # A greedy output is a fixed point of teacher forcing: fed back in one pass, it
        # predicts itself, position by position.
        predicted = model(alone_src, alone[None, :-1]).argmax(-1)[0]
        assert predicted.tolist() == alone[1:].tolist(), b


def test_greedy_restores_training_mode():
    model = make_model(small_config()).train()
    greedy_decode(model, torch.tensor([[4, 5, 6]]), max_len=4, start_id=START, end_id=END)
    assert model.training
