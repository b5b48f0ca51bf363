"""Figures about the encoder-decoder (chapter 7), and the chapter's toy translation task.

* **add & norm**: :func:`plot_add_and_norm` draws post-LN and pre-LN side by side;
  :func:`layer_statistics` measures, at initialisation, each layer's gradient and the size of
  the residual stream in a deep stack of reference encoder layers, and
  :func:`plot_layer_statistics` draws them (the effect Xiong et al. 2020 analyse).
* **decoding**: :func:`plot_decoding_step` draws the data flow of one step of autoregressive
  decoding with the probabilities a model gave; :func:`plot_greedy_steps` one small chart per
  step; :func:`plot_beam_tree` the tree of hypotheses of a :class:`TableModel`, with what greedy
  decoding and beam search pick.
* **cross-attention**: :func:`cross_attention_weights` records the decoder's cross-attention
  weights during a forward pass, :func:`plot_cross_attention` draws them.
* **the toy task**: :func:`toy_translation` builds 25 Spanish → English sentence pairs that
  translate word for word ("yo estoy bien" → "I am fine"), small enough to train on in seconds.

See :mod:`transformer_course.plotting` for the conventions all figure helpers follow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import nn

from transformer_course.decoding import beam_search, greedy_decode, length_penalty
from transformer_course.exercises.ch07_encoder_decoder import (
    END,
    HOW_ARE_YOU,
    START,
    WORDS,
    TableModel,
    example_table_model,
)
from transformer_course.model import Encoder, TransformerConfig

from ._common import COLUMN_WIDTH
from .attention import plot_attention

__all__ = [
    "HOW_ARE_YOU", "WORDS", "TableModel", "ToyTranslation", "cross_attention_weights", "how_are_you_model",
    "layer_statistics", "plot_add_and_norm", "plot_beam_tree", "plot_cross_attention", "plot_decoding_step",
    "plot_greedy_steps", "plot_layer_statistics", "toy_translation",
]

# One colour per idea, the same in every figure of the chapter.
POST_LN_COLOUR = "tab:red"
PRE_LN_COLOUR = "tab:blue"
ENCODER_COLOUR = "#dbe8f5"
DECODER_COLOUR = "#fbe3cf"
GENERATOR_COLOUR = "#e3f1dc"
CHOSEN_COLOUR = "tab:orange"  # what greedy decoding picks
BEAM_COLOUR = "tab:blue"  # what beam search picks
OTHER_COLOUR = "#9aa7b4"


# --------------------------------------------------------------------------------------------
# The toy translation task
# --------------------------------------------------------------------------------------------

SPECIALS = ["<pad>", "<start>", "<end>"]  # ids 0, 1, 2 in both vocabularies
_SUBJECTS = [("yo", "estoy", "I", "am"), ("tú", "estás", "you", "are"), ("él", "está", "he", "is"),
             ("nosotros", "estamos", "we", "are"), ("ellos", "están", "they", "are")]
_COMPLEMENTS = [("bien", "fine"), ("mal", "unwell"), ("aquí", "here"), ("allí", "there"),
                ("en casa", "at home")]


@dataclass
class ToyTranslation:
    """Sentence pairs that translate word for word, with their vocabularies.

    ``pairs`` are ``(spanish words, english words)``; ``held_out`` is the pair kept out of
    training ("yo estoy bien" → "I am fine"), to see whether the model generalises. Both
    vocabularies start with ``<pad>``, ``<start>``, ``<end>`` (ids 0, 1, 2).
    """

    pairs: list[tuple[list[str], list[str]]]
    held_out: tuple[list[str], list[str]]
    src_vocab: list[str]
    tgt_vocab: list[str]

    @property
    def training_pairs(self) -> list[tuple[list[str], list[str]]]:
        return [p for p in self.pairs if p != self.held_out]

    def src_ids(self, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(batch, S)`` ids of source sentences, right-padded with 0."""
        index = {w: i for i, w in enumerate(self.src_vocab)}
        return _pad([[index[w] for w in s] for s in sentences])

    def tgt_ids(self, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(batch, T)`` ids of ``<start>`` + target words + ``<end>``, right-padded with 0."""
        index = {w: i for i, w in enumerate(self.tgt_vocab)}
        return _pad([[START, *(index[w] for w in s), END] for s in sentences])

    def tgt_words(self, ids: torch.Tensor) -> list[str]:
        """Target ids ``(T,)`` -> words, padding dropped."""
        return [self.tgt_vocab[i] for i in ids.tolist() if i != 0]


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def toy_translation() -> ToyTranslation:
    """The chapter's toy task: 5 subjects × 5 complements = 25 sentence pairs.

    "yo estoy bien" → "I am fine", "ellos están en casa" → "they are at home", ... Each
    Spanish word has one English word in the same place, so a model can learn the task as
    word-for-word lookups, and its cross-attention should show that alignment.
    """
    pairs = []
    for subject, verb, en_subject, en_verb in _SUBJECTS:
        for complement, en_complement in _COMPLEMENTS:
            pairs.append(([subject, verb, *complement.split()], [en_subject, en_verb, *en_complement.split()]))
    src_words = sorted({w for source, _ in pairs for w in source})
    tgt_words = sorted({w for _, target in pairs for w in target})
    held_out = (["yo", "estoy", "bien"], ["I", "am", "fine"])
    return ToyTranslation(pairs, held_out, SPECIALS + src_words, SPECIALS + tgt_words)


# --------------------------------------------------------------------------------------------
# Add & norm: post-LN and pre-LN
# --------------------------------------------------------------------------------------------


def _box(ax: Axes, x: float, y: float, text: str, colour: str, width: float = 2.6, height: float = 0.8,
         fontsize: float = 9.5) -> None:
    """A rounded box centred on (x, y) with ``text`` in it."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.15", facecolor=colour,
                                edgecolor="#555555", linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str = "#444444",
           style: str = "-|>", connection: str = "arc3", linewidth: float = 1.2) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle=style, color=colour, lw=linewidth, connectionstyle=connection,
                                shrinkA=0, shrinkB=0))


def _plus(ax: Axes, x: float, y: float) -> None:
    ax.add_patch(plt.Circle((x, y), 0.22, facecolor="white", edgecolor="#444444", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12)


def plot_add_and_norm(axes: Sequence[Axes] | None = None) -> Figure:
    """Post-LN (Vaswani et al. 2017) and pre-LN (most models since GPT-2), one sublayer each.

    Returns:
        The Figure, two panels: post-LN on the left, pre-LN on the right.
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 4.4), layout="constrained")
    fig = axes[0].figure
    for ax, pre in zip(axes, (False, True)):
        ax.set_xlim(0, 6)
        ax.set_ylim(0, 8)
        ax.axis("off")
        colour = PRE_LN_COLOUR if pre else POST_LN_COLOUR
        ax.text(3, 7.7, "pre-LN: x + Sublayer(LayerNorm(x))" if pre else "post-LN: LayerNorm(x + Sublayer(x))",
                ha="center", va="center", fontsize=9.5, color=colour, fontweight="bold")
        ax.text(3, 0.3, "x", ha="center", va="center", fontsize=12)
        if pre:
            _box(ax, 3, 2.4, "LayerNorm", "#eeeeee")
            _box(ax, 3, 4.0, "Sublayer\n(attention or FFN)", ENCODER_COLOUR, height=1.0)
            _plus(ax, 3, 5.6)
            _arrow(ax, (3, 0.55), (3, 2.0))
            _arrow(ax, (3, 2.8), (3, 3.5))
            _arrow(ax, (3, 4.5), (3, 5.38))
            _arrow(ax, (3, 5.82), (3, 7.1))
            ax.text(3.15, 6.6, "to the next sublayer:\nnever normalised", fontsize=8.5, va="center")
            residual_top = 5.6
        else:
            _box(ax, 3, 2.4, "Sublayer\n(attention or FFN)", ENCODER_COLOUR, height=1.0)
            _plus(ax, 3, 4.2)
            _box(ax, 3, 5.6, "LayerNorm", "#eeeeee")
            _arrow(ax, (3, 0.55), (3, 1.9))
            _arrow(ax, (3, 2.9), (3, 3.98))
            _arrow(ax, (3, 4.42), (3, 5.2))
            _arrow(ax, (3, 6.0), (3, 7.1))
            ax.text(3.15, 6.6, "to the next sublayer:\nnormalised", fontsize=8.5, va="center")
            residual_top = 4.2
        # The residual connection: from x around the sublayer into the sum.
        ax.plot([3, 1.2, 1.2], [1.0, 1.0, residual_top], color=colour, lw=1.6)
        _arrow(ax, (1.2, residual_top), (2.78, residual_top), colour=colour, linewidth=1.6)
        ax.text(1.05, (1.0 + residual_top) / 2, "residual", rotation=90, ha="right", va="center",
                color=colour, fontsize=9)
    return fig


@dataclass
class LayerStatistics:
    """What :func:`layer_statistics` measured, averaged over seeds; index = layer."""

    gradient_norm: np.ndarray  # (n_layers,): norm of the loss's gradient w.r.t. each layer's weights
    stream_norm: np.ndarray  # (n_layers + 1,): mean length of a token vector entering layer i (last: output)


def layer_statistics(norm_first: bool, n_layers: int = 12, d_model: int = 32, seeds: Sequence[int] = (0, 1, 2),
                     batch: int = 4, seq_len: int = 10, vocab: int = 16) -> LayerStatistics:
    """A deep stack of reference encoder layers at initialisation: gradients and stream sizes.

    For each seed: build a reference :class:`~transformer_course.model.Encoder` of ``n_layers``
    (Xavier-initialised like :func:`~transformer_course.model.make_model`), push random
    unit-variance vectors through it, read the output out with a random linear layer into
    ``vocab`` classes and take the cross-entropy with random targets: the situation on the
    first step of training. Record the norm of the gradient of each layer's weights, and the
    mean length of the token vectors between layers.
    """
    grads, streams = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        config = TransformerConfig(src_vocab=vocab, tgt_vocab=vocab, d_model=d_model, n_heads=4,
                                   n_layers=n_layers, d_ff=4 * d_model, dropout=0.0, norm_first=norm_first)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Encoder(config)
            for p in encoder.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        x = torch.randn(batch, seq_len, d_model, generator=generator)
        readout = torch.randn(vocab, d_model, generator=generator) / math.sqrt(d_model)
        targets = torch.randint(0, vocab, (batch * seq_len,), generator=generator)
        sizes = [x.norm(dim=-1).mean().item()]
        h = x
        for layer in encoder.layers:
            h = layer(h)
            sizes.append(h.norm(dim=-1).mean().item())
        logits = encoder.norm(h) @ readout.T  # (batch, seq, vocab)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets)
        loss.backward()
        grads.append([torch.cat([p.grad.flatten() for p in layer.parameters()]).norm().item()
                      for layer in encoder.layers])
        streams.append(sizes)
    return LayerStatistics(np.mean(grads, axis=0), np.mean(streams, axis=0))


def plot_layer_statistics(post: LayerStatistics, pre: LayerStatistics, axes: Sequence[Axes] | None = None) -> Figure:
    """Gradient norm per layer (top) and size of the residual stream (bottom), post- vs pre-LN."""
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.8), layout="constrained")
    fig = axes[0].figure
    n = len(post.gradient_norm)
    layers = np.arange(1, n + 1)
    for stats, colour, label in ((post, POST_LN_COLOUR, "post-LN"), (pre, PRE_LN_COLOUR, "pre-LN")):
        axes[0].plot(layers, stats.gradient_norm, "o-", color=colour, label=label)
        axes[1].plot(np.arange(n + 1), stats.stream_norm, "o-", color=colour, label=label)
    axes[0].set_xlabel("layer (1 = next to the input)")
    axes[0].set_ylabel("gradient norm of the layer's weights")
    axes[0].set_title("Gradients at initialisation")
    axes[0].set_ylim(bottom=0)
    axes[1].set_xlabel("after layer (0 = the input)")
    axes[1].set_ylabel("mean length of a token vector")
    axes[1].set_title("Size of the residual stream")
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _top(probs: torch.Tensor, vocab: Sequence[str], k: int) -> tuple[list[str], list[float]]:
    values, index = probs.detach().cpu().double().topk(min(k, probs.shape[-1]))
    return [vocab[i] for i in index.tolist()], values.tolist()


def _bars(ax: Axes, words: list[str], values: list[float], title: str) -> None:
    """Horizontal bars, the largest on top and highlighted."""
    colours = [CHOSEN_COLOUR] + [OTHER_COLOUR] * (len(words) - 1)
    ax.barh(range(len(words))[::-1], values, color=colours)
    ax.set_yticks(range(len(words))[::-1], words)
    ax.set_xlim(0, 1.12)
    for i, v in enumerate(values):
        ax.text(v + 0.02, len(words) - 1 - i, f"{v:.2f}", va="center", fontsize=8.5)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def plot_decoding_step(src_words: Sequence[str], prefix_words: Sequence[str], probs: torch.Tensor,
                       vocab: Sequence[str], top: int = 5) -> Figure:
    """The data flow of one decoding step, and the next-token distribution it produced.

    Args:
        src_words: the source sentence, e.g. ``["yo", "estoy", "bien"]``.
        prefix_words: what has been generated so far, start token first.
        probs: ``(vocab,)`` the model's probabilities for the next token.
        vocab: the target vocabulary, by id.
        top: how many of the most likely tokens to show.

    Returns:
        The Figure: the diagram below, the probabilities it ends in above it (data flows upwards).
    """
    fig = plt.figure(figsize=(COLUMN_WIDTH, 7.8), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[1.15, 4])
    bars = fig.add_subplot(grid[0])
    ax = fig.add_subplot(grid[1])
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.9, 10.4)
    ax.axis("off")

    # The encoder: once per sentence.
    ax.text(2.4, -0.55, "encoder: runs once", ha="center", fontsize=10, color="#2a5d8f", fontweight="bold")
    _box(ax, 2.4, 0.6, "source: " + " ".join(src_words), "white", width=3.6)
    _box(ax, 2.4, 2.0, "embed · √d_model + positions", ENCODER_COLOUR, width=3.6)
    _box(ax, 2.4, 4.6, "self-attention + add & norm\nfeed-forward + add & norm\n× N layers", ENCODER_COLOUR,
         width=3.6, height=2.4)
    _box(ax, 2.4, 7.6, "memory: one vector\nper source word", ENCODER_COLOUR, width=3.6, height=1.0)
    for y0, y1 in ((0.95, 1.6), (2.4, 3.4), (5.8, 7.1)):
        _arrow(ax, (2.4, y0), (2.4, y1))

    # The decoder: once per generated token, on the whole prefix.
    ax.text(7.4, -0.55, "decoder: runs once per token", ha="center", fontsize=10, color="#a0522d",
            fontweight="bold")
    _box(ax, 7.4, 0.6, "so far: " + " ".join(prefix_words), "white", width=3.8)
    _box(ax, 7.4, 2.0, "embed · √d_model + positions", DECODER_COLOUR, width=3.8)
    _box(ax, 7.4, 3.4, "masked self-attention + add & norm", DECODER_COLOUR, width=3.8, height=0.7)
    _box(ax, 7.4, 4.5, "cross-attention + add & norm", DECODER_COLOUR, width=3.8, height=0.7)
    _box(ax, 7.4, 5.6, "feed-forward + add & norm", DECODER_COLOUR, width=3.8, height=0.7)
    ax.plot([9.45, 9.55, 9.55, 9.45], [3.1, 3.1, 5.9, 5.9], color="#555555", lw=1.0)  # a bracket
    ax.text(9.65, 4.5, "× N", fontsize=10, va="center")
    _box(ax, 7.4, 7.0, "last position's vector", DECODER_COLOUR, width=3.8, height=0.7)
    _box(ax, 7.4, 8.5, "generator: linear + softmax", GENERATOR_COLOUR, width=3.8, height=0.8)
    for y0, y1 in ((0.95, 1.6), (2.4, 3.05), (3.75, 4.15), (4.85, 5.25), (5.95, 6.65), (7.35, 8.1)):
        _arrow(ax, (7.4, y0), (7.4, y1))
    # The memory feeds every decoder layer's cross-attention: keys and values.
    _arrow(ax, (4.2, 7.6), (5.5, 4.5), colour="#2a5d8f", connection="arc3,rad=-0.25", linewidth=1.6)
    ax.text(5.05, 6.85, "keys and\nvalues", color="#2a5d8f", fontsize=9, ha="left", va="center")
    _arrow(ax, (7.4, 8.9), (7.4, 10.4), linewidth=1.6)  # up into the probabilities

    words, values = _top(probs, vocab, top)
    _bars(bars, words, values, f"next token after “{' '.join(prefix_words)}”")
    bars.set_xlabel("probability")
    return fig


def plot_greedy_steps(steps: Sequence[tuple[Sequence[str], torch.Tensor]], vocab: Sequence[str],
                      top: int = 4) -> Figure:
    """One small bar chart per decoding step: the prefix, and its most likely continuations.

    Args:
        steps: ``(prefix words, probabilities (vocab,))`` for each step, in order.
        vocab: the target vocabulary, by id.
        top: how many tokens each chart shows.
    """
    columns = min(len(steps), 2)  # two charts to a row: each keeps room for its words
    rows = -(-len(steps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(COLUMN_WIDTH if columns > 1 else 3.6, 2.4 * rows),
                             layout="constrained", sharex=True, squeeze=False)
    for ax in axes.flat[len(steps):]:
        ax.remove()  # the empty place of an odd number of steps
    for ax, (prefix, probs) in zip(axes.flat, steps):
        words, values = _top(probs, vocab, top)
        _bars(ax, words, values, " ".join(prefix) + " →")
    return fig


def how_are_you_model() -> tuple[TableModel, list[str]]:
    """The checks' table model and its words: source ``[[1]]`` asks "how are you?" (the table
    :data:`HOW_ARE_YOU`, on which greedy decoding and beam search disagree)."""
    return example_table_model(), list(WORDS)


def plot_beam_tree(model: TableModel, words: Sequence[str], table: int = 1, width: int = 2,
                   min_probability: float = 0.05, ax: Axes | None = None) -> Axes:
    """The tree of hypotheses of a table model, with the picks of greedy decoding and beam search.

    Every prefix whose next token has probability >= ``min_probability`` is a branch; a leaf is
    a hypothesis that ended, labelled with its probability. Greedy decoding's answer is drawn
    in orange, beam search's (width ``width``, no length normalisation) in blue, and the
    answers with and without length normalisation (alpha = 1 and 0) are named at their leaves.
    All of them are computed by the reference functions.
    """
    src = torch.tensor([[table]])
    greedy = greedy_decode(model, src, max_len=8, start_id=START, end_id=END)[0].tolist()
    beam_plain = beam_search(model, src, max_len=8, start_id=START, end_id=END, width=width, alpha=0.0)[0][0]
    beam_normed = beam_search(model, src, max_len=8, start_id=START, end_id=END, width=width, alpha=1.0)[0][0]
    beam_plain, beam_normed = (_strip(s.tolist()) for s in (beam_plain, beam_normed))
    greedy = _strip(greedy)

    # Collect the tree: (prefix, probability) for every node, children in order.
    nodes: list[tuple[tuple[int, ...], float]] = []

    def grow(prefix: tuple[int, ...], p: float) -> None:
        nodes.append((prefix, p))
        if prefix[-1] == END or len(prefix) > 6:
            return
        probs = model.next_token_probabilities(table, prefix)
        for token in probs.argsort(descending=True).tolist():
            if probs[token] >= min_probability:
                grow((*prefix, token), p * float(probs[token]))

    grow((START,), 1.0)
    leaves = [n for n in nodes if n[0][-1] == END]
    y_of: dict[tuple[int, ...], float] = {leaf[0]: -i for i, leaf in enumerate(leaves)}
    for prefix, _ in sorted(nodes, key=lambda n: -len(n[0])):  # parents sit between their children
        if prefix not in y_of:
            children = [y_of[c] for c, _ in nodes if len(c) == len(prefix) + 1 and c[:-1] == prefix]
            y_of[prefix] = float(np.mean(children))

    if ax is None:
        _, ax = plt.subplots(figsize=(COLUMN_WIDTH, 0.62 * len(leaves) + 1.3), layout="constrained")
    greedy_path = {tuple(greedy[: i + 1]) for i in range(len(greedy))}
    beam_path = {tuple(beam_plain[: i + 1]) for i in range(len(beam_plain))}

    def colour(prefix: tuple[int, ...]) -> str | None:
        return CHOSEN_COLOUR if prefix in greedy_path else BEAM_COLOUR if prefix in beam_path else None

    for prefix, p in nodes:
        x, y = len(prefix) - 1, y_of[prefix]
        if len(prefix) > 1:
            parent = prefix[:-1]
            ax.plot([x - 1, x], [y_of[parent], y], color=colour(prefix) or "#b0b0b0",
                    lw=2.4 if colour(prefix) else 1.2, zorder=1)
            step = p / next(q for c, q in nodes if c == parent)
            ax.text(x - 0.45, (y_of[parent] + y) / 2 + 0.15, f"{step:.2f}", ha="center", fontsize=8, color="#555555")
        ax.text(x, y, words[prefix[-1]], ha="center", va="center", fontsize=9.5, zorder=2,
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=colour(prefix) or "#888888"))
        if prefix[-1] == END:
            n = len(prefix) - 1
            notes = []
            if list(prefix) == greedy:
                notes.append("greedy")
            if list(prefix) == beam_plain:
                notes.append(f"beam (width {width}, α = 0)")
            if list(prefix) == beam_normed:
                notes.append(f"beam (width {width}, α = 1)")
            score = math.log(p) / length_penalty(n, 1.0)
            ax.text(4.75, y, f"p = {p:.3f}, log p / lp = {score:.3f}" + ("\n" + ", ".join(notes) if notes else ""),
                    va="center", fontsize=8.5, fontweight="bold" if notes else "normal")
    ax.set_xlim(-0.5, 8.4)
    ax.set_ylim(-len(leaves) + 0.5, 0.8)
    ax.axis("off")
    ax.set_title("Hypotheses for “how are you?” (step probabilities on the edges)\n"
                 "lp = ((5 + n) / 6)^α with α = 1, n = tokens after <start>", fontsize=10)
    return ax


def _strip(ids: list[int]) -> list[int]:
    """A decoded row without its padding."""
    return [i for i in ids if i != 0]


# --------------------------------------------------------------------------------------------
# Cross-attention
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def cross_attention_weights(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The cross-attention weights of every decoder layer in a teacher-forced pass.

    Args:
        model: a reference :class:`~transformer_course.model.EncoderDecoder`.
        src: ``(batch, S)`` source ids; ``tgt``: ``(batch, T)`` decoder input ids.

    Returns:
        ``(n_layers, batch, heads, T, S)``: row t of a head is how the decoder position that
        predicts target token t + 1 spreads its attention over the source words.
    """
    recorded = []
    hooks = [layer.cross_attn.register_forward_hook(lambda module, args, output: recorded.append(output[1]))
             for layer in model.decoder.layers]
    was_training = model.training
    try:
        model.eval()
        model(src, tgt)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return torch.stack(recorded)


def plot_cross_attention(weights: torch.Tensor, src_words: Sequence[str], predicted_words: Sequence[str],
                         axes: Sequence[Axes] | None = None) -> Figure:
    """One heatmap per head, and their average: rows are the generated words, columns the source.

    Args:
        weights: ``(heads, T, S)`` for one sentence (e.g. ``cross_attention_weights(...)[-1, 0]``).
        src_words: the ``S`` source words.
        predicted_words: the ``T`` words the rows predict (the decoder's input shifted by one).
    """
    w = weights.detach().cpu().double()
    heads = w.shape[0]
    panels = [(w[h], f"head {h}") for h in range(heads)] + [(w.mean(0), "average of the heads")]
    columns = min(len(panels), 2)  # two heatmaps to a row: their numbers stay readable
    if axes is None:
        rows = -(-len(panels) // columns)
        fig, grid = plt.subplots(rows, columns, figsize=(COLUMN_WIDTH, 2.9 * rows), layout="constrained",
                                 squeeze=False)
        for ax in grid.flat[len(panels):]:
            ax.remove()  # the empty place of an odd number of panels
        axes = list(grid.flat)
    fig = axes[0].figure
    rows = [f"→ {word}" for word in predicted_words]
    for i, (ax, (matrix, title)) in enumerate(zip(axes, panels)):
        plot_attention(matrix, rows, list(src_words), ax=ax, title=title, colorbar=i == len(panels) - 1)
        ax.set_xlabel("source word (key)")
        ax.set_ylabel("step that produced" if i % columns == 0 else "")
    return fig
