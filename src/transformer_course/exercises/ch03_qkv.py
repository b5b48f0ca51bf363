"""Chapter 3 exercises: the three projections, the score matrix, hard and soft lookups.

Visible checks use worked examples a student can redo by hand (small integer weights and
tokens; a dictionary of three keys; softmax([2, 1, 0]) ≈ [0.665, 0.245, 0.090]) and
properties (shapes, one-hot rows, rows summing to 1, the soft lookup turning hard as the
scores grow). The typical mistakes they name are recognised by their numbers on those examples,
worked out by hand as well. The hidden inputs, the reference and the typical mistakes as code are
the grader's side, ``grading.hidden_tests.ch03_qkv``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator

import torch

from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import expect_close, expect_sums_to_one, fmt_index
from .inputs import randn
from .library_calls import MHA_CALLS, SDPA_CALLS

ASSIGNMENT = "03-qkv"

# nn.MultiheadAttention computes its three projections with these private helpers of
# torch.nn.functional; calling one would do the projections exercise in a single line.
IN_PROJECTION_CALLS = Forbidden(
    label="torch.nn.functional._in_projection / _in_projection_packed (MultiheadAttention's own projections)",
    python_functions=frozenset(
        {("torch/nn/functional.py", "_in_projection"), ("torch/nn/functional.py", "_in_projection_packed")}
    ),
)


def _raise(message: str) -> None:
    __tracebackhide__ = True
    raise ExerciseFailure(message)


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return tuple(a.shape) == tuple(b.shape) and torch.allclose(
        a.detach().to(torch.float64), b.detach().to(torch.float64), atol=1e-6
    )


# --------------------------------------------------------------------------- QKVProjection

# The worked examples, written as the paper writes them (Q = X W_Q, W_Q of shape
# (d_model, d_k)); nn.Linear stores the transpose, which is what goes into the state dicts.
_X1 = [[[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]]  # (batch 1, seq 2, d_model 3)
_W1 = {
    "q": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],  # (d_model 3, d_k 2)
    "k": [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]],
    "v": [[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]],  # (d_model 3, d_v 2)
}
_EXPECTED1 = {  # X W, by hand
    "q": [[[4.0, 5.0], [0.0, 1.0]]],
    "k": [[[2.0, 1.0], [1.0, 0.0]]],
    "v": [[[2.0, 9.0], [0.0, 0.0]]],
}
# A square example with biases: nn.Linear's weight W (out, in) and bias b give x Wᵀ + b.
_X2 = [[[1.0, 1.0], [2.0, 0.0]]]
_LINEAR2 = {
    "q": ([[1.0, 2.0], [0.0, 1.0]], [1.0, -1.0]),
    "k": ([[0.0, 1.0], [2.0, 0.0]], [0.5, 0.0]),
    "v": ([[1.0, 0.0], [1.0, 2.0]], [0.0, 1.0]),
}  # no weight is symmetric, so x @ W and x @ Wᵀ differ
_EXPECTED2 = {
    "q": [[[4.0, 0.0], [3.0, -1.0]]],
    "k": [[[1.5, 2.0], [0.5, 4.0]]],
    "v": [[[1.0, 4.0], [2.0, 3.0]]],
}
# The usual slips on it, by hand too: x Wᵀ without the bias; x W, with and without the bias.
_WITHOUT_BIAS2 = {
    "q": [[[3.0, 1.0], [2.0, 0.0]]],
    "k": [[[1.0, 2.0], [0.0, 4.0]]],
    "v": [[[1.0, 3.0], [2.0, 2.0]]],
}
_NOT_TRANSPOSED2 = {
    "q": ([[[2.0, 2.0], [3.0, 3.0]]], [[[1.0, 3.0], [2.0, 4.0]]]),
    "k": ([[[2.5, 1.0], [0.5, 2.0]]], [[[2.0, 1.0], [0.0, 2.0]]]),
    "v": ([[[2.0, 3.0], [2.0, 1.0]]], [[[2.0, 2.0], [2.0, 0.0]]]),
}


def _state(linear: dict[str, tuple[list, list | None]]) -> dict[str, torch.Tensor]:
    """A QKVProjection state dict from ``{"q": (weight (out, in), bias or None), ...}``."""
    state = {}
    for name, (weight, bias) in linear.items():
        state[f"{name}_proj.weight"] = torch.tensor(weight, dtype=torch.float64)
        if bias is not None:
            state[f"{name}_proj.bias"] = torch.tensor(bias, dtype=torch.float64)
    return state


def _names_after(message: str, marker: str) -> set[str]:
    """The parameter names listed after ``marker`` (``"missing: "``...) in a build message."""
    line = message.partition(marker)[2].split("\n")[0]
    return {name.strip() for name in line.split(",") if name.strip() not in ("", "-")}


def _build_hint(message: str) -> str | None:
    """A hint for a module that could not be built or given the example's weights."""
    missing, unexpected = _names_after(message, "missing: "), _names_after(message, "unexpected: ")
    only_biases = all(name.endswith(".bias") for name in missing | unexpected)
    if unexpected and not missing and only_biases:
        return ("this example builds QKVProjection(..., bias=False) and your layers still have "
                "biases: pass bias=bias on to each nn.Linear.")
    if missing and not unexpected and only_biases:
        return ("this example builds QKVProjection(..., bias=True) and your layers have no bias: "
                "pass bias=bias on to each nn.Linear (nn.Linear's own default is bias=True).")
    if "v_proj.weight` has shape" in message:
        return "v_proj maps d_model to d_v (d_v = d_k when d_v is None): nn.Linear(d_model, d_v)."
    if "cannot be multiplied" in message:
        return ("nn.Linear stores its weight as (out, in) = (d_k, d_model): x @ weight.T (plus the "
                "bias), or simply call the layer, self.q_proj(x).")
    if "unexpected keyword argument 'bias'" in message:
        return "the signature is __init__(self, d_model, d_k, d_v=None, bias=True)."
    return None


@contextlib.contextmanager
def _seeded_initial_weights(seed: int = 0) -> Iterator[None]:
    """nn.Linear's random initial weights drawn from ``seed``, the global generator left as it was.

    Building a module draws its initial weights even when the example then loads its own. Drawn
    this way, a module built without given weights computes the same on every run (the grader side
    records what the reference returns on every visible call), and checking leaves the random
    state of the student's notebook alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _call_projection(call: Callable[..., tuple], case: Case) -> tuple:
    """``call(case)``, with seeded initial weights (see :func:`_seeded_initial_weights`) and a hint
    added to the usual ways of building the module wrongly."""
    __tracebackhide__ = True
    try:
        with _seeded_initial_weights():
            return call(case)
    except ExerciseFailure as failure:
        hint = _build_hint(str(failure))
        if hint is None:
            raise
        raise ExerciseFailure(f"{failure}\n  Hint: {hint}") from None


def _expect_projection_shapes(outputs: tuple, x_shape: tuple, d_k: int, d_v: int, label: str) -> None:
    __tracebackhide__ = True
    batch, seq, d_model = x_shape
    for out, name, width in zip(outputs, "qkv", (d_k, d_k, d_v)):
        want = (batch, seq, width)
        if tuple(out.shape) == want:
            continue
        hint = f"{name}_proj maps d_model = {d_model} to {'d_v' if name == 'v' else 'd_k'} = {width}"
        if name == "v" and tuple(out.shape)[-1:] == (d_k,):
            hint += ": build it as nn.Linear(d_model, d_v), with d_v = d_k only when d_v is None"
        elif tuple(out.shape)[-1:] == (d_model,) and d_model != width:
            hint += f"; your {name} still has width d_model: did you return x, or build the layer the wrong size?"
        _raise(f"{name} has shape {tuple(out.shape)} on {label}, expected {want} = (batch, seq, "
               f"{'d_v' if name == 'v' else 'd_k'}).\n  Hint: {hint}.")


def _expect_three_different(outputs: tuple, label: str) -> None:
    __tracebackhide__ = True
    q, k, v = outputs
    if _equal(q, k) and _equal(k, v):
        _raise(f"q, k and v are all the same on {label}, though the three layers hold different "
               "weights.\n  Hint: each needs its own layer: q = self.q_proj(x), k = self.k_proj(x), "
               "v = self.v_proj(x) (three nn.Linear objects, not one shared).")
    for (a, b), (x, y) in (((q, k), "qk"), ((k, v), "kv"), ((q, v), "qv")):
        if _equal(a, b):
            _raise(f"{x} and {y} are the same on {label}, though {x}_proj and {y}_proj hold different "
                   f"weights.\n  Hint: {x}_proj and {y}_proj must be two separate nn.Linear objects "
                   f"(self.{y}_proj = self.{x}_proj would share one); {x} = self.{x}_proj(x) and "
                   f"{y} = self.{y}_proj(x).")


def projection_visible(call: Callable[..., tuple]) -> int:
    """Two worked examples by hand, the shapes, and d_v different from d_k."""
    __tracebackhide__ = True
    # 1. A square example with biases: here x @ W and a missing bias run, and give other numbers.
    x2 = torch.tensor(_X2, dtype=torch.float64)
    label = "the worked example with biases (d_model 2, d_k 2, bias=True)"
    outputs = _call_projection(call, Case(label, (x2,), init=(2, 2), init_kwargs={"bias": True},
                                          state=_state(_LINEAR2)))
    _expect_projection_shapes(outputs, (1, 2, 2), 2, 2, label)
    _expect_three_different(outputs, label)
    if _equal(outputs[1], torch.tensor(_EXPECTED2["v"])) and _equal(outputs[2], torch.tensor(_EXPECTED2["k"])):
        _raise(f"k and v are swapped on {label}.\n  Hint: return (q, k, v) in that order, k from "
               "k_proj and v from v_proj.")
    for out, name in zip(outputs, "qkv"):
        if _equal(out, torch.tensor(_WITHOUT_BIAS2[name])):
            _raise(f"{name} on {label} is x @ weight.T without the bias.\n  Hint: add "
                   f"{name}_proj.bias, or simply call the layer: self.{name}_proj(x).")
        if any(_equal(out, torch.tensor(slip)) for slip in _NOT_TRANSPOSED2[name]):
            _raise(f"{name} on {label} is x @ weight (+ bias): nn.Linear stores its weight as "
                   f"(out, in), so the product is x @ weight.T.\n  Hint: simply call the layer, "
                   f"self.{name}_proj(x).")
        expect_close(out, _EXPECTED2[name], what=f"{name} on {label}",
                     hint=f"{name} = self.{name}_proj(x) = x @ weight.T + bias.")

    # 2. Hand-made weights without biases, written as W (d_model, d_k); the layers hold Wᵀ.
    x1 = torch.tensor(_X1, dtype=torch.float64)
    state1 = _state({name: (torch.tensor(w).T.tolist(), None) for name, w in _W1.items()})
    label = "the worked example (d_model 3, d_k 2, bias=False)"
    outputs = _call_projection(call, Case(label, (x1,), init=(3, 2), init_kwargs={"bias": False}, state=state1))
    _expect_projection_shapes(outputs, (1, 2, 3), 2, 2, label)
    _expect_three_different(outputs, label)
    for out, name in zip(outputs, "qkv"):
        expect_close(out, _EXPECTED1[name], what=f"{name} on {label}",
                     hint=f"{name} = self.{name}_proj(x), which is x @ {name}_proj.weight.T.")

    # 3. Shapes: d_v different from d_k, and d_v left out (then d_v = d_k). No weights are given,
    # so that a layer of the wrong size is reported by the shape of its output.
    x3 = torch.linspace(-1, 1, 2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)
    label = "x (2, 3, 4) with QKVProjection(4, 3, 5)"
    outputs = _call_projection(call, Case(label, (x3,), init=(4, 3, 5)))
    _expect_projection_shapes(outputs, (2, 3, 4), 3, 5, label)
    label = "x (2, 3, 4) with QKVProjection(4, 3) (d_v left out)"
    outputs = _call_projection(call, Case(label, (x3,), init=(4, 3)))
    _expect_projection_shapes(outputs, (2, 3, 4), 3, 3, label)
    return 4


def _projection_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    d_model = case.args[0].shape[-1]
    if actual[-1:] == (d_model,) and expected[-1] != d_model:
        return "the last dimension is still d_model: each projection maps d_model to d_k (or d_v)."
    d_k = case.init[1]
    d_v = case.init[2] if len(case.init) > 2 else d_k
    if actual[-1:] == (d_k,) and expected[-1] == d_v:
        return "v has width d_k: v_proj maps d_model to d_v (nn.Linear(d_model, d_v))."
    return None


PROJECTIONS = Exercise(
    function="QKVProjection",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=projection_visible,
    is_module=True,
    output_names=("q", "k", "v"),
    forbidden=(MHA_CALLS, IN_PROJECTION_CALLS),
    shape_hint=_projection_shape_hint,
)


# --------------------------------------------------------------------------- score_matrix


def scores_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    """Recognise the usual shape slips in Q Kᵀ (chapter 4's scaled scores use it too)."""
    q, k = case.args[0], case.args[1]
    L, S, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
    if actual[-2:] == (S, L) and L != S:
        return "rows must be queries and columns keys: did you compute K Qᵀ instead of Q Kᵀ?"
    if actual[-2:] == (L, L) and L != S:
        return "the last dimension should be S (one column per key): did you use q twice?"
    if actual[-2:] == (S, S) and L != S:
        return "the rows should be the L queries: did you use k twice?"
    if actual[-1:] == (d_k,) and d_k != S:
        return "did you multiply by K instead of Kᵀ? Use k.transpose(-2, -1)."
    if len(actual) == len(expected) and actual != expected and sorted(actual) == sorted(expected):
        return ("the dimensions are scrambled: transpose only the last two (k.transpose(-2, -1)); "
                "k.T reverses every dimension of a batched tensor.")
    if len(actual) < len(expected):
        return "the scores lost a dimension: a score needs a sum over d_k only, q @ k.transpose(-2, -1)."
    return None


def _with_transpose_hint(call: Callable[..., tuple]) -> Callable[..., tuple]:
    """``call``, adding a hint when the student's failing line transposes with ``.T``."""

    def checked(*args, **kwargs) -> tuple:
        __tracebackhide__ = True
        try:
            return call(*args, **kwargs)
        except ExerciseFailure as failure:
            line = str(failure).partition("in your line: ")[2]
            if not re.search(r"\.T\b", line) or "Likely mistake:" in line:  # .T itself, not .Tensor or .transpose
                raise
            raise ExerciseFailure(f"{failure}\n  Hint: on a batched tensor, .T reverses *every* "
                                  "dimension; transpose only the last two: k.transpose(-2, -1).") from None

    return checked


def _expect_scores_shape(s: torch.Tensor, want: tuple, q: torch.Tensor, k: torch.Tensor, what: str) -> None:
    __tracebackhide__ = True
    if tuple(s.shape) != want:
        hint = scores_shape_hint(tuple(s.shape), want, Case("", (q, k)))
        _raise(f"{what}: the scores have shape {tuple(s.shape)}, expected {want} = (..., L, S)"
               + (f".\n  Hint: {hint}" if hint else "."))


def scores_visible(call: Callable[..., tuple]) -> int:
    """Shapes with L != S, a worked example with L = S, batch and head dimensions."""
    __tracebackhide__ = True
    call = _with_transpose_hint(call)
    q = torch.zeros(2, 5, 4, dtype=torch.float64)
    k = torch.zeros(2, 7, 4, dtype=torch.float64)
    (s,) = call("q (2, 5, 4) and k (2, 7, 4)", q, k)
    _expect_scores_shape(s, (2, 5, 7), q, k, "for q (2, 5, 4) and k (2, 7, 4)")

    # The worked example: L = S = 2, so only the numbers tell Q Kᵀ from K Qᵀ.
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    what = "scores for q = [[1, 2], [3, 0]], k = [[0, 1], [2, 2]]"
    (s,) = call("the worked example", q, k)
    _expect_scores_shape(s, (2, 2), q, k, what)
    expected = torch.tensor([[2.0, 6.0], [0.0, 6.0]], dtype=torch.float64)
    if _equal(s, torch.tensor([[2.0, 0.0], [6.0, 6.0]])):
        _raise(f"{what}: you return [[2, 0], [6, 6]], which is K Qᵀ (the transpose).\n  Hint: row i "
               "belongs to query i and column j to key j: q @ k.transpose(-2, -1).")
    if _equal(s, expected / math.sqrt(2)):
        _raise(f"{what}: you divided by sqrt(d_k).\n  Hint: this chapter's score matrix is the raw "
               "Q Kᵀ; the scaling comes in chapter 4.")
    softmax_of_rows = [[0.01798621, 0.98201379], [0.00247262, 0.99752738]]  # of [2, 6] and of [0, 6]
    if _equal(s, torch.tensor(softmax_of_rows)):
        _raise(f"{what}: you applied a softmax.\n  Hint: the score matrix is the raw Q Kᵀ; turning "
               "scores into weights is the soft lookup's job.")
    expect_close(s, expected, what=what, hint="entry [i, j] is the dot product of query i and key j.")

    q4 = torch.ones(2, 3, 4, 8, dtype=torch.float64)
    k4 = torch.ones(2, 3, 6, 8, dtype=torch.float64)
    what = "with batch and head dimensions, q (2, 3, 4, 8) and k (2, 3, 6, 8)"
    (s,) = call(what, q4, k4)
    _expect_scores_shape(s, (2, 3, 4, 6), q4, k4, what)
    expect_close(s, torch.full((2, 3, 4, 6), 8.0), what=f"scores of all-ones q and k, {what}",
                 hint="each entry is the dot product of two all-ones vectors of length 8, = 8.")
    return 3


SCORES = Exercise(
    function="score_matrix",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=scores_visible,
    output_names=("scores",),
    forbidden=(SDPA_CALLS,),
    shape_hint=scores_shape_hint,
)


# --------------------------------------------------------------------------- hard and soft lookups

# A dictionary of three keys in two dimensions, and three queries, each closest to one key.
_DICT_K = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
_DICT_V = [[10.0, 0.0], [0.0, 20.0], [5.0, 5.0]]
_DICT_Q = [[2.0, 0.5], [0.1, 3.0], [-1.0, -0.2]]  # scores [2, .5, -2], [.1, 3, -.1], [-1, -.2, 1]
_DICT_ONE_HOT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _dictionary() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(t, dtype=torch.float64) for t in (_DICT_Q, _DICT_K, _DICT_V))


def _expect_lookup_shapes(call: Callable[..., tuple], name: str) -> None:
    """L != S and d_v != d_k, with batch and head dimensions."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(3)
    q, k, v = randn(gen, 2, 3, 4, 3), randn(gen, 2, 3, 6, 3), randn(gen, 2, 3, 6, 5)
    label = "q (2, 3, 4, 3), k (2, 3, 6, 3), v (2, 3, 6, 5)"
    output, weights = call(label, q, k, v)
    if tuple(weights.shape) != (2, 3, 4, 6):
        hint = scores_shape_hint(tuple(weights.shape), (2, 3, 4, 6), Case("", (q, k)))
        _raise(f"{name}: weights have shape {tuple(weights.shape)} on {label}, expected (2, 3, 4, 6) = "
               f"(..., L, S)" + (f".\n  Hint: {hint}" if hint else "."))
    if tuple(output.shape) != (2, 3, 4, 5):
        hint = ("the output has the width of a key: mix the values, weights @ v."
                if tuple(output.shape) == (2, 3, 4, 3) else "output = weights @ v, (..., L, S) @ (..., S, d_v).")
        _raise(f"{name}: output has shape {tuple(output.shape)} on {label}, expected (2, 3, 4, 5) = "
               f"(..., L, d_v).\n  Hint: {hint}")


def hard_visible(call: Callable[..., tuple]) -> int:
    """The dictionary example, one-hot weights, outputs that are rows of v, shapes."""
    __tracebackhide__ = True
    call = _with_transpose_hint(call)
    q, k, v = _dictionary()
    output, weights = call("the dictionary example", q, k, v)
    worst = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # one-hot argmin of the scores
    if tuple(weights.shape) == (3, 3) and _equal(weights, worst):
        _raise("the dictionary example: each query picked its worst key (argmin).\n  Hint: the best "
               "match has the largest score: scores.argmax(dim=-1).")
    if tuple(weights.shape) == (3, 3) and bool((weights > 0).all()):
        _raise("the dictionary example: every key got some weight, as in a soft lookup.\n  Hint: a hard "
               "lookup puts all the weight on the best key: one_hot(scores.argmax(dim=-1), S).")
    expect_close(weights, _DICT_ONE_HOT, what="weights for the dictionary example",
                 hint="query 0 matches key 0 best (scores [2, 0.5, -2]): its weight row is [1, 0, 0]. "
                      "One-hot rows: torch.nn.functional.one_hot(scores.argmax(dim=-1), S).")
    if tuple(output.shape) == (3, 2) and _equal(output, k):
        _raise("the dictionary example: you returned the best key itself.\n  Hint: a lookup hands over the "
               "key's *value*: weights @ v.")
    expect_close(output, _DICT_V, what="output for the dictionary example",
                 hint="each query gets exactly the value of its best key: weights @ v.")

    gen = torch.Generator().manual_seed(0)
    q, k, v = randn(gen, 5, 4), randn(gen, 7, 4), randn(gen, 7, 3)
    output, weights = call("random q (5, 4), k (7, 4), v (7, 3)", q, k, v)
    if not bool(((weights == 0) | (weights == 1)).all()) or not bool((weights.sum(-1) == 1).all()):
        row = int((((weights != 0) & (weights != 1)).any(-1) | (weights.sum(-1) != 1)).nonzero()[0])
        _raise(f"hard_lookup: weight row {fmt_index((row,))} is {weights[row].tolist()}, not one-hot "
               "(a single 1, zeros elsewhere).\n  Hint: a hard lookup picks one key: "
               "torch.nn.functional.one_hot(scores.argmax(dim=-1), S), converted to q's dtype.")
    distances = (output[:, None, :] - v[None, :, :]).abs().amax(-1)  # (L, S)
    if not bool((distances.amin(-1) < 1e-9).all()):
        _raise("hard_lookup: an output row is not one of the rows of v: a hard lookup hands over one "
               "value unchanged.")
    _expect_lookup_shapes(call, "hard_lookup")
    return 4


def soft_visible(call: Callable[..., tuple]) -> int:
    """softmax([2, 1, 0]) as weights, rows summing to 1, shapes, and large scores ≈ hard."""
    __tracebackhide__ = True
    call = _with_transpose_hint(call)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    output, weights = call("the worked example (scores [2, 1, 0])", q, k, v)
    what = "weights for the scores q·kᵀ = [2, 1, 0]"
    if tuple(weights.shape) == (1, 3):
        if _equal(weights, torch.tensor([[0.57597535, 0.28399541, 0.14002925]])):  # softmax([2, 1, 0] / sqrt(2))
            _raise(f"{what}: you divided the scores by sqrt(d_k).\n  Hint: this chapter's soft lookup "
                   "is softmax(Q Kᵀ) V, unscaled; chapter 4 adds the scaling.")
        if _equal(weights, torch.tensor([[2.0, 1.0, 0.0]])):
            _raise(f"{what}: the weights are the raw scores.\n  Hint: turn them into weights with "
                   "torch.softmax(scores, dim=-1).")
        if _equal(weights, torch.ones(1, 3)):
            _raise(f"{what}: every weight is 1: the softmax ran over the queries.\n  Hint: normalise "
                   "over the keys, the last dimension: torch.softmax(scores, dim=-1).")
    expect_close(weights, [[0.665, 0.245, 0.090]], what=what,
                 hint="weights = torch.softmax(score_matrix(q, k), dim=-1); softmax([2, 1, 0]) ≈ "
                      "[0.665, 0.245, 0.090].")
    if tuple(output.shape) == (1, 2) and _equal(output, weights @ k):
        _raise("output for the worked example: you mixed the keys.\n  Hint: a lookup hands over the "
               "values: output = weights @ v.")
    expect_close(output, [[0.665, 0.245]], what="output for that example",
                 hint="output = weights @ v: 0.665 · [1, 0] + 0.245 · [0, 1] + 0.090 · [0, 0].")

    gen = torch.Generator().manual_seed(1)
    q, k, v = randn(gen, 2, 5, 4), randn(gen, 2, 7, 4), randn(gen, 2, 7, 3)
    _, weights = call("random q (2, 5, 4), k (2, 7, 4), v (2, 7, 3)", q, k, v)
    expect_sums_to_one(weights, -1, "soft_lookup weights", "softmax over the last dimension (the keys).")
    if (weights <= 0).any():
        _raise("soft_lookup: some weights are 0 or negative; the softmax gives every key a positive weight.")
    _expect_lookup_shapes(call, "soft_lookup")

    q, k, v = _dictionary()
    output, _ = call("the dictionary example with queries 50 times longer", 50 * q, k, v)
    expect_close(output, _DICT_V, what="the soft lookup of the dictionary example with 50 · q",
                 hint="with scores this far apart the softmax is nearly one-hot, so the soft lookup "
                      "should return (almost) the hard lookup's values.")
    return 4


HARD = Exercise(
    function="hard_lookup",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=hard_visible,
    output_names=("output", "weights"),
    uses=("score_matrix",),
    forbidden=(SDPA_CALLS, MHA_CALLS),
    shape_hint=lambda actual, expected, case: (
        "the output has the width of a key: hand over the values, weights @ v."
        if actual[-1:] == (case.args[1].shape[-1],) and expected[-1] == case.args[2].shape[-1] else None
    ),
)


SOFT = Exercise(
    function="soft_lookup",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=soft_visible,
    output_names=("output", "weights"),
    uses=("score_matrix",),
    forbidden=(SDPA_CALLS, MHA_CALLS),
    shape_hint=lambda actual, expected, case: (
        "the output has the width of a key: mix the values, weights @ v."
        if actual[-1:] == (case.args[1].shape[-1],) and expected[-1] == case.args[2].shape[-1] else None
    ),
)

EXERCISES = (PROJECTIONS, SCORES, HARD, SOFT)

