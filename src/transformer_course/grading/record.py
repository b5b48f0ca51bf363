"""Record what the reference and each typical mistake return on the visible checks' inputs.

Writes ``transformer_course/exercises/recorded/<assignment>.json`` (see
:mod:`transformer_course.exercises.recorded`): the student side's visible checks compare numbers
instead of running code that could answer the exercise. Run after changing a visible check, a
reference or a typical mistake:

    python -m transformer_course.grading.record [assignment ...]

A test fails while a committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .. import exercises
from ..exercises import Case, Exercise
from ..exercises.compare import (
    call_student,
    mismatch,
    normalise_outputs,
    plain_mismatch,
    raise_signature,
    run_case,
)
from ..exercises.recorded import FOLDER, encode, recording_into
from ..exercises.running import with_globals
from . import hidden_tests


def _same(exercise: Exercise, a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if exercise.plain_values:
            if plain_mismatch(x, y, name="x", what="x") is not None:
                return False
        elif not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or mismatch(
                x, y, what="x", rtol=1e-9, atol=1e-12) is not None:
            return False
    return True


def _recorder(exercise: Exercise, entries: dict) -> Callable[..., tuple]:
    """A ``call`` for the visible checks that answers with the reference, recording its outputs
    and those of every typical mistake that differs from it on the same input."""
    tests = hidden_tests.get(exercise.function)
    uses = {name: hidden_tests.get(name).load_reference() for name in exercise.uses}
    reference = with_globals(tests.load_reference(), uses)

    def call(label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        case = label if isinstance(label, Case) else Case(label, args, kwargs)
        outputs = call_student(exercise, reference, case)
        if case.raises is not None or (case.device is not None and case.device.type != "cpu"):
            return outputs  # a refusal, or a check of where outputs go: no numbers to record
        if case.label in entries:
            raise ValueError(f"{exercise.function}: two visible calls are labelled {case.label!r}")
        mistakes = []
        for mistake in tests.mistakes:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = run_case(mistake.answer(exercise.function), case.clone())
            except Exception as error:  # noqa: BLE001 - it raises on this input: recorded as such
                signature = raise_signature(error)
                if not any(m.get("raises") == signature for m in mistakes):
                    mistakes.append({"hint": mistake.hint, "raises": signature})
                continue
            try:
                wrong = normalise_outputs(exercise, result, case)
            except Exception:  # noqa: BLE001 - outputs of the wrong kind say nothing here
                continue
            if not _same(exercise, wrong, outputs) and not any(
                    "decoded" in m and _same(exercise, wrong, m["decoded"]) for m in mistakes):
                mistakes.append({"hint": mistake.hint, "decoded": wrong})
        entries[case.label] = {
            "outputs": [encode(o) for o in outputs],
            "mistakes": [{"hint": m["hint"], "raises": m["raises"]} if "raises" in m else
                         {"hint": m["hint"], "outputs": [encode(o) for o in m["decoded"]]} for m in mistakes],
        }
        return outputs

    return call


LARGE = 4096  # numbers: a visible call whose outputs are larger is kept only if a check reads it


def _size(entry: dict) -> int:
    return sum(len(o["tensor"]) for o in entry["outputs"] if isinstance(o, dict) and "tensor" in o)


def _raises_only(entry: dict) -> dict | None:
    """A large entry no check reads, kept only for the mistakes that raise on its call (numbers
    dropped), or None when there are none."""
    raising = [m for m in entry["mistakes"] if "raises" in m]
    return {"mistakes": raising} if raising else None


def record(assignment: str) -> dict:
    """{function: {label: {"outputs": [...], "mistakes": [{"hint", "outputs"}]}}} for ``assignment``.

    Every visible call is recorded, so a check can name a mistake on any of them; except calls on
    another device than the CPU (they check where outputs go, which needs no numbers and would
    make the file differ between machines) and calls with large outputs that no check reads
    (a (1000, 6) table and its mistakes would weigh a megabyte)."""
    recorded = {}
    for exercise in exercises.for_assignment(assignment):
        entries: dict = {}
        read: set[str] = set()
        with recording_into(entries, read):
            exercise.visible_checks(_recorder(exercise, entries))
        entries = {label: e if label in read or _size(e) <= LARGE else _raises_only(e)
                   for label, e in entries.items()}
        entries = {label: e for label, e in entries.items() if e is not None}
        if entries:
            recorded[exercise.function] = entries
    return recorded


_SCALAR = r'(?:-?[0-9.eE+-]+|"-?inf"|"nan"|true|false|null)'
_SCALARS = re.compile(rf"\[\s*({_SCALAR}(?:,\s*{_SCALAR})*)\s*\]")


def as_text(recorded: dict) -> str:
    """Indented JSON, readable in a diff, with each list of numbers on one line."""
    text = json.dumps(recorded, indent=1, ensure_ascii=False, sort_keys=True)
    return _SCALARS.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment", nargs="*", help="assignments (default: all)")
    args = parser.parse_args(argv)
    names = args.assignment or sorted({e.assignment for e in exercises.ALL})
    FOLDER.mkdir(exist_ok=True)
    for assignment in names:
        recorded = record(assignment)
        path = FOLDER / f"{assignment}.json"
        if recorded:
            path.write_text(as_text(recorded), encoding="utf-8")
            print(f"wrote {path}")
        elif path.exists():
            path.unlink()
            print(f"removed {path} (nothing recorded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
