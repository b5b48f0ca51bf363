"""Chapter 4, grader side: references, hidden inputs and typical mistakes.

The typical mistakes are written as code (a softmax without the shift, attention with the mask
the wrong way round, ...) so that a message can name the one a student made; several of them
are one argument away from the right answer. That is why this module lives on the grader's side:
it is never imported by the student side or inside the grading sandbox.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...exercises.base import Case
from ...exercises.compare import fmt_index, fmt_number
from ...exercises.inputs import randn, with_float32
from ..hidden_spec import HiddenTests, Mistake
from .ch03_qkv import BATCHED_T


def _rows_hint(outputs: tuple, case: Case) -> str | None:
    """For softmax-like outputs: name a row that does not sum to 1 along the asked dim."""
    (y,) = outputs[:1]
    dim = case.kwargs.get("dim", case.args[1] if len(case.args) > 1 else -1)
    sums = y.detach().to(torch.float64).sum(dim=dim)
    bad = ~torch.isclose(sums, torch.ones_like(sums), atol=1e-4) | sums.isnan()
    if bad.any():
        index = tuple(bad.nonzero()[0].tolist())
        row = f"row {fmt_index(index)} along dim={dim} does not sum to 1 (sum = {fmt_number(sums[index].item())})"
        if sums[index].isnan():  # the cause, and the fix, not only the symptom
            return (f"{row}: NaN is inf / inf (an exp that overflowed) or 0 / 0 (a row whose every exp "
                    "underflowed to 0). Subtract each row's own maximum along `dim` before exp, "
                    "x - x.amax(dim=dim, keepdim=True): the largest entry of every row becomes exp(0) = 1.")
        return f"{row}: divide by the sum along `dim` only, exps / exps.sum(dim=dim, keepdim=True)."
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


SOFTMAX_HIDDEN = HiddenTests(
    function="softmax",
    reference="transformer_course.attention:softmax",
    make_cases=softmax_cases,
    mistakes=(
        # (The visible check's own words, so its message reads the same with the mistake named.)
        Mistake(_naive_softmax,
                "exp(1002) overflows to inf and inf/inf is NaN. Subtract the maximum "
                "(x - x.amax(dim, keepdim=True)) before exp: the result is unchanged."),
        # Written without torch.softmax: a mistake must fail as a mistake, not as a forbidden call.
        Mistake(lambda x, dim=-1: _stable_softmax(x, dim=-1),
                "you always normalise over the last dimension: use the `dim` argument."),
        Mistake(lambda x, dim=-1: _stable_softmax(x, dim=0),
                "you normalise over dimension 0: use the `dim` argument."),
        Mistake(lambda x, dim=-1: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),
                "you normalise over the whole tensor: sum along `dim` only, with keepdim=True."),
        Mistake(lambda x, dim=-1: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(dim=dim, keepdim=True),
                "you subtract the maximum of the whole tensor (x.max()), not each row's own: a row far "
                "below the overall maximum then underflows, exp(-2000) = 0 in every entry, and 0 / 0 is "
                "NaN. Subtract the maximum along `dim`: x - x.amax(dim=dim, keepdim=True)."),
    ),
    diagnose=_rows_hint,
)


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


SCORES_HIDDEN = HiddenTests(
    function="attention_scores",
    reference="transformer_course.attention:attention_scores",
    make_cases=scores_cases,
    mistakes=(
        Mistake(lambda q, k: _qk(q, k), "you forgot the scaling: divide by sqrt(d_k), Q Kᵀ / sqrt(d_k)."),
        Mistake(lambda q, k: q @ k.T / math.sqrt(q.shape[-1]), BATCHED_T),
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


HIDDEN_TESTS = (SOFTMAX_HIDDEN, SCORES_HIDDEN, SDPA_HIDDEN)
