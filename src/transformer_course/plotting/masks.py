"""Figures about masks (chapter 6): mask matrices, and attention weights side by side.

A mask is drawn as a grid of cells, one row per query and one column per key: a filled cell
where the query may attend to the key (True), a pale one where it may not (False). Attention
weights use chapter 4's :func:`~transformer_course.plotting.attention.plot_attention`, so the
two kinds of picture read the same way: rows ask, columns are looked at.

See :mod:`transformer_course.plotting` for the conventions all figure helpers follow.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._common import COLUMN_WIDTH
from .attention import plot_attention

# Pale grey for "blocked", a clear blue for "may attend": the same in every mask figure.
BLOCKED_COLOUR = "#eeeeee"
ALLOWED_COLOUR = "#3b75af"
_MASK_CMAP = ListedColormap([BLOCKED_COLOUR, ALLOWED_COLOUR])


def _mask_to_numpy(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """A bool (L, S) tensor or array -> a float array of 0 (blocked) and 1 (may attend)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().to("cpu").numpy()
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"a mask must be bool (True = may attend), got dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"mask must be (L, S), got shape {m.shape}; select one matrix first")
    return m.astype(float)


def plot_mask(
    mask: torch.Tensor | np.ndarray,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    legend: bool = False,
) -> Axes:
    """Draw one boolean mask: blue where the query may attend to the key, pale where not.

    Args:
        mask: bool ``(L, S)``, True = may attend. For a broadcast mask, expand it first, e.g.
            ``padding[b, 0].expand(L, S)`` for sequence ``b`` of a ``(batch, 1, 1, S)`` mask.
        query_labels: ``L`` labels for the rows; positions ``0..L-1`` when ``None``.
        key_labels: ``S`` labels for the columns; positions ``0..S-1`` when ``None``.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        legend: add a small legend saying which colour means what.

    Returns:
        The Axes drawn on.
    """
    m = _mask_to_numpy(mask)
    n_queries, n_keys = m.shape
    query_labels = [str(i) for i in range(n_queries)] if query_labels is None else list(query_labels)
    key_labels = [str(j) for j in range(n_keys)] if key_labels is None else list(key_labels)
    if len(query_labels) != n_queries or len(key_labels) != n_keys:
        raise ValueError(
            f"mask is {n_queries} x {n_keys} but got {len(query_labels)} query labels and "
            f"{len(key_labels)} key labels"
        )
    if ax is None:
        width = 1.4 + 0.75 * n_keys + (2.2 if legend else 0.0)  # the legend sits on the right
        _, ax = plt.subplots(figsize=(width, 1.0 + 0.6 * n_queries), layout="constrained")

    ax.imshow(m, cmap=_MASK_CMAP, vmin=0.0, vmax=1.0)
    # white grid lines between the cells, so each (query, key) pair reads as one square
    ax.set_xticks(np.arange(-0.5, n_keys, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_queries, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(n_keys), key_labels)
    ax.set_yticks(range(n_queries), query_labels)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_xlabel("key (attended to)")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("query (attending)")
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(handles=_legend_handles(), loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


def _legend_handles() -> list[Patch]:
    return [Patch(color=ALLOWED_COLOUR, label="True: may attend"),
            Patch(color=BLOCKED_COLOUR, label="False: blocked")]


def _small_labels(ax: Axes, size: float = 8.5) -> None:
    """Smaller tick labels, for panels that share the column with others; the keys' labels slant,
    so that long tokens such as <pad> do not run into each other."""
    ax.tick_params(axis="both", which="major", labelsize=size)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="left", rotation_mode="anchor")


def plot_masks(
    masks: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str],
    query_labels: Sequence[str] | Sequence[Sequence[str]] | None = None,
    key_labels: Sequence[str] | Sequence[Sequence[str]] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Several masks side by side, one panel each (see :func:`plot_mask`), with one legend below.

    Args:
        masks: bool ``(L, S)`` masks; they may differ in size.
        titles: one title per mask.
        query_labels, key_labels: either one list of labels for every panel, or one list per
            panel; positions when ``None``.
        suptitle: a title over the whole figure.

    Returns:
        The Figure drawn on.
    """
    if len(titles) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(titles)} titles")
    per_panel_q = _per_panel(query_labels, len(masks))
    per_panel_k = _per_panel(key_labels, len(masks))
    widths = [np.shape(m)[-1] for m in masks]
    height = max(np.shape(m)[-2] for m in masks)
    cell = min(0.5, (COLUMN_WIDTH - 1.2 - 0.7 * len(masks)) / sum(widths))  # inches per cell
    fig, axes = plt.subplots(
        1, len(masks), figsize=(1.2 + cell * sum(widths) + 0.7 * len(masks), 1.9 + cell * height),
        layout="constrained", gridspec_kw={"width_ratios": widths}, squeeze=False,
    )
    for i, (ax, mask, title) in enumerate(zip(axes[0], masks, titles)):
        plot_mask(mask, per_panel_q[i], per_panel_k[i], ax=ax)
        ax.set_title(title, fontsize=10)
        _small_labels(ax)
        if i > 0:
            ax.set_ylabel("")
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncols=2, frameon=False)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def plot_mask_grid(
    grid: Sequence[Sequence[torch.Tensor | np.ndarray]],
    column_titles: Sequence[str],
    row_labels: Sequence[Sequence[str]],
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """A grid of square self-attention masks: one row per sequence, one column per kind.

    Typical use: for each sequence of a padded batch, its padding mask, the causal mask and
    their combination.

    Args:
        grid: ``grid[r][c]`` is a bool ``(S, S)`` mask.
        column_titles: one title per column, shown over the first row.
        row_labels: ``row_labels[r]`` labels both axes of row ``r`` (its tokens).
        row_titles: optional text at the left of each row.

    Returns:
        The Figure drawn on.
    """
    n_rows, n_cols = len(grid), len(grid[0])
    size = max(np.shape(m)[-1] for row in grid for m in row)
    cell = min(0.5, (COLUMN_WIDTH - 1.4 - 0.6 * n_cols) / (n_cols * size))  # inches per cell
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.4 + n_cols * (0.6 + cell * size), 0.9 + n_rows * (0.6 + cell * size)),
        layout="constrained", squeeze=False,
    )
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            plot_mask(grid[r][c], row_labels[r], row_labels[r], ax=ax)
            _small_labels(ax)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=10)
            ax.set_xlabel("")
            if c > 0:
                ax.set_ylabel("")
            elif row_titles is not None:
                ax.set_ylabel(f"{row_titles[r]}: query", fontsize=9)
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncols=2, frameon=False)
    return fig


def plot_attention_row(
    weights: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str],
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    suptitle: str | None = None,
) -> Figure:
    """Attention weight matrices (chapter 4's heatmap), two to a row, one colour bar for all.

    Args:
        weights: ``(L, S)`` weight matrices with the same labels, e.g. the same sentence
            without and with a mask.
        titles: one title per panel.
        query_labels: ``L`` row labels; key_labels: ``S`` column labels.
        suptitle: a title over the whole figure.

    Returns:
        The Figure drawn on.
    """
    n = len(weights)
    n_queries, n_keys = np.shape(weights[0])[-2:]
    # two panels to a row at most, so that the weights written in the cells stay readable
    columns = min(n, 2)
    rows = -(-n // columns)
    width = min((COLUMN_WIDTH - 0.6) / columns, 0.5 * n_keys + 1.5)
    fig, grid = plt.subplots(rows, columns, figsize=(width * columns + 0.6, rows * (0.4 * n_queries + 1.3)),
                             layout="constrained", squeeze=False)
    for ax in grid.flat[n:]:
        ax.remove()  # the empty place of an odd number of panels
    for i, (ax, w, title) in enumerate(zip(grid.flat, weights, titles)):
        plot_attention(w, query_labels, key_labels, ax=ax, title=title, colorbar=i == n - 1)
        if i % columns:
            ax.set_ylabel("")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def _per_panel(labels, n: int) -> list:
    """One label list for each of ``n`` panels, from None, one shared list or one per panel."""
    if labels is None or len(labels) == 0:
        return [None] * n
    if isinstance(labels[0], str):
        return [list(labels)] * n
    if len(labels) != n:
        raise ValueError(f"{n} panels but {len(labels)} lists of labels")
    return [list(x) for x in labels]
