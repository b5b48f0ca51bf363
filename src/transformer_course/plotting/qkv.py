"""Figures about queries, keys and values (chapter 3): projections, scores, lookups, context.

As in :mod:`transformer_course.plotting.attention`, two kinds of function live here:

* **experiments** (``lookup_sweep``) run the reference functions of
  :mod:`transformer_course.projections` (or functions you pass in, such as your own from the
  exercise notebook) and return plain numbers;
* **plots** (``plot_*``) draw numbers or matrices and return the matplotlib ``Axes`` or
  ``Figure`` they drew on. ``format_matrix`` is the text version: a labelled table to print.

Scores can be any real number, so score heatmaps use a diverging colour map centred on 0 (red
for positive, blue for negative); weights, which lie in [0, 1], keep chapter 4's viridis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transformer_course.plotting._common import COLUMN_WIDTH, annotate_cells, to_numpy
from transformer_course.projections import hard_lookup, soft_lookup

SCORE_CMAP = "RdBu_r"  # diverging: 0 is white, positive red, negative blue
HARD_COLOUR = "black"
CONTEXT_COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:purple")  # one per sentence
INPUT_COLOUR = "0.6"  # grey: the word before attention

Lookup = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _check_labels(matrix: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str]) -> None:
    if matrix.ndim != 2:
        raise ValueError(f"expected a (rows, columns) matrix, got shape {matrix.shape}; select one first")
    if len(row_labels) != matrix.shape[0] or len(column_labels) != matrix.shape[1]:
        raise ValueError(
            f"the matrix is {matrix.shape[0]} x {matrix.shape[1]} but got {len(row_labels)} row "
            f"labels and {len(column_labels)} column labels"
        )


# --------------------------------------------------------------------------------------------
# Tables and heatmaps of token matrices
# --------------------------------------------------------------------------------------------


def format_matrix(
    matrix: torch.Tensor | np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    digits: int = 2,
) -> str:
    """A matrix as a text table with named rows and columns, ready to print.

    Args:
        matrix: ``(rows, columns)``.
        row_labels: one label per row (usually the tokens).
        column_labels: one label per column (feature names, or the tokens for scores).
        digits: decimals shown.

    Returns:
        The table as one string, columns aligned.
    """
    m = to_numpy(matrix)
    _check_labels(m, row_labels, column_labels)
    cells = [[f"{value:.{digits}f}" for value in row] for row in m]
    width = max(len(c) for c in [*column_labels, *(c for row in cells for c in row)])
    first = max(len(r) for r in row_labels)
    lines = [" " * first + "  " + " ".join(f"{c:>{width}}" for c in column_labels)]
    for label, row in zip(row_labels, cells):
        lines.append(f"{label:<{first}}  " + " ".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)


def _heatmap(ax: Axes, m: np.ndarray, vmax: float, annotate: bool, digits: int = 1, zeros: bool = True):
    """Draw ``m`` with the diverging score colours, symmetric around 0, on ``ax``.

    ``zeros=False`` leaves exact zeros unwritten, so that sparse matrices read at a glance.
    """
    image = ax.imshow(m, cmap=SCORE_CMAP, vmin=-vmax, vmax=vmax)
    if annotate:
        # light text on the saturated ends of the colour map, dark text in the middle
        annotate_cells(ax, m, f"{{:.{digits}f}}", light_text=lambda value: abs(value) > 0.6 * vmax,
                       skip_zeros=not zeros)
    return image


def plot_scores(
    scores: torch.Tensor | np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = True,
    colorbar: bool = True,
    vmax: float | None = None,
) -> Axes:
    """Draw a score matrix ``Q Kᵀ`` as a heatmap: rows are queries, columns are keys.

    Args:
        scores: ``(L, S)``, e.g. ``score_matrix(q, k)[0]`` for the first sentence of a batch.
        query_labels: ``L`` labels for the rows (the words that ask).
        key_labels: ``S`` labels for the columns (the words that are looked at).
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        annotate: write each score in its cell (sensible up to about 12 x 12).
        colorbar: add a colour bar.
        vmax: the score drawn at full colour (and ``-vmax``); by default the largest
            ``|score|``, so 0 is always white. Pass the same value to compare two heatmaps.

    Returns:
        The Axes drawn on.
    """
    s = to_numpy(scores)
    _check_labels(s, query_labels, key_labels)
    n_queries, n_keys = s.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.75 * n_keys, 0.6 + 0.65 * n_queries), layout="constrained")
    if vmax is None:
        vmax = float(np.abs(s).max()) or 1.0  # an all-zero matrix still gets a scale
    image = _heatmap(ax, s, vmax, annotate)
    ax.set_xticks(range(n_keys), key_labels)
    ax.set_yticks(range(n_queries), query_labels)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_xlabel("key (looked at)")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("query (looking)")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=r"score $q_i \cdot k_j$", shrink=0.8)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_token_matrices(
    panels: Sequence[tuple[str, torch.Tensor | np.ndarray, Sequence[str]]],
    tokens: Sequence[str],
    annotate: bool = True,
    per_row: int = 2,
) -> Figure:
    """Several matrices with one row per token, e.g. X, Q, K and V, in rows of ``per_row``.

    Each panel has its own colour scale, symmetric around 0 (white), so a zero reads as
    "nothing here" in every panel. The first panel of each row names the tokens.

    Args:
        panels: ``(title, matrix (seq, columns), column labels)`` for each panel.
        tokens: ``seq`` row labels, shared by all panels.
        annotate: write each non-zero entry in its cell (zeros stay blank).
        per_row: panels side by side (two keep four panels of six columns readable in the
            book's column).

    Returns:
        The Figure drawn on.
    """
    matrices = [to_numpy(m) for _, m, _ in panels]
    for m, (_, _, columns) in zip(matrices, panels):
        _check_labels(m, tokens, columns)
    rows = [list(range(start, min(start + per_row, len(panels))))
            for start in range(0, len(panels), per_row)]
    widest = max(sum(matrices[i].shape[1] for i in row) for row in rows)
    cell = min(0.5, (COLUMN_WIDTH - 1.2 - 0.5 * per_row) / widest)  # inches per matrix cell
    row_height = 1.3 + cell * len(tokens)  # the cells, the title and the slanted column labels
    fig = plt.figure(figsize=(1.2 + cell * widest + 0.5 * per_row, row_height * len(rows)),
                     layout="constrained")
    for subfig, row in zip(np.atleast_1d(fig.subfigures(len(rows), 1)), rows):
        axes = subfig.subplots(1, len(row), squeeze=False,
                               width_ratios=[matrices[i].shape[1] for i in row])[0]
        for position, (ax, i) in enumerate(zip(axes, row)):
            title, m, columns = panels[i][0], matrices[i], panels[i][2]
            _heatmap(ax, m, float(np.abs(m).max()) or 1.0, annotate, digits=1, zeros=False)
            ax.set_xticks(range(m.shape[1]), columns, rotation=60, ha="left", rotation_mode="anchor")
            ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
            ax.set_yticks(range(len(tokens)), tokens if position == 0 else [""] * len(tokens))
            ax.set_title(title, pad=8)
    return fig


# --------------------------------------------------------------------------------------------
# Hard and soft lookups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LookupSweep:
    """What :func:`lookup_sweep` measured, for ``n`` query angles and ``len(strengths)`` lengths."""

    angles: np.ndarray  # (n,) the query's direction, in degrees
    key_angles: np.ndarray  # (S,) the keys' directions, in degrees
    values: np.ndarray  # (S,) each key's value (a number: d_v = 1)
    strengths: np.ndarray  # (m,) lengths of the query vector
    hard_output: np.ndarray  # (n,) the hard lookup's output (independent of the length)
    soft_output: np.ndarray  # (m, n) the soft lookup's output, per length
    soft_weights: np.ndarray  # (m, n, S) the soft lookup's weights, per length
    hard_weights: np.ndarray  # (n, S) one-hot


def lookup_sweep(
    strengths: Sequence[float] = (1.0, 3.0, 10.0),
    n_angles: int = 361,
    hard_fn: Lookup = hard_lookup,
    soft_fn: Lookup = soft_lookup,
) -> LookupSweep:
    """Turn a query slowly from one key to another and record what each lookup returns.

    Three keys are unit vectors at 0°, 90° and 180°, holding the values 0, 1 and 2. The query
    points at angle θ, from 0° to 180°, with a given length (its *strength*: longer queries
    give scores further apart). The hard lookup jumps from 0 to 1 to 2 where the best key
    changes; the soft lookup slides smoothly, and more steeply for longer queries.

    Args:
        strengths: lengths of the query to try.
        n_angles: how many angles between 0° and 180°.
        hard_fn, soft_fn: the lookups, ``fn(q, k, v) -> (output, weights)``; the reference's
            by default (pass your own to compare).

    Returns:
        A :class:`LookupSweep`.
    """
    key_angles = torch.tensor([0.0, 90.0, 180.0], dtype=torch.float64)
    values = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    angles = torch.linspace(0.0, 180.0, n_angles, dtype=torch.float64)

    def unit(degrees: torch.Tensor) -> torch.Tensor:
        radians = torch.deg2rad(degrees)
        return torch.stack([torch.cos(radians), torch.sin(radians)], dim=-1)

    k = unit(key_angles)  # (S, 2): the same keys for every query
    v = values[:, None]  # (S, 1)
    q = unit(angles)[:, None, :]  # (n, 1, 2): each angle is its own batch of one query
    hard_out, hard_w = hard_fn(q, k, v)  # (n, 1, 1), (n, 1, S)
    soft_out, soft_w = [], []
    for strength in strengths:
        out, w = soft_fn(strength * q, k, v)
        soft_out.append(to_numpy(out)[:, 0, 0])
        soft_w.append(to_numpy(w)[:, 0, :])
    return LookupSweep(
        angles=to_numpy(angles),
        key_angles=to_numpy(key_angles),
        values=to_numpy(values),
        strengths=np.asarray(strengths, dtype=np.float64),
        hard_output=to_numpy(hard_out)[:, 0, 0],
        soft_output=np.stack(soft_out),
        soft_weights=np.stack(soft_w),
        hard_weights=to_numpy(hard_w)[:, 0, :],
    )


def plot_lookup_sweep(result: LookupSweep, weights_strength: int = 1) -> Figure:
    """Two panels: the output of both lookups against the query's angle, and the soft weights.

    Args:
        result: what :func:`lookup_sweep` returned.
        weights_strength: which of ``result.strengths`` (an index) to show the weights for.

    Returns:
        The Figure drawn on.
    """
    # one above the other: the two panels share their x axis, and each keeps the column's width
    fig, (ax_out, ax_w) = plt.subplots(2, 1, figsize=(6.6, 7.6), layout="constrained")
    a = result.angles
    ax_out.plot(a, result.hard_output, color=HARD_COLOUR, linewidth=2.5, label="hard lookup")
    greens = plt.get_cmap("Greens")
    for i, strength in enumerate(result.strengths):
        shade = greens(0.4 + 0.5 * i / max(1, len(result.strengths) - 1))
        ax_out.plot(a, result.soft_output[i], color=shade, linewidth=2,
                    label=f"soft lookup, |q| = {strength:g}")
    for angle, value in zip(result.key_angles, result.values):
        ax_out.plot([angle], [value], "o", color="tab:red", markersize=8, zorder=5)
        ax_out.annotate(f"key at {angle:.0f}°\nvalue {value:g}", (angle, value), textcoords="offset points",
                        xytext=(0, 10) if value < 2 else (-10, -30), ha="center" if value < 2 else "right",
                        fontsize=8, color="tab:red")
    ax_out.set_xlabel("direction of the query (degrees)")
    ax_out.set_ylabel("output (the value handed over)")
    ax_out.set_title("What comes back as the query turns")
    ax_out.set_xticks(np.arange(0, 181, 45))
    ax_out.set_ylim(-0.35, 2.45)
    ax_out.grid(True, alpha=0.3)
    ax_out.legend(loc="lower right", fontsize=8)

    strength = result.strengths[weights_strength]
    key_colours = ("tab:purple", "tab:orange", "tab:cyan")
    for j, angle in enumerate(result.key_angles):
        ax_w.plot(a, result.soft_weights[weights_strength, :, j], color=key_colours[j], linewidth=2,
                  label=f"soft weight of the key at {angle:.0f}°")
        ax_w.plot(a, result.hard_weights[:, j], color=key_colours[j], linewidth=1, linestyle="--")
    ax_w.plot([], [], color="grey", linestyle="--", linewidth=1, label="hard weights (one-hot)")
    ax_w.set_xlabel("direction of the query (degrees)")
    ax_w.set_ylabel("weight")
    ax_w.set_title(f"The weights behind it (|q| = {strength:g})")
    ax_w.set_xticks(np.arange(0, 181, 45))
    ax_w.set_ylim(-0.05, 1.05)
    ax_w.grid(True, alpha=0.3)
    ax_w.legend(loc="center right", fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# One word, several contexts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordInContext:
    """A word's attention in one sentence: its weights over the sentence and its output."""

    label: str  # e.g. the sentence itself
    tokens: Sequence[str]  # (S,) the sentence
    weights: torch.Tensor | np.ndarray  # (S,) the word's row of attention weights
    output: torch.Tensor | np.ndarray  # (d_v,) the word's output vector


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two vectors ``(d,)``: 1 = same direction, 0 = unrelated."""
    a, b = to_numpy(a), to_numpy(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def plot_word_in_contexts(
    word: str,
    features: Sequence[str],
    embedding: torch.Tensor | np.ndarray,
    contexts: Sequence[WordInContext],
) -> Figure:
    """Where a word looks in each sentence, and what it comes out as, feature by feature.

    Top row: the word's attention weights over each sentence (the word itself hatched).
    Bottom: its embedding (grey, the same in every sentence) next to its output in each
    sentence, one group of bars per named feature.

    Args:
        word: the word followed, e.g. ``"bank"``.
        features: ``d`` names of the dimensions of the embedding and of the outputs (so the
            values must hand over vectors in the embedding's own dimensions).
        embedding: ``(d,)`` the word's vector before attention.
        contexts: one :class:`WordInContext` per sentence (up to four).

    Returns:
        The Figure drawn on.
    """
    if not 1 <= len(contexts) <= len(CONTEXT_COLOURS):
        raise ValueError(f"between 1 and {len(CONTEXT_COLOURS)} contexts, got {len(contexts)}")
    x = to_numpy(embedding)
    if x.shape != (len(features),):
        raise ValueError(f"embedding has shape {x.shape}, expected ({len(features)},): one value per feature")
    mosaic = [[f"w{i}" for i in range(len(contexts))], ["features"] * len(contexts)]
    fig, axes = plt.subplot_mosaic(mosaic, figsize=(COLUMN_WIDTH, 7.6), layout="constrained",
                                   height_ratios=[1, 1.25])
    for i, (context, colour) in enumerate(zip(contexts, CONTEXT_COLOURS)):
        ax = axes[f"w{i}"]
        w = to_numpy(context.weights)
        bars = ax.bar(range(len(context.tokens)), w, color=colour)
        for token, bar in zip(context.tokens, bars):
            if token == word:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
        for j, value in enumerate(w):
            ax.text(j, value + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(context.tokens)), context.tokens, rotation=35, ha="right",
                      rotation_mode="anchor")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f'weight from "{word}"')
        ax.set_title(f'"{context.label}"', fontsize=10)

    ax = axes["features"]
    n = len(contexts) + 1
    width = 0.8 / n
    positions = np.arange(len(features))
    ax.bar(positions - 0.4 + width / 2, x, width, color=INPUT_COLOUR, label=f'"{word}" before attention (both)')
    for i, (context, colour) in enumerate(zip(contexts, CONTEXT_COLOURS), start=1):
        out = to_numpy(context.output)
        if out.shape != x.shape:
            raise ValueError(f"output {i} has shape {out.shape}, expected {x.shape}")
        ax.bar(positions - 0.4 + width * (i + 0.5), out, width, color=colour,
               label=f'"{word}" after attention in "{context.label}"')
    ax.set_xticks(positions, features)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("value of the feature")
    ax.legend(fontsize=8, loc="upper right")
    if len(contexts) == 2:
        similarity = cosine(contexts[0].output, contexts[1].output)
        ax.set_title(f'"{word}" in two sentences: the same vector goes in (cosine similarity 1.00),\n'
                     f"different ones come out (cosine similarity {similarity:.2f})", fontsize=10)
    return fig
