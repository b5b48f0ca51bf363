"""Chapter 3, grader side: references, hidden inputs and typical mistakes.

The typical mistakes are written as code (one layer shared by q, k and v, K Qᵀ for Q Kᵀ, the
worst key instead of the best, a softmax over the queries, ...) so that a message can name the one
a student made; several of them are one argument away from a right answer (``_softmax`` is chapter
4's softmax, ``_qk`` the score matrix, the scaled scores chapter 4's ``attention_scores``). That is
why this module lives on the grader's side: it is never imported by the student side or inside the
grading sandbox.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...exercises.base import Case
from ...exercises.inputs import randn, with_float32
from ..hidden_spec import HiddenTests, Mistake


def projection_cases(gen: torch.Generator) -> list[Case]:
    from transformer_course.projections import QKVProjection  # the reference, loaded when grading

    def case(label: str, x_shape: tuple, d_k: int, d_v: int | None = None, bias: bool = True) -> Case:
        d_model = x_shape[-1]
        init = (d_model, d_k) if d_v is None else (d_model, d_k, d_v)
        # The reference's parameter names and shapes, built on the meta device: no memory, and
        # no draw from the global random generator (the student's notebook keeps its state).
        with torch.device("meta"):
            names = QKVProjection(*init, bias=bias).state_dict()
        # Weights of about the size nn.Linear's initialisation gives, drawn from the seed.
        state = {name: randn(gen, *t.shape, scale=1 / math.sqrt(d_model)) for name, t in names.items()}
        return Case(label, (randn(gen, *x_shape),), init=init, init_kwargs={"bias": bias}, state=state)

    cases = [
        case("x (2, 5, 8), QKVProjection(8, 4)", (2, 5, 8), 4),
        case("x (2, 5, 8), QKVProjection(8, 4, bias=False)", (2, 5, 8), 4, bias=False),
        case("x (3, 4, 6), d_k 3 and d_v 5", (3, 4, 6), 3, 5),
        case("x (3, 4, 6), d_k 3 and d_v 5, bias=False", (3, 4, 6), 3, 5, bias=False),
        case("a square projection, x (2, 3, 4), d_k 4", (2, 3, 4), 4),
        case("a single token, x (1, 1, 8)", (1, 1, 8), 2),
        case("wider than the input, x (2, 3, 3), d_k 8, d_v 6", (2, 3, 3), 8, 6),
    ]
    return with_float32(cases, {"x (2, 5, 8), QKVProjection(8, 4)", "x (3, 4, 6), d_k 3 and d_v 5"})


class _Projections(nn.Module):
    """The right layers with a wrong forward: each typical mistake below overrides forward."""

    def __init__(self, d_model: int, d_k: int, d_v: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d_model, d_k, bias=bias)
        self.k_proj = nn.Linear(d_model, d_k, bias=bias)
        self.v_proj = nn.Linear(d_model, d_k if d_v is None else d_v, bias=bias)


def _no_bias(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T


def _not_transposed(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    out = x @ layer.weight
    return out if layer.bias is None else out + layer.bias


class _OneSharedLayer(_Projections):
    def forward(self, x):
        q = self.q_proj(x)
        return q, q, q


class _KeysAndValuesSwapped(_Projections):
    def forward(self, x):
        return self.q_proj(x), self.v_proj(x), self.k_proj(x)


class _BiasLeftOut(_Projections):
    def forward(self, x):
        return _no_bias(self.q_proj, x), _no_bias(self.k_proj, x), _no_bias(self.v_proj, x)


class _WeightNotTransposed(_Projections):
    def forward(self, x):
        return _not_transposed(self.q_proj, x), _not_transposed(self.k_proj, x), _not_transposed(self.v_proj, x)


PROJECTIONS_HIDDEN = HiddenTests(
    function="QKVProjection",
    reference="transformer_course.projections:QKVProjection",
    make_cases=projection_cases,
    mistakes=(
        Mistake(_OneSharedLayer,
                "q, k and v all come from one layer: each needs its own layer, q = self.q_proj(x), "
                "k = self.k_proj(x), v = self.v_proj(x) (three nn.Linear objects, not one shared)."),
        Mistake(_KeysAndValuesSwapped,
                "k and v are swapped: return (q, k, v) in that order, k from k_proj and v from v_proj."),
        Mistake(_BiasLeftOut, "the biases are left out: add q_proj.bias (and the others'), or simply call "
                              "the layers: self.q_proj(x)."),
        Mistake(_WeightNotTransposed,
                "x @ weight instead of x @ weight.T: nn.Linear stores its weight as (out, in); simply "
                "call the layer, self.q_proj(x)."),
    ),
)


def scores_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("q (5, 4), k (7, 4)", (randn(gen, 5, 4), randn(gen, 7, 4))),
        Case("q (2, 5, 8), k (2, 7, 8)", (randn(gen, 2, 5, 8), randn(gen, 2, 7, 8))),
        Case("q (2, 6, 3), k (2, 6, 3) (L = S)", (randn(gen, 2, 6, 3), randn(gen, 2, 6, 3))),
        Case("q (2, 3, 4, 16), k (2, 3, 6, 16) (batch and heads)",
             (randn(gen, 2, 3, 4, 16), randn(gen, 2, 3, 6, 16))),
        Case("a single query, q (2, 1, 8), k (2, 5, 8)", (randn(gen, 2, 1, 8), randn(gen, 2, 5, 8))),
        Case("a single key, q (2, 4, 8), k (2, 1, 8)", (randn(gen, 2, 4, 8), randn(gen, 2, 1, 8))),
        Case("d_k = 1, q (2, 4, 1), k (2, 3, 1)", (randn(gen, 2, 4, 1), randn(gen, 2, 3, 1))),
        Case("large d_k = 512, q (3, 512), k (4, 512)", (randn(gen, 3, 512), randn(gen, 4, 512))),
    ]
    return with_float32(cases, {"q (2, 5, 8), k (2, 7, 8)", "q (2, 3, 4, 16), k (2, 3, 6, 16) (batch and heads)",
                                "large d_k = 512, q (3, 512), k (4, 512)"})


def _qk(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1)


# Right for a single sequence, raises for a batch; the visible checks' own words (ch03_qkv).
BATCHED_T = ("on a batched tensor, .T reverses *every* dimension; transpose only the last two: "
             "k.transpose(-2, -1).")

SCORES_HIDDEN = HiddenTests(
    function="score_matrix",
    reference="transformer_course.projections:score_matrix",
    make_cases=scores_cases,
    mistakes=(
        Mistake(lambda q, k: q @ k.T, BATCHED_T),
        Mistake(lambda q, k: k @ q.transpose(-2, -1),
                "you computed K Qᵀ (the transpose): row i belongs to query i and column j to key j, "
                "so q @ k.transpose(-2, -1)."),
        Mistake(lambda q, k: _qk(q, k) / math.sqrt(q.shape[-1]),
                "you divided by sqrt(d_k): this chapter's score matrix is the raw Q Kᵀ; the scaling comes in "
                "chapter 4."),
        Mistake(lambda q, k: torch.exp(_qk(q, k)) / torch.exp(_qk(q, k)).sum(-1, keepdim=True),
                "you applied a softmax: the score matrix is the raw Q Kᵀ."),
    ),
)


def _separated(q: torch.Tensor, k: torch.Tensor, gap: float = 1e-3) -> bool:
    """Whether every query's best score beats its second best by ``gap`` (argmax is stable)."""
    if k.shape[-2] < 2:
        return True
    top = (q @ k.transpose(-2, -1)).topk(2, dim=-1).values
    return bool((top[..., 0] - top[..., 1] > gap).all())


def lookup_cases(gen: torch.Generator) -> list[Case]:
    """Random q, k, v; redrawn (from the same generator) until no query has a near tie.

    A near tie would let float32 rounding pick a different key than the float64 reference,
    which is no fault of the student's.
    """

    def qkv(label: str, lead: tuple, L: int, S: int, d_k: int, d_v: int, scale: float = 1.0) -> Case:
        while True:
            q, k = randn(gen, *lead, L, d_k, scale=scale), randn(gen, *lead, S, d_k)
            if _separated(q, k):
                return Case(label, (q, k, randn(gen, *lead, S, d_v)))

    cases = [
        qkv("q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)", (2,), 5, 7, 8, 3),
        qkv("batch and heads, q (2, 3, 4, 16), k/v length 6, d_v 5", (2, 3), 4, 6, 16, 5),
        qkv("one query, L = 1", (2,), 1, 6, 8, 4),
        qkv("one key, S = 1", (2,), 4, 1, 8, 4),
        qkv("no batch dimension, q (4, 8), k/v (6, 8)", (), 4, 6, 8, 8),
        qkv("L = S = 6 (self-attention), d_k 4, d_v 4", (2,), 6, 6, 4, 4),
        qkv("large scores (queries 3 times longer)", (2,), 4, 5, 16, 3, scale=3.0),
    ]
    return with_float32(cases, {"q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)",
                                "batch and heads, q (2, 3, 4, 16), k/v length 6, d_v 5",
                                "large scores (queries 3 times longer)"})


def _one_hot_lookup(scores: torch.Tensor, v: torch.Tensor, worst: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    best = scores.argmin(dim=-1) if worst else scores.argmax(dim=-1)
    weights = nn.functional.one_hot(best, scores.shape[-1]).to(scores.dtype)
    return weights @ v, weights


def _softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The mistakes' softmax, written out: a mistake must fail as a mistake, not as a forbidden call."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _soft(scores: torch.Tensor, v: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    weights = _softmax(scores, dim=dim)
    return weights @ v, weights


HARD_HIDDEN = HiddenTests(
    function="hard_lookup",
    reference="transformer_course.projections:hard_lookup",
    make_cases=lookup_cases,
    mistakes=(
        Mistake(lambda q, k, v: _one_hot_lookup(_qk(q, k), v, worst=True),
                "each query picked its worst key (argmin): the best match has the largest score, "
                "scores.argmax(dim=-1)."),
        Mistake(lambda q, k, v: _one_hot_lookup(_qk(q, k), k),
                "you handed over the best key itself: a lookup returns the key's value, weights @ v."),
        Mistake(lambda q, k, v: _soft(_qk(q, k), v),
                "you returned the soft lookup: a hard lookup puts all the weight on the best key, "
                "one_hot(scores.argmax(dim=-1), S)."),
    ),
)


SOFT_HIDDEN = HiddenTests(
    function="soft_lookup",
    reference="transformer_course.projections:soft_lookup",
    make_cases=lookup_cases,
    mistakes=(
        Mistake(lambda q, k, v: _soft(_qk(q, k) / math.sqrt(q.shape[-1]), v),
                "you scaled the scores by 1/sqrt(d_k): this chapter's soft lookup is softmax(Q Kᵀ) V "
                "(the scaling is chapter 4's)."),
        Mistake(lambda q, k, v: _soft(_qk(q, k), v, dim=-2),
                "the softmax runs over the queries: each query's row of weights (over the keys, "
                "dim=-1) must sum to 1, torch.softmax(scores, dim=-1)."),
        Mistake(lambda q, k, v: _soft(_qk(q, k), k),
                "you mixed the keys: a lookup hands over the values, weights @ v."),
        Mistake(lambda q, k, v: (_qk(q, k) @ v, _qk(q, k)),
                "the weights are the raw scores: apply torch.softmax(scores, dim=-1) first."),
    ),
)


HIDDEN_TESTS = (PROJECTIONS_HIDDEN, SCORES_HIDDEN, HARD_HIDDEN, SOFT_HIDDEN)
