"""The exercise registry: every graded exercise, described once.

Visible tests (``transformer_course.checks.check``), hidden tests
(``transformer_course.grading.hidden.grade``) and the batch grader all look exercises up here,
by the student's function name or by the nbgrader grade_id (``test_<function>``).
"""

from __future__ import annotations

from .base import Case, Exercise, ExerciseFailure, Forbidden, Mistake
from .ch04_attention import EXERCISES as _CH04

__all__ = ["Case", "Exercise", "ExerciseFailure", "Forbidden", "Mistake", "get", "by_grade_id",
           "for_assignment", "ALL"]

ALL: tuple[Exercise, ...] = (*_CH04,)
_BY_NAME = {e.function: e for e in ALL}
_BY_GRADE_ID = {e.grade_id: e for e in ALL}
assert len(_BY_NAME) == len(ALL), "two exercises share a function name"


def get(function: str) -> Exercise:
    """The exercise whose student function is called ``function``."""
    try:
        return _BY_NAME[function]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise KeyError(f"no exercise for a function called {function!r}; known: {known}") from None


def by_grade_id(grade_id: str) -> Exercise | None:
    """The exercise graded by the test cell ``grade_id``, or None."""
    return _BY_GRADE_ID.get(grade_id)


def for_assignment(assignment: str) -> tuple[Exercise, ...]:
    """The exercises of one assignment (a chapter folder such as ``04-attention``), in order."""
    return tuple(e for e in ALL if e.assignment == assignment)
