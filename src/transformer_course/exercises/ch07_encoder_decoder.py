"""Chapter 7 exercises: the feed-forward network, the encoder and decoder layers, the full
forward pass, greedy decoding and beam search.

Visible checks use examples whose answers follow from the definitions by hand: layers whose
sublayers output known constants (a pre-LN layer then returns x + a + f exactly, a post-LN
layer LayerNorm(LayerNorm(x + a) + f)), properties (padding and the future cannot change an
output), stand-in layers that react to what the full forward pass gives them (its expected
output and the outputs of its typical mistakes are recorded numbers,
``recorded/07-encoder-decoder.json``), and small models whose next-token probabilities are
written in a table ("start → I → am → fine → end"; a table on which greedy decoding and beam
search disagree).

The hidden inputs, the references and the typical mistakes are the grader's side,
``grading.hidden_tests.ch07_encoder_decoder``. The models that hidden cases hand to a student's
code are defined here all the same (:class:`ModelCase`, :class:`MixingModel`,
:class:`LayerStackModel`, :class:`TransformerParts`): a case travels with its model into the
process that runs the student's code, and with it the module that defines the model's class, so
that module must be one that holds no answer. Nothing of the reference is imported here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Case, Exercise, ExerciseFailure
from .compare import expect_close, fail, fmt_index
from .inputs import randn
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS
from .recorded import recorded_mistake, recorded_outputs

ASSIGNMENT = "07-encoder-decoder"
PAD, START, END = 0, 1, 2  # the special ids of every model in this chapter's checks

# Looser than the default for results of many float64 operations (decoders, scores).
_ROUNDED = {torch.float64: 1e-6, torch.float32: 1e-4}


def _fail(message: str) -> None:
    __tracebackhide__ = True
    raise ExerciseFailure(message)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(
        torch.allclose(a.detach().to(torch.float64), b.detach().to(torch.float64), atol=atol, rtol=1e-5)
    )


def _expect_shape(out: torch.Tensor, want: tuple, what: str, hint: str) -> None:
    __tracebackhide__ = True
    if tuple(out.shape) != want:
        _fail(f"{what} has shape {tuple(out.shape)}, expected {want}: {hint}")


# --------------------------------------------------------------------------- cases with a model


@dataclass(frozen=True)
class ModelCase(Case):
    """A case whose arguments include a model (an ``nn.Module``) that travels with it.

    ``Case.to``/``on``/``clone`` change tensors only; here every model argument is copied and
    converted too, so a float32 case runs a float32 model, a case on the GPU a model on the
    GPU, and the student's call gets a copy of its own (it cannot change the model the
    reference then runs). The outputs' floating dtype is the model's.
    """

    @property
    def dtype(self) -> torch.dtype | None:
        for model in self._models():
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.is_floating_point():
                    return tensor.dtype
        return super().dtype

    def _models(self) -> list[nn.Module]:
        return [a for a in self.args if isinstance(a, nn.Module)]

    def _with_models(self, change: Callable[[nn.Module], nn.Module]) -> ModelCase:
        args = tuple(change(copy.deepcopy(a)) if isinstance(a, nn.Module) else a for a in self.args)
        return replace(self, args=args)

    def to(self, dtype: torch.dtype) -> ModelCase:
        return super().to(dtype)._with_models(lambda m: m.to(dtype))

    def on(self, device: torch.device) -> ModelCase:
        return super().on(device)._with_models(lambda m: m.to(device))

    def clone(self) -> ModelCase:
        return super().clone()._with_models(lambda m: m)


# --------------------------------------------------------------------------- models for the checks


class _DecodingInterface(nn.Module):
    """What decoding asks of a model besides ``encode``, ``decode`` and ``generator``: the
    padding id and the two masks (bool, True = may attend), as the reference EncoderDecoder
    makes them."""

    pad_id = PAD

    def make_src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return (src != self.pad_id)[:, None, None, :]  # (batch, 1, 1, S)

    def make_tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))
        return (tgt != self.pad_id)[:, None, None, :] & causal  # (batch, 1, T, T)


class TableModel(_DecodingInterface):
    """A stand-in for a trained translator: its next-token probabilities come from a table.

    ``tables[i]`` maps a target prefix (a tuple of ids, start token first) to the
    probabilities of the next token, ``{token id: probability}``; source sentence ``b`` uses
    table ``src[b, 0]``. A prefix missing from the table is followed by ``END`` for sure. Every
    token keeps a tiny probability (1e-6), so that no log-probability is infinite.

    It has the interface that :func:`greedy_decode` and :func:`beam_search` use (``encode``,
    ``decode``, ``generator``, ``make_src_mask``, ``make_tgt_mask``, ``pad_id``), so the
    answers of decoding can be worked out by hand from the table.
    """

    def __init__(self, tables: dict[int, dict[tuple[int, ...], dict[int, float]]], vocab_size: int) -> None:
        super().__init__()
        self.tables = tables
        self.vocab_size = vocab_size

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, S)`` -> ``(batch, 1, 1)`` "memory": which table each sentence uses."""
        return src[:, :1, None].to(torch.float64)

    def next_token_probabilities(self, table: int, prefix: tuple[int, ...]) -> torch.Tensor:
        """``(vocab,)`` float64: the table's row for ``prefix``, smoothed, summing to 1."""
        row = self.tables.get(table, {}).get(prefix, {END: 1.0})
        probs = torch.full((self.vocab_size,), 1e-6, dtype=torch.float64)
        for token, p in row.items():
            probs[token] += p
        return probs / probs.sum()

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, T)`` prefixes -> ``(batch, T, vocab)``: position t holds the
        log-probabilities of the token after ``tgt[:, : t + 1]``."""
        rows = []
        for b in range(tgt.shape[0]):
            table = int(memory[b].flatten()[0])
            ids = [int(i) for i in tgt[b]]
            rows.append(torch.stack([
                self.next_token_probabilities(table, tuple(ids[: t + 1])) for t in range(len(ids))
            ]))
        return torch.stack(rows).log().to(tgt.device)

    def generator(self, hidden: torch.Tensor) -> torch.Tensor:
        """The "hidden states" already are log-probabilities."""
        return hidden


# The words of the checks' tables, by id.
WORDS = ["<pad>", "<start>", "<end>", "I", "am", "fine", "you", "are", "here", "la"]
_W = {w: i for i, w in enumerate(WORDS)}
I_, AM, FINE, YOU, ARE, HERE, LA = (_W[w] for w in ("I", "am", "fine", "you", "are", "here", "la"))

# Table 1, "how are you?": greedy answers "I am fine" (p = 0.5 * 0.65 * 0.9 = 0.2925), but
# "fine" alone is more likely (p = 0.4 * 0.9 = 0.36): beam search with width 2 finds it.
HOW_ARE_YOU = {
    (START,): {I_: 0.5, FINE: 0.4, END: 0.1},
    (START, I_): {AM: 0.65, FINE: 0.2, END: 0.15},
    (START, I_, AM): {FINE: 0.9, END: 0.1},
    (START, FINE): {END: 0.9, AM: 0.1},
}
# Table 2 spells "you are here", table 3 sings "la" forever (it never ends).
YOU_ARE_HERE = {(START,): {YOU: 0.8}, (START, YOU): {ARE: 0.8}, (START, YOU, ARE): {HERE: 0.8},
                (START, YOU, ARE, HERE): {END: 0.8}}
LA_LA_LA = {(START, *[LA] * n): {LA: 0.7, END: 0.3} for n in range(20)}
# Table 4 spells the chapter's example "start → I → am → fine → end".
I_AM_FINE = {(START,): {I_: 0.8}, (START, I_): {AM: 0.8}, (START, I_, AM): {FINE: 0.8},
             (START, I_, AM, FINE): {END: 0.8}}


def example_table_model() -> TableModel:
    """The checks' table model: source id 1 asks table 1 (HOW_ARE_YOU), 2 YOU_ARE_HERE, 3
    LA_LA_LA, 4 I_AM_FINE."""
    return TableModel({1: HOW_ARE_YOU, 2: YOU_ARE_HERE, 3: LA_LA_LA, 4: I_AM_FINE}, len(WORDS))


def _words(ids: torch.Tensor) -> str:
    return " ".join(WORDS[i] if 0 <= i < len(WORDS) else str(i) for i in ids.tolist())


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None, n_queries: int, who: str) -> torch.Tensor:
    """For each query, the mean of the ``values`` rows its mask allows (0 where none is allowed).

    ``values`` ``(batch, S, d)``, ``mask`` bool broadcastable to ``(batch, 1, n_queries, S)``
    (None: all allowed) -> ``(batch, n_queries, d)``. An attention with equal scores, in short.
    """
    batch, S, _ = values.shape
    shape = (batch, 1, n_queries, S)
    if mask is None:
        allowed = torch.ones(shape, dtype=torch.bool, device=values.device)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"the mask given to {who} should be a bool tensor (True = may attend), "
                            f"not {getattr(mask, 'dtype', type(mask).__name__)}")
        try:
            allowed = torch.broadcast_to(mask, shape)
        except RuntimeError:
            raise ValueError(f"the mask given to {who} has shape {tuple(mask.shape)}, which does not "
                             f"broadcast to (batch, heads, queries, keys) = {shape}") from None
    weights = allowed[:, 0].to(values.dtype)  # (batch, n_queries, S)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return weights @ values


class MixingModel(_DecodingInterface):
    """A small translator with random weights in which attention is replaced by plain averages.

    For the decoding checks: random Transformers at initialisation tend to repeat one token
    forever, which would hide mistakes; this model's choices change from step to step and from
    source to source. Like a real encoder-decoder it depends on the whole prefix, on positions,
    on the source and on the masks (``_masked_mean`` averages what a mask allows), in two
    decoder "layers", so that a missing causal mask changes what the last position sees. It
    never proposes the padding or start token.
    """

    def __init__(self, gen: torch.Generator, src_vocab: int = 13, tgt_vocab: int = 11, d: int = 16,
                 max_len: int = 32, end_bias: float = 0.0) -> None:
        super().__init__()
        self.vocab_size = tgt_vocab
        scale = 1 / math.sqrt(d)
        for name, shape, s in (("src_table", (src_vocab, d), 1.0), ("tgt_table", (tgt_vocab, d), 1.0),
                               ("positions", (max_len, d), 1.0), ("w_enc", (d, d), scale),
                               ("w_self1", (d, d), scale), ("w_self2", (d, d), scale),
                               ("w_cross", (d, d), 2 * scale), ("w_out", (d, tgt_vocab), 3 * scale)):
            self.register_buffer(name, randn(gen, *shape, scale=s))
        bias = randn(gen, tgt_vocab, scale=0.5)
        bias[PAD] = bias[START] = -30.0
        bias[END] += end_bias
        self.register_buffer("bias", bias)
        # The last feature of every decoder output is the position, from -2 at 0 to +2 at 8 and on:
        # through w_out it makes the end token unlikely at first and likely later, as in a trained
        # model (outputs otherwise end at random, mostly at once).
        self.register_buffer("ramp", ((torch.arange(max_len, dtype=torch.float64) - 4) / 2).clamp(max=2.0))
        with torch.no_grad():
            self.w_out[-1] = 0.0
            self.w_out[-1, END] = 3.0
        self.eval()

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.src_table[src] + self.positions[: src.shape[1]]  # (batch, S, d)
        return torch.tanh(x + _masked_mean(x, src_mask, src.shape[1], "encode") @ self.w_enc)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = tgt.shape[1]
        y = self.tgt_table[tgt] + self.positions[:T]  # (batch, T, d)
        h = torch.tanh(y + _masked_mean(y, tgt_mask, T, "decode's tgt_mask") @ self.w_self1)
        h = h + _masked_mean(h, tgt_mask, T, "decode's tgt_mask") @ self.w_self2
        h = torch.tanh(h + _masked_mean(memory, memory_mask, T, "decode's memory_mask") @ self.w_cross)
        position = self.ramp[:T].to(h.dtype).expand(h.shape[0], T)[..., None]  # (batch, T, 1)
        return torch.cat([h[..., :-1], position], dim=-1)  # (batch, T, d)

    def generator(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(hidden @ self.w_out + self.bias, dim=-1)


class LayerStackModel(_DecodingInterface):
    """A small translator made of real encoder and decoder layers, for the hidden decoding checks.

    Its decoder runs real masked self-attention and cross-attention (chapter 7's layers, which
    the decoding exercises list in ``uses``), so a decoding loop that gets a mask, the memory or
    the position it reads wrong changes its choices, as it would with a trained Transformer. It
    is not the chapter's Transformer, on purpose: each sequence enters its stack as the sum of
    token and position vectors normalised (a LayerNorm without weights; BERT normalises its
    embeddings too), not as that sum itself, so no use of it computes what
    ``transformer_forward`` asks for. The ``proj`` it is given decides what it never proposes
    (the padding and start tokens, given a bias of -30).
    """

    def __init__(self, src_table: torch.Tensor, tgt_table: torch.Tensor, positions: torch.Tensor,
                 encoder_layers: nn.ModuleList, encoder_norm: nn.Module, decoder_layers: nn.ModuleList,
                 decoder_norm: nn.Module, proj: nn.Linear) -> None:
        super().__init__()
        self.vocab_size = proj.out_features
        self.register_buffer("src_table", src_table.detach().clone())  # (src_vocab, d)
        self.register_buffer("tgt_table", tgt_table.detach().clone())  # (tgt_vocab, d)
        self.register_buffer("positions", positions.detach().clone())  # (max_len, d)
        self.encoder_layers, self.encoder_norm = encoder_layers, encoder_norm
        self.decoder_layers, self.decoder_norm = decoder_layers, decoder_norm
        self.proj = proj
        self.eval()

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, S)`` ids -> memory ``(batch, S, d)``."""
        x = self.src_table[src] + self.positions[: src.shape[1]]
        x = F.layer_norm(x, x.shape[-1:])
        for layer in self.encoder_layers:
            x = layer(x, src_mask)
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, T)`` ids and the memory -> ``(batch, T, d)``."""
        y = self.tgt_table[tgt] + self.positions[: tgt.shape[1]]
        y = F.layer_norm(y, y.shape[-1:])
        for layer in self.decoder_layers:
            y = layer(y, memory, tgt_mask, memory_mask)
        return self.decoder_norm(y)

    def generator(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.proj(hidden), dim=-1)


def _holding(**parts: Any) -> nn.Module:
    """A plain ``nn.Module`` that only holds ``parts`` as attributes (it has no forward)."""
    holder = nn.Module()
    for name, part in parts.items():
        if isinstance(part, torch.Tensor):
            holder.register_buffer(name, part)  # so that .to(dtype) and .to(device) move it
        else:
            setattr(holder, name, part)
    return holder


class TransformerParts(nn.Module):
    """An encoder-decoder taken apart: the parts ``transformer_forward`` reads, under the names
    the reference ``EncoderDecoder`` gives them, and no code that runs them together.

    ``config`` (``d_model``, ``pad_id``, the vocabulary sizes, ...), ``pad_id``,
    ``src_embed.embedding`` and ``tgt_embed.embedding`` (``nn.Embedding`` tables),
    ``positions.pe`` (the position table) and ``positions.dropout``, ``encoder.layers`` and
    ``decoder.layers`` (``nn.ModuleList``), ``encoder.norm`` and ``decoder.norm``,
    ``generator.proj`` (``nn.Linear``). The containers are plain ``nn.Module`` objects; the
    visible check fills them with stand-ins (:func:`stand_in_model`), the hidden checks with the
    parts of real models. Calling the model itself is what the exercise asks to write out, so it
    says so instead of computing anything.
    """

    def __init__(self, config: SimpleNamespace, *, src_embedding: nn.Embedding, tgt_embedding: nn.Embedding,
                 pe: torch.Tensor, dropout: nn.Module, encoder_layers: nn.ModuleList, encoder_norm: nn.Module,
                 decoder_layers: nn.ModuleList, decoder_norm: nn.Module, proj: nn.Linear) -> None:
        super().__init__()
        self.config = config
        self.pad_id = config.pad_id
        self.src_embed = _holding(embedding=src_embedding, d_model=config.d_model)
        self.tgt_embed = _holding(embedding=tgt_embedding, d_model=config.d_model)
        self.positions = _holding(pe=pe, dropout=dropout)
        self.encoder = _holding(layers=encoder_layers, norm=encoder_norm)
        self.decoder = _holding(layers=decoder_layers, norm=decoder_norm)
        self.generator = _holding(proj=proj)

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "transformer_forward should compute the forward pass from the model's parts; calling the model "
            "itself (model(src, tgt), model.encode, model.decode) would run the reference implementation, "
            "which earns no points"
        )

    forward = encode = decode = _refuse


class _StandInEncoderLayer(nn.Module):
    """A stand-in for an encoder layer: ``x + shift + (mean of the rows of x the mask allows)``.

    Cheap and transparent, yet it reacts to everything the forward pass gives it: its input, the
    mask, and being called in a chain."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x, mask=None):
        return x + self.shift + _masked_mean(x, mask, x.shape[1], "an encoder layer")


class _StandInDecoderLayer(nn.Module):
    """A stand-in for a decoder layer: ``x + shift + (masked mean of x) + (masked mean of the
    memory) / 2``, the self_mask and memory_mask deciding what each mean may see."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        T = x.shape[1]
        return (x + self.shift + _masked_mean(x, self_mask, T, "a decoder layer's self-attention (self_mask)")
                + 0.5 * _masked_mean(memory, memory_mask, T, "a decoder layer's cross-attention (memory_mask)"))


class _Scale(nn.Module):
    """A stand-in for a final LayerNorm that is easy to recognise: multiplies by ``factor``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def stand_in_model() -> TransformerParts:
    """The parts of an EncoderDecoder (d_model 4, vocabularies 6 and 5): embedding tables,
    position table and output layer with known numbers, and stand-ins for the layers and final
    norms (see :class:`_StandInEncoderLayer`) instead of real ones."""
    d, src_vocab, tgt_vocab = 4, 6, 5
    tables = []
    for vocab, offset in ((src_vocab, 0.0), (tgt_vocab, 0.5)):
        embedding = nn.Embedding(vocab, d, padding_idx=PAD)
        with torch.no_grad():
            table = (torch.arange(vocab * d, dtype=torch.float32).reshape(vocab, d) % 7) / 10 - offset
            table[PAD] = 0.0
            embedding.weight.copy_(table)
        tables.append(embedding)
    proj = nn.Linear(d, tgt_vocab)
    with torch.no_grad():
        proj.weight.copy_(torch.linspace(-1, 1, tgt_vocab * d).reshape(tgt_vocab, d))
        proj.bias.copy_(torch.linspace(0, 0.4, tgt_vocab))
    model = TransformerParts(
        SimpleNamespace(d_model=d, pad_id=PAD, src_vocab=src_vocab, tgt_vocab=tgt_vocab),
        src_embedding=tables[0],
        tgt_embedding=tables[1],
        pe=torch.arange(16 * d, dtype=torch.float32).reshape(16, d) / 50,
        dropout=nn.Dropout(0.0),
        encoder_layers=nn.ModuleList([_StandInEncoderLayer(1.0), _StandInEncoderLayer(-2.0)]),
        encoder_norm=_Scale(0.5),
        decoder_layers=nn.ModuleList([_StandInDecoderLayer(-1.0), _StandInDecoderLayer(3.0)]),
        decoder_norm=_Scale(2.0),
        proj=proj,
    )
    return model.to(torch.float64).eval()


# --------------------------------------------------------------------------- layer states by hand


def _layer_norm(x: torch.Tensor, weight: float, bias: float, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm written out: normalise each row to mean 0, variance 1, then scale and shift."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _attention_state(prefix: str, d_model: int, out_bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weights of a MultiHeadAttention whose output is ``out_bias`` at every position: all
    projections zero, so the values are 0, the mix of values is 0, and out_proj adds its bias."""
    state = {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        state[f"{prefix}.{proj}.weight"] = torch.zeros(d_model, d_model, dtype=torch.float64)
        state[f"{prefix}.{proj}.bias"] = torch.zeros(d_model, dtype=torch.float64)
    state[f"{prefix}.out_proj.bias"] = out_bias.to(torch.float64)
    return state


def constant_layer_state(d_model: int, d_ff: int, attention_outputs: dict[str, torch.Tensor],
                         ff_output: torch.Tensor, norms: list[tuple[float, float]]) -> dict[str, torch.Tensor]:
    """The state of a layer whose sublayers output constants: each attention (by name) its
    given vector, the feed-forward ``ff_output``; LayerNorm i has weight and bias ``norms[i]``."""
    state = {}
    for name, out in attention_outputs.items():
        state.update(_attention_state(name, d_model, out))
    state["feed_forward.linear1.weight"] = torch.zeros(d_ff, d_model, dtype=torch.float64)
    state["feed_forward.linear1.bias"] = torch.zeros(d_ff, dtype=torch.float64)
    state["feed_forward.linear2.weight"] = torch.zeros(d_model, d_ff, dtype=torch.float64)
    state["feed_forward.linear2.bias"] = ff_output.to(torch.float64)
    for i, (weight, bias) in enumerate(norms, start=1):
        state[f"norm{i}.weight"] = torch.full((d_model,), weight, dtype=torch.float64)
        state[f"norm{i}.bias"] = torch.full((d_model,), bias, dtype=torch.float64)
    return state


def random_layer_state(gen: torch.Generator, d_model: int, d_ff: int, attentions: tuple[str, ...],
                       n_norms: int) -> dict[str, torch.Tensor]:
    """A layer state with every weight drawn from ``gen`` (no reference needed: names and shapes
    are the ones the exercise asks for)."""
    state = {}
    for name in attentions:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"{name}.{proj}.weight"] = randn(gen, d_model, d_model, scale=1 / math.sqrt(d_model))
            state[f"{name}.{proj}.bias"] = randn(gen, d_model, scale=0.2)
    state["feed_forward.linear1.weight"] = randn(gen, d_ff, d_model, scale=1 / math.sqrt(d_model))
    state["feed_forward.linear1.bias"] = randn(gen, d_ff, scale=0.2)
    state["feed_forward.linear2.weight"] = randn(gen, d_model, d_ff, scale=1 / math.sqrt(d_ff))
    state["feed_forward.linear2.bias"] = randn(gen, d_model, scale=0.2)
    for i in range(1, n_norms + 1):
        state[f"norm{i}.weight"] = 1.0 + randn(gen, d_model, scale=0.2)
        state[f"norm{i}.bias"] = randn(gen, d_model, scale=0.2)
    return state


# --------------------------------------------------------------------------- FeedForward


def _ff_state(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> dict:
    return {"linear1.weight": w1.double(), "linear1.bias": b1.double(),
            "linear2.weight": w2.double(), "linear2.bias": b2.double()}


def feedforward_visible(call: Callable[..., tuple]) -> int:
    """Known weights, the two activations on [1, -2], and position-wise action."""
    __tracebackhide__ = True
    x = torch.ones(1, 2, 4, dtype=torch.float64)
    state = _ff_state(torch.zeros(8, 4), torch.ones(8), torch.ones(4, 8), torch.zeros(4))
    (out,) = call(Case("x (1, 2, 4) with linear1 = 0·x + 1 and linear2 = all ones", (x,), init=(4, 8),
                       state=state))
    _expect_shape(out, (1, 2, 4), "FeedForward's output",
                  "it maps (batch, seq, d_model) -> (batch, seq, d_ff) -> (batch, seq, d_model).")
    expect_close(out, torch.full((1, 2, 4), 8.0), what="FeedForward with known weights",
                 hint="FeedForward(x) = linear2(activation(linear1(x))): here linear1 gives 1 "
                      "everywhere, relu(1) = 1, and linear2 adds up eight ones.")

    eye = torch.eye(2)
    state = _ff_state(eye, torch.zeros(2), eye, torch.zeros(2))
    x = torch.tensor([[[1.0, -2.0]]], dtype=torch.float64)
    (out,) = call(Case("x = [1, -2] with identity weights, activation='relu'", (x,), init=(2, 2), state=state))
    expect_close(out, [[[1.0, 0.0]]], what="FeedForward([1, -2]) with identity weights and relu",
                 hint="relu(h) = max(0, h) between linear1 and linear2 keeps positives and sets "
                      "negatives to 0 (and nothing after linear2).", atol=1e-9, rtol=0)
    state_minus = _ff_state(eye, torch.zeros(2), -eye, torch.zeros(2))
    (out,) = call(Case("x = [1, -2] with linear1 = I, linear2 = -I, activation='relu'", (x,), init=(2, 2),
                       state=state_minus))
    expect_close(out, [[[-1.0, 0.0]]], what="FeedForward([1, -2]) with linear1 = I, linear2 = -I and relu",
                 hint="-relu([1, -2]) = -[1, 0] = [-1, 0]: the activation goes between linear1 and linear2 "
                      "only, so the network's output may be negative.", atol=1e-9, rtol=0)
    (out,) = call(Case("x = [1, -2] with identity weights, activation='gelu'", (x,), init=(2, 2),
                       init_kwargs={"activation": "gelu"}, state=state))
    gelu = torch.tensor([[[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in (1.0, -2.0)]]], dtype=torch.float64)
    if _close(out, F.gelu(gelu), atol=1e-6):
        fail("FeedForward([1, -2]) with identity weights and gelu applies the activation twice",
             "it goes between linear1 and linear2 only, linear2(gelu(linear1(x))).")
    if _close(out, F.relu(x), atol=1e-6):
        fail("FeedForward([1, -2]) with identity weights and activation='gelu' gives relu's answer",
             "use the `activation` argument, nn.GELU() for 'gelu'.")
    expect_close(out, gelu, what="FeedForward([1, -2]) with identity weights and gelu",
                 hint="activation='gelu' is the exact GELU, x·Φ(x) = nn.GELU() (not the tanh "
                      "approximation): gelu(1) = 0.8413, gelu(-2) = -0.0455.", atol=2e-5, rtol=0)

    gen = torch.Generator().manual_seed(0)
    state = _ff_state(randn(gen, 16, 4), randn(gen, 16), randn(gen, 4, 16), randn(gen, 4))
    x = randn(gen, 2, 3, 4)
    (out,) = call(Case("x (2, 3, 4), d_ff 16", (x,), init=(4, 16), state=state))
    _expect_shape(out, (2, 3, 4), "FeedForward's output for x (2, 3, 4)", "the shape of x.")
    changed = x.clone()
    changed[:, 1] += 1.0
    (out2,) = call(Case("x (2, 3, 4) with position 1 changed", (changed,), init=(4, 16), state=state))
    if not (_close(out2[:, 0], out[:, 0]) and _close(out2[:, 2], out[:, 2])):
        _fail("changing position 1 of x changed the output at other positions: the feed-forward "
              "network acts on each position on its own (nn.Linear works on the last dimension).")
    return 6


FEED_FORWARD = Exercise(
    function="FeedForward",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=feedforward_visible,
    is_module=True,
    forbidden=(TRANSFORMER_CALLS,),
)


# --------------------------------------------------------------------------- EncoderLayer

_D, _HEADS, _D_FF = 4, 2, 8  # the visible checks' layer size
_X = torch.tensor([[[1.0, 2.0, 0.0, -1.0], [0.5, -0.5, 1.5, 0.0], [2.0, 1.0, 1.0, -2.0]]], dtype=torch.float64)
_A = torch.tensor([0.5, -1.0, 0.0, 1.0], dtype=torch.float64)  # the self-attention's constant output
_C = torch.tensor([-0.5, 0.5, 1.0, 0.0], dtype=torch.float64)  # the cross-attention's constant output
_F = torch.tensor([1.0, 0.0, -0.5, 0.5], dtype=torch.float64)  # the feed-forward's constant output
_NORMS = [(2.0, 0.1), (0.5, -0.2), (1.5, 0.3)]  # (weight, bias) of norm1, norm2, norm3
# A change to a position: not a constant, which a LayerNorm would simply subtract again.
_NUDGE = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

_PRE_HINT = ("pre-LN (norm_first=True) normalises each sublayer's *input* and adds the sublayer's "
             "output to the untouched stream: x = x + sublayer(norm(x)).")
_POST_HINT = ("post-LN (norm_first=False) adds first and normalises the sum: x = norm(x + sublayer(x)).")


def _check_wiring(call: Callable[..., tuple], label: str, args: tuple, init_kwargs: dict, state: dict,
                  pre: torch.Tensor, post: torch.Tensor, sublayers: str, order: str) -> None:
    """Both norm_first settings on a layer whose sublayers output constants."""
    __tracebackhide__ = True
    for norm_first, want, other in ((True, pre, post), (False, post, pre)):
        (out,) = call(Case(f"{label}, norm_first={norm_first}", args, init=(_D, _HEADS, _D_FF),
                           init_kwargs={**init_kwargs, "norm_first": norm_first}, state=state))
        if len(args) == 2 and out.dim() == 3 and out.shape[1] == args[1].shape[1] != args[0].shape[1]:
            _fail(f"for x {tuple(args[0].shape)} and memory {tuple(args[1].shape)} the output has shape "
                  f"{tuple(out.shape)}, one row per memory position: in cross-attention the queries come "
                  "from the decoder, the keys and values from the memory: "
                  "self.cross_attn(x, memory, memory, memory_mask).")
        _expect_shape(out, tuple(args[0].shape), "the layer's output", "the shape of x.")
        name = "pre-LN" if norm_first else "post-LN"
        if _close(out, other):
            fail(f"with norm_first={norm_first} your layer computes the other arrangement: "
                 f"{'post-LN' if norm_first else 'pre-LN'} instead of {name}", _PRE_HINT if norm_first else _POST_HINT)
        formula = (f"x + {sublayers} (the constant outputs added to x)" if norm_first
                   else "norm(…norm(x + first) + next…)")
        expect_close(out, want, what=f"the {name} layer whose sublayers output constants, expected {formula}",
                     hint=(_PRE_HINT if norm_first else _POST_HINT) + f" The order: {order}.", atol=1e-6, rtol=0)


def encoder_visible(call: Callable[..., tuple]) -> int:
    """Constant sublayers (pre-LN: x + a + f; post-LN: LN2(LN1(x + a) + f)), padding, mixing."""
    __tracebackhide__ = True
    state = constant_layer_state(_D, _D_FF, {"self_attn": _A}, _F, _NORMS[:2])
    pre = _X + _A + _F
    post = _layer_norm(_layer_norm(_X + _A, *_NORMS[0]) + _F, *_NORMS[1])
    _check_wiring(call, "x (1, 3, 4) with constant sublayers", (_X,), {}, state, pre, post, "a + f",
                  "self-attention with norm1, then feed-forward with norm2")

    gen = torch.Generator().manual_seed(1)
    state = random_layer_state(gen, _D, _D_FF, ("self_attn",), 2)
    x = randn(gen, 2, 5, _D)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 3:] = False  # sequence 0: 3 real tokens, 2 of padding

    def run(inputs: torch.Tensor, what: str, norm_first: bool) -> torch.Tensor:
        (out,) = call(Case(f"x (2, 5, 4){what}, padding mask (2, 1, 1, 5), norm_first={norm_first}",
                           (inputs,), {"mask": mask}, init=(_D, _HEADS, _D_FF),
                           init_kwargs={"norm_first": norm_first}, state=state))
        return out

    for norm_first in (False, True):
        out = run(x, "", norm_first)
        _expect_shape(out, (2, 5, _D), "the output for x (2, 5, 4)", "the shape of x.")
        changed = x.clone()
        changed[0, 3:] += _NUDGE
        if not _close(run(changed, " with its padding changed", norm_first)[0, :3], out[0, :3]):
            fail(f"norm_first={norm_first}: changing the padding (positions 3 and 4) of sequence 0 "
                 "changed the outputs of its real tokens", "pass `mask` to the self-attention, "
                 "self.self_attn(x, x, x, mask).")
        changed = x.clone()
        changed[1, 4] += _NUDGE
        if _close(run(changed, " with position 4 changed", norm_first)[1, 0], out[1, 0]):
            _fail(f"norm_first={norm_first}: changing position 4 did not change position 0's output: "
                  "self-attention lets every position look at every other, self.self_attn(x, x, x, mask).")
    return 8


ENCODER_LAYER = Exercise(
    function="EncoderLayer",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=encoder_visible,
    is_module=True,
    uses=("MultiHeadAttention", "FeedForward"),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS, SDPA_CALLS),
)


# --------------------------------------------------------------------------- DecoderLayer


def decoder_visible(call: Callable[..., tuple]) -> int:
    """Constant sublayers, T != S, causality, and a cross-attention that reads the memory."""
    __tracebackhide__ = True
    memory = torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.0, 3.0, 1.0, -1.0]]], dtype=torch.float64)  # (1, 2, 4)
    state = constant_layer_state(_D, _D_FF, {"self_attn": _A, "cross_attn": _C}, _F, _NORMS)
    pre = _X + _A + _C + _F
    post = _layer_norm(_layer_norm(_layer_norm(_X + _A, *_NORMS[0]) + _C, *_NORMS[1]) + _F, *_NORMS[2])
    _check_wiring(call, "x (1, 3, 4), memory (1, 2, 4), constant sublayers", (_X, memory), {}, state,
                  pre, post, "a + c + f", "masked self-attention with norm1, cross-attention with norm2, "
                  "feed-forward with norm3")

    gen = torch.Generator().manual_seed(2)
    state = random_layer_state(gen, _D, _D_FF, ("self_attn", "cross_attn"), 3)
    x, memory = randn(gen, 2, 3, _D), randn(gen, 2, 5, _D)
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    memory_mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    memory_mask[0, ..., 3:] = False  # source 0: 3 real tokens, 2 of padding

    def run(x_: torch.Tensor, memory_: torch.Tensor, what: str) -> torch.Tensor:
        (out,) = call(Case(f"x (2, 3, 4), memory (2, 5, 4){what}, causal self_mask, padded memory_mask",
                           (x_, memory_), {"self_mask": causal, "memory_mask": memory_mask},
                           init=(_D, _HEADS, _D_FF), state=state))
        return out

    out = run(x, memory, "")
    if tuple(out.shape) == (2, 5, _D):
        _fail("for x (2, 3, 4) and memory (2, 5, 4) the output has shape (2, 5, 4), expected (2, 3, 4): "
              "in cross-attention the queries come from the decoder, the keys and values from the "
              "memory: self.cross_attn(x, memory, memory, memory_mask).")
    _expect_shape(out, (2, 3, _D), "the output for x (2, 3, 4), memory (2, 5, 4)",
                  "one row per target position, like x.")
    changed = memory.clone()
    changed[0, 0] += _NUDGE
    if _close(run(x, changed, ", memory position 0 changed")[0], out[0]):
        fail("changing the memory did not change the output", "the cross-attention takes its keys and "
             "values from the memory, self.cross_attn(x, memory, memory, memory_mask).")
    changed = memory.clone()
    changed[0, 3:] += _NUDGE
    if not _close(run(x, changed, ", padded memory changed")[0], out[0]):
        fail("changing the memory at source 0's padding (positions 3 and 4) changed its output",
             "pass `memory_mask` to the cross-attention, self.cross_attn(x, memory, memory, memory_mask).")
    changed = x.clone()
    changed[:, 2] += _NUDGE
    if not _close(run(changed, memory, ", target position 2 changed")[:, :2], out[:, :2]):
        fail("changing target position 2 changed the outputs at positions 0 and 1: a position must not "
             "see the future", "pass `self_mask` to the masked self-attention, self.self_attn(x, x, x, self_mask).")
    return 8


def _decoder_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    memory = case.args[1]
    if actual[-2:-1] == (memory.shape[-2],) and expected[-2] != memory.shape[-2]:
        return ("the output has one row per memory position: in cross-attention the queries come from "
                "the decoder, self.cross_attn(x, memory, memory, memory_mask).")
    return None


DECODER_LAYER = Exercise(
    function="DecoderLayer",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=decoder_visible,
    is_module=True,
    uses=("MultiHeadAttention", "FeedForward"),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS, SDPA_CALLS),
    shape_hint=_decoder_shape_hint,
)


# --------------------------------------------------------------------------- transformer_forward


def forward_visible(call: Callable[..., tuple]) -> int:
    """A stand-in model whose layers react to their inputs and masks; typical mistakes are named
    from their recorded outputs."""
    __tracebackhide__ = True
    src = torch.tensor([[3, 1, 4, 5], [2, 5, 0, 0]])  # sentence 1 ends in 2 tokens of padding
    tgt = torch.tensor([[1, 3, 2], [1, 4, 0]])  # target 1 in 1
    model = stand_in_model()
    label = "the stand-in model, src (2, 4), tgt (2, 3)"
    (out,) = call(label, model, src, tgt)
    _expect_shape(out, (2, 3, 5), "the output", "(batch, T, tgt_vocab): one distribution over the target "
                  "vocabulary per target position.")
    (want,) = recorded_outputs("transformer_forward", label)
    if not _close(out, want, atol=1e-9):
        likely = recorded_mistake("transformer_forward", label, (out,))
        if likely:
            _fail(f"the output on the stand-in model (whose layers average what their masks allow) is "
                  f"wrong: {likely}")
    expect_close(out, want, what="the output on the stand-in model", atol=1e-9, rtol=0,
                 hint="1. masks from the ids; 2. embed, scale by sqrt(d_model), add positions; 3. every "
                      "encoder layer, then model.encoder.norm; 4. the same for the target through the "
                      "decoder layers, each given the memory, self_mask and memory_mask, then "
                      "model.decoder.norm; 5. log_softmax(model.generator.proj(...)).")
    if not torch.allclose(out.exp().sum(-1), torch.ones(2, 3, dtype=out.dtype)):
        _fail("the rows of the output should be log-probabilities: exp(output) sums to 1 over the vocabulary.")

    one = tgt[:, :1]  # the first decoding step: only the start token
    label = "the stand-in model, src (2, 4), tgt (2, 1)"
    (out,) = call(label, model, src, one)
    _expect_shape(out, (2, 1, 5), "the output for a target of length 1", "(batch, 1, tgt_vocab).")
    (want,) = recorded_outputs("transformer_forward", label)
    expect_close(out, want, what="the output for a target of length 1", atol=1e-9, rtol=0,
                 hint="the position table and the causal mask must fit the target's own length T.")
    return 4


TRANSFORMER_FORWARD = Exercise(
    function="transformer_forward",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=forward_visible,
    uses=("EncoderLayer", "DecoderLayer"),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS, SDPA_CALLS),
    rtol=_ROUNDED,
    atol={torch.float64: 1e-8, torch.float32: 1e-5},
)


# --------------------------------------------------------------------------- greedy_decode


def _expect_ids(got: torch.Tensor, want: list[list[int]], what: str, hint: str,
                words: Callable[[torch.Tensor], str] | None = None) -> None:
    __tracebackhide__ = True
    words = words or _words
    if got.dtype != torch.long:
        _fail(f"{what}: the output has dtype {got.dtype}; token ids are torch.long "
              "(torch.full(..., dtype=torch.long) or argmax's result).")
    if got.tolist() != want:
        shape = "" if tuple(got.shape) == (len(want), len(want[0])) else (
            f" the output has shape {tuple(got.shape)}, expected {(len(want), len(want[0]))}")
        rows = "\n".join(f"    got      {words(g)}\n    expected {words(torch.tensor(w))}"
                         for g, w in zip(got, want) if g.tolist() != w) if got.dim() == 2 and (
            got.shape[0] == len(want)) else ""
        _fail(f"{what}:{shape}\n{rows}\n  Hint: {hint}")


def sequence_words(index: tuple[int, ...], got: int, want: int) -> str:
    """"sequence 0, position 3 is token 7, expected token 4": an index of decoded token ids."""
    place = f"sequence {index[0]}, position {index[1]}" if len(index) == 2 else f"at {fmt_index(index)}"
    return f"{place} is token {got}, expected token {want}"


def _ids(ids: torch.Tensor) -> str:
    return " ".join(str(i) for i in ids.tolist())


def greedy_visible(call: Callable[..., tuple]) -> int:
    """Table models: "start → I → am → fine → end", a batch that ends at different steps, max_len."""
    __tracebackhide__ = True
    model = example_table_model()
    (out,) = call("the table that spells 'I am fine'", model, torch.tensor([[4, 7, 7]]), max_len=10,
                  start_id=START, end_id=END)
    _expect_ids(out, [[START, I_, AM, FINE, END]], "decoding 'I am fine' (max_len=10)",
                "start with [start_id]; each step run model.decode on the whole prefix, take the "
                "generator's log-probabilities at the *last* position, append their argmax; stop once "
                "every sentence has produced end_id.")
    src = torch.tensor([[1, 7, 7], [2, 7, 0], [4, 0, 0]])
    (out,) = call("a batch of three tables, max_len=10", model, src, max_len=10, start_id=START, end_id=END)
    _expect_ids(out, [[START, I_, AM, FINE, END], [START, YOU, ARE, HERE, END], [START, I_, AM, FINE, END]],
                "greedy decoding of a batch of three", "decode the whole batch together, one row per source.")
    src = torch.tensor([[3, 7], [4, 7]])
    (out,) = call("'la la la…' (never ends) and 'I am fine', max_len=7", model, src, max_len=7,
                  start_id=START, end_id=END)
    if out.dim() == 2 and out.shape[1] == 7 and out[1, 5:].tolist() != [PAD, PAD] and out[1, 4] == END:
        fail(f"a sentence that has produced end_id is finished, but yours goes on after it ({_words(out[1])})",
             "fill the rest of its row with model.pad_id (next_token.masked_fill(finished, model.pad_id)).")
    _expect_ids(out, [[START, LA, LA, LA, LA, LA, LA], [START, I_, AM, FINE, END, PAD, PAD]],
                "a sentence that never ends next to one that does (max_len=7)",
                "max_len counts the start token: stop after max_len - 1 new tokens. A sentence that has "
                "produced end_id is finished: fill the rest of its row with model.pad_id.")
    (out,) = call("'I am fine' with max_len=3", model, torch.tensor([[4]]), max_len=3, start_id=START,
                  end_id=END)
    _expect_ids(out, [[START, I_, AM]], "decoding 'I am fine' with max_len=3",
                "max_len is the longest output, start token included: [start, I, am].")

    # A small random model that, like a real one, reads the masks: its answer is a recorded number.
    mixing = MixingModel(torch.Generator().manual_seed(14))
    src = torch.tensor([[5, 3, 8, PAD, PAD], [4, 9, 11, 7, 6]])  # source 0 ends in 2 tokens of padding
    label = "a small random model (MixingModel(seed 14)), source 0 padded, max_len=8"
    (out,) = call(label, mixing, src, max_len=8, start_id=START, end_id=END)
    (want,) = recorded_outputs("greedy_decode", label)
    _expect_ids(out, want.tolist(), "greedy decoding with a small random model that reads its masks (token ids)",
                "the model's masks matter: model.make_src_mask(src) in encode and decode, "
                "model.make_tgt_mask(prefix) in decode.", words=_ids)
    return 5


def _decode_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    max_len = case.kwargs["max_len"]
    if len(expected) != 2:
        return None
    if len(actual) != 2 or actual[0] != expected[0]:
        return "return (batch, n) token ids: one row per source sentence."
    if actual[1] == max_len + 1:
        return "max_len counts the start token: generate at most max_len - 1 tokens."
    if actual[1] == max_len and expected[1] < max_len:
        return (f"every sentence had ended after {expected[1]} tokens: stop as soon as all of them have "
                "produced end_id.")
    return None


GREEDY_DECODE = Exercise(
    function="greedy_decode",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=greedy_visible,
    index_outputs=("output",),
    index_words=sequence_words,
    uses=("EncoderLayer", "DecoderLayer"),  # the layers inside the models the checks decode with
    shape_hint=_decode_shape_hint,
)


# --------------------------------------------------------------------------- beam_search


def beam_visible(call: Callable[..., tuple]) -> int:
    """The "how are you?" table: width 1 = greedy, width 2 finds "fine", alpha changes the answer."""
    __tracebackhide__ = True
    model = example_table_model()
    how = torch.tensor([[1, 7]])
    p_long, p_short = 0.5 * 0.65 * 0.9, 0.4 * 0.9  # "I am fine <end>", "fine <end>"

    def run(label: str, src: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        seqs, scores = call(label, model, src, start_id=START, end_id=END, **kwargs)
        if not isinstance(seqs, torch.Tensor) or seqs.dtype != torch.long:
            _fail(f"{label}: `sequences` should be a torch.long tensor of token ids.")
        _expect_shape(scores, (src.shape[0],), f"{label}: `scores`", "one score per source sentence.")
        if scores.dtype != torch.float64:
            _fail(f"{label}: `scores` has dtype {scores.dtype}; use the model's dtype, memory.dtype "
                  "(here float64), for the log-probabilities you keep.")
        return seqs, scores

    seqs, scores = run("width=1, alpha=0 on 'how are you?'", how, max_len=8, width=1, alpha=0.0)
    _expect_ids(seqs, [[START, I_, AM, FINE, END]], "beam search with width=1",
                "with one hypothesis per step, beam search is greedy decoding: keep the single best "
                "extension each step.")
    expect_close(scores, [math.log(p_long)], what="its score (width=1, alpha=0)", atol=1e-4, rtol=0,
                 hint="the score is the sum of the log-probabilities of the generated tokens (end included): "
                      "log(0.5 · 0.65 · 0.9 · 1).")

    seqs, scores = run("width=2, alpha=0 on 'how are you?'", how, max_len=8, width=2, alpha=0.0)
    _expect_ids(seqs, [[START, FINE, END]], "beam search with width=2, alpha=0",
                "keep the `width` best extensions over the whole beam each step; a hypothesis that ends "
                "leaves the beam as a finished candidate. 'fine <end>' (p = 0.4 · 0.9 = 0.36) beats "
                "greedy's 'I am fine <end>' (p = 0.29).")
    expect_close(scores, [math.log(p_short)], what="its score (width=2, alpha=0)", atol=1e-4, rtol=0,
                 hint="alpha=0: no length normalisation, the score is the log-probability log(0.36).")

    seqs, scores = run("width=2, alpha=1 on 'how are you?'", how, max_len=8, width=2, alpha=1.0)
    _expect_ids(seqs, [[START, I_, AM, FINE, END]], "beam search with width=2, alpha=1",
                "rank the finished hypotheses by log p / ((5 + n) / 6) ** alpha, where n counts the "
                "generated tokens (end included, start not): log(0.36) / (7/6) = -0.876 loses to "
                "log(0.2925) / (9/6) = -0.820. And keep searching after the first hypothesis finishes: "
                "'I am fine <end>' finishes two steps after 'fine <end>'.")
    expect_close(scores, [math.log(p_long) / 1.5], what="its score (width=2, alpha=1)", atol=1e-4, rtol=0,
                 hint="score = log p / ((5 + n) / 6) ** alpha with n = 4 generated tokens: log(0.2925) / 1.5.")

    both = torch.tensor([[1, 7], [2, 7]])
    seqs, scores = run("a batch of 'how are you?' and 'you are here', width=3, alpha=0.6", both,
                       max_len=8, width=3, alpha=0.6)
    _expect_ids(seqs, [[START, FINE, END, PAD, PAD], [START, YOU, ARE, HERE, END]],
                "beam search on a batch of two (width=3, alpha=0.6)",
                "each source sentence has its own beam; pad the shorter answers with model.pad_id to the "
                "longest one's length.")
    penalty = ((5 + 2) / 6) ** 0.6
    expect_close(scores[0], math.log(p_short) / penalty, what="the score of sentence 0 (alpha=0.6)",
                 atol=1e-4, rtol=0, hint="log(0.36) / ((5 + 2) / 6) ** 0.6.")

    seqs, scores = run("max_len=2 on 'how are you?' (nothing can end in time)", how, max_len=2, width=2,
                       alpha=0.0)
    _expect_ids(seqs, [[START, I_]], "beam search with max_len=2",
                "when the hypotheses reach max_len tokens (start included) the live ones are finished as "
                "they are: here the best one-token answer, 'I' (p = 0.5).")
    expect_close(scores, [math.log(0.5)], what="its score (max_len=2)", atol=1e-4, rtol=0,
                 hint="log(0.5): the truncated hypothesis [start, I].")
    return 10


BEAM_SEARCH = Exercise(
    function="beam_search",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=beam_visible,
    output_names=("sequences", "scores"),
    index_outputs=("sequences",),
    index_words=sequence_words,
    uses=("EncoderLayer", "DecoderLayer"),  # the layers inside the models the checks decode with
    shape_hint=_decode_shape_hint,
    rtol=_ROUNDED,
    atol={torch.float64: 1e-8, torch.float32: 1e-5},
)

EXERCISES = (FEED_FORWARD, ENCODER_LAYER, DECODER_LAYER, TRANSFORMER_FORWARD, GREEDY_DECODE, BEAM_SEARCH)
