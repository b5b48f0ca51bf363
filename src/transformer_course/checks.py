"""Visible checks, the ones a student runs in the notebook.

    from transformer_course.checks import check
    check("softmax", softmax)

They use worked examples and properties only, never the reference implementation, so they
work from the student bundle alone and give away no answer. They take the same look at the
answer as the grader does (a library call that does the exercise fails here already, with the
grader's message), and they name the typical mistake the grader would name.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

from .exercises import Case, Exercise, ExerciseFailure, get
from .exercises.compare import call_student, expect_right_kind
from .exercises.forbidden import Tripwire, answer_problem, is_reference_module
from .exercises.running import code_objects, earlier_answers, run_visible_checks, watcher

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


def visible_verdict(exercise: Exercise, fn: Callable[..., Any], allowed: dict[str, Any],
                    tripwires: list[Tripwire] | None = None) -> int:
    """The visible checks of ``exercise`` on ``fn``, as the grader runs them: the look at the
    answer's cell and source, then every call watched for forbidden library calls (calls inside
    ``allowed``, the earlier exercises it builds on, are theirs, not this answer's). Returns how
    many checks ran; raises ExerciseFailure. ``tripwires`` collects the watches used."""
    __tracebackhide__ = True
    problem = answer_problem(exercise, fn, allowed)
    if problem:
        raise ExerciseFailure(problem)
    make = watcher(exercise, allowed)

    def watch() -> Tripwire:
        tripwire = make()
        if tripwires is not None:
            tripwires.append(tripwire)
        return tripwire

    return run_visible_checks(exercise, student_caller(exercise, fn, watch))


def check(function: str, fn: Callable[..., Any]) -> None:
    """Run the visible checks of exercise ``function`` on the student's ``fn``.

    Prints a line when all pass; raises ExerciseFailure with what to fix otherwise.
    Returns None on purpose: nbgrader would read a returned number as partial credit.
    """
    __tracebackhide__ = True
    exercise = get(function)
    expect_right_kind(exercise, fn)
    earlier = earlier_answers(exercise, fn)
    tripwires: list[Tripwire] = []
    try:
        count = visible_verdict(exercise, fn, earlier, tripwires)
    except ExerciseFailure as failure:
        blame = _earlier_to_blame(exercise, str(failure), earlier, tripwires)
        if blame is None:
            raise
        raise ExerciseFailure(blame) from None
    print(f"✓ {function}: all {count} visible checks passed.")


def _earlier_to_blame(exercise: Exercise, message: str, earlier: dict[str, Any],
                      tripwires: list[Tripwire]) -> str | None:
    """When the answer failed its check after calling an earlier function of the student's that
    fails its own check, the message that says so (the grader checks this exercise with a correct
    one in its place, so the failure may not be this answer's at all); else None."""
    if "earns no points" in message:  # a forbidden call of its own: nothing to do with the others
        return None
    entered = {code for tripwire in tripwires for code in tripwire.entered}
    for name in exercise.uses:
        used = earlier.get(name)
        if used is None or is_reference_module(getattr(used, "__module__", "") or ""):
            continue  # the course's own (the setup cell's building blocks, or the grader's references)
        if not entered & set(code_objects(used)):
            continue  # this answer did not call it
        if _fails_its_own_check(name, used):
            first = message.split("\n", 1)[0]
            return (f"your `{name}`, which `{exercise.function}` calls, fails its own check: fix it first; the "
                    f"grader checks `{exercise.function}` with a correct `{name}` in its place.\n"
                    f"  (`{exercise.function}`'s check saw: {first})")
    return None


def _fails_its_own_check(function: str, fn: Any) -> bool:
    """Whether the student's ``fn`` gives wrong results on the visible checks of its own exercise
    (checked quietly). One that only makes a forbidden library call may well compute the right
    numbers: then it is not what made the later exercise fail."""
    exercise = get(function)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            expect_right_kind(exercise, fn)
            visible_verdict(exercise, fn, earlier_answers(exercise, fn))
        except ExerciseFailure as failure:
            if "earns no points" not in str(failure):
                return True
            try:
                run_visible_checks(exercise, student_caller(exercise, fn))
            except ExerciseFailure:
                return True
    return False
