"""The grader's trust boundary: nothing that passes an exercise's checks is reachable from the
student's code.

The student side of the registry (visible checks, recorded outputs) may be imported anywhere, the
grading sandbox included, so it must hold no answer: every function and class reachable from it is
tried here as the answer to every exercise, and none may pass. The recorded outputs it compares
with must be what the grader side records today.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil

import pytest

from course_helpers import ROOT
from transformer_course import checks, exercises
from transformer_course.exercises import recorded as recorded_module
from transformer_course.grading.course import assignments
from transformer_course.grading.record import as_text, record
from trust_boundary import passing, reachable

STUDENT_SIDE = ("transformer_course.exercises", "transformer_course.checks")


def _student_side_modules():
    names = [f"{exercises.__name__}.{m.name}" for m in pkgutil.iter_modules(exercises.__path__)]
    return [checks, exercises, *(importlib.import_module(n) for n in names)]


def test_nothing_on_the_student_side_passes_any_exercise(monkeypatch):
    candidates = reachable(_student_side_modules(), STUDENT_SIDE)
    assert len(candidates) > 50  # the enumeration found the checks' own helpers
    assert passing(candidates, [e.function for e in exercises.ALL], monkeypatch) == []


def test_the_student_side_does_not_import_the_grader_side():
    import subprocess
    import sys

    code = ("import sys, transformer_course.checks, transformer_course.exercises\n"
            "print(sorted(m for m in sys.modules if m.startswith('transformer_course.grading')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("assignment", assignments(ROOT))
def test_recorded_outputs_are_up_to_date(assignment):
    path = recorded_module.FOLDER / f"{assignment}.json"
    recorded = record(assignment)
    if not recorded:
        assert not path.exists(), f"{path} records nothing any more: delete it"
        return
    stale = f"{path} is stale: run `python -m transformer_course.grading.record {assignment}`"
    assert path.is_file(), stale
    committed = json.loads(path.read_text(encoding="utf-8"))
    fresh = json.loads(as_text(recorded))
    # the same labels, hints and shapes; numbers equal up to the last bits a different CPU may give
    assert _same(committed, fresh), stale


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(
            a, b, rel_tol=1e-10, abs_tol=1e-12)
    return a == b
