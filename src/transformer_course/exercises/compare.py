"""Calling a student's function and comparing what it returns, with messages a student can act on.

Every failure raises :class:`ExerciseFailure` whose message says *what* differs, *where* and by
*how much*, and, when we can tell, the likely mistake. Shared by the visible checks (worked
examples in the notebook) and the hidden checks (comparison with the reference).
"""

from __future__ import annotations

import linecache
import math
import os
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .base import Case, Exercise, ExerciseFailure

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fmt_index(index: Sequence[int]) -> str:
    """``(0, 2, 1)`` -> ``"[0, 2, 1]"``, the way a student would index the tensor."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def fmt_number(x: float) -> str:
    """A short, readable number: 0.31, 1.2e-07, nan, inf."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def _student_line(tb: Any) -> str:
    """The last line of the student's own code in a traceback, or '' if there is none."""
    line = ""
    for frame in traceback.extract_tb(tb):
        filename = frame.filename
        if "site-packages" in filename or filename.startswith(_PACKAGE_DIR):
            continue
        text = frame.line or linecache.getline(filename, frame.lineno).strip()
        if text:
            line = text
    return line


_reported: set[str] = set()


def report_warnings(name: str, caught: list[warnings.WarningMessage]) -> None:
    """Print each new warning the student's code raised, on stdout (see call_student)."""
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in _reported:
            _reported.add(text)
            print(f"note: `{name}` triggered a warning (not an error, but worth a look):\n  {text}")


def call_student(exercise: Exercise, fn: Callable[..., Any], case: Case) -> tuple[torch.Tensor, ...]:
    """Call ``fn`` on a copy of the case and return its outputs as a tuple of tensors.

    Raises ExerciseFailure if it is not implemented, raises, changes its inputs, or returns
    the wrong kind, number, dtype or device of outputs.
    """
    __tracebackhide__ = True
    name = exercise.function
    inputs = case.clone()
    try:
        # A warning would go to stderr, and nbgrader gives 0 to a test cell that writes to
        # stderr; we pass warnings on to stdout instead, once each.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*inputs.args, **inputs.kwargs)
        report_warnings(name, caught)
    except NotImplementedError:
        raise ExerciseFailure(
            f"`{name}` is not implemented yet: replace `raise NotImplementedError()` with your code."
        ) from None
    except ExerciseFailure:
        raise
    except Exception as error:  # noqa: BLE001 - any error in student code becomes a message
        where = _student_line(error.__traceback__)
        where = f"\n  in your line: {where}" if where else ""
        raise ExerciseFailure(
            f"`{name}` raised {type(error).__name__}: {error}\n  on {case.label}{where}"
        ) from None

    for before, after in zip((*case.args, *case.kwargs.values()), (*inputs.args, *inputs.kwargs.values())):
        if isinstance(before, torch.Tensor) and not torch.equal(before, after):
            raise ExerciseFailure(
                f"`{name}` changed one of its input tensors in place on {case.label}: "
                "use out-of-place operations (x - m, not x -= m or x.sub_(m))."
            )
    return normalise_outputs(exercise, result, case)


def normalise_outputs(exercise: Exercise, result: Any, case: Case) -> tuple[torch.Tensor, ...]:
    """Check the kind, number, dtype and device of what came back; return a tuple of tensors."""
    __tracebackhide__ = True
    names = exercise.output_names
    name = exercise.function
    if len(names) == 1:
        outputs = (result,)
    else:
        wanted = "(" + ", ".join(names) + ")"
        if not isinstance(result, (tuple, list)):
            raise ExerciseFailure(
                f"`{name}` should return a tuple {wanted}, but returned a {type(result).__name__}."
            )
        if len(result) != len(names):
            raise ExerciseFailure(
                f"`{name}` should return {len(names)} values {wanted}, but returned {len(result)}."
            )
        outputs = tuple(result)
    dtype = case.dtype
    device = next(
        (a.device for a in (*case.args, *case.kwargs.values()) if isinstance(a, torch.Tensor)), None
    )
    for out, out_name in zip(outputs, names):
        if result is None:
            raise ExerciseFailure(f"`{name}` returned None: did you forget the `return`?")
        if not isinstance(out, torch.Tensor):
            raise ExerciseFailure(
                f"`{name}` returned a {type(out).__name__} for `{out_name}`; return a torch.Tensor."
            )
        if dtype is not None and out.dtype != dtype:
            raise ExerciseFailure(
                f"`{out_name}` has dtype {out.dtype} for {dtype} inputs on {case.label}: keep the "
                "inputs' dtype (a tensor made with an explicit dtype, or a numpy round trip, "
                "changes it)."
            )
        if device is not None and out.device != device:
            raise ExerciseFailure(
                f"`{out_name}` is on {out.device} but the inputs are on {device}: create new "
                "tensors on the inputs' device (e.g. torch.zeros(..., device=x.device))."
            )
    return outputs


def mismatch(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    what: str,
    rtol: float,
    atol: float,
) -> str | None:
    """Why ``actual`` is not close to ``expected``, or None when it is.

    The message names the place of the largest difference and how many entries are off.
    NaN in both places counts as equal; NaN on one side only is reported as such.
    """
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    a_bad, e_bad = ~torch.isfinite(a), ~torch.isfinite(e)
    unexpected = a_bad & ~e_bad
    if unexpected.any():
        index = tuple(unexpected.nonzero()[0].tolist())
        kind = "NaN" if math.isnan(a[index].item()) else "inf"
        count = int(unexpected.sum())
        return (
            f"{what} contains {kind} at {fmt_index(index)} where {fmt_number(e[index].item())} "
            f"was expected ({count} non-finite entr{'y' if count == 1 else 'ies'})"
        )
    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    diff = (a - e).abs().nan_to_num(nan=math.inf)
    diff = torch.where(close, torch.zeros_like(diff), diff)
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
    count = int((~close).sum())
    return (
        f"{what}: max abs difference {fmt_number(diff.max().item())} at {fmt_index(index)} "
        f"(got {fmt_number(a[index].item())}, expected {fmt_number(e[index].item())}); "
        f"{count} of {a.numel()} entries differ"
    )


def expect_close(
    actual: torch.Tensor,
    expected: Any,
    *,
    what: str,
    hint: str = "",
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> None:
    """Raise ExerciseFailure unless ``actual`` is close to ``expected`` (for worked examples)."""
    __tracebackhide__ = True
    expected = torch.as_tensor(expected, dtype=torch.float64)
    problem = mismatch(actual, expected, what=what, rtol=rtol, atol=atol)
    if problem:
        raise ExerciseFailure(problem + (f".\n  Hint: {hint}" if hint else "."))
