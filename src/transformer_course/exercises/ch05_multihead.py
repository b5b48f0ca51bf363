"""Chapter 5 exercises: split into heads, merge them back, a multi-head attention module.

Visible checks use worked examples a student can follow by hand (``arange(12)`` cut into two
heads; two heads of width 2 whose weights are softmax([2, 1, 0]) = [0.665, 0.245, 0.090] and
its mirror image) and properties (shapes, rows summing to 1, masks). Hidden checks copy the
weights of a seeded ``torch.nn.MultiheadAttention(batch_first=True)`` into the student's module,
in the layout of the reference's ``MultiHeadAttention.from_torch``, and compare outputs and
per-head weights with the reference. The hidden inputs, the reference and the typical mistakes
are the grader's side, ``grading.hidden_tests.ch05_multihead``. The visible checks name a
typical mistake (above all the reshape to heads without the transpose) from the outputs the
grader side recorded for it on their own inputs (``recorded/05-multihead.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .base import Case, Exercise, ExerciseFailure
from .compare import expect_close, expect_sums_to_one
from .inputs import randn
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS

ASSIGNMENT = "05-multihead"


# --------------------------------------------------------------------------- helpers


def _split_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    """Recognise the usual shape slips when cutting (batch, seq, d_model) into heads."""
    batch, heads, seq, d_head = expected
    if actual == (batch, seq, heads, d_head) and seq != heads:
        return ("the heads must come before the positions: after view(batch, seq, heads, "
                "d_head), swap them with .transpose(1, 2).")
    if actual == (batch, seq, d_head, heads) and d_head != heads:
        return "view as (batch, seq, heads, d_head), then .transpose(1, 2)."
    if actual == (batch, heads, d_head, seq) and d_head != seq:
        return ("the last two dimensions must be (seq, d_head), as attention expects: "
                "swap dimensions 1 and 2 (.transpose(1, 2)), not the last two.")
    if len(actual) != 4:
        return ("return four dimensions, (batch, heads, seq, d_head), with "
                "d_head = d_model // n_heads.")
    return None


def _merge_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    """Recognise the usual shape slips when merging (batch, heads, seq, d_head) back."""
    batch, seq, d_model = expected
    heads = case.args[0].shape[1]
    if actual == (batch, seq, heads, d_model // heads):
        return "reshape the last two dimensions into one: .reshape(batch, seq, heads * d_head)."
    if len(actual) == 3 and actual[1] == heads and heads != seq:
        return ("positions must come before the heads' columns: .transpose(1, 2) to "
                "(batch, seq, heads, d_head), then reshape.")
    if len(actual) != 3:
        return "return three dimensions, (batch, seq, heads * d_head)."
    return None


# --------------------------------------------------------------------------- split_heads


def _worked_x() -> torch.Tensor:
    """The worked example: 3 positions of width 4, the numbers 0 to 11 row by row."""
    return torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)  # (batch, seq, d_model)


# split_heads(_worked_x(), 2): head 0 holds columns 0-1 of every position, head 1 columns 2-3.
_WORKED_HEADS = [[[[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]],
                  [[2.0, 3.0], [6.0, 7.0], [10.0, 11.0]]]]  # (1, 2, 3, 2)


def split_visible(call: Callable[..., tuple]) -> int:
    """The worked example (numbers 0 to 11 into two heads), then shapes; returns checks run."""
    __tracebackhide__ = True
    x = _worked_x()
    label = "x = arange(12).reshape(1, 3, 4), n_heads = 2"
    (heads,) = call(label, x, 2)
    if tuple(heads.shape) != (1, 2, 3, 2):
        hint = _split_shape_hint(tuple(heads.shape), (1, 2, 3, 2), Case("", (x, 2)))
        raise ExerciseFailure(
            f"split_heads(x of shape (1, 3, 4), 2) has shape {tuple(heads.shape)}, expected "
            f"(1, 2, 3, 2) = (batch, heads, seq, d_head)" + (f": {hint}" if hint else ".")
        )
    expect_close(
        heads, _WORKED_HEADS, seen=("split_heads", label, (heads,)),
        what="split_heads(arange(12).reshape(1, 3, 4), 2)", rtol=0, atol=1e-9,
        hint="head h holds columns h * d_head to (h + 1) * d_head - 1 of every position: "
             "head 0 is [[0, 1], [4, 5], [8, 9]], head 1 is [[2, 3], [6, 7], [10, 11]].")

    x = torch.zeros(2, 5, 12, dtype=torch.float64)
    for n_heads, want in ((3, (2, 3, 5, 4)), (1, (2, 1, 5, 12)), (12, (2, 12, 5, 1))):
        (heads,) = call(f"x of shape (2, 5, 12), n_heads = {n_heads}", x, n_heads)
        if tuple(heads.shape) != want:
            hint = _split_shape_hint(tuple(heads.shape), want, Case("", (x, n_heads)))
            raise ExerciseFailure(
                f"split_heads(x of shape (2, 5, 12), {n_heads}) has shape "
                f"{tuple(heads.shape)}, expected {want} = (batch, heads, seq, d_head)"
                + (f": {hint}" if hint else ".")
            )
    return 4


SPLIT_HEADS = Exercise(
    function="split_heads",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=split_visible,
    shape_hint=_split_shape_hint,
)


# --------------------------------------------------------------------------- merge_heads


def merge_visible(call: Callable[..., tuple]) -> int:
    """The worked example backwards (two heads into arange(12)), then shapes."""
    __tracebackhide__ = True
    heads = torch.tensor(_WORKED_HEADS, dtype=torch.float64)  # (1, 2, 3, 2)
    label = "the two heads of the worked example, shape (1, 2, 3, 2)"
    (x,) = call(label, heads)
    if tuple(x.shape) != (1, 3, 4):
        hint = _merge_shape_hint(tuple(x.shape), (1, 3, 4), Case("", (heads,)))
        raise ExerciseFailure(
            f"merge_heads of a (1, 2, 3, 2) tensor has shape {tuple(x.shape)}, expected "
            f"(1, 3, 4) = (batch, seq, heads * d_head)" + (f": {hint}" if hint else ".")
        )
    expect_close(
        x, _worked_x(), seen=("merge_heads", label, (x,)),
        what="merge_heads of the worked example's heads", rtol=0, atol=1e-9,
        hint="position i gets head 0's row i in columns 0-1 and head 1's row i in columns "
             "2-3: the result is [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]].")

    for heads_shape, want in (((2, 3, 5, 4), (2, 5, 12)), ((2, 1, 5, 12), (2, 5, 12)),
                              ((2, 12, 5, 1), (2, 5, 12))):
        heads = torch.zeros(heads_shape, dtype=torch.float64)
        (x,) = call(f"heads of shape {heads_shape}", heads)
        if tuple(x.shape) != want:
            hint = _merge_shape_hint(tuple(x.shape), want, Case("", (heads,)))
            raise ExerciseFailure(
                f"merge_heads of a {heads_shape} tensor has shape {tuple(x.shape)}, expected "
                f"{want} = (batch, seq, heads * d_head)" + (f": {hint}" if hint else ".")
            )
    return 4


MERGE_HEADS = Exercise(
    function="merge_heads",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=merge_visible,
    shape_hint=_merge_shape_hint,
)


# --------------------------------------------------------------------------- MultiHeadAttention


def _linear_state(name: str, n_out: int, n_in: int, gen: torch.Generator | None,
                  bias: bool = True) -> dict[str, torch.Tensor]:
    """Weights of one nn.Linear(n_in, n_out): random (scaled like torch's) or, without gen, 0."""
    if gen is None:
        weight, b = torch.zeros(n_out, n_in), torch.zeros(n_out)
    else:
        weight, b = randn(gen, n_out, n_in, scale=1 / math.sqrt(n_in)), randn(gen, n_out, scale=0.5)
    state = {f"{name}.weight": weight.to(torch.float64)}
    if bias:
        state[f"{name}.bias"] = b.to(torch.float64)
    return state


def _random_state(gen: torch.Generator, d_model: int, kdim: int | None = None,
                  vdim: int | None = None, bias: bool = True) -> dict[str, torch.Tensor]:
    """Random weights for the four projections, named like the reference's (visible checks)."""
    return {
        **_linear_state("q_proj", d_model, d_model, gen, bias),
        **_linear_state("k_proj", d_model, kdim or d_model, gen, bias),
        **_linear_state("v_proj", d_model, vdim or d_model, gen, bias),
        **_linear_state("out_proj", d_model, d_model, gen, bias),
    }


def _identity_state(d_model: int) -> dict[str, torch.Tensor]:
    """W^Q = W^K = W^V = W^O = I and no bias: each head sees its own columns of the inputs."""
    eye, zero = torch.eye(d_model, dtype=torch.float64), torch.zeros(d_model, dtype=torch.float64)
    return {f"{p}.{kind}": (eye if kind == "weight" else zero).clone()
            for p in ("q_proj", "k_proj", "v_proj", "out_proj") for kind in ("weight", "bias")}


def worked_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chapter's worked example: d_model = 4, 2 heads, identity projections.

    Two queries and three keys. Head 0 sees columns 0-1, head 1 columns 2-3. The first query
    scores the keys [2, 1, 0] in head 0 and [0, 1, 2] in head 1, so its weights are
    softmax([2, 1, 0]) ≈ [0.665, 0.245, 0.090] and the mirror image; the second query is zero
    and spreads its weight evenly (1/3 each) in both heads.

    Returns:
        ``(query (1, 2, 4), key (1, 3, 4), value (1, 3, 4))``, float64.
    """
    r = 2 * math.sqrt(2)  # q·k / sqrt(d_head) with d_head = 2: 2√2 · 1 / √2 = 2
    query = torch.tensor([[[r, 0.0, r, 0.0], [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    key = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]]],
                       dtype=torch.float64)
    value = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]],
                         dtype=torch.float64)
    return query, key, value


def _expect_mha_close(case: Case, outputs: tuple, actual: torch.Tensor, expected, what: str,
                      hint: str) -> None:
    """A MultiHeadAttention output (or part of one) close to ``expected``, else the message
    with the typical mistake whose recorded outputs on ``case`` equal ``outputs``, or ``hint``."""
    __tracebackhide__ = True
    expect_close(actual, expected, what=what, hint=hint, seen=("MultiHeadAttention", case.label, outputs))


def _expect_shapes(outputs: tuple, want: tuple[tuple, tuple], case: Case) -> None:
    __tracebackhide__ = True
    for got, expected, name in zip(outputs, want, ("output", "weights")):
        if tuple(got.shape) != expected:
            hint = _mha_shape_hint(tuple(got.shape), expected, case)
            raise ExerciseFailure(
                f"`{name}` has shape {tuple(got.shape)} on {case.label}, expected {expected}"
                + (f": {hint}" if hint else ".")
            )


def mha_visible(call: Callable[..., tuple]) -> int:
    """Worked example, output projection, masks, shapes; returns how many checks ran."""
    __tracebackhide__ = True
    query, key, value = worked_example()
    case = Case("the worked example (d_model 4, 2 heads, identity projections)",
                (query, key, value), init=(4, 2), state=_identity_state(4))
    out, w = outputs = call(case)
    _expect_shapes(outputs, ((1, 2, 4), (1, 2, 2, 3)), case)
    hint = ("head 0 compares columns 0-1 of the queries with columns 0-1 of the keys (scores "
            "[2, 1, 0] for the first query), head 1 columns 2-3 (scores [0, 1, 2]). Cut q, k "
            "and v into heads with split_heads and attend in all heads at once.")
    _expect_mha_close(case, outputs, w[0, :, 0], [[0.665, 0.245, 0.090], [0.090, 0.245, 0.665]],
                      "weights of the first query in heads 0 and 1 (worked example)", hint)
    _expect_mha_close(case, outputs, w[0, :, 1], torch.full((2, 3), 1 / 3),
                      "weights of the second (zero) query in heads 0 and 1", hint)
    hint = ("each head's output is its weights times its own columns of the values; "
            "merge_heads puts head 0's output in columns 0-1 and head 1's in columns 2-3, then "
            "out_proj (here the identity) mixes them.")
    third = 1 / 3
    _expect_mha_close(case, outputs, out, [[[0.665, 0.245, 0.090, 0.245], [third] * 4]],
                      "output of the worked example", hint)

    state = _identity_state(4)
    state["out_proj.weight"] = 2 * state["out_proj.weight"]
    state["out_proj.bias"] = torch.ones(4, dtype=torch.float64)
    case = Case("the worked example with out_proj.weight = 2·I and out_proj.bias = 1",
                (query, key, value), init=(4, 2), state=state)
    outputs = call(case)
    _expect_mha_close(case, outputs, outputs[0], [[[2.330, 1.490, 1.180, 1.490], [5 / 3] * 4]],
                      "output with out_proj.weight = 2·I, out_proj.bias = 1",
                      "the merged heads must go through the output projection, "
                      "self.out_proj(merge_heads(...)), and that is what you return.")

    # Masks: with W^Q = 0 every score is 0, so each query spreads its weight evenly over the
    # keys its mask allows. A causal row 1 is softmax([0, 0, -inf, -inf, -inf]).
    gen = torch.Generator().manual_seed(5)
    state = _random_state(gen, 4)
    state.update(_linear_state("q_proj", 4, 4, None))
    x = randn(gen, 1, 5, 4)
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    case = Case("self-attention over 5 positions with a causal (5, 5) mask and W^Q = 0",
                (x, x, x), {"mask": causal}, init=(4, 2), state=state)
    outputs = call(case)
    _expect_shapes(outputs, ((1, 5, 4), (1, 2, 5, 5)), case)
    mask_hint = ("pass the mask on to scaled_dot_product_attention as it is: True means 'may "
                 "attend', and a (L, S) mask broadcasts over batch and heads by itself. (Do not "
                 "invert it: nn.MultiheadAttention's convention is the opposite of ours.)")
    for row, want in ((1, [0.5, 0.5, 0.0, 0.0, 0.0]), (4, [0.2] * 5)):
        _expect_mha_close(case, outputs, outputs[1][0, :, row], [want, want],
                          f"causally masked weights of query {row} in both heads", mask_hint)

    x = randn(gen, 2, 3, 4)
    padding = torch.tensor([[True, True, False], [False, False, False]])[:, None, None, :]
    case = Case("a padding mask (2, 1, 1, 3) whose second sequence is all padding",
                (x, x, x), {"mask": padding}, init=(4, 2), state=state)
    out, w = outputs = call(case)
    _expect_shapes(outputs, ((2, 3, 4), (2, 2, 3, 3)), case)
    if torch.isnan(out).any() or torch.isnan(w).any():
        raise ExerciseFailure(
            "a sequence that is all padding gives NaN: its queries may attend to nothing. "
            "Chapter 4's scaled_dot_product_attention returns weights 0 there; use it."
        )
    _expect_mha_close(case, outputs, w[0, :, :, 2], torch.zeros(2, 3),
                      "weights on the padded key of sequence 0 (mask (2, 1, 1, 3))", mask_hint)
    _expect_mha_close(case, outputs, w[1], torch.zeros(2, 3, 3),
                      "weights of the all-padding sequence", mask_hint)
    _expect_mha_close(case, outputs, out[1], state["out_proj.bias"].expand(3, 4),
                      "output of the all-padding sequence",
                      "with all weights 0 the heads are 0, so the output is out_proj's bias.")

    # Cross-attention with keys and values of other widths, in float32; and no biases.
    state = {k: v.float() for k, v in _random_state(gen, 8, kdim=6, vdim=3).items()}
    q, k, v = randn(gen, 2, 3, 8).float(), randn(gen, 2, 5, 6).float(), randn(gen, 2, 5, 3).float()
    case = Case("cross-attention in float32: query (2, 3, 8), key (2, 5, 6), value (2, 5, 3), "
                "MultiHeadAttention(8, 2, kdim=6, vdim=3)", (q, k, v), init=(8, 2),
                init_kwargs={"kdim": 6, "vdim": 3}, state=state)
    outputs = call(case)
    _expect_shapes(outputs, ((2, 3, 8), (2, 2, 3, 5)), case)
    expect_sums_to_one(outputs[1], -1, "weights of the cross-attention example",
                       "each query's weights over the S keys sum to 1, in every head.")
    state = _random_state(gen, 8, bias=False)
    x = randn(gen, 2, 3, 8)
    case = Case("MultiHeadAttention(8, 4, bias=False)", (x, x, x), init=(8, 4),
                init_kwargs={"bias": False}, state=state)
    _expect_shapes(call(case), ((2, 3, 8), (2, 4, 3, 3)), case)
    return 8


def _mha_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    """Recognise the usual shape slips in the module's two outputs."""
    query, key = case.args[0], case.args[1]
    batch, L, S = query.shape[0], query.shape[1], key.shape[1]
    n_heads, d_model = case.init[1], case.init[0]
    weights_shape = (batch, n_heads, L, S)
    if len(expected) == 4:  # the weights
        if actual == (batch, L, S):
            return ("return the weights of every head, (batch, heads, L, S): do not average "
                    "them over the heads (nn.MultiheadAttention does by default), and split "
                    "q, k and v into heads before attending.")
        if actual == (batch, n_heads, L, L) and L != S:
            return ("the weights have one column per query instead of one per key: did you "
                    "project the query where the key belongs (self.k_proj(query))?")
        if actual == (batch, L, d_model):
            return "the module returns (output, weights), in that order."
        return None
    if actual == weights_shape:
        return "the module returns (output, weights), in that order."
    if len(actual) == 4:
        return ("merge the heads back into (batch, L, d_model) with merge_heads before the "
                "output projection.")
    return None


MULTI_HEAD_ATTENTION = Exercise(
    function="MultiHeadAttention",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=mha_visible,
    is_module=True,
    output_names=("output", "weights"),
    uses=("split_heads", "merge_heads", "scaled_dot_product_attention"),
    forbidden=(MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS),
    shape_hint=_mha_shape_hint,
)

EXERCISES = (SPLIT_HEADS, MERGE_HEADS, MULTI_HEAD_ATTENTION)

