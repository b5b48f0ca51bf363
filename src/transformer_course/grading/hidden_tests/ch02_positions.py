"""Chapter 2, grader side: references, hidden inputs and typical mistakes.

The typical mistakes are written as code (a sinusoidal table with sin and cos swapped, a
permutation experiment that adds the positions before shuffling, a learned table that counts
positions from 1, ...) so that a message can name the one a student made. Most of them are one
argument or one overridden method away from the right answer, and attention is written out here
for the experiment's mistakes. That is why this module lives on the grader's side: it is never
imported by the student side or inside the grading sandbox. The visible checks name these
mistakes from their recorded outputs (``exercises/recorded/02-positions.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ...exercises.base import Case
from ...exercises.ch02_positions import TableCase
from ...exercises.compare import fmt_number
from ...exercises.inputs import randn, with_float32
from ..hidden_spec import HiddenTests, Mistake

# --------------------------------------------------------------------------- sinusoidal_encoding


def _sinusoids(
    seq_len: int,
    d_model: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    base: float = 10000.0,
    exponent: str = "2i",
    swap: bool = False,
    concatenate: bool = False,
    first_position: int = 0,
    multiply: bool = False,
) -> torch.Tensor:
    """The sinusoidal table with knobs that reproduce typical mistakes (defaults: no mistake).

    Column ``j`` belongs to the pair ``i = j // 2``; its frequency is ``base ** -(2i / d_model)``
    (``exponent="i"``: ``i / d_model``; ``exponent="j"``: ``j / d_model``).
    """
    position = torch.arange(first_position, first_position + seq_len, dtype=torch.float64)[:, None]
    column = torch.arange(d_model, dtype=torch.float64)
    two_i = column - column % 2  # 0, 0, 2, 2, 4, 4, ...
    power = {"2i": two_i, "i": two_i / 2, "j": column}[exponent] / d_model
    rate = base**power if multiply else base**-power  # (d_model,)
    if concatenate:  # all sines first, then all cosines, each pair keeping its frequency
        rate = torch.cat([rate[0::2], rate[0::2][: d_model // 2]])
        sine = torch.arange(d_model) < (d_model + 1) // 2
    else:
        sine = column % 2 == 0
    angle = position * rate  # (seq_len, d_model)
    if swap:
        sine = ~sine
    table = torch.where(sine, torch.sin(angle), torch.cos(angle))
    return table.to(dtype=dtype).to(device=device)


SINUSOIDAL_MISTAKES = (
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, swap=True, **kw),
            "sin and cos are swapped: the sines go in the even columns (0, 2, 4, ...), the cosines in "
            "the odd ones (1, 3, 5, ...)."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, exponent="i", **kw),
            "the exponent is 2i/d_model, where i numbers the sine/cosine pairs (columns 2i and 2i+1); "
            "you used i/d_model, which makes the waves too short."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, exponent="j", **kw),
            "columns 2i and 2i+1 must share one frequency, 1/10000^(2i/d_model); you used the column "
            "index j in the exponent (j/d_model), so each cosine has a different frequency from its sine."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, base=1000.0, **kw),
            "the base is 10000, not 1000: the frequencies are 1/10000^(2i/d_model)."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, concatenate=True, **kw),
            "you put all the sines first and all the cosines after them; interleave them instead: "
            "sines in the even columns (table[:, 0::2]), cosines in the odd ones (table[:, 1::2])."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, first_position=1, **kw),
            "positions start at 0: row 0 is sin(0) = 0 in the even columns and cos(0) = 1 in the odd "
            "ones (torch.arange(seq_len), not arange(1, seq_len + 1))."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(seq_len, d_model, multiply=True, **kw),
            "divide the position by 10000^(2i/d_model) (the wavelength grows with i); you multiplied."),
    Mistake(lambda seq_len, d_model, **kw: _sinusoids(d_model, seq_len, **kw).T,
            "rows are positions and columns are dimensions: your table is transposed, "
            "(d_model, seq_len) instead of (seq_len, d_model)."),
)


def sinusoidal_diagnose(outputs: tuple, case: Case) -> str | None:
    """Name a table that is right only to float32 precision although float64 was asked for."""
    (table,) = outputs
    if case.dtype != torch.float64:
        return None
    exact = _sinusoids(*case.args, dtype=torch.float64)
    error = (table.detach().to("cpu", torch.float64) - exact).abs().max().item()
    if error < 1e-4:
        return (f"your table is off by up to {fmt_number(error)}, float32 rounding: with dtype=torch.float64 "
                "every step must be float64, but torch.arange(...) / d_model and 10000 ** (...) give float32 "
                "unless you pass dtype=dtype (e.g. torch.arange(0, d_model, 2, dtype=dtype)).")
    return None


def sinusoidal_cases(gen: torch.Generator) -> list[Case]:
    f64 = {"dtype": torch.float64}
    seq_len = int(torch.randint(20, 61, (1,), generator=gen))
    d_model = 2 * int(torch.randint(4, 33, (1,), generator=gen))
    cases = [
        TableCase("seq_len 7, d_model 8", (7, 8), f64),
        TableCase("seq_len 50, d_model 16", (50, 16), f64),
        TableCase(f"seq_len {seq_len}, d_model {d_model}", (seq_len, d_model), f64),
        TableCase("seq_len 100, d_model 128", (100, 128), f64),
        TableCase("seq_len 8, d_model 8 (as many positions as dimensions)", (8, 8), f64),
        TableCase("a single position, seq_len 1, d_model 6", (1, 6), f64),
        TableCase("odd d_model, seq_len 6, d_model 7 (the last column is a sine without its cosine)", (6, 7), f64),
        TableCase("seq_len 4, d_model 1 (a single sine column)", (4, 1), f64),
        TableCase("seq_len 12, d_model 10, no dtype given (float32)", (12, 10)),
    ]
    return with_float32(cases, {"seq_len 50, d_model 16", "odd d_model, seq_len 6, d_model 7 "
                                "(the last column is a sine without its cosine)"})


SINUSOIDAL_HIDDEN = HiddenTests(
    function="sinusoidal_encoding",
    reference="transformer_course.positional:sinusoidal_encoding",
    make_cases=sinusoidal_cases,
    mistakes=SINUSOIDAL_MISTAKES,
    diagnose=sinusoidal_diagnose,
)


# --------------------------------------------------------------------------- add_positions


def add_positions_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("embeddings (2, 5, 8), table (10, 8)", (randn(gen, 2, 5, 8), randn(gen, 10, 8))),
        Case("embeddings (5, 8) with no batch, table of exactly 5 positions", (randn(gen, 5, 8), randn(gen, 5, 8))),
        Case("embeddings (2, 3, 4, 6) (two leading dimensions), table (7, 6)",
             (randn(gen, 2, 3, 4, 6), randn(gen, 7, 6))),
        Case("a single position, embeddings (3, 1, 4), table (6, 4)", (randn(gen, 3, 1, 4), randn(gen, 6, 4))),
        Case("embeddings (4, 9, 16), table (32, 16)", (randn(gen, 4, 9, 16), randn(gen, 32, 16))),
    ]
    return with_float32(cases, {"embeddings (2, 5, 8), table (10, 8)", "embeddings (4, 9, 16), table (32, 16)"})


ADD_POSITIONS_HIDDEN = HiddenTests(
    function="add_positions",
    reference="transformer_course.positional:add_positions",
    make_cases=add_positions_cases,
    mistakes=(
        Mistake(lambda embeddings, table: embeddings * table[: embeddings.shape[-2]],
                "you multiplied the embeddings by the position vectors; add them: x_i = E(token_i) + P(i)."),
        Mistake(lambda embeddings, table: embeddings + table[table.shape[0] - embeddings.shape[-2]:],
                "position i gets row i of the table: use the first seq rows, table[:seq], not the last ones."),
        Mistake(lambda embeddings, table: embeddings + table[1: embeddings.shape[-2] + 1],
                "positions start at 0: the first token gets row 0 of the table (table[:seq], not "
                "table[1:seq + 1])."),
    ),
)


# --------------------------------------------------------------------------- permutation_experiment


def _attend(x: torch.Tensor) -> torch.Tensor:
    """Self-attention with q = k = v = x ``(..., seq, d)`` -> ``(..., seq, d)``, written out
    (a mistake model cannot call the reference)."""
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    return torch.softmax(scores, dim=-1) @ x


def _with(table: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if table is None else x + table[: x.shape[-2]]


def _experiment(
    positions_travel: bool = False, out_perm: str = "perm", swap_outputs: bool = False, ignore_table: bool = False
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """permutation_experiment with knobs that reproduce typical mistakes (defaults: no mistake)."""

    def experiment(x, perm, table=None):
        if ignore_table:
            table = None
        reorder = {"perm": perm, "inverse": torch.argsort(perm), "none": torch.arange(len(perm))}[out_perm]
        attend_then_shuffle = _attend(_with(table, x))[..., reorder, :]
        if positions_travel:  # positions added before the shuffle: they move with their tokens
            shuffle_then_attend = _attend(_with(table, x)[..., perm, :])
        else:
            shuffle_then_attend = _attend(_with(table, x[..., perm, :]))
        if swap_outputs:
            return shuffle_then_attend, attend_then_shuffle
        return attend_then_shuffle, shuffle_then_attend

    return experiment


def permutation_cases(gen: torch.Generator) -> list[Case]:
    def perm(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=gen)

    cases = [
        Case("x (2, 6, 8), a random perm, no table", (randn(gen, 2, 6, 8), perm(6))),
        Case("x (2, 6, 8), a random perm, table (10, 8)", (randn(gen, 2, 6, 8), perm(6)),
             {"table": randn(gen, 10, 8)}),
        Case("x (6, 4) with no batch dimension, table (6, 4)", (randn(gen, 6, 4), perm(6)),
             {"table": randn(gen, 6, 4)}),
        Case("x (2, 3, 5, 8) (two leading dimensions), table (5, 8)", (randn(gen, 2, 3, 5, 8), perm(5)),
             {"table": randn(gen, 5, 8)}),
        Case("the reversal perm [4, 3, 2, 1, 0], table (8, 6)", (randn(gen, 3, 5, 6), torch.arange(4, -1, -1)),
             {"table": randn(gen, 8, 6)}),
        Case("the identity perm, table (4, 8)", (randn(gen, 2, 4, 8), torch.arange(4)), {"table": randn(gen, 4, 8)}),
        Case("a single token, x (3, 1, 4), perm [0], table (2, 4)", (randn(gen, 3, 1, 4), torch.arange(1)),
             {"table": randn(gen, 2, 4)}),
    ]
    return with_float32(cases, {"x (2, 6, 8), a random perm, table (10, 8)",
                                "x (2, 3, 5, 8) (two leading dimensions), table (5, 8)"})


PERMUTATION_HIDDEN = HiddenTests(
    function="permutation_experiment",
    reference="transformer_course.positional:permutation_experiment",
    make_cases=permutation_cases,
    mistakes=(
        Mistake(_experiment(positions_travel=True),
                "you added the positions before shuffling, so each token took its position vector along and "
                "the shuffle went unnoticed again. Positions belong to the places, not the tokens: in "
                "shuffle_then_attend shuffle x first, then add P(0), P(1), ... in order."),
        Mistake(_experiment(ignore_table=True),
                "you ignored `table`: when a table is given, add its positions (add_positions) before "
                "attending, in both experiments."),
        Mistake(_experiment(out_perm="inverse"),
                "attend_then_shuffle is shuffled with the inverse permutation: row i must be row perm[i] of "
                "the attention output, output[..., perm, :] (not argsort(perm))."),
        Mistake(_experiment(out_perm="none"),
                "attend_then_shuffle is not shuffled: it is the attention output with its rows reordered by "
                "perm, output[..., perm, :]."),
        Mistake(_experiment(swap_outputs=True),
                "you returned the two results in the wrong order: (attend_then_shuffle, shuffle_then_attend)."),
    ),
)


# --------------------------------------------------------------------------- position_similarity


def _by_distance(table: torch.Tensor, reduce: str = "mean", normalise: bool = False) -> torch.Tensor:
    """The dot products of positions k apart, reduced per distance k, with knobs for typical mistakes."""
    if normalise:
        table = table / table.norm(dim=-1, keepdim=True)
    gram = table @ table.T
    n = table.shape[0]
    if reduce == "sum":
        return torch.stack([gram.diagonal(k).sum() for k in range(n)])
    if reduce == "sum / n":
        return torch.stack([gram.diagonal(k).sum() / n for k in range(n)])
    return torch.stack([gram.diagonal(k).mean() for k in range(n)])


def similarity_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("a random table (5, 8)", (randn(gen, 5, 8),)),
        Case("a random table (12, 3) (fewer dimensions than positions)", (randn(gen, 12, 3),)),
        Case("a random table (40, 64)", (randn(gen, 40, 64),)),
        Case("a single position (1, 4)", (randn(gen, 1, 4),)),
        Case("two positions (2, 6), scaled by 10", (randn(gen, 2, 6, scale=10.0),)),
        Case("a table whose rows drift: row i = i·v + noise, (9, 5)",
             (torch.arange(9, dtype=torch.float64)[:, None] * randn(gen, 1, 5) + randn(gen, 9, 5),)),
    ]
    return with_float32(cases, {"a random table (5, 8)", "a random table (40, 64)"})


SIMILARITY_HIDDEN = HiddenTests(
    function="position_similarity",
    reference="transformer_course.positional:position_similarity",
    make_cases=similarity_cases,
    mistakes=(
        Mistake(lambda table: table @ table[0],
                "you compared every position with position 0 only; average over every pair k apart, (0, k), "
                "(1, k + 1), ...: the k-th diagonal of table @ table.T."),
        Mistake(lambda table: _by_distance(table, reduce="sum"),
                "you added up the dot products at distance k; average them instead (there are seq_len - k "
                "pairs)."),
        Mistake(lambda table: _by_distance(table, reduce="sum / n"),
                "divide by the number of pairs at distance k, which is seq_len - k, not seq_len: use .mean() "
                "of the diagonal."),
        Mistake(lambda table: _by_distance(table, normalise=True),
                "you normalised the vectors (a cosine similarity); the exercise asks for the plain dot "
                "product."),
    ),
)


# --------------------------------------------------------------------------- LearnedPositionalEmbedding


class _Learned(nn.Module):
    """A learned table with hooks that reproduce typical mistakes (the parameter names are right)."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[1], device=x.device)

    def combine(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x + p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.combine(x, self.embedding(self.positions(x))))


class _LearnedFromOne(_Learned):
    def positions(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(1, x.shape[1] + 1, device=x.device)


class _LearnedMultiplied(_Learned):
    def combine(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x * p


class _LearnedPositionsOnly(_Learned):
    def combine(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return p.expand_as(x)


class _LearnedBatchAxis(_Learned):
    def positions(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[0], device=x.device)  # the batch size, not the length

    def combine(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x + p[:, None, :]  # (batch, 1, d): one vector per sequence


def learned_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, seq: int, max_len: int, d_model: int, **init_kwargs: float) -> Case:
        return Case(label, (randn(gen, batch, seq, d_model),), init=(max_len, d_model),
                    init_kwargs=init_kwargs, state={"embedding.weight": randn(gen, max_len, d_model)})

    cases = [
        case("x (2, 5, 8), max_len 10", 2, 5, 10, 8),
        case("x (3, 6, 4), seq_len = max_len = 6", 3, 6, 6, 4),
        case("a single position, x (2, 1, 4), max_len 4", 2, 1, 4, 4),
        case("x (4, 7, 16), max_len 32, dropout 0.1 (off in eval mode)", 4, 7, 32, 16, dropout=0.1),
    ]
    return with_float32(cases, {"x (2, 5, 8), max_len 10", "x (4, 7, 16), max_len 32, dropout 0.1 (off in eval mode)"})


LEARNED_HIDDEN = HiddenTests(
    function="LearnedPositionalEmbedding",
    reference="transformer_course.positional:LearnedPositionalEmbedding",
    make_cases=learned_cases,
    mistakes=(
        Mistake(_LearnedFromOne, "positions start at 0: the first token gets row 0, "
                                 "self.embedding(torch.arange(seq_len)), not arange(1, seq_len + 1)."),
        Mistake(_LearnedMultiplied,
                "you multiplied x by the position vectors; add them: x + self.embedding(positions)."),
        Mistake(_LearnedPositionsOnly, "you returned the position vectors alone; add them to x: "
                                       "x + self.embedding(positions)."),
        Mistake(_LearnedBatchAxis, "the positions are 0 .. seq_len - 1 with seq_len = x.shape[1]; you used "
                                   "x.shape[0], the batch size."),
    ),
)


HIDDEN_TESTS = (SINUSOIDAL_HIDDEN, ADD_POSITIONS_HIDDEN, PERMUTATION_HIDDEN, SIMILARITY_HIDDEN, LEARNED_HIDDEN)
