"""Chapter 7, grader side: references, hidden inputs and typical mistakes.

Hidden checks compare with the reference: layers given the weights of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (post-LN and pre-LN), the forward
pass on the parts of small encoder-decoders with fixed seeded weights, and decoding on small
seeded models. The typical mistakes are written as code (a layer without its residual, a
forward pass without the causal mask, greedy decoding that never pads, beam search that stops
at the first finished hypothesis, ...) so that a message can name the one a student made; the
forward pass, greedy decoding and beam search are each one function with a knob per mistake,
right with every knob at its default. That is why this module lives on the grader's side: it is
never imported by the student side or inside the grading sandbox.

What a hidden case hands to the student's code travels with it into that sandbox, so the cases
hold only answer-free objects, whose classes the student side defines: the forward pass gets
:class:`~transformer_course.exercises.ch07_encoder_decoder.TransformerParts` (the parts of a
real model, not the model, whose own forward is the answer), decoding gets models with
``encode``/``decode``/``generator`` and nothing that decodes. The visible checks name the
forward pass's mistakes from their recorded outputs (``exercises/recorded/07-encoder-decoder.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...decoding import greedy_decode
from ...exercises.base import Case
from ...exercises.ch07_encoder_decoder import (
    END,
    PAD,
    START,
    LayerStackModel,
    MixingModel,
    ModelCase,
    TransformerParts,
)
from ...exercises.inputs import randn, with_float32
from ...feedforward import FeedForward
from ...layers import DecoderLayer, EncoderLayer
from ...model import EncoderDecoder, TransformerConfig
from ...multihead import MultiHeadAttention
from ..hidden_spec import HiddenTests, Mistake

# --------------------------------------------------------------------------- models for the cases


def _randomise(module: nn.Module, gen: torch.Generator, weight_scale: float = 1.0) -> None:
    """Fill every parameter from ``gen``: matrices ~ N(0, weight_scale² / fan_in), LayerNorm
    weights near 1, biases small. Nothing is zero or one, so no mix-up can hide."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(randn(gen, *p.shape, scale=weight_scale / math.sqrt(p.shape[1])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + randn(gen, *p.shape, scale=0.2))
            else:
                p.copy_(randn(gen, *p.shape, scale=0.2))


def _quietly(build: Callable[[], Any]) -> Any:
    """``build()`` without touching the global random state (modules draw their initial
    weights from it; ours are then overwritten from the case's generator anyway)."""
    with torch.random.fork_rng(devices=[]):
        return build()


def random_model(gen: torch.Generator, end_bias: float = 1.0, **changes: Any) -> EncoderDecoder:
    """A small reference EncoderDecoder (float64, eval mode) with weights drawn from ``gen``.

    It never proposes the padding or start token (a trained model learns not to), and the
    end token gets an extra bias, ``end_bias``, so that outputs end at different lengths.
    """
    settings = dict(src_vocab=13, tgt_vocab=11, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                    dropout=0.1, max_len=32, pad_id=PAD)
    settings.update(changes)
    config = TransformerConfig(**settings)
    model = _quietly(lambda: EncoderDecoder(config)).to(torch.float64)
    _randomise(model, gen)
    with torch.no_grad():
        model.src_embed.embedding.weight[PAD] = 0.0
        model.tgt_embed.embedding.weight[PAD] = 0.0
        model.generator.proj.weight.mul_(3.0)  # sharper choices: outputs depend on the source
        model.generator.proj.bias[PAD] = -30.0
        model.generator.proj.bias[START] = -30.0
        model.generator.proj.bias[END] += end_bias
    return model.eval()


def parts_of(model: EncoderDecoder) -> TransformerParts:
    """The parts of ``model`` that ``transformer_forward`` reads, without the model: its
    ``forward``, ``encode`` and ``decode`` compute the exercise's answer, and a case's objects
    are handed to the student's code."""
    return TransformerParts(
        SimpleNamespace(**asdict(model.config)),
        src_embedding=model.src_embed.embedding,
        tgt_embedding=model.tgt_embed.embedding,
        pe=model.positions.pe,
        dropout=model.positions.dropout,
        encoder_layers=model.encoder.layers,
        encoder_norm=model.encoder.norm,
        decoder_layers=model.decoder.layers,
        decoder_norm=model.decoder.norm,
        proj=model.generator.proj,
    ).eval()


def layer_stack_of(model: EncoderDecoder) -> LayerStackModel:
    """A model for decoding made of ``model``'s layers, norms and output layer (see
    :class:`LayerStackModel`: the same layers, other embeddings). Its token tables are ``model``'s
    scaled by sqrt(d_model), as ``model`` scales them, so that token and position weigh in its
    embeddings as much as in ``model``'s."""
    scale = math.sqrt(model.config.d_model)
    return LayerStackModel(model.src_embed.embedding.weight * scale, model.tgt_embed.embedding.weight * scale,
                           model.positions.pe, model.encoder.layers, model.encoder.norm,
                           model.decoder.layers, model.decoder.norm, model.generator.proj)


def layer_stack_model(gen: torch.Generator, **changes: Any) -> LayerStackModel:
    """:func:`layer_stack_of` a :func:`random_model` drawn from ``gen``, without the extra bias of
    the end token: these models end often enough without it (with it, many say nothing else)."""
    return layer_stack_of(random_model(gen, end_bias=0.0, **changes))


def _random_ids(gen: torch.Generator, batch: int, seq: int, vocab: int, lengths: list[int]) -> torch.Tensor:
    """``(batch, seq)`` ids in [3, vocab) (no special token), right-padded to ``lengths``."""
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)
    for b, n in enumerate(lengths):
        ids[b, n:] = PAD
    return ids


# --------------------------------------------------------------------------- FeedForward


def feedforward_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, x: torch.Tensor, d_ff: int, **kwargs: Any) -> Case:
        module = _quietly(lambda: FeedForward(x.shape[-1], d_ff, **kwargs))
        _randomise(module, gen)
        state = {k: v.double() for k, v in module.state_dict().items()}
        return Case(label, (x,), init=(x.shape[-1], d_ff), init_kwargs=kwargs, state=state)

    cases = [
        case("x (2, 5, 8), d_ff 32, relu", randn(gen, 2, 5, 8), 32),
        case("x (3, 4, 6), d_ff 10, gelu", randn(gen, 3, 4, 6), 10, activation="gelu"),
        case("one position, x (1, 1, 4), d_ff 16", randn(gen, 1, 1, 4), 16),
        case("no batch dimension, x (7, 8), d_ff 8", randn(gen, 7, 8), 8, activation="gelu"),
        case("dropout 0.1 (eval mode: no effect), x (2, 3, 8), d_ff 16", randn(gen, 2, 3, 8), 16,
             dropout=0.1),
        case("large inputs, x (2, 4, 8) * 10, gelu", randn(gen, 2, 4, 8, scale=10.0), 24, activation="gelu"),
    ]
    return with_float32(cases, {"x (2, 5, 8), d_ff 32, relu", "x (3, 4, 6), d_ff 10, gelu"})


class _FeedForwardParts(nn.Module):
    """The parameters of a FeedForward, for the typical mistakes below (forward differs)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.activation_name = activation

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h) if self.activation_name == "relu" else F.gelu(h)


class _NoActivation(_FeedForwardParts):
    def forward(self, x):
        return self.linear2(self.linear1(x))


class _AlwaysReLU(_FeedForwardParts):
    def forward(self, x):
        return self.linear2(F.relu(self.linear1(x)))


class _TanhGELU(_FeedForwardParts):
    def forward(self, x):
        h = self.linear1(x)
        return self.linear2(F.gelu(h, approximate="tanh") if self.activation_name == "gelu" else F.relu(h))


class _ActivationAfterBoth(_FeedForwardParts):
    def forward(self, x):
        return self.act(self.linear2(self.act(self.linear1(x))))


class _ActivationAfterLinear2(_FeedForwardParts):
    def forward(self, x):
        return self.act(self.linear2(self.linear1(x)))


FEED_FORWARD_HIDDEN = HiddenTests(
    function="FeedForward",
    reference="transformer_course.feedforward:FeedForward",
    make_cases=feedforward_cases,
    mistakes=(
        Mistake(_NoActivation, "you left out the activation between linear1 and linear2 (relu keeps "
                               "positives and sets negatives to 0): without it the two layers collapse "
                               "into one linear map."),
        Mistake(_AlwaysReLU, "you always use relu: use the `activation` argument ('relu' or 'gelu')."),
        Mistake(_TanhGELU, "you use the tanh approximation of GELU; activation='gelu' means the exact "
                           "one, nn.GELU() or F.gelu(h)."),
        Mistake(_ActivationAfterBoth, "the activation goes between the two linear layers only, not "
                                      "after linear2."),
        Mistake(_ActivationAfterLinear2, "the activation goes between the two linear layers, not after "
                                         "linear2: linear2(activation(linear1(x))). After linear2 it would "
                                         "cut off every negative output of the network."),
    ),
)


# --------------------------------------------------------------------------- EncoderLayer


def _torch_layer_state(gen: torch.Generator, kind: str, d_model: int, n_heads: int, d_ff: int,
                       **options: Any) -> dict[str, torch.Tensor]:
    """A torch Transformer layer with weights from ``gen``, copied into the reference layer: the
    reference's state (our parameter names) holding torch's numbers."""
    torch_type = getattr(nn, f"Transformer{kind}Layer")
    ours = {"Encoder": EncoderLayer, "Decoder": DecoderLayer}[kind]
    theirs = _quietly(lambda: torch_type(d_model, n_heads, d_ff, batch_first=True, dtype=torch.float64,
                                         **options))
    _randomise(theirs, gen)
    return {k: v.double() for k, v in ours.from_torch(theirs).double().state_dict().items()}


def _layer_options(norm_first: bool, activation: str = "relu", eps: float = 1e-5) -> dict:
    return {"dropout": 0.1, "activation": activation, "norm_first": norm_first, "layer_norm_eps": eps}


def encoder_cases(gen: torch.Generator) -> list[Case]:
    def case(norm_first: bool, label: str, x: torch.Tensor, n_heads: int, d_ff: int,
             mask: torch.Tensor | None = None, activation: str = "relu", eps: float = 1e-5) -> Case:
        options = _layer_options(norm_first, activation, eps)
        state = _torch_layer_state(gen, "Encoder", x.shape[-1], n_heads, d_ff, **options)
        return Case(f"{'pre-LN' if norm_first else 'post-LN'}, {label}", (x,), {} if mask is None else {"mask": mask},
                    init=(x.shape[-1], n_heads, d_ff), init_kwargs=options, state=state)

    cases = []
    for nf in (False, True):
        pad = torch.ones(3, 1, 1, 6, dtype=torch.bool)
        pad[0, ..., 4:] = False
        pad[2] = False  # a sequence that is all padding
        causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
        cases += [
            case(nf, "x (2, 5, 16), 4 heads, no mask", randn(gen, 2, 5, 16), 4, 32),
            case(nf, "x (3, 6, 8), padding mask (3, 1, 1, 6) with an all-padding sequence",
                 randn(gen, 3, 6, 8), 2, 16, pad),
            case(nf, "x (2, 5, 8), causal mask (5, 5), gelu", randn(gen, 2, 5, 8), 2, 24, causal,
                 activation="gelu"),
            case(nf, "one position, x (2, 1, 8)", randn(gen, 2, 1, 8), 1, 16),
            case(nf, "layer_norm_eps 1e-3, x (2, 4, 8)", randn(gen, 2, 4, 8), 2, 16, eps=1e-3),
        ]
    return with_float32(cases, {"post-LN, x (2, 5, 16), 4 heads, no mask",
                                "pre-LN, x (3, 6, 8), padding mask (3, 1, 1, 6) with an all-padding sequence"})


class _EncoderParts(nn.Module):
    """The parameters of an EncoderLayer, for the typical mistakes below (forward differs)."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation="relu", norm_first=False,
                 layer_norm_eps=1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def attend(self, x, mask):
        return self.self_attn(x, x, x, mask)[0]


class _EncoderAlwaysPostLN(_EncoderParts):
    def forward(self, x, mask=None):
        x = self.norm1(x + self.attend(x, mask))
        return self.norm2(x + self.feed_forward(x))


class _EncoderAlwaysPreLN(_EncoderParts):
    def forward(self, x, mask=None):
        x = x + self.attend(self.norm1(x), mask)
        return x + self.feed_forward(self.norm2(x))


class _EncoderNoResidual(_EncoderParts):
    def forward(self, x, mask=None):
        if self.norm_first:
            x = self.attend(self.norm1(x), mask)
            return self.feed_forward(self.norm2(x))
        x = self.norm1(self.attend(x, mask))
        return self.norm2(self.feed_forward(x))


class _EncoderNormalisedStream(_EncoderParts):
    def forward(self, x, mask=None):
        if not self.norm_first:
            return _EncoderAlwaysPostLN.forward(self, x, mask)
        x = self.norm1(x)
        x = x + self.attend(x, mask)
        x = self.norm2(x)
        return x + self.feed_forward(x)


class _EncoderNoMask(_EncoderParts):
    def forward(self, x, mask=None):
        if self.norm_first:
            return _EncoderAlwaysPreLN.forward(self, x)
        return _EncoderAlwaysPostLN.forward(self, x)


class _EncoderOneNorm(_EncoderParts):
    def forward(self, x, mask=None):
        if self.norm_first:
            x = x + self.attend(self.norm1(x), mask)
            return x + self.feed_forward(self.norm1(x))
        x = self.norm1(x + self.attend(x, mask))
        return self.norm1(x + self.feed_forward(x))


ENCODER_LAYER_HIDDEN = HiddenTests(
    function="EncoderLayer",
    reference="transformer_course.layers:EncoderLayer",
    make_cases=encoder_cases,
    mistakes=(
        Mistake(_EncoderAlwaysPostLN, "you always build post-LN: with norm_first=True, normalise each "
                                      "sublayer's input instead, x = x + sublayer(norm(x))."),
        Mistake(_EncoderAlwaysPreLN, "you always build pre-LN: with norm_first=False (the paper), "
                                     "normalise after adding, x = norm(x + sublayer(x))."),
        Mistake(_EncoderNoResidual, "the residual connection is missing: add the sublayer's output to "
                                    "its input (x + sublayer(...))."),
        Mistake(_EncoderNormalisedStream, "in pre-LN only the sublayer's input is normalised; the residual "
                                          "stream itself stays as it is: x = x + sublayer(norm(x)), not "
                                          "x = norm(x); x = x + sublayer(x)."),
        Mistake(_EncoderNoMask, "you did not pass the mask to the self-attention: self.self_attn(x, x, x, mask)."),
        Mistake(_EncoderOneNorm, "use norm1 around the self-attention and norm2 around the feed-forward "
                                 "network (each LayerNorm has its own weights)."),
    ),
)


# --------------------------------------------------------------------------- DecoderLayer


def decoder_cases(gen: torch.Generator) -> list[Case]:
    def case(norm_first: bool, label: str, x: torch.Tensor, memory: torch.Tensor, n_heads: int, d_ff: int,
             masks: dict | None = None, activation: str = "relu", eps: float = 1e-5) -> Case:
        options = _layer_options(norm_first, activation, eps)
        state = _torch_layer_state(gen, "Decoder", x.shape[-1], n_heads, d_ff, **options)
        return Case(f"{'pre-LN' if norm_first else 'post-LN'}, {label}", (x, memory), masks or {},
                    init=(x.shape[-1], n_heads, d_ff), init_kwargs=options, state=state)

    cases = []
    for nf in (False, True):
        causal4 = torch.tril(torch.ones(4, 4, dtype=torch.bool))
        tgt_pad = torch.ones(3, 1, 1, 4, dtype=torch.bool)
        tgt_pad[1, ..., 2:] = False
        src_pad = torch.ones(3, 1, 1, 6, dtype=torch.bool)
        src_pad[0, ..., 3:] = False
        src_pad[2, ..., 1:] = False  # one real source token
        cases += [
            case(nf, "x (2, 4, 16), memory (2, 6, 16), no masks", randn(gen, 2, 4, 16), randn(gen, 2, 6, 16), 4, 32),
            case(nf, "x (3, 4, 8), memory (3, 6, 8), causal + padding masks", randn(gen, 3, 4, 8),
                 randn(gen, 3, 6, 8), 2, 16, {"self_mask": tgt_pad & causal4, "memory_mask": src_pad}),
            case(nf, "x (2, 4, 8), memory (2, 3, 8), causal self_mask only, gelu", randn(gen, 2, 4, 8),
                 randn(gen, 2, 3, 8), 2, 24, {"self_mask": causal4}, activation="gelu"),
            case(nf, "one target position (a first decoding step), x (3, 1, 8), memory (3, 6, 8)",
                 randn(gen, 3, 1, 8), randn(gen, 3, 6, 8), 2, 16,
                 {"self_mask": torch.ones(1, 1, dtype=torch.bool), "memory_mask": src_pad}),
            case(nf, "a memory of length 1, x (2, 3, 8), memory (2, 1, 8)", randn(gen, 2, 3, 8),
                 randn(gen, 2, 1, 8), 1, 16, {"self_mask": torch.tril(torch.ones(3, 3, dtype=torch.bool))}),
            case(nf, "layer_norm_eps 1e-3, x (2, 3, 8), memory (2, 4, 8)", randn(gen, 2, 3, 8),
                 randn(gen, 2, 4, 8), 2, 16, eps=1e-3),
        ]
    return with_float32(cases, {"post-LN, x (3, 4, 8), memory (3, 6, 8), causal + padding masks",
                                "pre-LN, x (2, 4, 16), memory (2, 6, 16), no masks"})


class _DecoderParts(_EncoderParts):
    """The parameters of a DecoderLayer (an encoder layer's, plus cross-attention and a third
    norm), for the typical mistakes below (forward differs)."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation="relu", norm_first=False,
                 layer_norm_eps=1e-5):
        super().__init__(d_model, n_heads, d_ff, dropout, activation, norm_first, layer_norm_eps)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def run(self, x, memory, self_mask, memory_mask, cross_first=False, cross_kv=None, cross_k=None,
            cross_v=None):
        """The right wiring, with knobs for the mistakes."""
        def self_part(h):
            return self.self_attn(h, h, h, self_mask)[0]

        def cross_part(h):
            kv = memory if cross_kv is None else cross_kv(h)
            k = kv if cross_k is None else cross_k(h)
            v = kv if cross_v is None else cross_v(h)
            return self.cross_attn(h, k, v, memory_mask)[0]

        parts = [cross_part, self_part] if cross_first else [self_part, cross_part]
        parts.append(self.feed_forward)
        for norm, part in zip((self.norm1, self.norm2, self.norm3), parts):
            x = x + part(norm(x)) if self.norm_first else norm(x + part(x))
        return x


class _DecoderNoSelfMask(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, None, memory_mask)


class _DecoderNoMemoryMask(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, self_mask, None)


class _DecoderCrossFirst(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, self_mask, memory_mask, cross_first=True)


class _DecoderSelfAttentionTwice(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, self_mask, None, cross_kv=lambda h: h)


class _DecoderKeysFromX(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, self_mask, memory_mask, cross_k=lambda h: h)


class _DecoderValuesFromX(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return self.run(x, memory, self_mask, memory_mask, cross_v=lambda h: h)


# (One hint for both: on any input they fail the same way, but for the sizes in the message.)
_CROSS_KEYS_VALUES = ("the cross-attention takes its keys or its values from x: only the queries come from the "
                      "decoder (x); the keys and the values both come from the memory (the encoder's output), "
                      "self.cross_attn(x, memory, memory, memory_mask).")


class _DecoderAlwaysPostLN(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        self.norm_first = False
        return self.run(x, memory, self_mask, memory_mask)


DECODER_LAYER_HIDDEN = HiddenTests(
    function="DecoderLayer",
    reference="transformer_course.layers:DecoderLayer",
    make_cases=decoder_cases,
    mistakes=(
        Mistake(_DecoderNoSelfMask, "the masked self-attention needs `self_mask`: "
                                    "self.self_attn(x, x, x, self_mask)."),
        Mistake(_DecoderNoMemoryMask, "the cross-attention needs `memory_mask`, so that no target position "
                                      "attends to source padding: self.cross_attn(x, memory, memory, memory_mask)."),
        Mistake(_DecoderCrossFirst, "the order is self-attention, then cross-attention, then feed-forward."),
        Mistake(_DecoderSelfAttentionTwice, "the cross-attention takes its keys and values from the memory "
                                            "(the encoder's output), not from x."),
        Mistake(_DecoderKeysFromX, _CROSS_KEYS_VALUES),
        Mistake(_DecoderValuesFromX, _CROSS_KEYS_VALUES),
        Mistake(_DecoderAlwaysPostLN, "you always build post-LN: with norm_first=True, normalise each "
                                      "sublayer's input instead, x = x + sublayer(norm(x))."),
    ),
)


# --------------------------------------------------------------------------- transformer_forward


def forward_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, S: int, T: int, src_lengths: list[int], tgt_lengths: list[int],
             **changes: Any) -> ModelCase:
        model = random_model(gen, **changes)
        src = _random_ids(gen, batch, S, model.config.src_vocab, src_lengths)
        tgt = _random_ids(gen, batch, T, model.config.tgt_vocab, tgt_lengths)
        tgt[:, 0] = START
        return ModelCase(label, (parts_of(model), src, tgt))

    cases = [
        case("post-LN, 2 layers, src (3, 6), tgt (3, 4), padded", 3, 6, 4, [6, 3, 1], [4, 2, 3]),
        case("pre-LN, 2 layers, src (3, 5), tgt (3, 7), padded", 3, 5, 7, [5, 2, 4], [7, 7, 3], norm_first=True),
        case("post-LN, 1 layer, gelu, src (2, 4), tgt (2, 4), no padding", 2, 4, 4, [4, 4], [4, 4],
             n_layers=1, activation="gelu"),
        case("pre-LN, 3 layers, one target position, src (2, 6), tgt (2, 1)", 2, 6, 1, [6, 2], [1, 1],
             n_layers=3, norm_first=True),
        case("post-LN, d_model 24, 3 heads, src (2, 1), tgt (2, 5)", 2, 1, 5, [1, 1], [5, 2],
             d_model=24, n_heads=3, d_ff=48),
    ]
    return with_float32(cases, {cases[0].label, cases[1].label})


def _forward(model, src, tgt, *, scale=True, positions=True, causal=True, padding=True, final_norms=True,
             chain=True, output="log_softmax"):
    """The forward pass, with knobs that reproduce typical mistakes (all True: the right one)."""
    d_model = model.config.d_model
    pe = model.positions.pe
    S, T = src.shape[1], tgt.shape[1]
    factor = math.sqrt(d_model) if scale else 1.0
    src_mask = (src != model.pad_id)[:, None, None, :] if padding else None
    tgt_mask = (tgt != model.pad_id)[:, None, None, :] if padding else torch.ones(1, 1, 1, T, dtype=torch.bool)
    if causal:
        tgt_mask = tgt_mask & torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))
    x = model.src_embed.embedding(src) * factor + (pe[:S] if positions else 0.0)
    x0 = x
    for layer in model.encoder.layers:
        x = layer(x if chain else x0, src_mask)
    memory = model.encoder.norm(x) if final_norms else x
    y = model.tgt_embed.embedding(tgt) * factor + (pe[:T] if positions else 0.0)
    y0 = y
    for layer in model.decoder.layers:
        y = layer(y if chain else y0, memory, tgt_mask.to(tgt.device), src_mask)
    y = model.decoder.norm(y) if final_norms else y
    logits = model.generator.proj(y)
    return {"log_softmax": torch.log_softmax(logits, -1), "logits": logits,
            "softmax": torch.softmax(logits, -1)}[output]


TRANSFORMER_FORWARD_HIDDEN = HiddenTests(
    function="transformer_forward",
    reference="transformer_course.model:transformer_forward",
    make_cases=forward_cases,
    mistakes=(
        Mistake(lambda m, s, t: _forward(m, s, t, scale=False),
                "multiply the embeddings by sqrt(d_model) before adding the positions "
                "(model.src_embed.embedding(src) * math.sqrt(d_model))."),
        Mistake(lambda m, s, t: _forward(m, s, t, positions=False),
                "add the positions after scaling the embeddings: + model.positions.pe[:seq], one row per "
                "position."),
        Mistake(lambda m, s, t: _forward(m, s, t, causal=False),
                "the decoder's self_mask must also hide the future: combine the target padding mask with a "
                "causal mask, torch.tril(torch.ones(T, T, dtype=torch.bool))."),
        Mistake(lambda m, s, t: _forward(m, s, t, padding=False),
                "hide the padding: (src != model.pad_id)[:, None, None, :] for the encoder and the "
                "cross-attention, and the target padding mask together with the causal one."),
        Mistake(lambda m, s, t: _forward(m, s, t, final_norms=False),
                "apply model.encoder.norm to the encoder's output and model.decoder.norm to the decoder's "
                "(LayerNorms in pre-LN models, nn.Identity in post-LN ones)."),
        Mistake(lambda m, s, t: _forward(m, s, t, chain=False),
                "each layer takes the previous layer's output: x = layer(x, mask) in the loop."),
        Mistake(lambda m, s, t: _forward(m, s, t, output="logits"),
                "you return the scores of model.generator.proj: turn them into log-probabilities with "
                "torch.log_softmax(..., dim=-1)."),
        Mistake(lambda m, s, t: _forward(m, s, t, output="softmax"),
                "you return probabilities; return log-probabilities, torch.log_softmax(..., dim=-1)."),
    ),
)


# --------------------------------------------------------------------------- greedy_decode


def _probe_end_ids(model: nn.Module, src: torch.Tensor, max_len: int) -> dict[str, int]:
    """End tokens that make a case interesting, found by decoding with no end token at all:
    ``early`` ends sentence 0 at its second step (others may go on), ``all`` ends every sentence
    before ``max_len`` if some token can (else END), ``never`` is produced by no sentence."""
    free = greedy_decode(model, src, max_len, START, -1)[:, 1:]  # -1: no token ends a sentence
    produced = set(free.flatten().tolist())

    def last_first_use(token: int) -> int:  # the step by which every sentence has produced it
        steps = [(row == token).nonzero() for row in free]
        return max(int(s[0]) if len(s) else max_len for s in steps)

    def spread(token: int) -> int:  # how far apart the sentences' first uses are
        firsts = [int((row == token).nonzero()[0]) for row in free if (row == token).any()]
        return max(firsts) - min(firsts)

    ending_all = [t for t in sorted(produced) if last_first_use(t) < max_len - 2]
    ending_all.sort(key=lambda t: (-spread(t), last_first_use(t)))  # sentences ending at different steps
    unused = [t for t in range(3, model.vocab_size) if t not in produced]
    return {"early": int(free[0, min(1, free.shape[1] - 1)]),
            "all": ending_all[0] if ending_all else END,
            "never": unused[0] if unused else END}


def _decode_case(label: str, model: nn.Module, src: torch.Tensor, **kwargs: Any) -> ModelCase:
    """A decoding case. Its model is float64 and stays so: decoding compares token ids, and in
    float32 a near-tie between two tokens could go either way on different hardware."""
    return ModelCase(label, (model, src), kwargs)


def greedy_cases(gen: torch.Generator) -> list[Case]:
    mixing = MixingModel(gen)
    other = MixingModel(gen, end_bias=1.0)
    post = layer_stack_model(gen)
    pre = layer_stack_model(gen, norm_first=True, activation="gelu")
    src = _random_ids(gen, 4, 7, 13, [7, 3, 5, 1])
    ends = _probe_end_ids(mixing, src, 10)
    ends_other = _probe_end_ids(other, src[:3], 9)
    cases = [
        _decode_case("a small model, 4 padded sources", mixing, src, max_len=10, start_id=START, end_id=END),
        _decode_case("an end token that ends sentence 0 early", mixing, src, max_len=10, start_id=START,
                     end_id=ends["early"]),
        _decode_case("an end token every sentence produces: all end before max_len", mixing, src,
                     max_len=10, start_id=START, end_id=ends["all"]),
        _decode_case("an end token no sentence produces: all run to max_len", mixing, src, max_len=7,
                     start_id=START, end_id=ends["never"]),
        _decode_case("another model, 3 sources", other, src[:3], max_len=9, start_id=START, end_id=END),
        _decode_case("another model, every sentence ends early", other, src[:3], max_len=9, start_id=START,
                     end_id=ends_other["all"]),
        _decode_case("a single source of length 1", mixing, src[3:], max_len=6, start_id=START, end_id=END),
        _decode_case("max_len=2 (one step)", mixing, src, max_len=2, start_id=START, end_id=END),
        _decode_case("max_len=1 (nothing but the start token)", mixing, src[:2], max_len=1, start_id=START,
                     end_id=END),
        _decode_case("another start id (3)", other, src[:2], max_len=6, start_id=3, end_id=END),
        _decode_case("a model of post-LN encoder and decoder layers", post, src, max_len=6, start_id=START,
                     end_id=_probe_end_ids(post, src, 6)["early"]),
        _decode_case("a model of pre-LN encoder and decoder layers", pre, src[:3], max_len=5, start_id=START,
                     end_id=_probe_end_ids(pre, src[:3], 5)["never"]),
    ]
    return cases


def _greedy(model, src, max_len, start_id, end_id, *, pad_after_end=True, stop_early=True, position=-1,
            tgt_mask=True, src_mask=True, extra_step=False):
    """Greedy decoding with knobs that reproduce typical mistakes."""
    memory_mask = model.make_src_mask(src) if src_mask else None
    memory = model.encode(src, memory_mask)
    out = torch.full((src.shape[0], 1), start_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len if extra_step else max_len - 1):
        hidden = model.decode(out, memory, model.make_tgt_mask(out) if tgt_mask else None, memory_mask)
        token = model.generator(hidden[:, position]).argmax(-1)
        if pad_after_end:
            token = token.masked_fill(finished, model.pad_id)
        out = torch.cat([out, token[:, None]], dim=1)
        finished |= token == end_id
        if stop_early and finished.all():
            break
    return out


GREEDY_DECODE_HIDDEN = HiddenTests(
    function="greedy_decode",
    reference="transformer_course.decoding:greedy_decode",
    make_cases=greedy_cases,
    mistakes=(
        Mistake(lambda m, s, max_len, start_id, end_id: _greedy(m, s, max_len, start_id, end_id,
                                                                pad_after_end=False),
                "a finished sentence must stay finished: after its end_id, fill the rest of its row with "
                "model.pad_id (next_token.masked_fill(finished, model.pad_id))."),
        Mistake(lambda m, s, max_len, start_id, end_id: _greedy(m, s, max_len, start_id, end_id, position=0),
                "the next token comes from the decoder's *last* position: model.generator(hidden[:, -1])."),
        Mistake(lambda m, s, max_len, start_id, end_id: _greedy(m, s, max_len, start_id, end_id,
                                                                tgt_mask=False),
                "give the decoder the target mask, model.make_tgt_mask(prefix): without it, earlier "
                "positions see later ones."),
        Mistake(lambda m, s, max_len, start_id, end_id: _greedy(m, s, max_len, start_id, end_id,
                                                                src_mask=False),
                "use the source mask, model.make_src_mask(src), in encode and in decode, so that no one "
                "attends to source padding."),
    ),
)


# --------------------------------------------------------------------------- beam_search


def beam_cases(gen: torch.Generator) -> list[Case]:
    mixing = MixingModel(gen)
    other = MixingModel(gen, end_bias=1.0)
    post = layer_stack_model(gen)
    src = _random_ids(gen, 3, 6, 13, [6, 2, 4])
    early = _probe_end_ids(mixing, src, 8)["early"]
    cases = [
        _decode_case("a small model, 3 padded sources, width 3, alpha 0.6", mixing, src, max_len=8,
                     start_id=START, end_id=END, width=3, alpha=0.6),
        _decode_case("width 1 (greedy decoding), alpha 0", mixing, src, max_len=8, start_id=START, end_id=END,
                     width=1, alpha=0.0),
        _decode_case("width 2, alpha 0 (no length normalisation)", other, src, max_len=7, start_id=START,
                     end_id=END, width=2, alpha=0.0),
        _decode_case("width 5, alpha 1", other, src, max_len=8, start_id=START, end_id=END, width=5, alpha=1.0),
        _decode_case("an end token that ends sentence 0 early, width 4", mixing, src, max_len=8, start_id=START,
                     end_id=early, width=4, alpha=0.6),
        _decode_case("width 12, more than the vocabulary, max_len 3", other, src[:2], max_len=3, start_id=START,
                     end_id=END, width=12, alpha=0.6),
        _decode_case("max_len 1 (nothing but the start token)", mixing, src[:2], max_len=1, start_id=START,
                     end_id=END, width=2, alpha=0.6),
        _decode_case("a single source, width 3", mixing, src[1:2], max_len=6, start_id=START, end_id=END,
                     width=3, alpha=0.6),
        _decode_case("a model of post-LN encoder and decoder layers, width 3", post, src, max_len=6,
                     start_id=START, end_id=_probe_end_ids(post, src, 6)["early"], width=3, alpha=0.6),
    ]
    return cases


def _beam(model, src, max_len, start_id, end_id, width=4, alpha=0.6, *, penalty=None, stop_at_first=False,
          one_each=False):
    """Beam search with knobs that reproduce typical mistakes (``penalty(n, alpha)`` divides)."""
    penalty = penalty or (lambda n, a: ((5 + n) / 6) ** a)
    batch, device = src.shape[0], src.device
    src_mask = model.make_src_mask(src)
    memory = model.encode(src, src_mask).repeat_interleave(width, dim=0)
    src_mask = src_mask.repeat_interleave(width, dim=0)
    tokens = torch.full((batch, width, 1), start_id, dtype=torch.long, device=device)
    dtype = memory.dtype if memory.is_floating_point() else torch.get_default_dtype()
    log_prob = torch.full((batch, width), -math.inf, dtype=dtype, device=device)
    log_prob[:, 0] = 0.0
    best = torch.full((batch,), -math.inf, dtype=dtype, device=device)
    best_tokens = torch.full((batch, max_len), model.pad_id, dtype=torch.long, device=device)
    best_tokens[:, 0] = start_id
    length = torch.ones(batch, dtype=torch.long, device=device)
    if max_len == 1:
        return best_tokens, best.zero_()
    for t in range(1, max_len):
        prefix = tokens.reshape(batch * width, t)
        step = model.generator(model.decode(prefix, memory, model.make_tgt_mask(prefix), src_mask)[:, -1])
        vocab = step.shape[-1]
        candidates = log_prob[:, :, None] + step.reshape(batch, width, vocab)
        if one_each:  # every hypothesis keeps only its own best continuation
            candidates = candidates.masked_fill(candidates < candidates.amax(-1, keepdim=True), -math.inf)
        top, index = candidates.reshape(batch, -1).topk(width, dim=-1)
        parent, token = index // vocab, index % vocab
        tokens = torch.cat([tokens.gather(1, parent[:, :, None].expand(-1, -1, t)), token[:, :, None]], -1)
        alive = torch.isfinite(top)
        finished = alive & (token == end_id) if t < max_len - 1 else alive
        score = (top / penalty(t, alpha)).masked_fill(~finished, -math.inf)
        step_best, which = score.max(-1)
        better = step_best > best
        best = torch.where(better, step_best, best)
        best_tokens[better, : t + 1] = tokens[torch.arange(batch, device=device), which][better]
        length = torch.where(better, t + 1, length)
        log_prob = top.masked_fill(finished, -math.inf)
        if stop_at_first:
            log_prob = log_prob.masked_fill(torch.isfinite(best)[:, None], -math.inf)
        if not torch.isfinite(log_prob).any():
            break
    return best_tokens[:, : int(length.max())], best


def _beam_mistake(**knobs: Any) -> Callable[..., tuple]:
    def search(model, src, max_len, start_id, end_id, width=4, alpha=0.6):
        return _beam(model, src, max_len, start_id, end_id, width, alpha, **knobs)

    return search


BEAM_SEARCH_HIDDEN = HiddenTests(
    function="beam_search",
    reference="transformer_course.decoding:beam_search",
    make_cases=beam_cases,
    mistakes=(
        Mistake(_beam_mistake(penalty=lambda n, a: 1.0),
                "you ignore alpha: divide each finished hypothesis's log-probability by the length "
                "penalty ((5 + n) / 6) ** alpha."),
        Mistake(_beam_mistake(penalty=lambda n, a: n ** a),
                "the length penalty is ((5 + n) / 6) ** alpha (Wu et al. 2016), not n ** alpha."),
        Mistake(_beam_mistake(penalty=lambda n, a: ((5 + n + 1) / 6) ** a),
                "n counts the generated tokens, end included but the start token not."),
        Mistake(_beam_mistake(stop_at_first=True),
                "do not stop at the first finished hypothesis: keep searching until no hypothesis is live "
                "or max_len is reached, and return the best finished one."),
        Mistake(_beam_mistake(one_each=True),
                "choose the `width` best extensions over the whole beam (width × vocab candidates), not the "
                "best extension of each hypothesis."),
    ),
)

HIDDEN_TESTS = (
    FEED_FORWARD_HIDDEN,
    ENCODER_LAYER_HIDDEN,
    DECODER_LAYER_HIDDEN,
    TRANSFORMER_FORWARD_HIDDEN,
    GREEDY_DECODE_HIDDEN,
    BEAM_SEARCH_HIDDEN,
)
