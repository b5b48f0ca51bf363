"""The exercise registry, student side: every graded exercise, described once.

Visible tests (``transformer_course.checks.check``), hidden tests
(``transformer_course.grading.hidden.grade``) and the batch grader all look exercises up here,
by the student's function name or by the nbgrader grade_id (``test_<function>``). What grading
needs beyond this (references, hidden inputs, typical mistakes) is the grader's side,
:mod:`transformer_course.grading.hidden_tests`, looked up by the same function name.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Case, Exercise, ExerciseFailure, Forbidden

__all__ = ["Case", "Exercise", "ExerciseFailure", "Forbidden", "get", "by_grade_id",
           "for_assignment", "ALL"]


def _chapter_modules() -> list[str]:
    """``ch01_tokens``, ``ch04_attention``, ...: one module per chapter, each with EXERCISES.

    Found by name, so a new chapter registers its exercises by adding its module, without
    editing this file.
    """
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch"))


ALL: tuple[Exercise, ...] = tuple(
    exercise
    for name in _chapter_modules()
    for exercise in importlib.import_module(f"{__name__}.{name}").EXERCISES
)
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
