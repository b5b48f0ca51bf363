"""Visible checks, the ones a student runs in the notebook.

    from transformer_course.checks import check
    check("softmax", softmax)

They use worked examples and properties only, never the reference implementation, so they
work from the student bundle alone and give away no answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exercises import Case, Exercise, ExerciseFailure, get
from .exercises.compare import call_student, expect_right_kind

__all__ = ["check", "ExerciseFailure"]


def student_caller(exercise: Exercise, fn: Callable[..., Any],
                   watch: Callable[[], Any] | None = None) -> Callable[..., tuple]:
    """``call(label, *args, **kwargs)``: runs ``fn`` through :func:`call_student` (watched by
    ``watch``'s tripwires when given)."""

    def call(label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        """``call("label", *args, **kwargs)``, or ``call(Case(...))`` (needed to build a module)."""
        __tracebackhide__ = True
        case = label if isinstance(label, Case) else Case(label, args, kwargs)
        return call_student(exercise, fn, case, watch)

    return call


def check(function: str, fn: Callable[..., Any]) -> None:
    """Run the visible checks of exercise ``function`` on the student's ``fn``.

    Prints a line when all pass; raises ExerciseFailure with what to fix otherwise.
    Returns None on purpose: nbgrader would read a returned number as partial credit.
    """
    __tracebackhide__ = True
    exercise = get(function)
    expect_right_kind(exercise, fn)
    count = exercise.visible_checks(student_caller(exercise, fn))
    print(f"✓ {function}: all {count} visible checks passed.")
