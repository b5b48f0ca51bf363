"""Chapter 5 exercises: split into heads, merge them back, a multi-head attention module.

Visible checks use worked examples a student can follow by hand (``arange(12)`` cut into two
heads; two heads of width 2 whose weights are softmax([2, 1, 0]) = [0.665, 0.245, 0.090] and
its mirror image) and properties (shapes, rows summing to 1, masks). Hidden checks copy the
weights of a seeded ``torch.nn.MultiheadAttention(batch_first=True)`` into the student's module,
in the layout of the reference's ``MultiHeadAttention.from_torch``, and compare outputs and
per-head weights with the reference. The typical mistakes below, above all the reshape to
heads without the transpose, are recognised by running them on the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure
from .compare import expect_close, expect_sums_to_one, mismatch, run_case
from .inputs import randn, with_float32
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS

ASSIGNMENT = "05-multihead"

NO_TRANSPOSE_SPLIT = (
    "you reshaped to heads without the transpose: x.view(batch, heads, seq, d_head) has the "
    "right shape, but it cuts the memory in the wrong order, so each 'head' gets a jumble of "
    "positions instead of its own d_head columns of every position. Split the last dimension "
    "first, x.view(batch, seq, heads, d_head), then swap seq and heads with .transpose(1, 2)."
)
INTERLEAVED_SPLIT = (
    "each head must get a block of d_head neighbouring columns (head 0: columns 0 to "
    "d_head - 1), not every n_heads-th column: view as (batch, seq, heads, d_head), not "
    "(batch, seq, d_head, heads)."
)
NO_TRANSPOSE_MERGE = (
    "you merged the heads without the transpose: x.reshape(batch, seq, heads * d_head) on a "
    "(batch, heads, seq, d_head) tensor has the right shape, but puts positions of one head "
    "side by side instead of the heads of one position. Swap heads and seq back first, "
    "x.transpose(1, 2), then .reshape(batch, seq, heads * d_head)."
)
INTERLEAVED_MERGE = (
    "the heads must sit side by side as blocks (head 0 in columns 0 to d_head - 1, head 1 "
    "next, ...), not interleaved column by column: transpose to (batch, seq, heads, d_head), "
    "then reshape."
)

# --------------------------------------------------------------------------- helpers


def _recognise(actual: torch.Tensor, wrong: dict[str, torch.Tensor]) -> str | None:
    """The hint of the first known wrong answer that ``actual`` equals, if any."""
    for hint, value in wrong.items():
        if tuple(actual.shape) == tuple(value.shape) and torch.allclose(
            actual.detach().to("cpu", torch.float64), value.to(torch.float64), atol=1e-6
        ):
            return hint
    return None


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
    (heads,) = call("x = arange(12).reshape(1, 3, 4), n_heads = 2", x, 2)
    if tuple(heads.shape) != (1, 2, 3, 2):
        hint = _split_shape_hint(tuple(heads.shape), (1, 2, 3, 2), Case("", (x, 2)))
        raise ExerciseFailure(
            f"split_heads(x of shape (1, 3, 4), 2) has shape {tuple(heads.shape)}, expected "
            f"(1, 2, 3, 2) = (batch, heads, seq, d_head)" + (f": {hint}" if hint else ".")
        )
    hint = _recognise(heads, {
        NO_TRANSPOSE_SPLIT: x.view(1, 2, 3, 2),
        INTERLEAVED_SPLIT: x.view(1, 3, 2, 2).permute(0, 3, 1, 2),
    })
    if hint is None:
        hint = ("head h holds columns h * d_head to (h + 1) * d_head - 1 of every position: "
                "head 0 is [[0, 1], [4, 5], [8, 9]], head 1 is [[2, 3], [6, 7], [10, 11]].")
    expect_close(heads, _WORKED_HEADS, what="split_heads(arange(12).reshape(1, 3, 4), 2)",
                 hint=hint, rtol=0, atol=1e-9)

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


def split_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("x (2, 5, 12), 3 heads", (randn(gen, 2, 5, 12), 3)),
        Case("x (3, 7, 16), 4 heads", (randn(gen, 3, 7, 16), 4)),
        Case("one position, x (2, 1, 8), 2 heads", (randn(gen, 2, 1, 8), 2)),
        Case("one head, x (2, 4, 6)", (randn(gen, 2, 4, 6), 1)),
        Case("d_head = 1, x (2, 3, 6), 6 heads", (randn(gen, 2, 3, 6), 6)),
        Case("as many positions as heads, x (1, 4, 8), 4 heads", (randn(gen, 1, 4, 8), 4)),
        Case("a larger model, x (2, 9, 64), 8 heads", (randn(gen, 2, 9, 64), 8)),
    ]
    return with_float32(cases, {"x (2, 5, 12), 3 heads", "x (3, 7, 16), 4 heads"})


def _split_without_transpose(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, seq, d_model = x.shape
    return x.reshape(batch, n_heads, seq, d_model // n_heads)


def _split_interleaved(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, seq, d_model = x.shape
    return x.reshape(batch, seq, d_model // n_heads, n_heads).permute(0, 3, 1, 2)


SPLIT_HEADS = Exercise(
    function="split_heads",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=split_visible,
    shape_hint=_split_shape_hint,
)
SPLIT_HEADS_HIDDEN = HiddenTests(
    function="split_heads",
    reference="transformer_course.multihead:split_heads",
    make_cases=split_cases,
    mistakes=(
        Mistake(_split_without_transpose, NO_TRANSPOSE_SPLIT),
        Mistake(_split_interleaved, INTERLEAVED_SPLIT),
    ),
)


# --------------------------------------------------------------------------- merge_heads


def merge_visible(call: Callable[..., tuple]) -> int:
    """The worked example backwards (two heads into arange(12)), then shapes."""
    __tracebackhide__ = True
    heads = torch.tensor(_WORKED_HEADS, dtype=torch.float64)  # (1, 2, 3, 2)
    (x,) = call("the two heads of the worked example, shape (1, 2, 3, 2)", heads)
    if tuple(x.shape) != (1, 3, 4):
        hint = _merge_shape_hint(tuple(x.shape), (1, 3, 4), Case("", (heads,)))
        raise ExerciseFailure(
            f"merge_heads of a (1, 2, 3, 2) tensor has shape {tuple(x.shape)}, expected "
            f"(1, 3, 4) = (batch, seq, heads * d_head)" + (f": {hint}" if hint else ".")
        )
    hint = _recognise(x, {
        NO_TRANSPOSE_MERGE: heads.reshape(1, 3, 4),
        INTERLEAVED_MERGE: heads.permute(0, 2, 3, 1).reshape(1, 3, 4),
    })
    if hint is None:
        hint = ("position i gets head 0's row i in columns 0-1 and head 1's row i in columns "
                "2-3: the result is [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]].")
    expect_close(x, _worked_x(), what="merge_heads of the worked example's heads", hint=hint,
                 rtol=0, atol=1e-9)

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


def merge_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("heads (2, 3, 5, 4)", (randn(gen, 2, 3, 5, 4),)),
        Case("heads (3, 4, 7, 4)", (randn(gen, 3, 4, 7, 4),)),
        Case("one position, heads (2, 2, 1, 4)", (randn(gen, 2, 2, 1, 4),)),
        Case("one head, heads (2, 1, 4, 6)", (randn(gen, 2, 1, 4, 6),)),
        Case("d_head = 1, heads (2, 6, 3, 1)", (randn(gen, 2, 6, 3, 1),)),
        Case("as many positions as heads, heads (1, 4, 4, 2)", (randn(gen, 1, 4, 4, 2),)),
        Case("a larger model, heads (2, 8, 9, 8)", (randn(gen, 2, 8, 9, 8),)),
    ]
    return with_float32(cases, {"heads (2, 3, 5, 4)", "heads (3, 4, 7, 4)"})


def _merge_without_transpose(x: torch.Tensor) -> torch.Tensor:
    batch, heads, seq, d_head = x.shape
    return x.reshape(batch, seq, heads * d_head)


def _merge_interleaved(x: torch.Tensor) -> torch.Tensor:
    batch, heads, seq, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, seq, heads * d_head)


MERGE_HEADS = Exercise(
    function="merge_heads",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=merge_visible,
    shape_hint=_merge_shape_hint,
)
MERGE_HEADS_HIDDEN = HiddenTests(
    function="merge_heads",
    reference="transformer_course.multihead:merge_heads",
    make_cases=merge_cases,
    mistakes=(
        Mistake(_merge_without_transpose, NO_TRANSPOSE_MERGE),
        Mistake(_merge_interleaved, INTERLEAVED_MERGE),
    ),
)


# --------------------------------------------------------------------------- MultiHeadAttention
#
# The mistakes are whole modules (the machinery builds them like the student's class, with the
# reference's parameter names and weights). They compute attention themselves, on purpose
# without the reference or a forbidden library call, so each fails for its own reason.


class _Sketch(nn.Module):
    """Multi-head attention with knobs that reproduce typical mistakes (for the checks only)."""

    split_transpose = True  # False: view(batch, heads, seq, d_head) straight away
    merge_transpose = True  # False: reshape(batch, seq, d_model) without transposing back
    apply_out_proj = True
    scale_width = "d_head"  # "d_model": divide the scores by sqrt(d_model)
    invert_mask = False
    keys_from_query = False  # k_proj(query), v_proj(query): self-attention only
    swap_key_value = False  # k_proj(value), v_proj(key)

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        d_head = d_model // self.n_heads
        if not self.split_transpose:
            return x.reshape(batch, self.n_heads, seq, d_head)
        return x.reshape(batch, seq, self.n_heads, d_head).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, seq, d_head = x.shape
        if not self.merge_transpose:
            return x.reshape(batch, seq, heads * d_head)
        return x.transpose(1, 2).reshape(batch, seq, heads * d_head)

    def forward(self, query, key, value, mask=None):
        if self.keys_from_query:
            key = value = query
        if self.swap_key_value:
            key, value = value, key
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        width = q.shape[-1] * (self.n_heads if self.scale_width == "d_model" else 1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(width)
        if mask is not None:
            blocked = mask if self.invert_mask else ~mask
            scores = scores.masked_fill(blocked, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:
            weights = weights.masked_fill(blocked, 0.0)
        output = self._merge(weights @ v)
        if self.apply_out_proj:
            output = self.out_proj(output)
        return output, weights


class _NoTransposeSplit(_Sketch):
    split_transpose = False


class _NoTransposeMerge(_Sketch):
    merge_transpose = False


class _NoOutProj(_Sketch):
    apply_out_proj = False


class _ScaledByModelWidth(_Sketch):
    scale_width = "d_model"


class _InvertedMask(_Sketch):
    invert_mask = True


class _KeysFromQuery(_Sketch):
    keys_from_query = True


class _SwappedKeyValue(_Sketch):
    swap_key_value = True


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


def _expect_close_or_mistake(actual: torch.Tensor, expected, what: str, hint: str, case: Case,
                             outputs: tuple) -> None:
    """expect_close, naming the typical mistake that gives the student's outputs, if one does."""
    __tracebackhide__ = True
    try:
        expect_close(actual, expected, what=what, hint=hint)
        return
    except ExerciseFailure:
        better = _mistake_hint(case, outputs)
        if better is None:
            raise
    expect_close(actual, expected, what=what, hint=better)


def _mistake_hint(case: Case, outputs: tuple) -> str | None:
    """For the visible checks: the hint of a typical mistake that gives the same outputs."""
    for mistake in MHA_MISTAKES:
        try:
            with torch.no_grad():
                wrong = run_case(mistake.fn, case)
        except Exception:  # noqa: BLE001 - a mistake that cannot run here says nothing
            continue
        if all(mismatch(o, w, what="", rtol=1e-6, atol=1e-9) is None for o, w in zip(outputs, wrong)):
            return mistake.hint
    return None


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
    _expect_close_or_mistake(w[0, :, 0], [[0.665, 0.245, 0.090], [0.090, 0.245, 0.665]],
                             "weights of the first query in heads 0 and 1 (worked example)",
                             hint, case, outputs)
    _expect_close_or_mistake(w[0, :, 1], torch.full((2, 3), 1 / 3),
                             "weights of the second (zero) query in heads 0 and 1", hint, case,
                             outputs)
    hint = ("each head's output is its weights times its own columns of the values; "
            "merge_heads puts head 0's output in columns 0-1 and head 1's in columns 2-3, then "
            "out_proj (here the identity) mixes them.")
    third = 1 / 3
    _expect_close_or_mistake(out, [[[0.665, 0.245, 0.090, 0.245], [third, third, third, third]]],
                             "output of the worked example", hint, case, outputs)

    state = _identity_state(4)
    state["out_proj.weight"] = 2 * state["out_proj.weight"]
    state["out_proj.bias"] = torch.ones(4, dtype=torch.float64)
    case = Case("the worked example with out_proj.weight = 2·I and out_proj.bias = 1",
                (query, key, value), init=(4, 2), state=state)
    out, _ = call(case)
    expect_close(out, [[[2.330, 1.490, 1.180, 1.490], [5 / 3, 5 / 3, 5 / 3, 5 / 3]]],
                 what="output with out_proj.weight = 2·I, out_proj.bias = 1",
                 hint="the merged heads must go through the output projection, "
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
        expect_close(outputs[1][0, :, row], [want, want],
                     what=f"causally masked weights of query {row} in both heads", hint=mask_hint)

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
    expect_close(w[0, :, :, 2], torch.zeros(2, 3), what="weights on the padded key of "
                 "sequence 0 (mask (2, 1, 1, 3))", hint=mask_hint)
    expect_close(w[1], torch.zeros(2, 3, 3), what="weights of the all-padding sequence",
                 hint=mask_hint)
    expect_close(out[1], state["out_proj.bias"].expand(3, 4), what="output of the all-padding "
                 "sequence", hint="with all weights 0 the heads are 0, so the output is "
                 "out_proj's bias.")

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


def _torch_weights(gen: torch.Generator, d_model: int, n_heads: int,
                   **kwargs) -> dict[str, torch.Tensor]:
    """The weights of a seeded ``nn.MultiheadAttention(batch_first=True)``, in the reference's
    layout (``MultiHeadAttention.from_torch``), in float64.

    torch initialises its biases to zero; random ones make them count. The global random state
    is left as it was (the student's notebook shares it).
    """
    from transformer_course.multihead import MultiHeadAttention  # the reference, when grading

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=torch.float64,
                                       **kwargs)
        with torch.no_grad():
            if theirs.in_proj_bias is not None:
                theirs.in_proj_bias.normal_(std=0.5)
                theirs.out_proj.bias.normal_(std=0.5)
        ours = MultiHeadAttention.from_torch(theirs).double()  # (its own init draws too)
    return {name: tensor.detach().clone() for name, tensor in ours.state_dict().items()}


def mha_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, L: int, S: int, d_model: int, n_heads: int,
             mask: torch.Tensor | None = None, self_attention: bool = False,
             **kwargs) -> Case:
        query = randn(gen, batch, L, d_model)
        if self_attention:
            key = value = query
        else:
            key = randn(gen, batch, S, kwargs.get("kdim") or d_model)
            value = randn(gen, batch, S, kwargs.get("vdim") or d_model)
        return Case(label, (query, key, value), {} if mask is None else {"mask": mask},
                    init=(d_model, n_heads), init_kwargs=kwargs,
                    state=_torch_weights(gen, d_model, n_heads, **kwargs))

    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    padding = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    padding[0, ..., 4:] = False  # sequence 0 has 4 real tokens
    padding[2] = False  # sequence 2 is all padding: its queries may attend to nothing
    both = torch.tril(torch.ones(5, 5, dtype=torch.bool)) & torch.tensor(
        [[True] * 5, [True, True, True, False, False]])[:, None, None, :]  # (2, 1, 5, 5)
    per_head = torch.rand(2, 4, 3, 5, generator=gen) > 0.4
    per_head[..., 0] = True
    per_head[1, 2, 1] = False  # head 2 of example 1: query 1 may attend to nothing
    cases = [
        case("self-attention, x (2, 5, 16), 4 heads", 2, 5, 5, 16, 4, self_attention=True),
        case("cross-attention, query (3, 4, 12), key/value (3, 7, 12), 3 heads", 3, 4, 7, 12, 3),
        case("query, key and value all different, length 5, d_model 8, 2 heads", 2, 5, 5, 8, 2),
        case("one head, x (2, 5, 8)", 2, 5, 5, 8, 1, self_attention=True),
        case("d_head = 1: 6 heads, d_model 6", 2, 4, 4, 6, 6, self_attention=True),
        case("a single query (L = 1) over 6 keys, 2 heads", 2, 1, 6, 8, 2),
        case("a single key (S = 1), 2 heads", 2, 4, 1, 8, 2),
        case("a causal (6, 6) mask, 2 heads", 2, 6, 6, 8, 2, mask=causal, self_attention=True),
        case("a padding mask (3, 1, 1, 6) with a fully padded sequence, 2 heads", 3, 6, 6, 8, 2,
             mask=padding, self_attention=True),
        case("causal and padding masks combined, (2, 1, 5, 5), 4 heads", 2, 5, 5, 8, 4,
             mask=both, self_attention=True),
        case("a per-head mask (2, 4, 3, 5) with a query that may attend to nothing", 2, 3, 5,
             8, 4, mask=per_head),
        case("key and value of other widths (kdim 5, vdim 7), 3 heads", 2, 4, 6, 12, 3,
             kdim=5, vdim=7),
        case("no biases (bias=False), 2 heads", 2, 4, 4, 8, 2, bias=False),
    ]
    return with_float32(cases, {"self-attention, x (2, 5, 16), 4 heads",
                                "cross-attention, query (3, 4, 12), key/value (3, 7, 12), 3 heads",
                                "a causal (6, 6) mask, 2 heads",
                                "a padding mask (3, 1, 1, 6) with a fully padded sequence, 2 heads"})


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


MHA_MISTAKES = (
    Mistake(_NoTransposeSplit, NO_TRANSPOSE_SPLIT.replace(
        "Split the last", "(Or call your split_heads.) Split the last")),
    Mistake(_NoTransposeMerge, NO_TRANSPOSE_MERGE.replace(
        "Swap heads", "(Or call your merge_heads.) Swap heads")),
    Mistake(_NoOutProj, "you left out the output projection: return "
                        "self.out_proj(merge_heads(...)), it mixes the heads' results."),
    Mistake(_ScaledByModelWidth, "you divided the scores by sqrt(d_model); each head's scores are "
                                 "divided by sqrt(d_head), the width of its own queries and keys "
                                 "(chapter 4's scaled_dot_product_attention does that for you)."),
    Mistake(_InvertedMask, "your mask is the wrong way round: True means 'may attend' here, the "
                           "opposite of nn.MultiheadAttention. Pass the mask on unchanged."),
    Mistake(_KeysFromQuery, "you made keys and values from the query: use self.k_proj(key) and "
                            "self.v_proj(value) (they differ in cross-attention)."),
    Mistake(_SwappedKeyValue, "keys and values are swapped: self.k_proj(key) makes the keys, "
                              "self.v_proj(value) the values."),
)

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
MULTI_HEAD_ATTENTION_HIDDEN = HiddenTests(
    function="MultiHeadAttention",
    reference="transformer_course.multihead:MultiHeadAttention",
    make_cases=mha_cases,
    mistakes=MHA_MISTAKES,
)

EXERCISES = (SPLIT_HEADS, MERGE_HEADS, MULTI_HEAD_ATTENTION)

HIDDEN_TESTS = (SPLIT_HEADS_HIDDEN, MERGE_HEADS_HIDDEN, MULTI_HEAD_ATTENTION_HIDDEN)
