"""Recorded outputs for the visible checks: numbers, so that the student side holds no answer.

Some visible checks need an expected value nobody works out by hand (the output of a small model,
say), and every visible check would like to name the typical mistake a student made. Computing
either takes code that is the answer, or one argument away from it, and the student side of the
registry holds no such code: it may be imported anywhere, the grading sandbox included.

So the grader side runs the reference and each typical mistake **on the visible checks' own
inputs** and stores what they return, per assignment, in ``recorded/<assignment>.json``. A
visible check then compares numbers:

    (out,) = call("the stand-in model", model, src, tgt)
    expect_recorded("transformer_forward", "the stand-in model", (out,), hint="...")

which passes when ``out`` equals the reference's recorded output, and otherwise says what differs,
where and by how much, and, when ``out`` equals a recorded mistake's output, that mistake's hint.
A mistake that raises on a visible input is recorded as the way it raises (``"raises"``: the
exception and its message, numbers normalised): a student's code that raises the same way on that
call is told the mistake too (:func:`recorded_raise`, used by ``compare.call_student``, in the
notebook and inside the grading sandbox alike). Any failed visible check names the mistake whose
outputs a call gave (``running.run_visible_checks``).
The inputs are the visible ones, fixed and public, so the numbers give nothing away about the
hidden inputs. Regenerate the files after changing a visible check, a reference or a mistake:

    python -m transformer_course.grading.record          # a test fails while they are stale
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .base import ExerciseFailure

FOLDER = Path(__file__).resolve().parent / "recorded"

# While the grader side records (transformer_course.grading.record), the entries it is writing:
# the checks then compare the reference with itself, and pass.
_live: list[dict] = []


@contextlib.contextmanager
def recording_into(entries: dict, read: set[str]) -> Iterator[None]:
    """Read recorded outputs from ``entries`` (being filled) instead of the files, noting in
    ``read`` the labels a check looked up."""
    _live.append({"entries": entries, "read": read})
    try:
        yield
    finally:
        _live.pop()


@cache
def _load(assignment: str) -> dict:
    path = FOLDER / f"{assignment}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _entry(function: str, label: str, *, needed: bool = True) -> dict | None:
    from . import get  # the registry (imported here: it imports the chapters, which import this)

    if _live:
        _live[-1]["read"].add(label)
        entries = _live[-1]["entries"]
    else:
        entries = _load(get(function).assignment).get(function, {})
    if label not in entries and needed:
        raise KeyError(f"no recorded outputs for {function} on {label!r}: run "
                       "`python -m transformer_course.grading.record`")
    return entries.get(label)


def recorded_outputs(function: str, label: str) -> tuple:
    """What the reference returned on the visible call ``label`` of ``function``."""
    return tuple(decode(o) for o in _entry(function, label)["outputs"])


def recorded_mistake(function: str, label: str, outputs: tuple) -> str | None:
    """The hint of the recorded typical mistake whose outputs on ``label`` equal ``outputs``
    (None when none does, or when nothing was recorded for ``label``: see grading.record)."""
    from . import get
    from .compare import mismatch, plain_mismatch

    exercise = get(function)
    entry = _entry(function, label, needed=False)
    for mistake in entry["mistakes"] if entry else ():
        if "outputs" not in mistake:  # a mistake that raises on this call (see recorded_raise)
            continue
        wrong = tuple(decode(o) for o in mistake["outputs"])
        if len(wrong) != len(outputs):
            continue
        same = True
        for out, want in zip(outputs, wrong):
            if exercise.plain_values:
                same = plain_mismatch(out, want, name="x", what="x") is None
            else:
                same = isinstance(out, torch.Tensor) and mismatch(
                    out, want, what="x", rtol=1e-6, atol=1e-9) is None
            if not same:
                break
        if same:
            return mistake["hint"]
    return None


def recorded_raise(function: str, label: str, error: BaseException) -> str | None:
    """The hint of the recorded typical mistake that raises on the visible call ``label`` of
    ``function`` the way ``error`` was raised (the same exception, the same message but for the
    numbers in it; see :func:`.compare.raise_signature`), or None. So a student whose code
    crashes learns the likely mistake too, in the notebook and from the grader alike."""
    from . import get
    from .compare import raise_signature

    try:
        get(function)
    except KeyError:
        return None
    entry = _entry(function, label, needed=False)
    signature = None
    for mistake in entry["mistakes"] if entry else ():
        if "raises" in mistake:
            signature = signature or raise_signature(error)
            if mistake["raises"] == signature:
                return mistake["hint"]
    return None


def expect_recorded(function: str, label: str, outputs: tuple, *, what: str | None = None,
                    hint: str = "", rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Raise ExerciseFailure unless ``outputs`` equal the reference's recorded outputs on ``label``.

    The message says what differs, where and by how much; when the outputs are those of a
    recorded typical mistake, its hint, else ``hint``.
    """
    __tracebackhide__ = True
    from . import get
    from .compare import index_mismatch, mismatch, plain_mismatch

    exercise = get(function)
    expected = recorded_outputs(function, label)
    for out, want, name in zip(outputs, expected, exercise.output_names):
        where = what or f"`{name}` on {label}"
        if exercise.plain_values:
            problem = plain_mismatch(out, want, name=name, what=where)
        elif name in exercise.index_outputs:
            problem = index_mismatch(out, want, what=where, words=exercise.index_words)
        else:
            problem = mismatch(out, want, what=where, rtol=rtol, atol=atol)
        if problem:
            likely = recorded_mistake(function, label, outputs)
            if likely:
                raise ExerciseFailure(f"{problem}.\n  Likely mistake: {likely}")
            raise ExerciseFailure(problem + (f".\n  Hint: {hint}" if hint else "."))


# --------------------------------------------------------------------------- the file format


def encode(value: Any) -> Any:
    """``value`` (a tensor, or plain Python values) as JSON that :func:`decode` reads back exactly."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu()
        if data.is_floating_point():
            data = data.double()
        return {"tensor": [_number(x) for x in data.flatten().tolist()], "shape": list(value.shape),
                "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, float):
        return {"float": _number(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}")


def decode(item: Any) -> Any:
    if isinstance(item, list):
        return [decode(v) for v in item]
    if not isinstance(item, dict):
        return item
    if "tensor" in item:
        dtype = getattr(torch, item["dtype"])
        values = [float(x) if isinstance(x, str) else x for x in item["tensor"]]
        return torch.tensor(values, dtype=torch.float64 if dtype.is_floating_point else dtype
                            ).reshape(item["shape"]).to(dtype)
    if "tuple" in item:
        return tuple(decode(v) for v in item["tuple"])
    if "dict" in item:
        return {decode(k): decode(v) for k, v in item["dict"]}
    if "float" in item:
        x = item["float"]
        return float(x) if isinstance(x, str) else x
    raise ValueError(f"not a recorded value: {sorted(item)}")


def _number(x: Any) -> Any:
    """JSON has no inf or NaN: those are written as the strings "inf", "-inf", "nan"."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
