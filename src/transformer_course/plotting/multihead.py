"""Figures about multi-head attention (chapter 5): per-head maps, head blocks, splitting.

* :func:`toy_heads` builds a small hand-made example, two heads that each follow one relation
  in "the cat sat on the mat", as weights for the reference
  :class:`~transformer_course.multihead.MultiHeadAttention`;
* :func:`plot_head_maps` draws several attention maps side by side (one per head);
* :func:`plot_projection_blocks` draws the four weight matrices with each head's block marked;
* :func:`plot_split_heads` shows where every number of ``x`` lands after
  :func:`~transformer_course.multihead.split_heads`, and after the classic wrong reshape.

See :mod:`transformer_course.plotting` for the conventions all figure helpers follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from transformer_course.multihead import split_heads
from transformer_course.plotting._common import COLUMN_WIDTH
from transformer_course.plotting.attention import plot_attention

# One colour per head, used in every figure of chapter 5 so the reader learns them once.
HEAD_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


# --------------------------------------------------------------------------------------------
# A toy with two heads
# --------------------------------------------------------------------------------------------

TOY_FEATURES = ("det", "noun", "verb", "prep", "animal", "place")
TOY_WORDS = ("the", "cat", "sat", "on", "the", "mat")
_TOY_EMBEDDING = {  # det noun verb prep animal place
    "the": (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "cat": (0.0, 1.0, 0.0, 0.0, 1.0, 0.0),
    "sat": (0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
    "on": (0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
    "mat": (0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
}
# Head 1 ("grammar"): which feature a word with a given feature looks for (as in chapter 4).
_LOOKS_FOR = {"det": "noun", "noun": "verb", "verb": "animal", "prep": "place"}


@dataclass(frozen=True)
class ToyHeads:
    """A hand-made two-head attention over "the cat sat on the mat" (see :func:`toy_heads`)."""

    words: tuple[str, ...]
    x: torch.Tensor  # (1, L, d_model): word features, then a one-hot position
    state: dict[str, torch.Tensor]  # weights for MultiHeadAttention(d_model, n_heads)
    n_heads: int
    head_names: tuple[str, ...]

    @property
    def d_model(self) -> int:
        return self.x.shape[-1]


def toy_heads(strength: float = 10.0) -> ToyHeads:
    """Weights for a ``MultiHeadAttention(12, 2)`` in which each head follows one relation.

    Each word is 12 numbers: six yes/no features (``TOY_FEATURES``) and a one-hot position
    (0 to 5). Each head owns 6 of the 12 output columns of ``q_proj``, ``k_proj`` and
    ``v_proj`` (rows of their weight matrices):

    * head 0, **previous word**: the query of position ``i`` is position ``i - 1`` (position 0
      looks at itself), the key of position ``j`` is ``j``; it reads only the position columns;
    * head 1, **grammar**: a determiner looks for a noun, a noun for a verb, the verb for an
      animal, the preposition for a place (chapter 4's toy); it reads only the feature columns.

    Both heads hand over the features of the word they look at (``v_proj``), and ``out_proj``
    is the identity, so output columns 0-5 say what the previous word is and 6-11 what the
    grammatical partner is. A toy built by hand for the book, not a trained model.

    Args:
        strength: the size of a matching query·key product before the 1/√d_head scaling.

    Returns:
        A :class:`ToyHeads` with float64 tensors.
    """
    n_feat = len(TOY_FEATURES)
    seq = len(TOY_WORDS)
    d_model, n_heads = n_feat + seq, 2
    d_head = d_model // n_heads  # 6: rows 0-5 of each projection are head 0, rows 6-11 head 1
    f = {name: i for i, name in enumerate(TOY_FEATURES)}
    position = n_feat  # the first position column of x

    x = torch.zeros(1, seq, d_model, dtype=torch.float64)  # (batch, L, d_model)
    for i, word in enumerate(TOY_WORDS):
        x[0, i, :n_feat] = torch.tensor(_TOY_EMBEDDING[word], dtype=torch.float64)
        x[0, i, position + i] = 1.0

    w_q = torch.zeros(d_model, d_model, dtype=torch.float64)  # (out, in), like nn.Linear
    w_k = torch.zeros_like(w_q)
    w_v = torch.zeros_like(w_q)
    # Head 0 (output rows 0-5): "previous word", from the position columns only.
    for i in range(seq):
        w_q[max(i - 1, 0), position + i] = strength  # position i asks for position i - 1
        w_k[i, position + i] = 1.0  # position j answers as position j
    # Head 1 (output rows 6-11): "grammar", from the feature columns only.
    for has, wants in _LOOKS_FOR.items():
        w_q[d_head + f[wants], f[has]] = strength
    for i in range(n_feat):
        w_k[d_head + i, i] = 1.0  # a key says what the word is
    # Both heads pass on the features of the word they look at.
    for i in range(n_feat):
        w_v[i, i] = 1.0
        w_v[d_head + i, i] = 1.0

    zero = torch.zeros(d_model, dtype=torch.float64)
    state = {
        "q_proj.weight": w_q, "q_proj.bias": zero.clone(),
        "k_proj.weight": w_k, "k_proj.bias": zero.clone(),
        "v_proj.weight": w_v, "v_proj.bias": zero.clone(),
        "out_proj.weight": torch.eye(d_model, dtype=torch.float64), "out_proj.bias": zero.clone(),
    }
    return ToyHeads(words=TOY_WORDS, x=x, state=state, n_heads=n_heads,
                    head_names=("head 0: previous word", "head 1: grammar"))


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_head_maps(
    weights: torch.Tensor | np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    titles: Sequence[str] | None = None,
    axes: Sequence | None = None,
    suptitle: str | None = None,
    annotate: bool = True,
) -> Figure:
    """Several attention maps, one per head, two to a row, on the same colour scale.

    Args:
        weights: ``(heads, L, S)``, e.g. ``weights[0]`` of a ``MultiHeadAttention`` output
            ``(batch, heads, L, S)``. Any stack of ``(L, S)`` maps works (say, two heads
            and a one-head model for comparison).
        query_labels, key_labels: ``L`` and ``S`` labels.
        titles: one title per map; ``"head 0"``, ``"head 1"``, ... when ``None``.
        axes: as many Axes as maps; a new figure, two maps to a row, is made when ``None``.
        suptitle: a title over the whole figure.
        annotate: write each weight in its cell.

    Returns:
        The Figure drawn on.
    """
    w = weights.detach().to("cpu", torch.float64).numpy() if isinstance(weights, torch.Tensor) \
        else np.asarray(weights, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"weights must be (heads, L, S), got shape {w.shape}; pick one example")
    n_maps, n_queries, n_keys = w.shape
    titles = list(titles) if titles is not None else [f"head {h}" for h in range(n_maps)]
    if len(titles) != n_maps:
        raise ValueError(f"{n_maps} maps but {len(titles)} titles")
    if axes is None:
        # two maps to a row at most: three maps of six words side by side would be shrunk until
        # their numbers cannot be read
        columns = min(n_maps, 2)
        rows = -(-n_maps // columns)
        width = min((COLUMN_WIDTH - 0.6) / columns, 0.5 * n_keys + 1.5)
        fig, grid = plt.subplots(rows, columns, figsize=(width * columns + 0.6, rows * (0.4 * n_queries + 1.3)),
                                 layout="constrained", squeeze=False)
        for ax in grid.flat[n_maps:]:
            ax.remove()  # the empty place of an odd number of maps
        axes = list(grid.flat[:n_maps])
        first_column = {h for h in range(n_maps) if h % columns == 0}
    else:
        fig = axes[0].figure
        first_column = {0}
    for h, (ax, title) in enumerate(zip(axes, titles)):
        plot_attention(w[h], query_labels, key_labels, ax=ax, title=title, annotate=annotate,
                       colorbar=h == n_maps - 1)
        if h not in first_column:
            ax.set_ylabel("")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def plot_projection_blocks(
    state: dict[str, torch.Tensor],
    n_heads: int,
    axes: Sequence | None = None,
    annotate: bool | None = None,
) -> Figure:
    """The four weight matrices of a multi-head attention, with each head's block outlined.

    ``q_proj``, ``k_proj`` and ``v_proj`` weights are ``(d_model, in)`` (``nn.Linear`` keeps
    ``(out, in)``): head ``h`` owns rows ``h * d_head`` to ``(h + 1) * d_head - 1``.
    ``out_proj.weight`` is ``(d_model, d_model)``: head ``h``'s output enters through the
    same block of *columns*.

    Args:
        state: a ``MultiHeadAttention`` state dict (``module.state_dict()``).
        n_heads: the number of heads.
        axes: four Axes; a new 2 x 2 figure is made when ``None``.
        annotate: write the non-zero weights in their cells; ``None`` does so for sparse
            matrices only (a hand-made toy), where the numbers are few and readable.

    Returns:
        The Figure drawn on. Each matrix has its own colour scale (red positive, blue
        negative, white 0).
    """
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    mats = [state[f"{n}.weight"].detach().to("cpu", torch.float64).numpy() for n in names]
    d_model = mats[0].shape[0]
    d_head = d_model // n_heads
    if axes is None:
        fig, grid = plt.subplots(2, 2, figsize=(COLUMN_WIDTH, 7.6), layout="constrained")
        axes = list(grid.flat)
    else:
        fig = axes[0].figure
    symbols = ("$W^Q$", "$W^K$", "$W^V$", "$W^O$")
    for ax, name, symbol, m in zip(axes, names, symbols, mats):
        # each matrix on its own symmetric scale, so a large W^Q does not wash out a small W^K;
        # the numbers are written in the cells instead of a colour bar per panel
        limit = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
        if annotate is None and np.count_nonzero(m) <= 3 * m.shape[0] or annotate:
            for i, j in zip(*np.nonzero(m)):
                colour = "white" if abs(m[i, j]) > 0.6 * limit else "black"
                ax.text(j, i, f"{m[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color=colour)
        for h in range(n_heads):
            colour = HEAD_COLOURS[h % len(HEAD_COLOURS)]
            inset = 0.15  # keep the outline inside the axes frame, where it can be seen
            lo = h * d_head - 0.5 + inset
            if name == "out_proj":  # head h enters through columns h*d_head ...
                rect = plt.Rectangle((lo, -0.5 + inset), d_head - 2 * inset,
                                     m.shape[0] - 2 * inset, fill=False, lw=2.5,
                                     edgecolor=colour)
            else:  # head h comes out of rows h*d_head ...
                rect = plt.Rectangle((-0.5 + inset, lo), m.shape[1] - 2 * inset,
                                     d_head - 2 * inset, fill=False, lw=2.5, edgecolor=colour)
            ax.add_patch(rect)
        ax.set_title(f"{symbol}: {name}.weight {m.shape[0]}×{m.shape[1]}", fontsize=10)
        ax.set_xlabel("input column" if name != "out_proj" else "column of the merged heads")
        ax.xaxis.set_label_position("top")
        ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
        ax.set_ylabel("output column")
    handles = [plt.Line2D([], [], color=HEAD_COLOURS[h % len(HEAD_COLOURS)], lw=2.5,
                          label=f"head {h}") for h in range(n_heads)]
    fig.legend(handles=handles, loc="outside lower center", ncols=n_heads, frameon=False)
    return fig


def plot_split_heads(seq_len: int = 3, d_model: int = 6, n_heads: int = 2) -> Figure:
    """Where each number of ``x`` goes: ``split_heads`` against the reshape without transpose.

    ``x`` is ``(1, seq_len, d_model)``; every cell is labelled with its (position, column) in
    ``x`` and coloured by the head its column belongs to. The middle row shows the heads made by
    the reference :func:`~transformer_course.multihead.split_heads`: each head is every
    position's own block of columns. The bottom row shows ``x.view(1, heads, seq, d_head)``:
    the right shape, but a "head" made of the wrong pieces.

    Returns:
        The Figure drawn on.
    """
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    d_head = d_model // n_heads
    # Encode (position, column) in one number so we can follow it through any reshape.
    x = torch.arange(seq_len * d_model).reshape(1, seq_len, d_model)  # (1, seq, d_model)
    right = split_heads(x, n_heads)[0]  # (heads, seq, d_head)
    wrong = x.view(1, n_heads, seq_len, d_head)[0]  # (heads, seq, d_head): the classic bug

    mosaic = [["x"] * n_heads, [f"right{h}" for h in range(n_heads)],
              [f"wrong{h}" for h in range(n_heads)]]
    fig, axd = plt.subplot_mosaic(mosaic, figsize=(max(7.0, 2.2 * n_heads * d_head / 2), 7.5),
                                  layout="constrained")

    def draw(ax, grid: torch.Tensor, title: str) -> None:
        rows, cols = grid.shape
        for i in range(rows):
            for j in range(cols):
                value = int(grid[i, j])
                pos, col = divmod(value, d_model)
                colour = HEAD_COLOURS[(col // d_head) % len(HEAD_COLOURS)]
                ax.add_patch(plt.Rectangle((j, rows - 1 - i), 1, 1, facecolor=colour, alpha=0.35,
                                           edgecolor="black"))
                ax.text(j + 0.5, rows - 0.5 - i, f"p{pos} c{col}", ha="center", va="center",
                        fontsize=9)
        ax.set_xlim(0, cols)
        ax.set_ylim(0, rows)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=10)

    draw(axd["x"], x[0], f"x: (seq, d_model) = ({seq_len}, {d_model}); "
                         f"colour = the head a column belongs to")
    for h in range(n_heads):
        draw(axd[f"right{h}"], right[h], f"split_heads: head {h} ({seq_len}, {d_head})")
        draw(axd[f"wrong{h}"], wrong[h], f"view without transpose: 'head {h}'")
    fig.suptitle("p = position, c = column of x", fontsize=10)
    return fig
