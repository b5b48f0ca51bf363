"""Figures about attention itself (chapter 4): heatmaps, the √d_k experiments.

Two kinds of function live here:

* **experiments** (``dot_product_variance``, ``softmax_saturation``) run the reference
  functions of :mod:`transformer_course.attention` and return plain numbers;
* **plots** (``plot_*``) draw those numbers, or a weight matrix, and return the matplotlib
  ``Axes`` or ``Figure`` they drew on.

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

from transformer_course.attention import attention_scores, softmax
from transformer_course.plotting._common import annotate_cells, to_numpy

# Colours used for "without scaling" and "with scaling" in every figure of chapter 4, so the
# reader learns them once.
UNSCALED_COLOUR = "tab:red"
SCALED_COLOUR = "tab:blue"


# --------------------------------------------------------------------------------------------
# Attention weights
# --------------------------------------------------------------------------------------------


def plot_attention(
    weights: torch.Tensor | np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = True,
    colorbar: bool = True,
) -> Axes:
    """Draw one attention weight matrix as a heatmap: rows are queries, columns are keys.

    Args:
        weights: ``(L, S)``, each row a probability distribution over the keys (the
            ``weights`` returned by ``scaled_dot_product_attention``). For a batch, pick one
            matrix first, e.g. ``weights[0]`` or ``weights[0, head]``.
        query_labels: ``L`` labels for the rows (the words that ask).
        key_labels: ``S`` labels for the columns (the words that are looked at).
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        annotate: write each weight in its cell (sensible up to about 12 x 12).
        colorbar: add a colour bar for the scale 0..1.

    Returns:
        The Axes drawn on.
    """
    w = to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be (L, S), got shape {w.shape}; select one matrix first")
    n_queries, n_keys = w.shape
    if len(query_labels) != n_queries or len(key_labels) != n_keys:
        raise ValueError(
            f"weights are {n_queries} x {n_keys} but got {len(query_labels)} query labels "
            f"and {len(key_labels)} key labels"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.75 * n_keys, 0.6 + 0.65 * n_queries),
                             layout="constrained")

    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n_keys), key_labels)
    ax.set_yticks(range(n_queries), query_labels)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_xlabel("key (attended to)")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("query (attending)")
    if annotate:
        # viridis: light text on its dark (low) end, dark text on its bright end
        annotate_cells(ax, w, "{:.2f}", light_text=lambda value: value <= 0.6)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="attention weight", shrink=0.8)
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------
# Why divide by sqrt(d_k): experiments
# --------------------------------------------------------------------------------------------


def dot_product_variance(
    d_ks: Sequence[int], n_samples: int = 20_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Measure the variance of q·k with and without the 1/√d_k scaling.

    For each ``d_k``, draw ``n_samples`` pairs of vectors ``q`` and ``k`` whose components are
    independent with mean 0 and variance 1, and compute their score once as the plain dot
    product and once with the reference :func:`~transformer_course.attention.attention_scores`.

    Args:
        d_ks: the head sizes to try, e.g. ``[1, 4, 16, 64, 256]``.
        n_samples: pairs per head size.
        seed: seeds the random generator, so the numbers are the same on every build.

    Returns:
        ``(unscaled_var, scaled_var)``, two float arrays of shape ``(len(d_ks),)``. In theory
        ``unscaled_var ≈ d_k`` and ``scaled_var ≈ 1``.
    """
    generator = torch.Generator().manual_seed(seed)
    unscaled_var, scaled_var = [], []
    for d_k in d_ks:
        # one query and one key per sample: L = S = 1
        q = torch.randn(n_samples, 1, d_k, generator=generator, dtype=torch.float64)
        k = torch.randn(n_samples, 1, d_k, generator=generator, dtype=torch.float64)
        scaled = attention_scores(q, k)  # (n_samples, 1, 1)
        unscaled = scaled * math.sqrt(d_k)  # undo the 1/√d_k: the plain dot product
        unscaled_var.append(unscaled.var().item())
        scaled_var.append(scaled.var().item())
    return np.array(unscaled_var), np.array(scaled_var)


@dataclass(frozen=True)
class SaturationResult:
    """What :func:`softmax_saturation` measured; every array has shape ``(len(d_ks),)``."""

    d_ks: np.ndarray
    n_keys: int
    max_weight_unscaled: np.ndarray  # mean over queries of the largest weight in the row
    max_weight_scaled: np.ndarray
    entropy_unscaled: np.ndarray  # mean over queries of the row's entropy, in nats
    entropy_scaled: np.ndarray

    @property
    def max_entropy(self) -> float:
        """Entropy of the uniform distribution over ``n_keys`` keys: log(n_keys) nats."""
        return math.log(self.n_keys)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy -Σ p log p of each row of ``p`` ``(..., S)`` -> ``(...)``, with 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)


def softmax_saturation(
    d_ks: Sequence[int],
    n_keys: int = 16,
    n_queries: int = 100,
    n_trials: int = 50,
    seed: int = 0,
) -> SaturationResult:
    """How peaked are the attention weights as ``d_k`` grows, with and without scaling?

    For each ``d_k``, draw ``n_trials`` independent sets of ``n_queries`` queries and
    ``n_keys`` keys with unit-variance components, turn the scores into weights with the reference
    :func:`~transformer_course.attention.softmax`, once from the plain dot products and once
    from the reference's scaled :func:`~transformer_course.attention.attention_scores`, and
    average two measures over all queries of all trials:

    * the largest weight in a row: ``1/n_keys`` is perfectly even, ``1`` is one-hot;
    * the entropy of a row: ``log(n_keys)`` is perfectly even, ``0`` is one-hot.

    Args:
        d_ks: the head sizes to try.
        n_keys: ``S``, the number of keys each query chooses among.
        n_queries: ``L``, the number of queries in one trial.
        n_trials: how many independent sets of queries and keys to average over.
        seed: seeds the random generator.

    Returns:
        A :class:`SaturationResult`.
    """
    generator = torch.Generator().manual_seed(seed)
    max_u, max_s, ent_u, ent_s = [], [], [], []
    for d_k in d_ks:
        shape = (n_trials, n_queries, d_k)
        q = torch.randn(shape, generator=generator, dtype=torch.float64)  # (trials, L, d_k)
        shape = (n_trials, n_keys, d_k)
        k = torch.randn(shape, generator=generator, dtype=torch.float64)  # (trials, S, d_k)
        scaled = attention_scores(q, k)  # (trials, L, S)
        unscaled = scaled * math.sqrt(d_k)  # undo the 1/√d_k: the plain Q Kᵀ
        w_unscaled = softmax(unscaled, dim=-1)  # (trials, L, S)
        w_scaled = softmax(scaled, dim=-1)  # (trials, L, S)
        max_u.append(w_unscaled.amax(dim=-1).mean().item())
        max_s.append(w_scaled.amax(dim=-1).mean().item())
        ent_u.append(_entropy(w_unscaled).mean().item())
        ent_s.append(_entropy(w_scaled).mean().item())
    return SaturationResult(
        d_ks=np.asarray(d_ks),
        n_keys=n_keys,
        max_weight_unscaled=np.array(max_u),
        max_weight_scaled=np.array(max_s),
        entropy_unscaled=np.array(ent_u),
        entropy_scaled=np.array(ent_s),
    )


# --------------------------------------------------------------------------------------------
# Why divide by sqrt(d_k): plots
# --------------------------------------------------------------------------------------------


def plot_dot_product_variance(
    d_ks: Sequence[int],
    unscaled_var: np.ndarray,
    scaled_var: np.ndarray,
    ax: Axes | None = None,
) -> Axes:
    """Plot the measured variance of the scores against ``d_k`` (log-log axes).

    Args:
        d_ks: ``(n,)`` head sizes.
        unscaled_var, scaled_var: ``(n,)`` variances, as returned by
            :func:`dot_product_variance`.
        ax: the Axes to draw on; a new figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    d = np.asarray(d_ks, dtype=float)
    ax.plot(d, d, color="grey", linestyle="--", linewidth=1, label="theory: $d_k$")
    ax.plot(d, np.ones_like(d), color="grey", linestyle=":", linewidth=1, label="theory: 1")
    ax.plot(d, unscaled_var, "o-", color=UNSCALED_COLOUR, label=r"$q \cdot k$")
    ax.plot(d, scaled_var, "s-", color=SCALED_COLOUR, label=r"$q \cdot k \,/ \sqrt{d_k}$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("$d_k$ (length of the query and key vectors)")
    ax.set_ylabel("variance of the score")
    ax.set_title("Dot products of random unit-variance vectors")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return ax


def plot_softmax_saturation(result: SaturationResult, axes: Sequence[Axes] | None = None) -> Figure:
    """Two panels, one above the other: the largest weight and the entropy of a row, against ``d_k``.

    Without scaling the softmax saturates as ``d_k`` grows (largest weight → 1,
    entropy → 0); with the 1/√d_k scaling both stay where they started.

    Args:
        result: what :func:`softmax_saturation` returned.
        axes: two Axes to draw on; a new 2 x 1 figure (one above the other) is made when ``None``.

    Returns:
        The Figure drawn on.
    """
    if axes is None:
        # one above the other: both panels share the d_k axis, and each keeps the column's width
        fig, axes = plt.subplots(2, 1, figsize=(6.4, 7.0), layout="constrained", sharex=True)
    else:
        fig = axes[0].figure
    ax_max, ax_ent = axes
    d = result.d_ks.astype(float)
    labels = {"unscaled": r"softmax$(QK^\top)$", "scaled": r"softmax$(QK^\top/\sqrt{d_k})$"}

    ax_max.plot(d, result.max_weight_unscaled, "o-", color=UNSCALED_COLOUR,
                label=labels["unscaled"])
    ax_max.plot(d, result.max_weight_scaled, "s-", color=SCALED_COLOUR, label=labels["scaled"])
    ax_max.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax_max.axhline(1.0 / result.n_keys, color="grey", linestyle=":", linewidth=1)
    ax_max.text(d[0], 1.0, " one-hot", va="bottom", color="grey", fontsize=9)
    ax_max.text(d[0], 1.0 / result.n_keys, " uniform", va="bottom", color="grey", fontsize=9)
    ax_max.set_ylim(0, 1.1)
    ax_max.set_ylabel("largest weight in a row (mean)")
    ax_max.set_title("The winner takes (almost) all")

    ax_ent.plot(d, result.entropy_unscaled, "o-", color=UNSCALED_COLOUR,
                label=labels["unscaled"])
    ax_ent.plot(d, result.entropy_scaled, "s-", color=SCALED_COLOUR, label=labels["scaled"])
    ax_ent.axhline(result.max_entropy, color="grey", linestyle=":", linewidth=1)
    ax_ent.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax_ent.text(d[0], result.max_entropy, " uniform", va="bottom", color="grey", fontsize=9)
    ax_ent.text(d[0], 0.0, " one-hot", va="bottom", color="grey", fontsize=9)
    ax_ent.set_ylim(-0.15, result.max_entropy * 1.15)
    ax_ent.set_ylabel("entropy of a row in nats (mean)")
    ax_ent.set_title("The weights stop spreading out")

    for ax in (ax_max, ax_ent):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("$d_k$")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="center right")
    fig.suptitle(f"Softmax over {result.n_keys} keys with random unit-variance\nqueries and keys")
    return fig
