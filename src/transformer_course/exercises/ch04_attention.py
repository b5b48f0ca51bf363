"""Chapter 4 exercises: softmax, the scaled score matrix, scaled dot-product attention.

Visible checks use worked examples whose values come from the literature or from arithmetic a
student can do by hand (softmax([2, 1, 0]) ≈ [0.665, 0.245, 0.090]; a causal row of zeros
gives [0.5, 0.5, 0, 0, 0]) and properties (rows sum to 1, shapes). Hidden checks compare with
the reference on seeded random inputs; the typical mistakes below are recognised by running
them on the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure
from .ch03_qkv import scores_shape_hint
from .compare import expect_close, expect_sums_to_one, fmt_index, fmt_number
from .inputs import randn, with_float32
from .library_calls import MHA_CALLS, SDPA_CALLS, SOFTMAX_CALLS

ASSIGNMENT = "04-attention"

# --------------------------------------------------------------------------- helpers


def _rows_hint(outputs: tuple, case: Case) -> str | None:
    """For softmax-like outputs: name a row that does not sum to 1 along the asked dim."""
    (y,) = outputs[:1]
    dim = case.kwargs.get("dim", case.args[1] if len(case.args) > 1 else -1)
    sums = y.detach().to(torch.float64).sum(dim=dim)
    bad = ~torch.isclose(sums, torch.ones_like(sums), atol=1e-4) | sums.isnan()
    if bad.any():
        index = tuple(bad.nonzero()[0].tolist())
        return (
            f"row {fmt_index(index)} along dim={dim} does not sum to 1 "
            f"(sum = {fmt_number(sums[index].item())})"
        )
    return None


def _attend(
    scores: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    masked_value: float = float("-inf"),
    softmax_dim: int = -1,
    invert_mask: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention from given scores, with knobs that reproduce typical mistakes."""
    if mask is not None:
        blocked = mask if invert_mask else ~mask
        scores = scores.masked_fill(blocked, masked_value)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None:
        weights = weights.masked_fill(blocked, 0.0)  # zero the rows with nothing to attend to
    return weights @ v, weights


def _qk(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1)


# --------------------------------------------------------------------------- softmax


def softmax_visible(call: Callable[..., tuple]) -> int:
    """Worked examples and properties of softmax; returns how many checks ran."""
    __tracebackhide__ = True
    x = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    (y,) = call("softmax([2., 1., 0.])", x)
    expect_close(y, [0.665, 0.245, 0.090], what="softmax([2., 1., 0.])",
                 hint="softmax(x)_i = exp(x_i) / sum_j exp(x_j).")

    batch = torch.linspace(-3, 3, 2 * 3 * 5, dtype=torch.float64).reshape(2, 3, 5)
    (y,) = call("a (2, 3, 5) tensor", batch)
    if tuple(y.shape) != (2, 3, 5):
        raise ExerciseFailure(
            f"softmax of a (2, 3, 5) tensor has shape {tuple(y.shape)}, expected (2, 3, 5): "
            "softmax keeps the shape; use keepdim=True in max and sum."
        )
    expect_sums_to_one(y, -1, "softmax of a (2, 3, 5) tensor",
                       "divide by the sum over `dim`, with keepdim=True so it broadcasts.")
    if (y < 0).any():
        raise ExerciseFailure("softmax returned negative values: exp(x) is never negative.")

    (y0,) = call("softmax(x, dim=0)", batch, dim=0)
    expect_sums_to_one(y0, 0, "softmax(x, dim=0) of a (2, 3, 5) tensor",
                       "use the `dim` argument in every max and sum, not a fixed -1.")

    big = torch.tensor([1002.0, 1001.0, 1000.0], dtype=torch.float64)
    (y,) = call("softmax([1002., 1001., 1000.])", big)
    expect_close(y, [0.665, 0.245, 0.090], what="softmax([1002., 1001., 1000.])",
                 hint="exp(1002) overflows to inf and inf/inf is NaN. Subtract the maximum "
                      "(x - x.amax(dim, keepdim=True)) before exp: the result is unchanged.")
    return 5


def softmax_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("a vector of length 6", (randn(gen, 6),)),
        Case("a (3, 5) matrix", (randn(gen, 3, 5),)),
        Case("a (2, 3, 4, 6) tensor", (randn(gen, 2, 3, 4, 6, scale=3.0),)),
        Case("a (4, 3) matrix with dim=0", (randn(gen, 4, 3),), {"dim": 0}),
        Case("a (2, 5, 3) tensor with dim=1", (randn(gen, 2, 5, 3),), {"dim": 1}),
        Case("a (3, 1) matrix (rows of length 1)", (randn(gen, 3, 1),)),
        Case("large inputs (about ±1000)", (randn(gen, 4, 7, scale=1000.0),)),
        Case("very negative inputs (about -1000)", (randn(gen, 3, 5) - 1000.0,)),
    ]
    with_inf = randn(gen, 3, 6)
    with_inf[0, 2:] = float("-inf")
    with_inf[2, 0] = float("-inf")
    cases.append(Case("rows with some -inf entries (masked scores)", (with_inf,)))
    return with_float32(cases, {"a (3, 5) matrix", "a (2, 3, 4, 6) tensor",
                                "large inputs (about ±1000)", "a (4, 3) matrix with dim=0"})


def _stable_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    shifted = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return shifted / shifted.sum(dim=dim, keepdim=True)


def _naive_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)


SOFTMAX = Exercise(
    function="softmax",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=softmax_visible,
    forbidden=(SOFTMAX_CALLS,),
)
SOFTMAX_HIDDEN = HiddenTests(
    function="softmax",
    reference="transformer_course.attention:softmax",
    make_cases=softmax_cases,
    mistakes=(
        Mistake(_naive_softmax,
                "exp overflows for large inputs (exp(1000) = inf, and inf/inf = NaN): subtract "
                "the maximum along `dim` before exp."),
        # Written without torch.softmax: a mistake must fail as a mistake, not as a forbidden call.
        Mistake(lambda x, dim=-1: _stable_softmax(x, dim=-1),
                "you always normalise over the last dimension: use the `dim` argument."),
        Mistake(lambda x, dim=-1: _stable_softmax(x, dim=0),
                "you normalise over dimension 0: use the `dim` argument."),
        Mistake(lambda x, dim=-1: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),
                "you normalise over the whole tensor: sum along `dim` only, with keepdim=True."),
    ),
    diagnose=_rows_hint,
)


# --------------------------------------------------------------------------- attention_scores


def scores_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    q = torch.zeros(2, 5, 4, dtype=torch.float64)
    k = torch.zeros(2, 7, 4, dtype=torch.float64)
    (s,) = call("q (2, 5, 4) and k (2, 7, 4)", q, k)
    if tuple(s.shape) != (2, 5, 7):
        hint = scores_shape_hint(tuple(s.shape), (2, 5, 7), Case("", (q, k)))
        raise ExerciseFailure(
            f"scores have shape {tuple(s.shape)}, expected (2, 5, 7) = (batch, L, S)"
            + (f": {hint}" if hint else ".")
        )
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    (s,) = call("the worked example", q, k)
    r = 1 / math.sqrt(2)
    unscaled = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    if torch.allclose(s, unscaled):
        raise ExerciseFailure(
            "for q = [[1, 0], [0, 1]], k = [[1, 0], [0, 1], [1, 1]] you return Q Kᵀ = "
            "[[1, 0, 1], [0, 1, 1]] without scaling: divide by sqrt(d_k) = sqrt(2)."
        )
    expect_close(s, [[r, 0.0, r], [0.0, r, r]], what="scores for q = [[1, 0], [0, 1]], "
                 "k = [[1, 0], [0, 1], [1, 1]]", hint="Q Kᵀ / sqrt(d_k), with d_k = q.shape[-1] = 2.")
    q4 = torch.ones(2, 3, 4, 8, dtype=torch.float64)
    k4 = torch.ones(2, 3, 6, 8, dtype=torch.float64)
    (s,) = call("q (2, 3, 4, 8) and k (2, 3, 6, 8)", q4, k4)
    if tuple(s.shape) != (2, 3, 4, 6):
        hint = scores_shape_hint(tuple(s.shape), (2, 3, 4, 6), Case("", (q4, k4)))
        raise ExerciseFailure(
            f"with batch and head dimensions, scores have shape {tuple(s.shape)}, expected "
            f"(2, 3, 4, 6)" + (f": {hint}" if hint else ".")
        )
    expect_close(s, torch.full((2, 3, 4, 6), 8 / math.sqrt(8)), what="scores of all-ones q, k "
                 "with d_k = 8", hint="each entry is 8 / sqrt(8) = sqrt(8).")
    return 4


def scores_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("q (5, 4), k (7, 4)", (randn(gen, 5, 4), randn(gen, 7, 4))),
        Case("q (2, 5, 8), k (2, 7, 8)", (randn(gen, 2, 5, 8), randn(gen, 2, 7, 8))),
        Case("q (2, 3, 4, 16), k (2, 3, 6, 16) (batch and heads)",
             (randn(gen, 2, 3, 4, 16), randn(gen, 2, 3, 6, 16))),
        Case("a single query, q (2, 1, 8), k (2, 5, 8)", (randn(gen, 2, 1, 8), randn(gen, 2, 5, 8))),
        Case("a single key, q (2, 4, 8), k (2, 1, 8)", (randn(gen, 2, 4, 8), randn(gen, 2, 1, 8))),
        Case("large d_k = 512, q (3, 512), k (4, 512)", (randn(gen, 3, 512), randn(gen, 4, 512))),
        Case("q (2, 6, 3), k (2, 6, 3) (L = S)", (randn(gen, 2, 6, 3), randn(gen, 2, 6, 3))),
    ]
    return with_float32(cases, {"q (2, 5, 8), k (2, 7, 8)",
                                "q (2, 3, 4, 16), k (2, 3, 6, 16) (batch and heads)",
                                "large d_k = 512, q (3, 512), k (4, 512)"})


SCORES = Exercise(
    function="attention_scores",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=scores_visible,
    forbidden=(SDPA_CALLS,),
    shape_hint=scores_shape_hint,
)
SCORES_HIDDEN = HiddenTests(
    function="attention_scores",
    reference="transformer_course.attention:attention_scores",
    make_cases=scores_cases,
    mistakes=(
        Mistake(lambda q, k: _qk(q, k), "you forgot the scaling: divide Q Kᵀ by sqrt(d_k)."),
        Mistake(lambda q, k: _qk(q, k) / q.shape[-1],
                "you divided by d_k; the scale is 1/sqrt(d_k)."),
        Mistake(lambda q, k: _qk(q, k) * math.sqrt(q.shape[-1]),
                "you multiplied by sqrt(d_k); divide instead."),
        Mistake(lambda q, k: _qk(q, k) / math.sqrt(k.shape[-2]),
                "you divided by sqrt of the number of keys S; d_k is the last dimension, "
                "q.shape[-1]."),
        Mistake(lambda q, k: _qk(q, k) / math.sqrt(q.shape[-2]),
                "you divided by sqrt of the number of queries L; d_k is the last dimension, "
                "q.shape[-1]."),
    ),
)


# --------------------------------------------------------------------------- scaled_dot_product_attention


def sdpa_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(0)
    q, k, v = randn(gen, 2, 5, 8), randn(gen, 2, 7, 8), randn(gen, 2, 7, 3)
    out, w = call("q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)", q, k, v)
    for got, want, name in ((w, (2, 5, 7), "weights"), (out, (2, 5, 3), "output")):
        if tuple(got.shape) != want:
            hint = scores_shape_hint(tuple(got.shape), want, Case("", (q, k))) if name == "weights" else (
                "output = weights @ v, (batch, L, S) @ (batch, S, d_v) -> (batch, L, d_v)."
            )
            raise ExerciseFailure(
                f"{name} has shape {tuple(got.shape)}, expected {want}" + (f": {hint}" if hint else ".")
            )
    expect_sums_to_one(w, -1, "attention weights", "apply softmax over the last dimension (the keys).")

    # softmax([2, 1, 0]) again: q·k / sqrt(4) gives the scores [2, 1, 0].
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[2.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0, 0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    out, w = call("the worked example (scores [2, 1, 0])", q, k, v)
    expect_close(w, [[0.665, 0.245, 0.090]], what="weights for scores q·kᵀ/sqrt(4) = [2, 1, 0]",
                 hint="weights = softmax(Q Kᵀ / sqrt(d_k)) with d_k = 4.")
    expect_close(out, [[0.665, 0.245]], what="output for that example",
                 hint="output = weights @ v.")

    # The causal worked example: equal scores, causal mask; row 1 is softmax([0, 0, -inf, -inf, -inf]).
    z = torch.zeros(5, 4, dtype=torch.float64)
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    out, w = call("equal scores with a causal mask", z, z, torch.eye(5, dtype=torch.float64), mask=causal)
    expect_close(w[1], [0.5, 0.5, 0.0, 0.0, 0.0], what="row 1 of the causally masked weights",
                 hint="mask=True means 'may attend': put -inf where the mask is False "
                      "(scores.masked_fill(~mask, float('-inf'))) before the softmax.")
    expect_close(w[4], [0.2] * 5, what="row 4 of the causally masked weights",
                 hint="the last query may attend to all 5 keys equally.")

    # A query that may attend to nothing: no NaN, weights and output 0.
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    nothing[0, :2] = True
    out, w = call("a mask whose row 1 is all False", z[:2], z[:3], torch.ones(3, 2, dtype=torch.float64),
                  mask=nothing)
    if torch.isnan(w).any() or torch.isnan(out).any():
        raise ExerciseFailure(
            "a query whose mask row is all False gives NaN (softmax of all -inf is 0/0). Return "
            "weights 0 there: after the softmax, weights.masked_fill(~mask, 0.0)."
        )
    expect_close(w[1], [0.0, 0.0, 0.0], what="weights of a query that may attend to nothing",
                 hint="after the softmax, set the masked places to 0: weights.masked_fill(~mask, 0.0).")
    return 6


def sdpa_cases(gen: torch.Generator) -> list[Case]:
    def qkv(batch: tuple, L: int, S: int, d_k: int, d_v: int, scale: float = 1.0):
        return (randn(gen, *batch, L, d_k, scale=scale), randn(gen, *batch, S, d_k, scale=scale),
                randn(gen, *batch, S, d_v))

    pad = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    pad[0, ..., 4:] = False  # sequence 0 has 4 real tokens
    pad[2] = False  # sequence 2 is all padding: nothing to attend to
    random_mask = torch.rand(2, 4, 5, generator=gen) > 0.4
    random_mask[1, 2] = False  # one query with nothing to attend to
    random_mask[0, :, 0] = True
    cases = [
        Case("q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)", qkv((2,), 5, 7, 8, 3)),
        Case("batch and heads, q (2, 3, 4, 16), k/v length 6, d_v 5", qkv((2, 3), 4, 6, 16, 5)),
        Case("one query, L = 1", qkv((2,), 1, 6, 8, 4)),
        Case("one key, S = 1", qkv((2,), 4, 1, 8, 4)),
        Case("no batch dimension, q (4, 8), k/v (6, 8)", qkv((), 4, 6, 8, 8)),
        Case("large scores (|q·k|/sqrt(d_k) in the hundreds)", qkv((2,), 4, 5, 16, 3, scale=8.0)),
        Case("a causal (6, 6) mask", qkv((2,), 6, 6, 8, 4),
             {"mask": torch.tril(torch.ones(6, 6, dtype=torch.bool))}),
        Case("a padding mask (3, 1, 1, 6) with a fully padded sequence", qkv((3, 2), 6, 6, 8, 4),
             {"mask": pad}),
        Case("a random (2, 4, 5) mask with a row that allows nothing", qkv((2,), 4, 5, 8, 3),
             {"mask": random_mask}),
    ]
    return with_float32(cases, {"q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)",
                                "batch and heads, q (2, 3, 4, 16), k/v length 6, d_v 5",
                                "a causal (6, 6) mask"})


def _sdpa_mistake(scale: Callable[[torch.Tensor], float], **knobs):
    def attention(q, k, v, mask=None):
        return _attend(_qk(q, k) * scale(q), v, mask, **knobs)

    return attention


SDPA = Exercise(
    function="scaled_dot_product_attention",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=sdpa_visible,
    output_names=("output", "weights"),
    uses=("softmax", "attention_scores"),
    forbidden=(SDPA_CALLS, MHA_CALLS),
    shape_hint=lambda actual, expected, case: scores_shape_hint(actual, expected, case)
    if len(expected) >= 2 and expected[-1] == case.args[1].shape[-2] else None,
)
SDPA_HIDDEN = HiddenTests(
    function="scaled_dot_product_attention",
    reference="transformer_course.attention:scaled_dot_product_attention",
    make_cases=sdpa_cases,
    mistakes=(
        Mistake(_sdpa_mistake(lambda q: 1.0), "you forgot to scale the scores by 1/sqrt(d_k)."),
        Mistake(_sdpa_mistake(lambda q: 1.0 / q.shape[-1]),
                "you scaled by 1/d_k; the scale is 1/sqrt(d_k)."),
        Mistake(_sdpa_mistake(lambda q: 1.0 / math.sqrt(q.shape[-1]), softmax_dim=-2),
                "softmax runs over the wrong dimension: each query's row (the last dimension, "
                "over keys) must sum to 1."),
        Mistake(_sdpa_mistake(lambda q: 1.0 / math.sqrt(q.shape[-1]), invert_mask=True),
                "your mask is the wrong way round: True means 'may attend', so block where the "
                "mask is False (masked_fill(~mask, -inf))."),
        Mistake(_sdpa_mistake(lambda q: 1.0 / math.sqrt(q.shape[-1]), masked_value=0.0),
                "masked scores must become -inf before the softmax, not 0: exp(0) = 1 still "
                "gives them weight."),
    ),
)

EXERCISES = (SOFTMAX, SCORES, SDPA)

HIDDEN_TESTS = (SOFTMAX_HIDDEN, SCORES_HIDDEN, SDPA_HIDDEN)
