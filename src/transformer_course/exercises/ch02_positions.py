"""Chapter 2 exercises: the sinusoidal table, adding positions, the permutation experiment, the
dot product of two positions as a function of their distance, and a learned table.

Visible checks use worked examples a student can redo by hand (the sinusoidal table for
``d_model = 4``, whose two frequencies are 1 and 1/100; a three-row table whose dot products are
easy to add up) and properties (sin² + cos² = 1 within a column pair; without positions,
shuffling before or after attention gives the same result). Where a worked example fails, the
typical mistakes below are run on the same inputs to name the likely cause. Hidden checks
compare with the reference on seeded inputs.

Nothing here imports the reference implementation: attention for the visible checks is written
out below with plain tensor operations.

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
from torch import nn

from ..device import available_devices
from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure
from .compare import build_module, expect_close, fmt_number
from .inputs import randn, with_float32

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


def _named_mistake(mistakes: tuple[Mistake, ...], got: tuple, *args: Any, **kwargs: Any) -> str | None:
    """The hint of the first mistake whose output on these inputs equals ``got`` (for visible checks)."""
    for mistake in mistakes:
        try:
            wrong = mistake.fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a mistake that cannot run on these inputs says nothing
            continue
        wrong = wrong if isinstance(wrong, tuple) else (wrong,)
        if len(wrong) == len(got) and all(
            isinstance(w, torch.Tensor) and w.shape == g.shape
            and torch.allclose(g.detach().cpu().double(), w.detach().cpu().double(), rtol=1e-6, atol=1e-8)
            for g, w in zip(got, wrong)
        ):
            return mistake.hint
    return None


def _expect(got: torch.Tensor, expected: Any, *, what: str, hint: str, mistakes: tuple[Mistake, ...] = (),
            inputs: tuple = (), kwargs: dict | None = None, outputs: tuple | None = None,
            rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """expect_close, with the hint of a matching typical mistake in place of the general one."""
    __tracebackhide__ = True
    expected = torch.as_tensor(expected, dtype=torch.float64)
    if tuple(got.shape) == tuple(expected.shape) and torch.allclose(
        got.detach().cpu().double(), expected, rtol=rtol, atol=atol
    ):
        return
    named = _named_mistake(mistakes, outputs if outputs is not None else (got,), *inputs, **(kwargs or {}))
    expect_close(got, expected, what=what, hint=named or hint, rtol=rtol, atol=atol)


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


def _sinusoidal_shape_hint(actual: tuple, expected: tuple, case: Case | None = None) -> str | None:
    if len(actual) == 2 and actual == expected[::-1] and actual != expected:
        return ("rows are positions and columns are dimensions: your table is transposed, "
                "(d_model, seq_len) instead of (seq_len, d_model).")
    if len(expected) == 2 and expected[1] % 2 == 1 and actual[:1] == expected[:1]:
        return ("for an odd d_model the last column (an even index) is a sine without a cosine partner: "
                "there are ceil(d_model / 2) sine columns and floor(d_model / 2) cosine columns.")
    return None


def _sinusoidal_diagnose(outputs: tuple, case: Case) -> str | None:
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

    (table,) = call("sinusoidal_encoding(3, 4, dtype=torch.float64)", 3, 4, dtype=torch.float64)
    if table.dtype != torch.float64:
        raise ExerciseFailure(
            f"sinusoidal_encoding(3, 4, dtype=torch.float64) has dtype {table.dtype}: return the table in "
            "the dtype asked for (build it with dtype=dtype, or convert at the end with .to(dtype))."
        )
    _expect(table[0], [0.0, 1.0, 0.0, 1.0], what="row 0 (position 0) of sinusoidal_encoding(3, 4)",
            hint="position 0 is sin(0) = 0 in the even columns and cos(0) = 1 in the odd ones.",
            mistakes=SINUSOIDAL_MISTAKES, inputs=(3, 4), kwargs={"dtype": torch.float64}, outputs=(table,))
    expected = [[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)]
    _expect(table, expected, what="sinusoidal_encoding(3, 4)",
            hint="PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)); "
                 "for d_model = 4 the two frequencies are 1 and 1/100.",
            mistakes=SINUSOIDAL_MISTAKES, inputs=(3, 4), kwargs={"dtype": torch.float64})

    (table,) = call("sinusoidal_encoding(50, 16, dtype=torch.float64)", 50, 16, dtype=torch.float64)
    _expect_shape(table, (50, 16), "sinusoidal_encoding(50, 16)")
    pairs = table[:, 0::2] ** 2 + table[:, 1::2] ** 2  # (50, 8): sin² + cos² of one angle = 1
    bad = (pairs - 1).abs() > 1e-6
    if bad.any():
        pos, i = (int(v) for v in bad.nonzero()[0])
        hint = _named_mistake(SINUSOIDAL_MISTAKES, (table,), 50, 16, dtype=torch.float64)
        raise ExerciseFailure(
            f"in sinusoidal_encoding(50, 16), PE[{pos}, {2 * i}]² + PE[{pos}, {2 * i + 1}]² = "
            f"{fmt_number(pairs[pos, i].item())}, but a sine and a cosine of the same angle give 1.\n  Hint: "
            + (hint or "columns 2i and 2i+1 use the same angle, pos / 10000^(2i/d_model).")
        )

    (table,) = _call_hinting(
        call, "for an odd d_model there is one more sine column than cosine columns (3 and 2 for d_model = 5): "
        "table[:, 1::2] has d_model // 2 columns, so the cosines take only the first d_model // 2 angles, "
        "angle[:, : d_model // 2].",
        "sinusoidal_encoding(3, 5, dtype=torch.float64) (odd d_model)", 3, 5, dtype=torch.float64)
    _expect_shape(table, (3, 5), "sinusoidal_encoding(3, 5) (odd d_model)",
                  _sinusoidal_shape_hint(tuple(table.shape), (3, 5)))
    last = [math.sin(p / 10000 ** (4 / 5)) for p in range(3)]
    _expect(table[:, 4], last, what="the last column of sinusoidal_encoding(3, 5)",
            hint="for an odd d_model the last column, index 4, is the sine of pair i = 2, sin(pos / 10000^(4/5)); "
                 "its cosine partner would be column 5, outside the table, so it is left out.",
            mistakes=SINUSOIDAL_MISTAKES, inputs=(3, 5), kwargs={"dtype": torch.float64}, outputs=(table,))

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
        (table,) = call(f"sinusoidal_encoding(4, 6, device='{device.type}')", 4, 6, device=device)
        if table.device.type != device.type:
            raise ExerciseFailure(
                f"sinusoidal_encoding(4, 6, device='{device.type}') is on {table.device}: create the "
                "tensors with device=device, or move the table at the end with .to(device)."
            )
        count += 1
    return count


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
SINUSOIDAL_HIDDEN = HiddenTests(
    function="sinusoidal_encoding",
    reference="transformer_course.positional:sinusoidal_encoding",
    make_cases=sinusoidal_cases,
    mistakes=SINUSOIDAL_MISTAKES,
    diagnose=_sinusoidal_diagnose,
)


# --------------------------------------------------------------------------- add_positions

ADD_MISTAKES = (
    Mistake(lambda embeddings, table: embeddings * table[: embeddings.shape[-2]],
            "you multiplied the embeddings by the position vectors; add them: x_i = E(token_i) + P(i)."),
    Mistake(lambda embeddings, table: embeddings + table[table.shape[0] - embeddings.shape[-2]:],
            "position i gets row i of the table: use the first seq rows, table[:seq], not the last ones."),
    Mistake(lambda embeddings, table: embeddings + table[1: embeddings.shape[-2] + 1],
            "positions start at 0: the first token gets row 0 of the table (table[:seq], not table[1:seq + 1])."),
)


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
    (x,) = call("embeddings of zeros (2, 3, 4) and a table (5, 4)", zeros, table)
    _expect_shape(x, (2, 3, 4), "the result for embeddings (2, 3, 4)",
                  _add_shape_hint(tuple(x.shape), (2, 3, 4)) or "the result has the embeddings' shape.")
    _expect(x, table[:3].expand(2, 3, 4), what="embeddings of zeros + positions, table = arange(20).reshape(5, 4)",
            hint="every sequence of the batch gets the same rows: embeddings + table[:seq].",
            mistakes=ADD_MISTAKES, inputs=(zeros, table))

    ones = torch.ones(3, 4, dtype=torch.float64)
    (x,) = _call_hinting(call, "the sequence axis is the second-to-last one, seq = embeddings.shape[-2], with or "
                         "without a batch dimension.", "a single sequence (3, 4) with no batch dimension", ones, table)
    _expect_shape(x, (3, 4), "the result for embeddings (3, 4)",
                  "the sequence axis is the second-to-last one, embeddings.shape[-2], with or without a batch.")
    _expect(x, 1 + table[:3], what="ones (3, 4) + positions", hint="embeddings + table[:seq].",
            mistakes=ADD_MISTAKES, inputs=(ones, table))

    emb = torch.linspace(-1, 1, 2 * 3 * 5 * 4, dtype=torch.float64).reshape(2, 3, 5, 4)
    (x,) = call("embeddings (2, 3, 5, 4) and a table of exactly 5 positions", emb, table)
    _expect_shape(x, (2, 3, 5, 4), "the result for embeddings (2, 3, 5, 4)")
    _expect(x, emb + table, what="embeddings (2, 3, 5, 4) + a (5, 4) table",
            hint="any leading dimensions ride along: embeddings + table[:seq] broadcasts.",
            mistakes=ADD_MISTAKES, inputs=(emb, table))

    call(Case("embeddings (2, 7, 4) and a table of only 5 positions (too short: refuse it)",
              (torch.zeros(2, 7, 4, dtype=torch.float64), table), raises=ValueError))
    return 4


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


ADD_POSITIONS = Exercise(
    function="add_positions",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=add_positions_visible,
    shape_hint=_add_shape_hint,
)
ADD_POSITIONS_HIDDEN = HiddenTests(
    function="add_positions",
    reference="transformer_course.positional:add_positions",
    make_cases=add_positions_cases,
    mistakes=ADD_MISTAKES,
)


# --------------------------------------------------------------------------- permutation_experiment


def _attend(x: torch.Tensor) -> torch.Tensor:
    """Self-attention with q = k = v = x ``(..., seq, d)`` -> ``(..., seq, d)``, written out."""
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


PERMUTATION_MISTAKES = (
    Mistake(_experiment(positions_travel=True),
            "you added the positions before shuffling, so each token took its position vector along and "
            "the shuffle went unnoticed again. Positions belong to the places, not the tokens: in "
            "shuffle_then_attend shuffle x first, then add P(0), P(1), ... in order."),
    Mistake(_experiment(ignore_table=True),
            "you ignored `table`: when a table is given, add its positions (add_positions) before attending, "
            "in both experiments."),
    Mistake(_experiment(out_perm="inverse"),
            "attend_then_shuffle is shuffled with the inverse permutation: row i must be row perm[i] of the "
            "attention output, output[..., perm, :] (not argsort(perm))."),
    Mistake(_experiment(out_perm="none"),
            "attend_then_shuffle is not shuffled: it is the attention output with its rows reordered by "
            "perm, output[..., perm, :]."),
    Mistake(_experiment(swap_outputs=True),
            "you returned the two results in the wrong order: (attend_then_shuffle, shuffle_then_attend)."),
)


def permutation_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(0)
    x = randn(gen, 2, 5, 8, scale=0.5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    got = call("x (2, 5, 8), perm [3, 0, 4, 1, 2], no table", x, perm)
    for out, name in zip(got, ("attend_then_shuffle", "shuffle_then_attend")):
        _expect_shape(out, (2, 5, 8), f"{name} for x (2, 5, 8)",
                      "shuffle the sequence axis, x[..., perm, :]; attention keeps the shape of x.")
    after, before = got
    _expect(after, _attend(x)[:, perm], what="attend_then_shuffle without a table",
            hint="attend first, attention(x) = scaled_dot_product_attention(x, x, x)[0], then reorder its "
                 "rows: output[..., perm, :].",
            mistakes=PERMUTATION_MISTAKES, inputs=(x, perm), outputs=got)
    _expect(before, _attend(x[:, perm]), what="shuffle_then_attend without a table",
            hint="shuffle first, x[..., perm, :], then attend: scaled_dot_product_attention(y, y, y)[0].",
            mistakes=PERMUTATION_MISTAKES, inputs=(x, perm), outputs=got)

    table = randn(gen, 7, 8)
    got = call("the same x and perm with a (7, 8) table", x, perm, table=table)
    after, before = got
    _expect(after, _attend(x + table[:5])[:, perm], what="attend_then_shuffle with a table",
            hint="add the positions (add_positions(x, table)), attend, then reorder the rows with perm.",
            mistakes=PERMUTATION_MISTAKES, inputs=(x, perm), kwargs={"table": table}, outputs=got)
    _expect(before, _attend(x[:, perm] + table[:5]), what="shuffle_then_attend with a table",
            hint="shuffle x, then add the positions to the shuffled sequence, then attend.",
            mistakes=PERMUTATION_MISTAKES, inputs=(x, perm), kwargs={"table": table}, outputs=got)

    single = randn(gen, 1, 4)
    got = call("a single token, x (1, 4), perm [0]", single, torch.tensor([0]))
    for out, name in zip(got, ("attend_then_shuffle", "shuffle_then_attend")):
        _expect_shape(out, (1, 4), f"{name} for x (1, 4) with no batch dimension",
                      "without a batch the sequence axis is the first one: index it as x[..., perm, :], which "
                      "works with or without a batch (x[:, perm] would shuffle the columns of a (seq, d_model) x).")
        _expect(out, single, what=f"{name} for a single token",
                hint="a token alone attends only to itself (weight 1), so attention returns it unchanged.")
    return 5


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


PERMUTATION = Exercise(
    function="permutation_experiment",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=permutation_visible,
    output_names=("attend_then_shuffle", "shuffle_then_attend"),
    uses=("add_positions", "scaled_dot_product_attention"),
)
PERMUTATION_HIDDEN = HiddenTests(
    function="permutation_experiment",
    reference="transformer_course.positional:permutation_experiment",
    make_cases=permutation_cases,
    mistakes=PERMUTATION_MISTAKES,
)


# --------------------------------------------------------------------------- position_similarity


def _by_distance(table: torch.Tensor, reduce: str = "mean", normalise: bool = False) -> torch.Tensor:
    if normalise:
        table = table / table.norm(dim=-1, keepdim=True)
    gram = table @ table.T
    n = table.shape[0]
    if reduce == "sum":
        return torch.stack([gram.diagonal(k).sum() for k in range(n)])
    if reduce == "sum / n":
        return torch.stack([gram.diagonal(k).sum() / n for k in range(n)])
    return torch.stack([gram.diagonal(k).mean() for k in range(n)])


SIMILARITY_MISTAKES = (
    Mistake(lambda table: table @ table[0],
            "you compared every position with position 0 only; average over every pair k apart, (0, k), "
            "(1, k + 1), ...: the k-th diagonal of table @ table.T."),
    Mistake(lambda table: _by_distance(table, reduce="sum"),
            "you added up the dot products at distance k; average them instead (there are seq_len - k pairs)."),
    Mistake(lambda table: _by_distance(table, reduce="sum / n"),
            "divide by the number of pairs at distance k, which is seq_len - k, not seq_len: use .mean() of "
            "the diagonal."),
    Mistake(lambda table: _by_distance(table, normalise=True),
            "you normalised the vectors (a cosine similarity); the exercise asks for the plain dot product."),
)


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
    (s,) = call("the table [[1, 0], [0, 1], [1, 1]]", table)
    if tuple(s.shape) != (3,):
        hint = _similarity_shape_hint(tuple(s.shape), (3,), Case("", (table,)))
        raise ExerciseFailure(f"position_similarity of a (3, 2) table has shape {tuple(s.shape)}, expected (3,)"
                              + (f": {hint}" if hint else ": one entry per distance."))
    _expect(s, [4 / 3, 1 / 2, 1.0], what="position_similarity([[1, 0], [0, 1], [1, 1]])",
            hint="distance 0: (1 + 1 + 2) / 3; distance 1: (0 + 1) / 2; distance 2: 1 / 1.",
            mistakes=SIMILARITY_MISTAKES, inputs=(table,))

    # One sine/cosine pair of frequency 1: P(p)·P(p+k) = sin p sin(p+k) + cos p cos(p+k) = cos k.
    p = torch.arange(6, dtype=torch.float64)
    wave = torch.stack([torch.sin(p), torch.cos(p)], dim=-1)  # (6, 2)
    (s,) = call("a table of one sine/cosine pair, rows [sin p, cos p]", wave)
    _expect(s, [math.cos(k) for k in range(6)], what="position_similarity of rows [sin p, cos p]",
            hint="sin p sin(p+k) + cos p cos(p+k) = cos k for every pair k apart, so entry k is cos k.",
            mistakes=SIMILARITY_MISTAKES, inputs=(wave,))

    (s,) = call("a single position [[3, 4]]", torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    _expect(s, [25.0], what="position_similarity([[3, 4]])", hint="3·3 + 4·4 = 25 at distance 0.")
    return 3


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


SIMILARITY = Exercise(
    function="position_similarity",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=similarity_visible,
    output_names=("similarity",),
    shape_hint=_similarity_shape_hint,
)
SIMILARITY_HIDDEN = HiddenTests(
    function="position_similarity",
    reference="transformer_course.positional:position_similarity",
    make_cases=similarity_cases,
    mistakes=SIMILARITY_MISTAKES,
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


LEARNED_MISTAKES = (
    Mistake(_LearnedFromOne, "positions start at 0: the first token gets row 0, "
                             "self.embedding(torch.arange(seq_len)), not arange(1, seq_len + 1)."),
    Mistake(_LearnedMultiplied, "you multiplied x by the position vectors; add them: x + self.embedding(positions)."),
    Mistake(_LearnedPositionsOnly, "you returned the position vectors alone; add them to x: "
                                   "x + self.embedding(positions)."),
    Mistake(_LearnedBatchAxis, "the positions are 0 .. seq_len - 1 with seq_len = x.shape[1]; you used x.shape[0], "
                               "the batch size."),
)


def _named_module_mistake(out: torch.Tensor, case: Case) -> str | None:
    """The hint of the first mistake class that, built like the student's, gives ``out``."""
    for mistake in LEARNED_MISTAKES:
        try:
            wrong = build_module(mistake.fn, case)(*case.args)
        except Exception:  # noqa: BLE001 - a mistake that cannot run here says nothing
            continue
        if wrong.shape == out.shape and torch.allclose(wrong, out.detach().to(wrong.device, wrong.dtype)):
            return mistake.hint
    return None


def learned_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    weight = torch.arange(20, dtype=torch.float64).reshape(5, 4) / 10  # row t = the vector of position t
    state = {"embedding.weight": weight}
    known = Case("LearnedPositionalEmbedding(5, 4) with known weights, x of zeros (2, 3, 4)",
                 (torch.zeros(2, 3, 4, dtype=torch.float64),), init=(5, 4), state=state)
    (out,) = call(known)
    _expect_shape(out, (2, 3, 4), "the output for x (2, 3, 4)", "the output has the shape of x.")
    expect_close(out, weight[:3].expand(2, 3, 4), what="x of zeros + the first 3 rows of the table",
                 hint=_named_module_mistake(out, known)
                 or "position t of every sequence gets row t of self.embedding.weight.")

    gen = torch.Generator().manual_seed(0)
    x = randn(gen, 1, 5, 4)
    full = Case("x (1, 5, 4) as long as the table, dropout=0.1 (off in eval mode)",
                (x,), init=(5, 4), init_kwargs={"dropout": 0.1}, state=state)
    (out,) = call(full)
    expect_close(out, x + weight, what="x + positions for a sequence of 5 = max_len",
                 hint=_named_module_mistake(out, full)
                 or "x + self.embedding(torch.arange(seq_len, device=x.device)), with seq_len = x.shape[1].")

    call(Case("x (1, 6, 4), longer than max_len = 5 (refuse it)", (torch.zeros(1, 6, 4, dtype=torch.float64),),
              init=(5, 4), state=state, raises=ValueError))
    return 3


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


LEARNED = Exercise(
    function="LearnedPositionalEmbedding",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=learned_visible,
    is_module=True,
    uses=("add_positions",),
)
LEARNED_HIDDEN = HiddenTests(
    function="LearnedPositionalEmbedding",
    reference="transformer_course.positional:LearnedPositionalEmbedding",
    make_cases=learned_cases,
    mistakes=LEARNED_MISTAKES,
)

EXERCISES = (SINUSOIDAL, ADD_POSITIONS, PERMUTATION, SIMILARITY, LEARNED)

HIDDEN_TESTS = (SINUSOIDAL_HIDDEN, ADD_POSITIONS_HIDDEN, PERMUTATION_HIDDEN, SIMILARITY_HIDDEN, LEARNED_HIDDEN)
