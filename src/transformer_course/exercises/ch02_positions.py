"""Chapter 2 exercises: the sinusoidal table, adding positions, the permutation experiment, the
dot product of two positions as a function of their distance, and a learned table.

Visible checks use worked examples a student can redo by hand (the sinusoidal table for
``d_model = 4``, whose two frequencies are 1 and 1/100; a three-row table whose dot products are
easy to add up) and properties (sin² + cos² = 1 within a column pair). The attention outputs of
the permutation experiment are not worked out by hand: they are the reference's outputs on these
very inputs, recorded in ``recorded/02-positions.json`` (see :mod:`.recorded`). Where a check
fails, the recorded outputs of the typical mistakes on the same inputs name the likely cause. The
hidden inputs, the reference and the typical mistakes (as code) are the grader's side,
``grading.hidden_tests.ch02_positions``.

A sequence longer than the table has no rows for its last positions: ``add_positions`` and
``LearnedPositionalEmbedding`` must refuse it with a ValueError, as the reference does (a visible
check with ``Case(raises=ValueError)``), rather than leave PyTorch to fail with a shape error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..device import available_devices
from .base import Case, Exercise, ExerciseFailure
from .compare import expect_close, fmt_number
from .inputs import randn
from .recorded import recorded_mistake, recorded_outputs

ASSIGNMENT = "02-positions"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class TableCase(Case):
    """A case for a function that *makes* its tensor from ``dtype=`` and ``device=`` arguments.

    A plain :class:`Case` reads the dtype and device from its input tensors, and converts those
    to run the float64 reference or to repeat a case on a GPU. ``sinusoidal_encoding`` has no
    input tensor: the dtype and device are keyword arguments. This case reads and sets them
    there, so the student's table is checked in the dtype and on the device it was asked for,
    the reference runs in float64 on the CPU, and float32 cases are repeated on every GPU.

    Only the hidden cases use it, yet it lives here, on the student side: the hardened grader
    hands the cases, pickled, to the sandbox that runs the student's code, which must be able to
    unpickle them with the student side alone.
    """

    @property
    def dtype(self) -> torch.dtype:
        return self.kwargs.get("dtype", torch.float32)  # the function's default

    @property
    def device(self) -> torch.device:
        # torch.device("cuda") and a tensor's torch.device("cuda:0") differ; ask torch which
        # device a tensor made with this argument lands on.
        return torch.empty(0, device=self.kwargs.get("device")).device

    def to(self, dtype: torch.dtype) -> TableCase:
        return replace(self, kwargs={**self.kwargs, "dtype": dtype})

    def on(self, device: torch.device) -> TableCase:
        return replace(self, kwargs={**self.kwargs, "device": device}, label=f"{self.label} on {device.type}")


def _expect(got: torch.Tensor, expected: Any, *, what: str, hint: str, recorded: tuple[str, str] | None = None,
            outputs: tuple | None = None, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """expect_close, naming the typical mistake when the student's outputs are that mistake's.

    ``recorded`` is ``(function, label)`` of the visible call that gave ``got``; ``outputs`` are all
    of that call's outputs (default: ``got`` alone), compared with the mistakes' recorded outputs.
    """
    __tracebackhide__ = True
    seen = None if recorded is None else (*recorded, outputs if outputs is not None else (got,))
    expect_close(got, expected, what=what, hint=hint, rtol=rtol, atol=atol, seen=seen)


def _likely_mistake(recorded: tuple[str, str] | None, outputs: tuple) -> str | None:
    """The hint of the typical mistake whose recorded outputs on the visible call ``recorded`` =
    ``(function, label)`` are ``outputs``, or None."""
    return None if recorded is None else recorded_mistake(*recorded, outputs)


def _call_hinting(call: Callable[..., tuple], hint: str, label: str, *args: Any, **kwargs: Any) -> tuple:
    """``call(label, *args, **kwargs)``; if the student's code raises, add ``hint`` to the message."""
    __tracebackhide__ = True
    try:
        return call(label, *args, **kwargs)
    except ExerciseFailure as failure:
        if "raised" not in str(failure):
            raise
        raise ExerciseFailure(f"{failure}\n  Hint: {hint}") from None


def _expect_shape(got: torch.Tensor, want: tuple, what: str, hint: str | None = None) -> None:
    __tracebackhide__ = True
    if tuple(got.shape) != tuple(want):
        raise ExerciseFailure(
            f"{what} has shape {tuple(got.shape)}, expected {tuple(want)}" + (f": {hint}" if hint else ".")
        )


# --------------------------------------------------------------------------- sinusoidal_encoding


def _sinusoidal_shape_hint(actual: tuple, expected: tuple, case: Case | None = None) -> str | None:
    if len(actual) == 2 and actual == expected[::-1] and actual != expected:
        return ("rows are positions and columns are dimensions: your table is transposed, "
                "(d_model, seq_len) instead of (seq_len, d_model).")
    if len(expected) == 2 and expected[1] % 2 == 1 and actual[:1] == expected[:1]:
        return ("for an odd d_model the last column (an even index) is a sine without a cosine partner: "
                "there are ceil(d_model / 2) sine columns and floor(d_model / 2) cosine columns.")
    return None


def sinusoidal_visible(call: Callable[..., tuple]) -> int:
    """Worked examples and properties of the sinusoidal table; returns how many checks ran."""
    __tracebackhide__ = True
    (table,) = call("sinusoidal_encoding(3, 4)", 3, 4)
    _expect_shape(table, (3, 4), "sinusoidal_encoding(3, 4)", _sinusoidal_shape_hint(tuple(table.shape), (3, 4))
                  or "one row per position, one column per dimension.")
    if table.dtype != torch.float32:
        raise ExerciseFailure(
            f"sinusoidal_encoding(3, 4) has dtype {table.dtype}; with no dtype given it should be float32, "
            "the default of the `dtype` argument: return table.to(dtype) (or build it with dtype=dtype)."
        )

    label = "sinusoidal_encoding(3, 4, dtype=torch.float64)"
    (table,) = call(label, 3, 4, dtype=torch.float64)
    if table.dtype != torch.float64:
        raise ExerciseFailure(
            f"sinusoidal_encoding(3, 4, dtype=torch.float64) has dtype {table.dtype}: return the table in "
            "the dtype asked for (build it with dtype=dtype, or convert at the end with .to(dtype))."
        )
    _expect(table[0], [0.0, 1.0, 0.0, 1.0], what="row 0 (position 0) of sinusoidal_encoding(3, 4)",
            hint="position 0 is sin(0) = 0 in the even columns and cos(0) = 1 in the odd ones.",
            recorded=("sinusoidal_encoding", label), outputs=(table,))
    expected = [[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)]
    _expect(table, expected, what="sinusoidal_encoding(3, 4)",
            hint="PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)); "
                 "for d_model = 4 the two frequencies are 1 and 1/100.",
            recorded=("sinusoidal_encoding", label))

    label = "sinusoidal_encoding(50, 16, dtype=torch.float64)"
    (table,) = call(label, 50, 16, dtype=torch.float64)
    _expect_shape(table, (50, 16), "sinusoidal_encoding(50, 16)")
    pairs = table[:, 0::2] ** 2 + table[:, 1::2] ** 2  # (50, 8): sin² + cos² of one angle = 1
    bad = (pairs - 1).abs() > 1e-6
    if bad.any():
        pos, i = (int(v) for v in bad.nonzero()[0])
        hint = _likely_mistake(("sinusoidal_encoding", label), (table,))
        raise ExerciseFailure(
            f"in sinusoidal_encoding(50, 16), PE[{pos}, {2 * i}]² + PE[{pos}, {2 * i + 1}]² = "
            f"{fmt_number(pairs[pos, i].item())}, but a sine and a cosine of the same angle give 1.\n  Hint: "
            + (hint or "columns 2i and 2i+1 use the same angle, pos / 10000^(2i/d_model).")
        )

    label = "sinusoidal_encoding(3, 5, dtype=torch.float64) (odd d_model)"
    (table,) = _call_hinting(
        call, "for an odd d_model there is one more sine column than cosine columns (3 and 2 for d_model = 5): "
        "table[:, 1::2] has d_model // 2 columns, so the cosines take only the first d_model // 2 angles, "
        "angle[:, : d_model // 2].",
        label, 3, 5, dtype=torch.float64)
    _expect_shape(table, (3, 5), "sinusoidal_encoding(3, 5) (odd d_model)",
                  _sinusoidal_shape_hint(tuple(table.shape), (3, 5)))
    last = [math.sin(p / 10000 ** (4 / 5)) for p in range(3)]
    _expect(table[:, 4], last, what="the last column of sinusoidal_encoding(3, 5)",
            hint="for an odd d_model the last column, index 4, is the sine of pair i = 2, sin(pos / 10000^(4/5)); "
                 "its cosine partner would be column 5, outside the table, so it is left out.",
            recorded=("sinusoidal_encoding", label), outputs=(table,))

    (table,) = call("sinusoidal_encoding(1000, 6, dtype=torch.float64)", 1000, 6, dtype=torch.float64)
    _expect_shape(table, (1000, 6), "sinusoidal_encoding(1000, 6)")
    p = 999
    angles = [p, p, p / 10000 ** (2 / 6), p / 10000 ** (2 / 6), p / 10000 ** (4 / 6), p / 10000 ** (4 / 6)]
    waves = [math.sin, math.cos] * 3
    _expect(table[p], [wave(a) for wave, a in zip(waves, angles)], rtol=0.0, atol=1e-10,
            what="row 999 of sinusoidal_encoding(1000, 6, dtype=torch.float64)",
            hint="with dtype=torch.float64 every step must be float64: torch.arange(...) / d_model and "
                 "10000 ** (...) give float32 unless you pass dtype=dtype, and float32 angles near 1000 are "
                 "off by up to about 1e-5.")
    count = 6

    for device in available_devices()[1:]:  # on a machine with a GPU, the table must go there
        # (a table left on the CPU is told so by the call itself: see Case.device)
        call(f"sinusoidal_encoding(4, 6, device='{device.type}')", 4, 6, device=device)
        count += 1
    return count


SINUSOIDAL = Exercise(
    function="sinusoidal_encoding",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=sinusoidal_visible,
    output_names=("table",),
    shape_hint=_sinusoidal_shape_hint,
    # float32: a table computed in float32 has angles up to ~60 rad, rounded to ~4e-6.
    atol={torch.float64: 1e-9, torch.float32: 2e-5},
)


# --------------------------------------------------------------------------- add_positions


def _add_shape_hint(actual: tuple, expected: tuple, case: Case | None = None) -> str | None:
    if actual[:-1] == expected[:-1] and actual[-1] == 2 * expected[-1]:
        return "positions are added to the embeddings, not concatenated: the width stays d_model."
    if len(actual) == len(expected) and actual[-2] != expected[-2]:
        return "use one row of the table per position of the sequence, table[:seq] with seq = embeddings.shape[-2]."
    return None


def add_positions_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    table = torch.arange(20, dtype=torch.float64).reshape(5, 4)  # row i = [4i, 4i+1, 4i+2, 4i+3]
    zeros = torch.zeros(2, 3, 4, dtype=torch.float64)
    label = "embeddings of zeros (2, 3, 4) and a table (5, 4)"
    (x,) = call(label, zeros, table)
    _expect_shape(x, (2, 3, 4), "the result for embeddings (2, 3, 4)",
                  _add_shape_hint(tuple(x.shape), (2, 3, 4)) or "the result has the embeddings' shape.")
    # Zeros plus the first three rows: rows 0, 1, 2 of the table, in every sequence of the batch.
    first_rows = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]
    _expect(x, [first_rows, first_rows], what="embeddings of zeros + positions, table = arange(20).reshape(5, 4)",
            hint="every sequence of the batch gets the same rows: embeddings + table[:seq].",
            recorded=("add_positions", label))

    ones = torch.ones(3, 4, dtype=torch.float64)
    label = "a single sequence (3, 4) with no batch dimension"
    (x,) = _call_hinting(call, "the sequence axis is the second-to-last one, seq = embeddings.shape[-2], with or "
                         "without a batch dimension.", label, ones, table)
    _expect_shape(x, (3, 4), "the result for embeddings (3, 4)",
                  "the sequence axis is the second-to-last one, embeddings.shape[-2], with or without a batch.")
    _expect(x, [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]],
            what="ones (3, 4) + positions", hint="embeddings + table[:seq].",
            recorded=("add_positions", label))

    emb = torch.linspace(-1, 1, 2 * 3 * 5 * 4, dtype=torch.float64).reshape(2, 3, 5, 4)
    label = "embeddings (2, 3, 5, 4) and a table of exactly 5 positions"
    (x,) = call(label, emb, table)
    _expect_shape(x, (2, 3, 5, 4), "the result for embeddings (2, 3, 5, 4)")
    (expected,) = recorded_outputs("add_positions", label)
    _expect(x, expected, what="embeddings (2, 3, 5, 4) + a (5, 4) table",
            hint="any leading dimensions ride along: embeddings + table[:seq] broadcasts.",
            recorded=("add_positions", label))

    call(Case("embeddings (2, 7, 4) and a table of only 5 positions (too short: refuse it)",
              (torch.zeros(2, 7, 4, dtype=torch.float64), table), raises=ValueError))
    return 4


ADD_POSITIONS = Exercise(
    function="add_positions",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=add_positions_visible,
    shape_hint=_add_shape_hint,
)


# --------------------------------------------------------------------------- permutation_experiment


def permutation_visible(call: Callable[..., tuple]) -> int:
    """Attention's outputs on random inputs are not worked out by hand: the expected values are the
    reference's outputs on these inputs, recorded (see the module docstring)."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(0)
    x = randn(gen, 2, 5, 8, scale=0.5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    label = "x (2, 5, 8), perm [3, 0, 4, 1, 2], no table"
    got = call(label, x, perm)
    for out, name in zip(got, ("attend_then_shuffle", "shuffle_then_attend")):
        _expect_shape(out, (2, 5, 8), f"{name} for x (2, 5, 8)",
                      "shuffle the sequence axis, x[..., perm, :]; attention keeps the shape of x.")
    after, before = got
    expected_after, expected_before = recorded_outputs("permutation_experiment", label)
    _expect(after, expected_after, what="attend_then_shuffle without a table",
            hint="attend first, attention(x) = scaled_dot_product_attention(x, x, x)[0], then reorder its "
                 "rows: output[..., perm, :].",
            recorded=("permutation_experiment", label), outputs=got)
    _expect(before, expected_before, what="shuffle_then_attend without a table",
            hint="shuffle first, x[..., perm, :], then attend: scaled_dot_product_attention(y, y, y)[0].",
            recorded=("permutation_experiment", label), outputs=got)

    table = randn(gen, 7, 8)
    label = "the same x and perm with a (7, 8) table"
    got = call(label, x, perm, table=table)
    after, before = got
    expected_after, expected_before = recorded_outputs("permutation_experiment", label)
    _expect(after, expected_after, what="attend_then_shuffle with a table",
            hint="add the positions (add_positions(x, table)), attend, then reorder the rows with perm.",
            recorded=("permutation_experiment", label), outputs=got)
    _expect(before, expected_before, what="shuffle_then_attend with a table",
            hint="shuffle x, then add the positions to the shuffled sequence, then attend.",
            recorded=("permutation_experiment", label), outputs=got)

    single = randn(gen, 1, 4)
    got = call("a single token, x (1, 4), perm [0]", single, torch.tensor([0]))
    for out, name in zip(got, ("attend_then_shuffle", "shuffle_then_attend")):
        _expect_shape(out, (1, 4), f"{name} for x (1, 4) with no batch dimension",
                      "without a batch the sequence axis is the first one: index it as x[..., perm, :], which "
                      "works with or without a batch (x[:, perm] would shuffle the columns of a (seq, d_model) x).")
        _expect(out, single, what=f"{name} for a single token",
                hint="a token alone attends only to itself (weight 1), so attention returns it unchanged.")
    return 5


PERMUTATION = Exercise(
    function="permutation_experiment",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=permutation_visible,
    output_names=("attend_then_shuffle", "shuffle_then_attend"),
    uses=("add_positions", "scaled_dot_product_attention"),
)


# --------------------------------------------------------------------------- position_similarity


def _similarity_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    seq_len, d_model = case.args[0].shape
    if actual == (d_model,) and d_model != seq_len:
        return "table.T @ table compares dimensions, not positions: use table @ table.T, (seq_len, seq_len)."
    if actual == (seq_len - 1,):
        return "one entry per distance k = 0, 1, ..., seq_len - 1: distance 0 (a position with itself) comes first."
    if actual == (seq_len, seq_len):
        return "that is the matrix of all dot products; reduce it to one number per distance (its diagonals)."
    return None


def similarity_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    label = "the table [[1, 0], [0, 1], [1, 1]]"
    (s,) = call(label, table)
    if tuple(s.shape) != (3,):
        hint = _similarity_shape_hint(tuple(s.shape), (3,), Case("", (table,)))
        raise ExerciseFailure(f"position_similarity of a (3, 2) table has shape {tuple(s.shape)}, expected (3,)"
                              + (f": {hint}" if hint else ": one entry per distance."))
    _expect(s, [4 / 3, 1 / 2, 1.0], what="position_similarity([[1, 0], [0, 1], [1, 1]])",
            hint="distance 0: (1 + 1 + 2) / 3; distance 1: (0 + 1) / 2; distance 2: 1 / 1.",
            recorded=("position_similarity", label))

    # One sine/cosine pair of frequency 1: P(p)·P(p+k) = sin p sin(p+k) + cos p cos(p+k) = cos k.
    p = torch.arange(6, dtype=torch.float64)
    wave = torch.stack([torch.sin(p), torch.cos(p)], dim=-1)  # (6, 2)
    label = "a table of one sine/cosine pair, rows [sin p, cos p]"
    (s,) = call(label, wave)
    _expect(s, [math.cos(k) for k in range(6)], what="position_similarity of rows [sin p, cos p]",
            hint="sin p sin(p+k) + cos p cos(p+k) = cos k for every pair k apart, so entry k is cos k.",
            recorded=("position_similarity", label))

    (s,) = call("a single position [[3, 4]]", torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    _expect(s, [25.0], what="position_similarity([[3, 4]])", hint="3·3 + 4·4 = 25 at distance 0.")
    return 3


SIMILARITY = Exercise(
    function="position_similarity",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=similarity_visible,
    output_names=("similarity",),
    shape_hint=_similarity_shape_hint,
)


# --------------------------------------------------------------------------- LearnedPositionalEmbedding


def learned_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    weight = torch.arange(20, dtype=torch.float64).reshape(5, 4) / 10  # row t = the vector of position t
    state = {"embedding.weight": weight}
    known = Case("LearnedPositionalEmbedding(5, 4) with known weights, x of zeros (2, 3, 4)",
                 (torch.zeros(2, 3, 4, dtype=torch.float64),), init=(5, 4), state=state)
    (out,) = call(known)
    _expect_shape(out, (2, 3, 4), "the output for x (2, 3, 4)", "the output has the shape of x.")
    first_rows = [[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7], [0.8, 0.9, 1.0, 1.1]]  # weight[:3]
    expect_close(out, [first_rows, first_rows], what="x of zeros + the first 3 rows of the table",
                 hint=_likely_mistake(("LearnedPositionalEmbedding", known.label), (out,))
                 or "position t of every sequence gets row t of self.embedding.weight.")

    gen = torch.Generator().manual_seed(0)
    x = randn(gen, 1, 5, 4)
    full = Case("x (1, 5, 4) as long as the table, dropout=0.1 (off in eval mode)",
                (x,), init=(5, 4), init_kwargs={"dropout": 0.1}, state=state)
    (out,) = call(full)
    (expected,) = recorded_outputs("LearnedPositionalEmbedding", full.label)
    expect_close(out, expected, what="x + positions for a sequence of 5 = max_len",
                 hint=_likely_mistake(("LearnedPositionalEmbedding", full.label), (out,))
                 or "x + self.embedding(torch.arange(seq_len, device=x.device)), with seq_len = x.shape[1].")

    call(Case("x (1, 6, 4), longer than max_len = 5 (refuse it)", (torch.zeros(1, 6, 4, dtype=torch.float64),),
              init=(5, 4), state=state, raises=ValueError))
    return 3


LEARNED = Exercise(
    function="LearnedPositionalEmbedding",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=learned_visible,
    is_module=True,
    uses=("add_positions",),
)

EXERCISES = (SINUSOIDAL, ADD_POSITIONS, PERMUTATION, SIMILARITY, LEARNED)
