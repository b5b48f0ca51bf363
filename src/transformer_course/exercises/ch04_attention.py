"""Chapter 4 exercises: softmax, the scaled score matrix, scaled dot-product attention.

Visible checks use worked examples whose values come from the literature or from arithmetic a
student can do by hand (softmax([2, 1, 0]) ≈ [0.665, 0.245, 0.090]; a causal row of zeros
gives [0.5, 0.5, 0, 0, 0]) and properties (rows sum to 1, shapes). The hidden inputs, the
reference and the typical mistakes are the grader's side, ``grading.hidden_tests.ch04_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .base import Case, Exercise, ExerciseFailure
from .ch03_qkv import scores_shape_hint
from .compare import expect_close, expect_sums_to_one, fail
from .inputs import randn
from .library_calls import MHA_CALLS, SDPA_CALLS, SOFTMAX_CALLS

ASSIGNMENT = "04-attention"

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

    apart = torch.tensor([[1000.0, 1001.0], [-1000.0, -999.0]], dtype=torch.float64)
    (y,) = call("rows far apart: [[1000., 1001.], [-1000., -999.]]", apart)
    expect_close(y, [[0.2689, 0.7311], [0.2689, 0.7311]], what="softmax([[1000., 1001.], [-1000., -999.]])",
                 hint="each row is softmax([0, 1]) = [0.269, 0.731]: subtract each row's own maximum "
                      "along `dim`, x.amax(dim=dim, keepdim=True), not one maximum for the whole tensor.")
    return 6


SOFTMAX = Exercise(
    function="softmax",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=softmax_visible,
    # attention computes a softmax too: F.scaled_dot_product_attention with an identity for the
    # values and the rows as a mask is one (third round of the attack)
    forbidden=(SOFTMAX_CALLS, SDPA_CALLS, MHA_CALLS),
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
        fail("for q = [[1, 0], [0, 1]], k = [[1, 0], [0, 1], [1, 1]] you return Q Kᵀ = "
             "[[1, 0, 1], [0, 1, 1]] without scaling", "divide by sqrt(d_k) = sqrt(2).")
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


SCORES = Exercise(
    function="attention_scores",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=scores_visible,
    forbidden=(SDPA_CALLS,),
    shape_hint=scores_shape_hint,
)


# --------------------------------------------------------------------------- scaled_dot_product_attention


def sdpa_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(0)
    q, k, v = randn(gen, 2, 5, 8), randn(gen, 2, 7, 8), randn(gen, 2, 7, 3)
    out, w = call("the shapes: q (2, 5, 8), k (2, 7, 8), v (2, 7, 3)", q, k, v)
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

EXERCISES = (SOFTMAX, SCORES, SDPA)
