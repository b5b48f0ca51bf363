"""Figures and small experiments about tokens and embeddings (chapter 1).

Three kinds of function live here:

* **toy data**: a tiny embedding whose dimensions have names (:func:`named_toy_embedding`),
  and a corpus generated from a few sentence templates (:func:`toy_corpus`), both made for
  the course and labelled as toys wherever they are shown;
* **experiments** run the reference code and return plain numbers: word vectors counted from
  the corpus (:func:`count_word_vectors`), how BPE shortens a text as it learns merges
  (:func:`bpe_compression`), and the sizes of token and position vectors
  (:func:`embedding_scale`);
* **plots** (``plot_*``) draw those numbers and return the matplotlib ``Axes`` or ``Figure``.

See :mod:`transformer_course.plotting` for the conventions all figure helpers follow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transformer_course.embeddings import embed_tokens
from transformer_course.plotting._common import COLUMN_WIDTH, annotate_cells, to_numpy
from transformer_course.positional import sinusoidal_encoding
from transformer_course.tokenizer import N_BYTES, learn_bpe, merge_pair, pre_tokenize

# Colours for "unscaled" and "scaled" token vectors and for position vectors, used in every
# figure of chapter 1 that shows them.
UNSCALED_COLOUR = "tab:red"
SCALED_COLOUR = "tab:blue"
POSITION_COLOUR = "tab:green"


# --------------------------------------------------------------------------------------------
# Toy data
# --------------------------------------------------------------------------------------------

TOY_DIMENSIONS = ("person", "royal", "female", "plural", "fruit")
_TOY_WORDS = {  # person royal female plural fruit
    "man": (1, 0, 0, 0, 0),
    "woman": (1, 0, 1, 0, 0),
    "king": (1, 1, 0, 0, 0),
    "queen": (1, 1, 1, 0, 0),
    "men": (1, 0, 0, 1, 0),
    "women": (1, 0, 1, 1, 0),
    "kings": (1, 1, 0, 1, 0),
    "queens": (1, 1, 1, 1, 0),
    "apple": (0, 0, 0, 0, 1),
    "apples": (0, 0, 0, 1, 1),
}


def named_toy_embedding() -> tuple[list[str], list[str], torch.Tensor]:
    """A hand-made embedding whose five dimensions have names: a toy, not a trained model.

    Each word gets a 1 in every dimension that describes it ("queen" is a person, royal and
    female). Real embeddings are learned, and their dimensions have no names.

    Returns:
        ``(words, dimensions, vectors)``: 10 words, the 5 names of :data:`TOY_DIMENSIONS`,
        and the ``(10, 5)`` float table, row ``i`` for ``words[i]``.
    """
    words = list(_TOY_WORDS)
    vectors = torch.tensor([_TOY_WORDS[w] for w in words], dtype=torch.float32)
    return words, list(TOY_DIMENSIONS), vectors


# Who the toy corpus is about, and what goes with each trait. A person's sentences mention
# royal or common places and things, male or female pronouns, and grown-up or child-like
# activities, so the three traits can be read off the words around the person.
TOY_PEOPLE = {  # word: (royal, female, young)
    "king": (1, 0, 0),
    "queen": (1, 1, 0),
    "prince": (1, 0, 1),
    "princess": (1, 1, 1),
    "man": (0, 0, 0),
    "woman": (0, 1, 0),
    "boy": (0, 0, 1),
    "girl": (0, 1, 1),
}
_PLACES = {1: ("palace", "castle"), 0: ("village", "farm")}  # by royal
_THINGS = {1: ("crown", "throne"), 0: ("hat", "cart")}  # by royal
_DUTIES = {1: ("reign", "command"), 0: ("work", "plant")}  # by royal
_PASTIMES = {0: ("cook", "walk"), 1: ("play", "jump")}  # by young
_AGES = {0: ("old", "tall"), 1: ("small", "young")}  # by young
_HE = {0: "he", 1: "she"}  # by female
_HIS = {0: "his", 1: "her"}
_HIMSELF = {0: "himself", 1: "herself"}
_TEMPLATES = (
    "the {person} said {he} lives in {his} {place}",
    "the {person} {duty} and {he} {pastime} by {himself}",
    "the {person} wears {his} {thing}",
    "{he} is the {age} {person}",
    "the {person} sees {his} {thing} and {he} smiles",
)


def _verb(rng: random.Random, stems: tuple[str, ...]) -> str:
    """A random verb of ``stems`` in a random form: "plays", "played" or "is playing"."""
    stem = rng.choice(stems)
    return (stem + "s", stem + "ed", "is " + stem + "ing")[rng.randrange(3)]


def toy_corpus(n_sentences: int = 2000, seed: int = 0) -> list[str]:
    """Sentences about kings, queens, princes, princesses, men, women, boys and girls.

    Generated from five templates, such as "the queen wears her crown" or "she is the
    youngest girl", with words drawn at random but always to fit the person: royal people
    live in a palace or a castle, women and girls are "she", children play and jump. Nothing
    in the code says that "king" and "queen" are related; the word vectors of
    :func:`count_word_vectors` find that from the sentences alone. Verbs and adjectives come
    with endings ("plays", "played", "playing", "older", "oldest") for byte-pair encoding to
    discover.

    Args:
        n_sentences: how many sentences.
        seed: seeds Python's random generator, so the corpus is the same on every run.

    Returns:
        The sentences, lowercase, words separated by single spaces, no punctuation.
    """
    rng = random.Random(seed)
    people = list(TOY_PEOPLE)
    sentences = []
    for _ in range(n_sentences):
        person = rng.choice(people)
        royal, female, young = TOY_PEOPLE[person]
        words = {
            "person": person,
            "place": rng.choice(_PLACES[royal]),
            "thing": rng.choice(_THINGS[royal]),
            "he": _HE[female],
            "his": _HIS[female],
            "himself": _HIMSELF[female],
            "duty": _verb(rng, _DUTIES[royal]),
            "pastime": _verb(rng, _PASTIMES[young]),
            "age": rng.choice(_AGES[young]) + rng.choice(("", "er", "est")),
        }
        sentences.append(rng.choice(_TEMPLATES).format(**words))
    return sentences


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordVectors:
    """Words and their vectors: row ``i`` of ``vectors`` ``(n_words, dim)`` is ``words[i]``."""

    words: list[str]
    vectors: torch.Tensor

    def index(self, word: str) -> int:
        return self.words.index(word)

    def __getitem__(self, word: str) -> torch.Tensor:
        """The vector of ``word``, ``(dim,)``."""
        return self.vectors[self.index(word)]


def count_word_vectors(sentences: Sequence[str], dim: int = 12) -> WordVectors:
    """Word vectors from co-occurrence counts: count, weigh by PPMI, compress with an SVD.

    1. **Count** how often each word appears in the same sentence as each other word: a
       ``(V, V)`` matrix ``C`` for a vocabulary of ``V`` words.
    2. **Weigh** each count by how surprising it is, the positive pointwise mutual information
       ``PPMI(w, c) = max(0, log(P(w, c) / (P(w) P(c))))``: "the" appears with everything and
       so tells little; "crown" appearing with "queen" far more often than chance tells a lot.
    3. **Compress** each word's row of ``V`` numbers into ``dim`` with a truncated singular
       value decomposition ``PPMI ≈ U_dim S_dim V_dimᵀ``, keeping ``U_dim √S_dim``.

    word2vec (Mikolov et al. 2013) learns its vectors by gradient descent instead, but Levy
    and Goldberg (2014) showed that it implicitly factorises a matrix of the same kind (a
    shifted PMI); this count-based version is exact, deterministic and runs in milliseconds.

    Args:
        sentences: whitespace-separated words, e.g. :func:`toy_corpus`.
        dim: the length of each word vector (at most the vocabulary size).

    Returns:
        :class:`WordVectors` for the words of the corpus, in alphabetical order.
    """
    words = sorted({w for s in sentences for w in s.split()})
    index = {w: i for i, w in enumerate(words)}
    # bag[s, w]: how often word w occurs in sentence s, (n_sentences, V)
    rows = [row for row, sentence in enumerate(sentences) for _ in sentence.split()]
    cols = [index[word] for sentence in sentences for word in sentence.split()]
    bag = torch.zeros(len(sentences), len(words), dtype=torch.float64)
    bag.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.ones(len(rows), dtype=torch.float64),
                   accumulate=True)
    # Pairs of positions in one sentence: bagᵀ bag counts them all, including each position
    # with itself, which the diagonal correction takes out again.
    counts = bag.T @ bag - torch.diag(bag.sum(dim=0))  # (V, V)
    total = counts.sum()
    p_word = counts.sum(dim=1, keepdim=True) / total  # (V, 1)
    p_context = counts.sum(dim=0, keepdim=True) / total  # (1, V)
    pmi = torch.log(counts / total / (p_word * p_context))  # -inf for pairs never seen
    ppmi = pmi.clamp_min(0.0)  # (V, V)
    u, s, _ = torch.linalg.svd(ppmi)
    vectors = u[:, :dim] * s[:dim].sqrt()  # (V, dim)
    return WordVectors(words, _fix_signs(vectors).float())


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest entry in size is positive.

    An SVD (or PCA) may return any column with the opposite sign, depending on the maths
    library; fixing the sign makes the numbers and the pictures the same on every machine.
    Cosine similarities do not change.
    """
    rows = vectors.abs().argmax(dim=0)  # (dim,)
    signs = torch.sign(vectors[rows, torch.arange(vectors.shape[1])])
    return vectors * torch.where(signs == 0, 1.0, signs)


def project_2d(vectors: torch.Tensor) -> np.ndarray:
    """Principal component analysis: ``(n, d)`` -> ``(n, 2)``, the two directions of most spread.

    The vectors are centred, and each is described by its coordinates along the two
    directions in which the set varies most (the first two right singular vectors).
    """
    x = vectors.detach().to("cpu", torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return _fix_signs(x @ vh[:2].T).numpy()


def bpe_compression(
    training_text: str, text: str, max_merges: int
) -> tuple[np.ndarray, np.ndarray]:
    """How many BPE tokens ``text`` takes as the tokenizer learns more merges.

    Learns ``max_merges`` merges from ``training_text`` with the reference
    :func:`~transformer_course.tokenizer.learn_bpe`, then applies them one by one to
    ``text``, counting tokens after each.

    Returns:
        ``(merges, n_tokens)``, two int arrays of equal length: ``n_tokens[i]`` tokens after
        the first ``merges[i]`` merges; ``n_tokens[0]`` is the number of bytes of ``text``.
    """
    merges = learn_bpe(pre_tokenize(training_text), max_merges)
    pieces = [list(piece.encode("utf-8")) for piece in pre_tokenize(text)]
    n_tokens = [sum(map(len, pieces))]
    for rank, pair in enumerate(merges):
        pieces = [merge_pair(ids, pair, N_BYTES + rank) for ids in pieces]
        n_tokens.append(sum(map(len, pieces)))
    return np.arange(len(n_tokens)), np.array(n_tokens)


@dataclass(frozen=True)
class ScaleResult:
    """What :func:`embedding_scale` measured; every array has shape ``(len(d_models),)``."""

    d_models: np.ndarray
    token_norm_unscaled: np.ndarray  # mean length of a table row, |E[id]|
    token_norm_scaled: np.ndarray  # mean length of embed_tokens' output, √d_model |E[id]|
    position_norm: np.ndarray  # mean length of a sinusoidal position vector


def embedding_scale(
    d_models: Sequence[int], vocab_size: int = 1000, n_positions: int = 100, seed: int = 0
) -> ScaleResult:
    """How long token vectors and position vectors are, for each ``d_model``.

    The embedding table is drawn with entries of standard deviation ``1/√d_model``, the
    small initialisation the Transformer's shared embedding and output matrix gets (in
    Vaswani et al.'s code, tensor2tensor). Its rows then have a length of about 1 whatever
    ``d_model``, while a sinusoidal position vector has length exactly ``√(d_model / 2)``
    (each sine/cosine pair contributes sin² + cos² = 1). Multiplying by ``√d_model`` (the
    reference :func:`~transformer_course.embeddings.embed_tokens`) brings the token vectors
    to length about ``√d_model``, the same order as the positions.

    Returns:
        A :class:`ScaleResult`.
    """
    generator = torch.Generator().manual_seed(seed)
    unscaled, scaled, positions = [], [], []
    for d_model in d_models:
        table = torch.randn(vocab_size, d_model, generator=generator, dtype=torch.float64)
        table = table / math.sqrt(d_model)  # (vocab, d_model), entries of std 1/√d_model
        ids = torch.arange(vocab_size)
        unscaled.append(table.norm(dim=-1).mean().item())
        scaled.append(embed_tokens(ids, table).norm(dim=-1).mean().item())
        pe = sinusoidal_encoding(n_positions, d_model, dtype=torch.float64)  # (positions, d)
        positions.append(pe.norm(dim=-1).mean().item())
    return ScaleResult(np.asarray(d_models), np.array(unscaled), np.array(scaled),
                       np.array(positions))


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_table(
    values: torch.Tensor | np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "Blues",
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.2g}",
) -> Axes:
    """Draw a small matrix as an annotated grid: an embedding table, a one-hot matrix, ...

    Args:
        values: ``(rows, cols)``.
        row_labels, col_labels: one label per row and per column.
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        cmap, vmin, vmax: the colour scale (by default from the smallest to the largest value).
        fmt: how each number is written in its cell.

    Returns:
        The Axes drawn on.
    """
    v = to_numpy(values)
    if v.ndim != 2 or v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values of shape {v.shape} do not fit {len(row_labels)} row labels "
                         f"and {len(col_labels)} column labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.7 * v.shape[1], 0.6 + 0.45 * v.shape[0]),
                             layout="constrained")
    vmin = float(v.min()) if vmin is None else vmin
    vmax = float(v.max()) if vmax is None else vmax
    ax.imshow(v, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(v.shape[1]), col_labels)
    ax.set_yticks(range(v.shape[0]), row_labels)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False, length=0)
    middle = (vmin + vmax) / 2  # the colour maps are dark at the top
    annotate_cells(ax, v, fmt, light_text=lambda value: value > middle)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_one_hot_lookup(
    token_ids: Sequence[int], table: torch.Tensor, token_labels: Sequence[str]
) -> Figure:
    """Three panels: one-hot rows ``(L, vocab)`` times the table ``(vocab, d)`` = the vectors ``(L, d)``.

    Args:
        token_ids: ``L`` ids into the table.
        table: ``(vocab, d)``, small enough to read (vocab up to about 12).
        token_labels: ``L`` labels, one per id (the tokens).

    Returns:
        The Figure drawn on.
    """
    t = to_numpy(table)
    vocab, d = t.shape
    ids = [int(i) for i in token_ids]
    one_hot = np.zeros((len(ids), vocab))
    one_hot[np.arange(len(ids)), ids] = 1.0
    rows = one_hot @ t
    fig, axes = plt.subplots(
        1, 3, figsize=(COLUMN_WIDTH, 1.0 + 0.3 * vocab), layout="constrained",
        gridspec_kw={"width_ratios": [vocab, d, d]},
    )
    low, high = float(t.min()), float(t.max())
    plot_table(one_hot, list(token_labels), [str(i) for i in range(vocab)], ax=axes[0],
               title=f"one-hot ({len(ids)}, {vocab})", cmap="Greys", vmin=0, vmax=1.6, fmt="{:.0f}")
    plot_table(t, [str(i) for i in range(vocab)], [f"d{j}" for j in range(d)], ax=axes[1],
               title=f"× table ({vocab}, {d})", vmin=low, vmax=high)
    plot_table(rows, list(token_labels), [f"d{j}" for j in range(d)], ax=axes[2],
               title=f"= vectors ({len(ids)}, {d})", vmin=low, vmax=high)
    for i, token_id in enumerate(ids):  # outline each one-hot row, the row it picks, the result
        axes[0].add_patch(plt.Rectangle((-0.5, i - 0.5), vocab, 1, fill=False,
                                        edgecolor=f"C{i + 1}", linewidth=2.5))
        axes[1].add_patch(plt.Rectangle((-0.5, token_id - 0.5), d, 1, fill=False,
                                        edgecolor=f"C{i + 1}", linewidth=2.5))
        axes[2].add_patch(plt.Rectangle((-0.5, i - 0.5), d, 1, fill=False,
                                        edgecolor=f"C{i + 1}", linewidth=2.5))
    axes[0].set_xlabel("token id")
    axes[1].set_ylabel("token id")
    return fig


def plot_similarity_matrix(
    similarity: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = True,
    colorbar: bool = True,
) -> Axes:
    """Draw a cosine similarity matrix ``(n, n)`` as a heatmap from -1 (red) to 1 (blue).

    Args:
        similarity: ``(n, n)``, e.g. ``cosine_similarity_matrix(vectors, vectors)``.
        labels: ``n`` labels (the words).
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        annotate: write each similarity in its cell (sensible up to about 15 x 15).
        colorbar: add a colour bar.

    Returns:
        The Axes drawn on.
    """
    s = to_numpy(similarity)
    if s.ndim != 2 or s.shape[0] != len(labels) or s.shape[1] != len(labels):
        raise ValueError(f"similarity of shape {s.shape} does not fit {len(labels)} labels")
    n = len(labels)
    if ax is None:
        cell = min(0.5, (COLUMN_WIDTH - 2.0) / n)  # inches per cell: the figure fits the column
        _, ax = plt.subplots(figsize=(2.0 + cell * n, 1.2 + cell * n), layout="constrained")
    image = ax.imshow(s, cmap="RdBu", vmin=-1.0, vmax=1.0)
    ax.set_xticks(range(n), labels, rotation=60, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    if annotate:
        # two decimals while they fit in a cell; one for a big matrix, whose cells are small
        annotate_cells(ax, s, "{:.2f}" if n <= 10 else "{:.1f}",
                       light_text=lambda value: abs(value) > 0.6, fontsize=7.5)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="cosine similarity", shrink=0.8)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_embedding_2d(
    vectors: torch.Tensor,
    labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    arrows: Sequence[tuple[str, str]] = (),
    axes_names: tuple[str, str] | None = None,
) -> Axes:
    """Scatter word vectors in 2-D.

    Vectors of more than two dimensions are shown by their first two principal components
    (:func:`project_2d`), a shadow of the vectors in which some directions are squeezed
    together. Vectors of exactly two dimensions (e.g. two named columns of a toy table) are
    drawn as they are.

    Args:
        vectors: ``(n, d)``.
        labels: ``n`` labels (the words).
        ax: the Axes to draw on; a new figure is made when ``None``.
        title: optional title.
        arrows: pairs of labels ``(from, to)`` to join with an arrow, e.g. ``("man",
            "woman")``: parallel arrows of equal length are what makes analogies work.
        axes_names: the names of the two dimensions, for ``(n, 2)`` vectors.

    Returns:
        The Axes drawn on.
    """
    if len(labels) != vectors.shape[0]:
        raise ValueError(f"{vectors.shape[0]} vectors but {len(labels)} labels")
    as_is = vectors.shape[1] == 2
    xy = to_numpy(vectors) if as_is else project_2d(vectors)  # (n, 2)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    position = {label: xy[i] for i, label in enumerate(labels)}
    for start, end in arrows:
        ax.annotate("", xy=position[end], xytext=position[start],
                    arrowprops={"arrowstyle": "->", "color": "grey", "linewidth": 1.2,
                                "shrinkA": 6, "shrinkB": 6})
    ax.scatter(xy[:, 0], xy[:, 1], s=30, color=SCALED_COLOUR, zorder=3)
    for label, (x, y) in position.items():
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=10)
    ax.margins(0.15)
    x_name, y_name = axes_names or (("dimension 0", "dimension 1") if as_is else
                                    ("first principal component", "second principal component"))
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.grid(True, alpha=0.3)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_bpe_compression(
    merges: np.ndarray, n_tokens: np.ndarray, n_words: int | None = None, ax: Axes | None = None
) -> Axes:
    """Plot the number of tokens of a text against the number of merges learned.

    Args:
        merges, n_tokens: as returned by :func:`bpe_compression`.
        n_words: if given, draw the number of words of the text as a line for comparison.
        ax: the Axes to draw on; a new figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    ax.plot(merges, n_tokens, color=SCALED_COLOUR, label="BPE tokens")
    ax.axhline(n_tokens[0], color="grey", linestyle=":", linewidth=1)
    ax.text(merges[-1], n_tokens[0], "bytes ", ha="right", va="bottom", color="grey", fontsize=9)
    if n_words is not None:
        ax.axhline(n_words, color="grey", linestyle="--", linewidth=1)
        ax.text(merges[-1], n_words, "words ", ha="right", va="bottom", color="grey", fontsize=9)
    ax.set_ylim(0, n_tokens[0] * 1.1)
    ax.set_xlabel(f"merges learned (vocabulary = {N_BYTES} + merges)")
    ax.set_ylabel("tokens in the text")
    ax.set_title("Each merge makes the text shorter")
    ax.grid(True, alpha=0.3)
    return ax


def plot_embedding_scale(result: ScaleResult, ax: Axes | None = None) -> Axes:
    """Plot the lengths measured by :func:`embedding_scale` against ``d_model`` (log-log)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    d = result.d_models.astype(float)
    ax.plot(d, result.token_norm_unscaled, "o-", color=UNSCALED_COLOUR,
            label=r"token vector $E[t]$")
    ax.plot(d, result.token_norm_scaled, "s-", color=SCALED_COLOUR,
            label=r"token vector $\sqrt{d_{model}}\, E[t]$")
    ax.plot(d, result.position_norm, "^-", color=POSITION_COLOUR, label="position vector")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel(r"$d_{model}$")
    ax.set_ylabel("length of the vector (mean)")
    ax.set_title("Lengths of token and position vectors")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return ax
