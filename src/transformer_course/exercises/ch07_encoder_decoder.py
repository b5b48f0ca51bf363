"""Chapter 7 exercises: the feed-forward network, the encoder and decoder layers, the full
forward pass, greedy decoding and beam search.

Visible checks use examples whose answers follow from the definitions by hand: layers whose
sublayers output known constants (a pre-LN layer then returns x + a + f exactly, a post-LN
layer LayerNorm(LayerNorm(x + a) + f)), properties (padding and the future cannot change an
output), stand-in layers that record what the full forward pass gives them, and small models
whose next-token probabilities are written in a table ("start → I → am → fine → end"; a table
on which greedy decoding and beam search disagree). Hidden checks compare with the reference:
layers given the weights of ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
(post-LN and pre-LN), and small encoder-decoders with fixed seeded weights.

Nothing of the reference is imported at module level: the visible checks must run from the
student bundle alone. ``make_cases`` and the typical mistakes load what they need when grading.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure
from .compare import expect_close
from .inputs import randn, with_float32
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS

ASSIGNMENT = "07-encoder-decoder"
PAD, START, END = 0, 1, 2  # the special ids of every model in this chapter's checks

# Looser than the default for results of many float64 operations (decoders, scores).
_ROUNDED = {torch.float64: 1e-6, torch.float32: 1e-4}


def _reference(path: str) -> Any:
    """``"module:name"`` of the reference implementation, imported when grading only."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


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


class TableModel(nn.Module):
    """A stand-in for a trained translator: its next-token probabilities come from a table.

    ``tables[i]`` maps a target prefix (a tuple of ids, start token first) to the
    probabilities of the next token, ``{token id: probability}``; source sentence ``b`` uses
    table ``src[b, 0]``. A prefix missing from the table is followed by ``END`` for sure. Every
    token keeps a tiny probability (1e-6), so that no log-probability is infinite.

    It has the interface that :func:`greedy_decode` and :func:`beam_search` use (``encode``,
    ``decode``, ``generator``, ``make_src_mask``, ``make_tgt_mask``, ``pad_id``), so the
    answers of decoding can be worked out by hand from the table.
    """

    pad_id = PAD

    def __init__(self, tables: dict[int, dict[tuple[int, ...], dict[int, float]]], vocab_size: int) -> None:
        super().__init__()
        self.tables = tables
        self.vocab_size = vocab_size

    def make_src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return (src != self.pad_id)[:, None, None, :]  # (batch, 1, 1, S)

    def make_tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))
        return (tgt != self.pad_id)[:, None, None, :] & causal  # (batch, 1, T, T)

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


class MixingModel(nn.Module):
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
        self.pad_id = PAD
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

    def make_src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return (src != self.pad_id)[:, None, None, :]  # (batch, 1, 1, S)

    def make_tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))
        return (tgt != self.pad_id)[:, None, None, :] & causal  # (batch, 1, T, T)

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


class _ModelForDecoding(nn.Module):
    """A reference EncoderDecoder, seen through the methods that decoding uses.

    ``encode``, ``decode``, ``generator``, ``make_src_mask`` and ``make_tgt_mask`` compute what
    the EncoderDecoder's own methods compute (tests/test_ch07_encoder_decoder.py checks that
    they are equal), written out here from the model's parts. The reason: a student's
    ``greedy_decode`` calls these methods, and in the EncoderDecoder they are reference code,
    which the grader's tripwire counts as a forbidden shortcut. Written here, the only
    reference code they run is the model's encoder and decoder layers, which the decoding
    exercises list in ``uses`` (allowed).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pad_id = model.pad_id
        self.vocab_size = model.config.tgt_vocab
        self.eval()  # like the model it wraps: no dropout

    def make_src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return (src != self.pad_id)[:, None, None, :]  # (batch, 1, 1, S)

    def make_tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))
        return (tgt != self.pad_id)[:, None, None, :] & causal  # (batch, 1, T, T)

    def _embed(self, embedding: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        d_model = self.model.config.d_model
        x = embedding.embedding(ids) * math.sqrt(d_model) + self.model.positions.pe[: ids.shape[1]]
        return self.model.positions.dropout(x)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self._embed(self.model.src_embed, src)
        for layer in self.model.encoder.layers:
            x = layer(x, src_mask)
        return self.model.encoder.norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self._embed(self.model.tgt_embed, tgt)
        for layer in self.model.decoder.layers:
            y = layer(y, memory, tgt_mask, memory_mask)
        return self.model.decoder.norm(y)

    def generator(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.model.generator.proj(hidden), dim=-1)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        src_mask = self.make_src_mask(src)
        memory = self.encode(src, src_mask)
        return self.generator(self.decode(tgt, memory, self.make_tgt_mask(tgt), src_mask))


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


def random_model(gen: torch.Generator, **changes: Any) -> nn.Module:
    """A small reference EncoderDecoder (float64, eval mode) with weights drawn from ``gen``.

    It never proposes the padding or start token (a trained model learns not to), and the
    end token gets a moderate extra bias so that outputs end at different lengths.
    """
    config_type = _reference("transformer_course.model:TransformerConfig")
    model_type = _reference("transformer_course.model:EncoderDecoder")
    settings = dict(src_vocab=13, tgt_vocab=11, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                    dropout=0.1, max_len=32, pad_id=PAD)
    settings.update(changes)
    config = config_type(**settings)
    model = _quietly(lambda: model_type(config)).to(torch.float64)
    _randomise(model, gen)
    with torch.no_grad():
        model.src_embed.embedding.weight[PAD] = 0.0
        model.tgt_embed.embedding.weight[PAD] = 0.0
        model.generator.proj.weight.mul_(3.0)  # sharper choices: outputs depend on the source
        model.generator.proj.bias[PAD] = -30.0
        model.generator.proj.bias[START] = -30.0
        model.generator.proj.bias[END] += 1.0
    return model.eval()


def _random_ids(gen: torch.Generator, batch: int, seq: int, vocab: int, lengths: list[int]) -> torch.Tensor:
    """``(batch, seq)`` ids in [3, vocab) (no special token), right-padded to ``lengths``."""
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)
    for b, n in enumerate(lengths):
        ids[b, n:] = PAD
    return ids


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
    (out,) = call(Case("x = [1, -2] with identity weights, activation='gelu'", (x,), init=(2, 2),
                       init_kwargs={"activation": "gelu"}, state=state))
    gelu = torch.tensor([[[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in (1.0, -2.0)]]], dtype=torch.float64)
    if _close(out, F.gelu(gelu), atol=1e-6):
        _fail("FeedForward([1, -2]) with identity weights and gelu applies the activation twice: it goes "
              "between linear1 and linear2 only, linear2(gelu(linear1(x))).")
    if _close(out, F.relu(x), atol=1e-6):
        _fail("FeedForward([1, -2]) with identity weights and activation='gelu' gives relu's answer: use the "
              "`activation` argument, nn.GELU() for 'gelu'.")
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
    return 5


def feedforward_cases(gen: torch.Generator) -> list[Case]:
    reference = _reference("transformer_course.feedforward:FeedForward")

    def case(label: str, x: torch.Tensor, d_ff: int, **kwargs: Any) -> Case:
        module = _quietly(lambda: reference(x.shape[-1], d_ff, **kwargs))
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


FEED_FORWARD = Exercise(
    function="FeedForward",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=feedforward_visible,
    is_module=True,
    forbidden=(TRANSFORMER_CALLS,),
)
FEED_FORWARD_HIDDEN = HiddenTests(
    function="FeedForward",
    reference="transformer_course.feedforward:FeedForward",
    make_cases=feedforward_cases,
    mistakes=(
        Mistake(_NoActivation, "you left out the activation between linear1 and linear2: without it "
                               "the two layers collapse into one linear map."),
        Mistake(_AlwaysReLU, "you always use relu: use the `activation` argument ('relu' or 'gelu')."),
        Mistake(_TanhGELU, "you use the tanh approximation of GELU; activation='gelu' means the exact "
                           "one, nn.GELU() or F.gelu(h)."),
        Mistake(_ActivationAfterBoth, "the activation goes between the two linear layers only, not "
                                      "after linear2."),
    ),
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
            _fail(f"with norm_first={norm_first} your layer computes the other arrangement: "
                  f"{'post-LN' if norm_first else 'pre-LN'} instead of {name}. "
                  + (_PRE_HINT if norm_first else _POST_HINT))
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
            _fail(f"norm_first={norm_first}: changing the padding (positions 3 and 4) of sequence 0 "
                  "changed the outputs of its real tokens: pass `mask` to the self-attention, "
                  "self.self_attn(x, x, x, mask).")
        changed = x.clone()
        changed[1, 4] += _NUDGE
        if _close(run(changed, " with position 4 changed", norm_first)[1, 0], out[1, 0]):
            _fail(f"norm_first={norm_first}: changing position 4 did not change position 0's output: "
                  "self-attention lets every position look at every other, self.self_attn(x, x, x, mask).")
    return 8


def _torch_layer_state(gen: torch.Generator, kind: str, d_model: int, n_heads: int, d_ff: int,
                       **options: Any) -> dict[str, torch.Tensor]:
    """A torch Transformer layer with weights from ``gen``, copied into the reference layer: the
    reference's state (our parameter names) holding torch's numbers."""
    torch_type = getattr(nn, f"Transformer{kind}Layer")
    ours = _reference(f"transformer_course.layers:{kind}Layer")
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
        attention = _reference("transformer_course.multihead:MultiHeadAttention")
        feed_forward = _reference("transformer_course.feedforward:FeedForward")
        self.norm_first = norm_first
        self.self_attn = attention(d_model, n_heads, dropout=dropout)
        self.feed_forward = feed_forward(d_model, d_ff, dropout=dropout, activation=activation)
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


ENCODER_LAYER = Exercise(
    function="EncoderLayer",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=encoder_visible,
    is_module=True,
    uses=("MultiHeadAttention", "FeedForward"),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS, SDPA_CALLS),
)
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
        _fail("changing the memory did not change the output: the cross-attention takes its keys and "
              "values from the memory, self.cross_attn(x, memory, memory, memory_mask).")
    changed = memory.clone()
    changed[0, 3:] += _NUDGE
    if not _close(run(x, changed, ", padded memory changed")[0], out[0]):
        _fail("changing the memory at source 0's padding (positions 3 and 4) changed its output: pass "
              "`memory_mask` to the cross-attention, self.cross_attn(x, memory, memory, memory_mask).")
    changed = x.clone()
    changed[:, 2] += _NUDGE
    if not _close(run(changed, memory, ", target position 2 changed")[:, :2], out[:, :2]):
        _fail("changing target position 2 changed the outputs at positions 0 and 1: a position must not "
              "see the future. Pass `self_mask` to the masked self-attention, self.self_attn(x, x, x, self_mask).")
    return 8


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
        attention = _reference("transformer_course.multihead:MultiHeadAttention")
        self.cross_attn = attention(d_model, n_heads, dropout=dropout)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def run(self, x, memory, self_mask, memory_mask, cross_first=False, cross_kv=None):
        """The right wiring, with knobs for the mistakes."""
        def self_part(h):
            return self.self_attn(h, h, h, self_mask)[0]

        def cross_part(h):
            kv = memory if cross_kv is None else cross_kv(h)
            return self.cross_attn(h, kv, kv, memory_mask)[0]

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


class _DecoderAlwaysPostLN(_DecoderParts):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        self.norm_first = False
        return self.run(x, memory, self_mask, memory_mask)


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
        Mistake(_DecoderAlwaysPostLN, "you always build post-LN: with norm_first=True, normalise each "
                                      "sublayer's input instead, x = x + sublayer(norm(x))."),
    ),
)


# --------------------------------------------------------------------------- transformer_forward


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


class _StandInModel(nn.Module):
    """The container of :func:`stand_in_model`'s parts. Calling the model itself is what the
    exercise asks to write out, so it says so instead of computing anything."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "transformer_forward should compute the forward pass from the model's parts; calling the model "
            "itself (model(src, tgt), model.encode, model.decode) runs the reference implementation, which "
            "earns no points"
        )

    forward = encode = decode = _refuse


def stand_in_model() -> nn.Module:
    """An object with the parts of an EncoderDecoder (d_model 4, vocabularies 6 and 5): embedding
    tables, position table and output layer with known numbers, and stand-ins for the layers
    and final norms (see :class:`_StandInEncoderLayer`) instead of real ones."""
    d, src_vocab, tgt_vocab = 4, 6, 5
    model = _StandInModel()
    model.config = SimpleNamespace(d_model=d, pad_id=PAD, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    model.pad_id = PAD
    for name, vocab, offset in (("src_embed", src_vocab, 0.0), ("tgt_embed", tgt_vocab, 0.5)):
        part = nn.Module()
        part.embedding = nn.Embedding(vocab, d, padding_idx=PAD)
        part.d_model = d
        with torch.no_grad():
            table = (torch.arange(vocab * d, dtype=torch.float32).reshape(vocab, d) % 7) / 10 - offset
            table[PAD] = 0.0
            part.embedding.weight.copy_(table)
        setattr(model, name, part)
    model.positions = nn.Module()
    model.positions.register_buffer("pe", torch.arange(16 * d, dtype=torch.float32).reshape(16, d) / 50)
    model.positions.dropout = nn.Dropout(0.0)
    model.encoder = nn.Module()
    model.encoder.layers = nn.ModuleList([_StandInEncoderLayer(1.0), _StandInEncoderLayer(-2.0)])
    model.encoder.norm = _Scale(0.5)
    model.decoder = nn.Module()
    model.decoder.layers = nn.ModuleList([_StandInDecoderLayer(-1.0), _StandInDecoderLayer(3.0)])
    model.decoder.norm = _Scale(2.0)
    model.generator = nn.Module()
    model.generator.proj = nn.Linear(d, tgt_vocab)
    with torch.no_grad():
        model.generator.proj.weight.copy_(torch.linspace(-1, 1, tgt_vocab * d).reshape(tgt_vocab, d))
        model.generator.proj.bias.copy_(torch.linspace(0, 0.4, tgt_vocab))
    return model.to(torch.float64).eval()


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


# What the visible check says when the output equals one of these typical mistakes.
_FORWARD_MISTAKES = (
    ({"scale": False}, "multiply the embeddings by sqrt(d_model) before adding the positions "
                       "(model.src_embed.embedding(src) * math.sqrt(d_model))."),
    ({"positions": False}, "add the positions after scaling the embeddings: + model.positions.pe[:seq], "
                           "one row per position."),
    ({"causal": False}, "the decoder's self_mask must also hide the future: combine the target padding "
                        "mask with a causal mask, torch.tril(torch.ones(T, T, dtype=torch.bool))."),
    ({"padding": False}, "hide the padding: (src != model.pad_id)[:, None, None, :] for the encoder and "
                         "the cross-attention, and the target padding mask together with the causal one."),
    ({"final_norms": False}, "apply model.encoder.norm to the encoder's output and model.decoder.norm to the "
                             "decoder's (LayerNorms in pre-LN models, nn.Identity in post-LN ones)."),
    ({"chain": False}, "each layer takes the previous layer's output: x = layer(x, mask) in the loop."),
    ({"output": "logits"}, "you return the scores of model.generator.proj: turn them into log-probabilities "
                           "with torch.log_softmax(..., dim=-1)."),
    ({"output": "softmax"}, "you return probabilities; return log-probabilities, torch.log_softmax(..., dim=-1)."),
)


def forward_visible(call: Callable[..., tuple]) -> int:
    """A stand-in model whose layers react to their inputs and masks; typical mistakes are named."""
    __tracebackhide__ = True
    src = torch.tensor([[3, 1, 4, 5], [2, 5, 0, 0]])  # sentence 1 ends in 2 tokens of padding
    tgt = torch.tensor([[1, 3, 2], [1, 4, 0]])  # target 1 in 1
    model = stand_in_model()
    (out,) = call("the stand-in model, src (2, 4), tgt (2, 3)", model, src, tgt)
    _expect_shape(out, (2, 3, 5), "the output", "(batch, T, tgt_vocab): one distribution over the target "
                  "vocabulary per target position.")
    want = _forward(model, src, tgt)
    if not _close(out, want, atol=1e-9):
        for knobs, hint in _FORWARD_MISTAKES:
            if _close(out, _forward(model, src, tgt, **knobs), atol=1e-9):
                _fail(f"the output on the stand-in model (whose layers average what their masks allow) is "
                      f"wrong: {hint}")
    expect_close(out, want, what="the output on the stand-in model", atol=1e-9, rtol=0,
                 hint="1. masks from the ids; 2. embed, scale by sqrt(d_model), add positions; 3. every "
                      "encoder layer, then model.encoder.norm; 4. the same for the target through the "
                      "decoder layers, each given the memory, self_mask and memory_mask, then "
                      "model.decoder.norm; 5. log_softmax(model.generator.proj(...)).")
    if not torch.allclose(out.exp().sum(-1), torch.ones(2, 3, dtype=out.dtype)):
        _fail("the rows of the output should be log-probabilities: exp(output) sums to 1 over the vocabulary.")

    one = tgt[:, :1]  # the first decoding step: only the start token
    (out,) = call("the stand-in model, src (2, 4), tgt (2, 1)", model, src, one)
    _expect_shape(out, (2, 1, 5), "the output for a target of length 1", "(batch, 1, tgt_vocab).")
    expect_close(out, _forward(model, src, one), what="the output for a target of length 1", atol=1e-9, rtol=0,
                 hint="the position table and the causal mask must fit the target's own length T.")
    return 4


def forward_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, S: int, T: int, src_lengths: list[int], tgt_lengths: list[int],
             **changes: Any) -> ModelCase:
        model = random_model(gen, **changes)
        src = _random_ids(gen, batch, S, model.config.src_vocab, src_lengths)
        tgt = _random_ids(gen, batch, T, model.config.tgt_vocab, tgt_lengths)
        tgt[:, 0] = START
        return ModelCase(label, (model, src, tgt))

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
TRANSFORMER_FORWARD_HIDDEN = HiddenTests(
    function="transformer_forward",
    reference="transformer_course.model:transformer_forward",
    make_cases=forward_cases,
    mistakes=(
        Mistake(lambda m, s, t: _forward(m, s, t, scale=False),
                "multiply the embeddings by sqrt(d_model) before adding the positions."),
        Mistake(lambda m, s, t: _forward(m, s, t, positions=False),
                "add the positions: model.positions.pe[:seq] after the scaled embeddings."),
        Mistake(lambda m, s, t: _forward(m, s, t, causal=False),
                "the decoder's self_mask must also hide the future (a causal mask), not only padding."),
        Mistake(lambda m, s, t: _forward(m, s, t, padding=False),
                "hide the padding: the source padding mask for the encoder and the cross-attention, and "
                "the target padding together with the causal mask in the decoder."),
        Mistake(lambda m, s, t: _forward(m, s, t, final_norms=False),
                "apply model.encoder.norm to the encoder's output and model.decoder.norm to the decoder's "
                "(LayerNorms in pre-LN models, nothing in post-LN ones)."),
        Mistake(lambda m, s, t: _forward(m, s, t, chain=False),
                "each layer takes the previous layer's output: x = layer(x, mask) in the loop."),
        Mistake(lambda m, s, t: _forward(m, s, t, output="logits"),
                "return log-probabilities: torch.log_softmax(model.generator.proj(y), dim=-1)."),
    ),
)


# --------------------------------------------------------------------------- greedy_decode


def _expect_ids(got: torch.Tensor, want: list[list[int]], what: str, hint: str) -> None:
    __tracebackhide__ = True
    if got.dtype != torch.long:
        _fail(f"{what}: the output has dtype {got.dtype}; token ids are torch.long "
              "(torch.full(..., dtype=torch.long) or argmax's result).")
    if got.tolist() != want:
        shape = "" if tuple(got.shape) == (len(want), len(want[0])) else (
            f" the output has shape {tuple(got.shape)}, expected {(len(want), len(want[0]))}")
        rows = "\n".join(f"    got      {_words(g)}\n    expected {_words(torch.tensor(w))}"
                         for g, w in zip(got, want) if g.tolist() != w) if got.dim() == 2 and (
            got.shape[0] == len(want)) else ""
        _fail(f"{what}:{shape}\n{rows}\n  Hint: {hint}")


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
        _fail("a sentence that has produced end_id is finished, but yours goes on after it ("
              f"{_words(out[1])}): fill the rest of its row with model.pad_id "
              "(next_token.masked_fill(finished, model.pad_id)).")
    _expect_ids(out, [[START, LA, LA, LA, LA, LA, LA], [START, I_, AM, FINE, END, PAD, PAD]],
                "a sentence that never ends next to one that does (max_len=7)",
                "max_len counts the start token: stop after max_len - 1 new tokens. A sentence that has "
                "produced end_id is finished: fill the rest of its row with model.pad_id.")
    (out,) = call("'I am fine' with max_len=3", model, torch.tensor([[4]]), max_len=3, start_id=START,
                  end_id=END)
    _expect_ids(out, [[START, I_, AM]], "decoding 'I am fine' with max_len=3",
                "max_len is the longest output, start token included: [start, I, am].")
    return 4


def _probe_end_ids(model: nn.Module, src: torch.Tensor, max_len: int) -> dict[str, int]:
    """End tokens that make a case interesting, found by decoding with no end token at all:
    ``early`` ends sentence 0 at its second step (others may go on), ``all`` ends every sentence
    before ``max_len`` if some token can (else END), ``never`` is produced by no sentence."""
    reference = _reference("transformer_course.decoding:greedy_decode")
    free = reference(model, src, max_len, START, -1)[:, 1:]  # -1: no token ends a sentence
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
    post = _ModelForDecoding(random_model(gen))
    pre = _ModelForDecoding(random_model(gen, norm_first=True, activation="gelu"))
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
        _decode_case("a post-LN Transformer (EncoderDecoder)", post, src, max_len=6, start_id=START,
                     end_id=_probe_end_ids(post, src, 6)["early"]),
        _decode_case("a pre-LN Transformer (EncoderDecoder)", pre, src[:3], max_len=5, start_id=START,
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
    uses=("EncoderLayer", "DecoderLayer"),  # the layers inside the models the checks decode with
    shape_hint=_decode_shape_hint,
)
GREEDY_DECODE_HIDDEN = HiddenTests(
    function="greedy_decode",
    reference="transformer_course.decoding:greedy_decode",
    make_cases=greedy_cases,
    mistakes=(
        Mistake(lambda m, s, max_len, start_id, end_id: _greedy(m, s, max_len, start_id, end_id,
                                                                pad_after_end=False),
                "a finished sentence must stay finished: after its end_id, fill its row with model.pad_id."),
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


def beam_cases(gen: torch.Generator) -> list[Case]:
    mixing = MixingModel(gen)
    other = MixingModel(gen, end_bias=1.0)
    post = _ModelForDecoding(random_model(gen))
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
        _decode_case("a post-LN Transformer (EncoderDecoder), width 3", post, src, max_len=6, start_id=START,
                     end_id=_probe_end_ids(post, src, 6)["early"], width=3, alpha=0.6),
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


BEAM_SEARCH = Exercise(
    function="beam_search",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=beam_visible,
    output_names=("sequences", "scores"),
    index_outputs=("sequences",),
    uses=("EncoderLayer", "DecoderLayer"),  # the layers inside the models the checks decode with
    shape_hint=_decode_shape_hint,
    rtol=_ROUNDED,
    atol={torch.float64: 1e-8, torch.float32: 1e-5},
)
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

EXERCISES = (FEED_FORWARD, ENCODER_LAYER, DECODER_LAYER, TRANSFORMER_FORWARD, GREEDY_DECODE, BEAM_SEARCH)

HIDDEN_TESTS = (
    FEED_FORWARD_HIDDEN,
    ENCODER_LAYER_HIDDEN,
    DECODER_LAYER_HIDDEN,
    TRANSFORMER_FORWARD_HIDDEN,
    GREEDY_DECODE_HIDDEN,
    BEAM_SEARCH_HIDDEN,
)
