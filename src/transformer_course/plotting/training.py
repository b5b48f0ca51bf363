"""Figures and small analyses for training the encoder-decoder (chapter 8).

* **the data**: :func:`plot_teacher_forcing` draws one target split into the decoder's input and
  its labels; :func:`plot_batch` a padded batch of the number task and its masks;
* **the recipe**: :func:`plot_schedule` the warm-up-then-inverse-square-root learning rate;
* **the run**: :func:`plot_training` the losses, the learning rate and the validation accuracies
  of a :class:`~transformer_course.training.History`; :func:`plot_ablation` two runs' validation
  accuracies side by side;
* **the trained model**: :func:`decode_numbers` greedy or beam-search answers for a list of
  numbers, :func:`compare_decoders` greedy decoding against beam search on a test set,
  :func:`alignment` and :func:`plot_alignment` the last decoder layer's cross-attention, averaged
  over its heads, :func:`answer_probability` how likely the model finds an answer,
  :func:`accuracy_by_digits` exact match per length of number;
* **the ablation**: :func:`bag_of_words` and :func:`share_with_a_twin`, what a model without
  positions can know of a source.

Everything is computed by the reference (:mod:`transformer_course.training`,
:mod:`transformer_course.decoding`); see :mod:`transformer_course.plotting` for the conventions all
figure helpers follow.
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
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from torch import nn

from transformer_course.decoding import beam_search, greedy_decode
from transformer_course.number_task import END, MAX_NUMBER, PAD, START, NumberTask, number_to_words
from transformer_course.training import History, learning_rate, make_batch

from ._common import COLUMN_WIDTH
from .attention import plot_attention
from .encoder_decoder import cross_attention_weights
from .masks import plot_mask

__all__ = [
    "DecoderComparison", "accuracy_by_digits", "alignment", "answer_probability", "bag_of_words",
    "compare_decoders", "decode_numbers", "plot_ablation", "plot_alignment", "plot_batch", "plot_schedule",
    "plot_teacher_forcing", "plot_training", "share_with_a_twin",
]

# One colour per idea, the same in every figure of the chapter.
TRAIN_COLOUR = "tab:blue"
VALIDATION_COLOUR = "tab:orange"
LR_COLOUR = "tab:green"
EXACT_COLOUR = "tab:purple"
TOKEN_COLOUR = "tab:cyan"
ABLATION_COLOUR = "tab:red"
INPUT_COLOUR = "#fbe3cf"  # the decoder's input (chapter 7's decoder colour)
LABEL_COLOUR = "#e3f1dc"  # what it must predict (chapter 7's generator colour)
SOURCE_COLOUR = "#dbe8f5"  # the encoder's input (chapter 7's encoder colour)
PAD_COLOUR = "#eeeeee"


# --------------------------------------------------------------------------------------------
# Teacher forcing and batches
# --------------------------------------------------------------------------------------------


def _token_box(ax: Axes, x: float, y: float, text: str, colour: str, width: float = 0.8,
               height: float = 0.6, fontsize: float = 9.5) -> None:
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour,
                                edgecolor="#666666", linewidth=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def plot_teacher_forcing(target: Sequence[str], source: str | None = None, ax: Axes | None = None) -> Axes:
    """One target sequence, split by teacher forcing into the decoder's input and its labels.

    Top: the full target ``<start> y_1 ... y_n <end>``. Below it, position by position: the
    decoder's input (the target without its last token) and the label each position must
    predict (the target without its first): the label of position t is the input of t + 1.

    Args:
        target: the target tokens without the special ones, e.g. ``["2", "0", "0", "5"]``.
        source: the source text, written above the figure when given.
    """
    full = ["<start>", *target, "<end>"]
    inputs, labels = full[:-1], full[1:]
    n = len(inputs)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(COLUMN_WIDTH, 2.6 + 0.95 * n), 3.9), layout="constrained")
    ax.set_xlim(-2.3, n + 0.1)
    ax.set_ylim(-0.75, 4.2)
    ax.axis("off")
    # The full target, centred above the two rows it is split into.
    ax.text(-2.25, 3.6, "target", va="center", fontsize=9.5, fontweight="bold")
    for i, token in enumerate(full):
        _token_box(ax, i - 0.5, 3.6, token, "white", width=0.85)
    ax.text(-2.25, 2.3, "label\n(predict)", va="center", fontsize=9.5, fontweight="bold")
    ax.text(-2.25, 0.3, "decoder\ninput", va="center", fontsize=9.5, fontweight="bold")
    for t in range(n):
        _token_box(ax, t, 2.3, labels[t], LABEL_COLOUR)
        _token_box(ax, t, 0.3, inputs[t], INPUT_COLOUR)
        ax.annotate("", xy=(t, 1.95), xytext=(t, 0.65),
                    arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.1, shrinkA=0, shrinkB=0))
        if t + 1 < n:  # the shift: label t is input t + 1
            ax.annotate("", xy=(t + 1, 0.65), xytext=(t + 0.15, 1.95),
                        arrowprops=dict(arrowstyle="-|>", color="#b0b0b0", lw=0.9, ls="--",
                                        shrinkA=0, shrinkB=0))
    ax.text(-2.25, -0.5, "position", va="center", fontsize=8.5, color="#555555")
    for t in range(n):
        ax.text(t, -0.5, str(t), ha="center", va="center", fontsize=8.5, color="#555555")
    title = "Teacher forcing: every position predicts the next token, all in one pass"
    if source is not None:
        title = f"“{source}”\n" + title
    ax.set_title(title, fontsize=10)
    return ax


def _token_grid(ax: Axes, rows: Sequence[Sequence[str]], real: np.ndarray, colour: str, title: str,
                row_labels: Sequence[str], fontsize: float = 8.5) -> None:
    """A table of tokens, one row per sequence of the batch: real tokens in ``colour``, padding grey."""
    n_rows, n_cols = real.shape
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    for i in range(n_rows):
        for j in range(n_cols):
            ax.add_patch(plt.Rectangle((j - 0.48, i - 0.45), 0.96, 0.9, facecolor=colour if real[i, j] else PAD_COLOUR,
                                       edgecolor="white"))
            ax.text(j, i, rows[i][j], ha="center", va="center", fontsize=fontsize,
                    color="black" if real[i, j] else "#999999")
    ax.set_xticks(range(n_cols), [str(j) for j in range(n_cols)], fontsize=8)
    ax.set_yticks(range(n_rows), row_labels, fontsize=8.5)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=9.5, loc="left")


def plot_batch(task: NumberTask, numbers: Sequence[int], show_mask_of: int | None = None) -> Figure:
    """A batch of the number task as :func:`~transformer_course.training.make_batch` makes it.

    Top: the padded source words (padding grey: the source mask is False there). Middle: the
    decoder's input and its labels, padded likewise. Bottom: the decoder's mask of one sequence,
    the causal mask and the padding mask combined (True = may attend).

    Args:
        task: the number task (its vocabularies turn ids back into tokens).
        numbers: the batch, a few numbers of different lengths.
        show_mask_of: which sequence's decoder mask to draw (default: the shortest).
    """
    src, decoder_input, labels, src_mask, tgt_mask = make_batch(*task.pairs(numbers))
    src_words = {i: w for w, i in task.src_vocab.items()}
    tgt_words = {i: w for w, i in task.tgt_vocab.items()}
    src_text = [[src_words[int(i)] for i in row] for row in src]
    input_text = [[tgt_words[int(i)] for i in row] for row in decoder_input]
    label_text = [[tgt_words[int(i)] for i in row] for row in labels]
    if show_mask_of is None:
        show_mask_of = int(np.argmin([len(str(n)) for n in numbers]))
    names = [f"{n}" for n in numbers]

    S, T = src.shape[1], decoder_input.shape[1]
    fig = plt.figure(figsize=(COLUMN_WIDTH, 2.2 + 0.42 * len(numbers) * 2 + 0.36 * T), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[len(numbers), len(numbers), T * 0.85])
    _token_grid(fig.add_subplot(grid[0, :]), src_text, src_mask[:, 0, 0].numpy(), SOURCE_COLOUR,
                f"source: ({len(numbers)}, {S}), grey = padding (src_mask False)", names, fontsize=7.5)
    real_input = (decoder_input != PAD).numpy()
    real_label = (labels != PAD).numpy()
    _token_grid(fig.add_subplot(grid[1, 0]), input_text, real_input, INPUT_COLOUR,
                f"decoder input: ({len(numbers)}, {T})", names, fontsize=6.5)
    _token_grid(fig.add_subplot(grid[1, 1]), label_text, real_label, LABEL_COLOUR,
                f"labels: ({len(numbers)}, {T})", names, fontsize=6.5)
    ax = fig.add_subplot(grid[2, 0])
    tokens = input_text[show_mask_of]
    plot_mask(tgt_mask[show_mask_of, 0], tokens, tokens, ax=ax)
    ax.set_title(f"decoder mask of {numbers[show_mask_of]}", fontsize=9.5)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("")
    note = fig.add_subplot(grid[2, 1])
    note.axis("off")
    note.text(0.0, 0.5, "Blue: may attend.\n\nA row sees itself and the\npositions before it (causal),\n"
              "but no padding: the columns\nof <pad> stay pale.\n\nThe rows of padding still look\n"
              "at the real positions, but their\nlabels are <pad>: the loss\nignores what they compute.",
              va="center", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# The learning-rate schedule
# --------------------------------------------------------------------------------------------


def plot_schedule(d_model: int, warmup: int, steps: int, paper: tuple[int, int, int] | None = (512, 4000, 100_000),
                  axes: Sequence[Axes] | None = None) -> Figure:
    """The warm-up-then-inverse-square-root schedule of :func:`~transformer_course.training.learning_rate`.

    Left: ours (``d_model``, ``warmup``) over ``steps``; right (when ``paper`` is given as
    ``(d_model, warmup, steps)``): the paper's, for scale.
    """
    settings = [(d_model, warmup, steps, "this chapter")]
    if paper is not None:
        settings.append((*paper, "the paper (Vaswani et al. 2017)"))
    if axes is None:
        fig, axes = plt.subplots(1, len(settings), figsize=(COLUMN_WIDTH, 2.9), layout="constrained", squeeze=False)
        axes = list(axes[0])
    fig = axes[0].figure
    for ax, (d, w, n, title) in zip(axes, settings):
        s = torch.arange(1, n + 1)
        lr = learning_rate(s, d, w).numpy()
        ax.plot(s.numpy(), lr, color=LR_COLOUR)
        ax.axvline(w, color="#888888", lw=0.9, ls="--")
        peak = float(learning_rate(torch.tensor(w), d, w))
        ax.annotate(f"peak {peak:.2g}\nat step {w}", xy=(w, peak), xytext=(w + 0.12 * n, peak * 0.92),
                    fontsize=8.5, va="top", arrowprops=dict(arrowstyle="-", color="#888888", lw=0.8))
        ax.set_title(f"{title}\nd_model = {d}, warm-up {w}", fontsize=9.5)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        if n >= 10_000:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.set_xlabel("step")
        ax.set_ylim(0, peak * 1.12)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("learning rate")
    return fig


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of each ``window`` consecutive values (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(v, 0, 0.0))
    counts = np.minimum(np.arange(1, len(v) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(v) + 1) - counts]) / counts


def plot_training(history: History, floor: float | None = None, target: float | None = 0.97,
                  window: int = 20) -> Figure:
    """A training run: loss (top), learning rate and validation accuracies (bottom).

    Args:
        history: what :func:`~transformer_course.training.train` returned.
        floor: the lowest loss reachable with label smoothing
            (:func:`~transformer_course.training.smoothing_floor`), drawn as a dashed line.
        target: an exact-match level to mark on the accuracy panel (None: none).
        window: the training loss is drawn raw (pale) and as a moving average over ``window`` steps.
    """
    fig = plt.figure(figsize=(COLUMN_WIDTH, 6.2), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
    loss_ax = fig.add_subplot(grid[0, :])
    steps = np.arange(1, len(history.train_loss) + 1)
    loss_ax.plot(steps, history.train_loss, color=TRAIN_COLOUR, alpha=0.25, lw=0.8)
    loss_ax.plot(steps, _moving_average(history.train_loss, window), color=TRAIN_COLOUR,
                 label=f"training (mean of {window} steps)")
    loss_ax.plot(history.eval_steps, history.val_loss, "o-", color=VALIDATION_COLOUR, label="validation")
    if floor is not None:
        loss_ax.axhline(floor, color="#555555", ls="--", lw=1.0, label=f"smoothing floor {floor:.3f}")
    loss_ax.set_yscale("log")
    low, high = loss_ax.get_ylim()
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 1, 1.5, 2, 3, 5) if low <= t <= high]
    loss_ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    loss_ax.yaxis.set_minor_formatter(NullFormatter())
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("label-smoothed loss (log scale)")
    loss_ax.set_title("Loss", fontsize=10)
    loss_ax.legend(fontsize=8.5)

    lr_ax = fig.add_subplot(grid[1, 0])
    lr_ax.plot(steps, history.lr, color=LR_COLOUR)
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("Learning rate", fontsize=10)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    acc_ax = fig.add_subplot(grid[1, 1])
    acc_ax.plot(history.eval_steps, np.asarray(history.val_exact) * 100, "o-", color=EXACT_COLOUR,
                label="exact match")
    acc_ax.plot(history.eval_steps, np.asarray(history.val_token) * 100, "s--", color=TOKEN_COLOUR,
                label="token accuracy", markersize=4)
    if target is not None:
        acc_ax.axhline(target * 100, color="#888888", lw=0.9, ls=":")
        acc_ax.text(steps[-1], target * 100 - 2, f"{target:.0%}", ha="right", va="top", fontsize=8, color="#555555")
    acc_ax.set_ylim(0, 101)
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("validation accuracy (%)")
    acc_ax.set_title("Validation accuracy (greedy)", fontsize=10)
    acc_ax.legend(fontsize=8.5, loc="lower right")
    for ax in (loss_ax, lr_ax, acc_ax):
        ax.grid(alpha=0.3)
    return fig


def plot_ablation(runs: Sequence[tuple[str, History]], up_to: int | None = None, ax: Axes | None = None) -> Axes:
    """Validation exact match (solid) and token accuracy (dashed) of several runs against the step.

    Args:
        runs: ``(label, history)`` pairs; the first is drawn in the main run's colour, the
            others in the ablation's.
        up_to: draw only evaluations up to this step (to compare runs of different lengths).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(COLUMN_WIDTH * 0.8, 4.0), layout="constrained")
    colours = [EXACT_COLOUR, ABLATION_COLOUR, "tab:brown", "tab:gray"]
    for (label, history), colour in zip(runs, colours):
        keep = [i for i, s in enumerate(history.eval_steps) if up_to is None or s <= up_to]
        x = [history.eval_steps[i] for i in keep]
        ax.plot(x, [100 * history.val_exact[i] for i in keep], "o-", color=colour, label=f"{label}: exact match")
        ax.plot(x, [100 * history.val_token[i] for i in keep], "--", color=colour, alpha=0.7,
                label=f"{label}: token accuracy")
    ax.set_ylim(0, 101)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return ax


# --------------------------------------------------------------------------------------------
# The trained model
# --------------------------------------------------------------------------------------------


def _sources(task: NumberTask, numbers: Sequence[int]) -> torch.Tensor:
    """``(len(numbers), S)`` source ids, padded."""
    src, _, _, _, _ = make_batch(*task.pairs(numbers))
    return src


def decode_numbers(model: nn.Module, task: NumberTask, numbers: Sequence[int], beam: int = 0,
                   max_len: int = 9) -> list[str]:
    """The model's digits for each number's words: greedy (``beam=0``) or beam search of width ``beam``.

    ``max_len`` counts the start token: 9 leaves room for six digits, the end token and one more.
    """
    src = _sources(task, numbers).to(next(model.parameters()).device)
    if beam:
        out, _ = beam_search(model, src, max_len=max_len, start_id=START, end_id=END, width=beam)
    else:
        out = greedy_decode(model, src, max_len=max_len, start_id=START, end_id=END)
    return [task.decode_target(row.tolist()) for row in out.cpu()]


@dataclass
class DecoderComparison:
    """Greedy decoding against beam search on the same numbers."""

    greedy_exact: float  # fraction of numbers greedy decoding gets right
    beam_exact: float  # the same for beam search
    width: int
    disagreements: list[tuple[int, str, str]]  # (number, greedy's digits, beam's digits) where they differ


def compare_decoders(model: nn.Module, task: NumberTask, numbers: Sequence[int], width: int = 4,
                     batch_size: int = 500) -> DecoderComparison:
    """Decode ``numbers`` greedily and with beam search (width ``width``, the paper's α = 0.6) and score both."""
    greedy: list[str] = []
    beam: list[str] = []
    for i in range(0, len(numbers), batch_size):
        chunk = numbers[i:i + batch_size]
        greedy += decode_numbers(model, task, chunk)
        beam += decode_numbers(model, task, chunk, beam=width)
    truth = [str(n) for n in numbers]
    return DecoderComparison(
        greedy_exact=float(np.mean([g == t for g, t in zip(greedy, truth)])),
        beam_exact=float(np.mean([b == t for b, t in zip(beam, truth)])),
        width=width,
        disagreements=[(n, g, b) for n, g, b in zip(numbers, greedy, beam) if g != b],
    )


def alignment(model: nn.Module, task: NumberTask, number: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """The last decoder layer's cross-attention for one number, averaged over the heads.

    The decoder reads ``<start>`` and the model's own greedy digits (teacher-forced on its output).

    Returns:
        ``(weights, rows, columns)``: weights ``(T, S)``, row t for the position that wrote the
        t-th output token (the digits, then ``<end>``), columns the source words.
    """
    src = _sources(task, [number]).to(next(model.parameters()).device)  # (1, S)
    out = greedy_decode(model, src, max_len=9, start_id=START, end_id=END)  # (1, T + 1)
    out = out[:, : int((out[0] != PAD).sum())]  # without trailing padding
    weights = cross_attention_weights(model, src, out[:, :-1])  # (layers, 1, heads, T, S)
    tgt_words = {i: w for w, i in task.tgt_vocab.items()}
    rows = [tgt_words[int(i)] for i in out[0, 1:]]
    return weights[-1, 0].mean(0).cpu(), rows, task.source_words(number)


def plot_alignment(model: nn.Module, task: NumberTask, numbers: Sequence[int]) -> Figure:
    """:func:`alignment` of each number, one heatmap each (rows: digits written; columns: words read)."""
    panels = [alignment(model, task, n) for n in numbers]
    heights = [len(rows) for _, rows, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(COLUMN_WIDTH, 0.9 + sum(0.42 * h + 1.1 for h in heights)),
                             layout="constrained", squeeze=False, gridspec_kw={"height_ratios": heights})
    for i, (ax, number, (weights, rows, columns)) in enumerate(zip(axes[:, 0], numbers, panels)):
        plot_attention(weights, [f"→ {r}" for r in rows], columns, ax=ax, colorbar=i == 0)
        for text in ax.texts:
            text.set_fontsize(7)
        ax.tick_params(labelsize=8.5)
        plt.setp(ax.get_xticklabels(), rotation=40, ha="left", rotation_mode="anchor")
        ax.set_xlabel("")
        ax.set_ylabel("output token")
        ax.set_title(f"{number}", fontsize=10, loc="left")
    return fig


@torch.no_grad()
def answer_probability(model: nn.Module, task: NumberTask, numbers: Sequence[int],
                       answers: Sequence[str]) -> torch.Tensor:
    """The probability the model gives each answer (digits, then ``<end>``) for each number's words.

    Teacher-forced: the product over the answer's tokens of p(token | words, the tokens before it).

    Returns:
        ``(len(numbers),)`` float64.
    """
    was_training = model.training
    model.eval()
    try:
        sources = [task.encode_source(n) for n in numbers]
        targets = [[task.tgt_vocab[d] for d in answer] for answer in answers]
        src, decoder_input, labels, _, _ = make_batch(sources, targets)
        device = next(model.parameters()).device
        log_probs = model(src.to(device), decoder_input.to(device)).double().cpu()  # (batch, T, vocab)
        per_token = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (batch, T)
        return per_token.masked_fill(labels == PAD, 0.0).sum(-1).exp()
    finally:
        model.train(was_training)


def accuracy_by_digits(model: nn.Module, task: NumberTask, per_length: int = 300, seed: int = 0,
                       ) -> list[tuple[int, float, int, float]]:
    """Greedy exact match on numbers of each length (1 to 6 digits) that are not training numbers.

    Returns:
        One ``(digits, share of the training numbers with that many digits, how many numbers
        were scored, exact match)`` per length. Up to ``per_length`` numbers per length, drawn
        with ``seed`` (all of them where there are fewer; exact match is NaN where every number of
        that length is a training number).
    """
    import random

    from transformer_course.training import evaluate

    rng = random.Random(seed)
    seen = set(task.train)
    rows = []
    for digits in range(1, 7):
        low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits
        pool = [n for n in range(low, high) if n not in seen] if high - low <= 10 * per_length else None
        if pool is None:
            picked: set[int] = set()
            while len(picked) < per_length:
                n = rng.randrange(low, high)
                if n not in seen:
                    picked.add(n)
            numbers = sorted(picked)
        else:
            numbers = sorted(rng.sample(pool, min(per_length, len(pool))))
        share = sum(low <= n < high for n in task.train) / len(task.train)
        exact = evaluate(model, task, numbers)["exact"] if numbers else math.nan  # (all in training)
        rows.append((digits, share, len(numbers), exact))
    return rows


def bag_of_words(n: int) -> tuple[str, ...]:
    """The source tokens of ``n``, sorted: what a model that ignores order can know of them."""
    return tuple(sorted(number_to_words(n).replace("-", " - ").split()))  # word_tokenize's tokens, faster


def share_with_a_twin(numbers: Sequence[int]) -> float:
    """The fraction of ``numbers`` whose bag of words (:func:`bag_of_words`) is also that of another
    number below one million: the numbers a model without positions cannot tell from another."""
    from collections import Counter

    counts = Counter(bag_of_words(n) for n in range(MAX_NUMBER))
    return sum(counts[bag_of_words(n)] > 1 for n in numbers) / len(numbers)
