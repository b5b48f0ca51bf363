"""Figures about positions (chapter 2): the sinusoidal table, its waves, dot products by distance,
and attention before and after a shuffle.

As in :mod:`transformer_course.plotting.attention`, the numbers come from the reference
implementation (:mod:`transformer_course.positional`, :mod:`transformer_course.attention`) and
every ``plot_*`` function returns the ``Axes`` or ``Figure`` it drew on, without showing it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transformer_course.attention import scaled_dot_product_attention
from transformer_course.plotting._common import COLUMN_WIDTH, to_numpy
from transformer_course.plotting.attention import plot_attention
from transformer_course.positional import add_positions, permute_positions, position_similarity

# Diverging colours for tables whose entries lie around 0 (blue negative, red positive).
TABLE_CMAP = "RdBu_r"


# --------------------------------------------------------------------------------------------
# The table itself
# --------------------------------------------------------------------------------------------


def plot_position_table(
    table: torch.Tensor | np.ndarray,
    ax: Axes | None = None,
    title: str | None = None,
    colorbar: bool = True,
    limit: float | None = None,
) -> Axes:
    """Draw a position table as a heatmap: one row per position, one column per dimension.

    Args:
        table: ``(seq_len, d_model)``, e.g. ``sinusoidal_encoding(100, 64)`` or a learned
            table's ``embedding.weight``.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        colorbar: add a colour bar.
        limit: the colour scale runs from ``-limit`` to ``limit``; by default the largest
            absolute entry (1 for the sinusoidal table).

    Returns:
        The Axes drawn on.
    """
    t = to_numpy(table)
    if t.ndim != 2:
        raise ValueError(f"table must be (seq_len, d_model), got shape {t.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    limit = float(np.abs(t).max()) if limit is None else limit
    image = ax.imshow(t, cmap=TABLE_CMAP, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension (column)")
    ax.set_ylabel("position (row)")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="value", shrink=0.9)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_position_waves(
    table: torch.Tensor | np.ndarray,
    columns: Sequence[int],
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Plot chosen columns of a table against the position: each is one wave.

    For the sinusoidal table column ``2i`` is ``sin(pos · ω_i)`` and column ``2i + 1`` is
    ``cos(pos · ω_i)``, with ``ω_i = 1 / 10000^(2i/d_model)``; the legend gives each column's
    wavelength ``2π / ω_i`` in positions.

    Args:
        table: ``(seq_len, d_model)``, a sinusoidal table.
        columns: the columns to draw.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.

    Returns:
        The Axes drawn on.
    """
    t = to_numpy(table)
    seq_len, d_model = t.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(COLUMN_WIDTH, 4.4), layout="constrained")
    positions = np.arange(seq_len)
    for column in columns:
        two_i = column - column % 2
        wavelength = 2 * math.pi * 10000 ** (two_i / d_model)
        wave = "sin" if column % 2 == 0 else "cos"
        # The table exists only at whole positions: dots, joined by thin lines to guide the eye.
        ax.plot(positions, t[:, column], "o-", markersize=2.5, linewidth=0.8,
                label=f"column {column} ({wave}, wavelength {wavelength:,.1f})")
    ax.set_xlabel("position")
    ax.set_ylabel("value")
    ax.set_ylim(-1.15, 1.15)
    ax.grid(True, alpha=0.3)
    # below the plot, in two columns: the waves keep the whole width of the figure
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize=9, frameon=False)
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------
# Dot products between positions
# --------------------------------------------------------------------------------------------


def plot_position_gram(
    table: torch.Tensor | np.ndarray,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Heatmap of ``table @ table.T``: entry ``[i, j]`` is the dot product of positions i and j.

    Args:
        table: ``(seq_len, d_model)``.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.

    Returns:
        The Axes drawn on.
    """
    t = torch.as_tensor(to_numpy(table))
    gram = (t @ t.T).numpy()  # (seq_len, seq_len)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    limit = float(np.abs(gram).max())
    image = ax.imshow(gram, cmap=TABLE_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_xlabel("position j")
    ax.set_ylabel("position i")
    ax.figure.colorbar(image, ax=ax, label="P(i) · P(j)", shrink=0.85)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_similarity_by_distance(
    tables: Mapping[str, torch.Tensor],
    ax: Axes | None = None,
    title: str | None = "Dot product of two positions k apart",
    normalise: bool = False,
) -> Axes:
    """Plot ``position_similarity(table)`` against the distance ``k`` for one or more tables.

    Args:
        tables: ``{label: (seq_len, d_model) table}``; each becomes one line, computed with
            the reference :func:`~transformer_course.positional.position_similarity`.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        normalise: divide each line by its value at distance 0, so tables of different
            sizes share one scale (1 = as similar as a position is to itself).

    Returns:
        The Axes drawn on.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for label, table in tables.items():
        similarity = to_numpy(position_similarity(torch.as_tensor(table, dtype=torch.float64)))
        if normalise:
            similarity = similarity / similarity[0]
        ax.plot(np.arange(len(similarity)), similarity, linewidth=1.6, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("distance k between the two positions")
    ax.set_ylabel("P(i) · P(i + k), relative to k = 0" if normalise else "P(i) · P(i + k), mean over i")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------
# Attention before and after a shuffle
# --------------------------------------------------------------------------------------------


def plot_shuffled_attention(
    words: Sequence[str],
    perm: Sequence[int],
    embeddings: torch.Tensor,
    table: torch.Tensor | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Self-attention weights of a sentence and of the same sentence shuffled, side by side.

    Attention here is the reference
    :func:`~transformer_course.attention.scaled_dot_product_attention` with queries, keys and
    values all equal to the word vectors (plus the positions of ``table`` when given). Without
    positions, each pair of words gets the same weight in both panels wherever the words stand;
    with positions, the weights change.

    Args:
        words: ``seq`` words.
        perm: a permutation of ``0, ..., seq - 1``: word ``perm[i]`` goes to place ``i``.
        embeddings: ``(seq, d_model)``, one vector per word.
        table: ``None`` or ``(max_len, d_model)`` position vectors added before attending.
        axes: two Axes to draw on; a new 1 x 2 figure is made when ``None``.

    Returns:
        The Figure drawn on.
    """
    perm = torch.as_tensor(perm)
    if axes is None:
        size = 0.75 * len(words)
        fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2.5, size + 0.8), layout="constrained")
    else:
        fig = axes[0].figure
    shuffled_words = [words[i] for i in perm.tolist()]
    for ax, x, labels, name in (
        (axes[0], embeddings, list(words), "in order"),
        (axes[1], permute_positions(embeddings, perm), shuffled_words, "shuffled"),
    ):
        if table is not None:
            x = add_positions(x, table)
        _, weights = scaled_dot_product_attention(x, x, x)  # (seq, seq)
        plot_attention(weights, labels, labels, ax=ax, title=name, colorbar=False)
    fig.suptitle("Self-attention weights " + ("with positions added" if table is not None else "without positions"))
    return fig
