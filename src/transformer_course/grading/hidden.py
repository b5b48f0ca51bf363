"""Hidden checks: compare a student's function with the reference on seeded random inputs.

In the solution notebook each graded test cell starts with a hidden block (nbgrader removes it
from the student's copy and puts it back when autograding):

    ### BEGIN HIDDEN TESTS
    from transformer_course.grading.hidden import grade
    softmax = grade("softmax", globals())
    ### END HIDDEN TESTS
    check("softmax", softmax)

``grade`` returns the student's function with the *reference* in place of the earlier exercises
it calls, so the visible check that follows, and every later exercise, is graded on its own:
a mistake in one exercise costs that exercise's points and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..checks import student_caller
from ..device import available_devices
from ..exercises import Case, Exercise, ExerciseFailure, get
from ..exercises.compare import (
    call_student,
    expect_right_kind,
    index_mismatch,
    mismatch,
    normalise_outputs,
    plain_mismatch,
    raise_signature,
    run_case,
    same_failure,
)
from ..exercises.forbidden import answer_problem
from ..exercises.running import run_visible_checks, watcher, with_globals
from . import hidden_tests

DEFAULT_SEED = 20171206  # "Attention Is All You Need" went to NeurIPS in December 2017


def hidden_seed() -> int:
    """The seed for hidden inputs: ``TRANSFORMER_COURSE_SEED`` if set (graders may rotate it)."""
    return int(os.environ.get("TRANSFORMER_COURSE_SEED", DEFAULT_SEED))


def _difference(exercise: Exercise, out: Any, want: Any, name: str, case: Case) -> str | None:
    """Why one output differs from the expected one (a tensor, or a plain value), or None."""
    what = f"`{name}` on {case.label}"
    if exercise.plain_values:
        return plain_mismatch(out, want, name=name, what=what)
    if name in exercise.index_outputs:
        return index_mismatch(out, want, what=what, words=exercise.index_words)
    dtype = case.dtype or torch.float64
    return mismatch(out, want, what=what, rtol=exercise.rtol[dtype], atol=exercise.atol[dtype])


def _likely_mistake(exercise: Exercise, outputs: tuple, case: Case) -> str | None:
    """The hint of the first typical mistake whose output equals the student's, if any."""
    for mistake in hidden_tests.get(exercise.function).mistakes:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (a mistake's own warnings are nobody's business)
                wrong = normalise_outputs(exercise, run_case(mistake.fn, case.clone()), case)
        except Exception:  # noqa: BLE001 - a mistake that cannot run on this case says nothing
            continue
        if all(
            _difference(exercise, o, w, name, case) is None
            for o, w, name in zip(outputs, wrong, exercise.output_names)
        ):
            return mistake.hint
    return None


def compare_with_reference(
    exercise: Exercise, outputs: tuple, expected: tuple, case: Case
) -> None:
    """Raise ExerciseFailure, with the likely mistake, if any output differs from the reference."""
    __tracebackhide__ = True
    for out, want, name in zip(outputs, expected, exercise.output_names):
        problem = _difference(exercise, out, want, name, case)
        if problem is None:
            continue
        hint = None
        shapes_differ = not exercise.plain_values and any(
            tuple(o.shape) != tuple(w.shape) for o, w in zip(outputs, expected))
        if shapes_differ and tuple(out.shape) != tuple(want.shape) and exercise.shape_hint is not None:
            hint = exercise.shape_hint(tuple(out.shape), tuple(want.shape), case)
        if hint is None:
            hint = _likely_mistake(exercise, outputs, case)
        diagnose = hidden_tests.get(exercise.function).diagnose
        # A diagnosis does arithmetic between the student's outputs and the reference's: only on
        # outputs of the right shapes (a (60000, 1, 1) table broadcast against (100, 128) made the
        # grader hold gigabytes).
        if hint is None and diagnose is not None and not shapes_differ:
            hint = diagnose(outputs, case)
        raise ExerciseFailure(problem + (f".\n  Likely mistake: {hint}" if hint else "."))


def explain_failure(exercise: Exercise, case: Case, message: str) -> str:
    """``message``, the failure of the student's call on the hidden ``case``, with the likely
    mistake added when a typical mistake fails the same way on that case (the same exception
    with the same message, but for the numbers in it). Visible calls name theirs already, from
    what the mistakes recorded (see :func:`.compare.call_student`)."""
    if "Likely mistake:" in message or "earns no points" in message:
        return message
    for mistake in hidden_tests.get(exercise.function).mistakes:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_case(mistake.answer(exercise.function), case.clone())
        except Exception as error:  # noqa: BLE001 - the way it fails is what is compared
            if same_failure(raise_signature(error), message):
                return f"{message}\n  Likely mistake: {mistake.hint}"
    return message


@contextlib.contextmanager
def exact_matmuls() -> Iterator[None]:
    """Turn TF32 off on CUDA while checking: it rounds float32 products to ~3 digits."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def hidden_cases(exercise: Exercise, generator: torch.Generator) -> list[Case]:
    """The exercise's seeded cases on the CPU, and its float32 cases (and those that take a ``device``
    argument) again on every other device."""
    cases = hidden_tests.get(exercise.function).make_cases(generator)
    for device in available_devices()[1:]:
        cases += [c.on(device) for c in cases if c.dtype == torch.float32 or "device" in c.kwargs]
    return cases


def grade(function: str, namespace: dict[str, Any], seed: int | None = None) -> Callable[..., Any]:
    """Grade the student's ``namespace[function]``; raise ExerciseFailure on the first problem.

    Returns the student's function with the reference in place of the earlier exercises it
    calls (see the module docstring).
    """
    __tracebackhide__ = True
    exercise = get(function)
    fn = namespace.get(function)
    if fn is None:
        raise ExerciseFailure(
            f"`{function}` is not defined: run the cell that defines it, and keep the name "
            f"`{function}` (the checks look it up by name)."
        )
    expect_right_kind(exercise, fn)
    dependencies = {name: hidden_tests.get(name).load_reference() for name in exercise.uses}
    isolated = with_globals(fn, dependencies)
    problem = answer_problem(exercise, fn, dependencies)
    if problem:
        raise ExerciseFailure(problem)
    watch = watcher(exercise, dependencies)

    count = run_visible_checks(exercise, student_caller(exercise, isolated, watch))
    reference = hidden_tests.get(function).load_reference()
    generator = torch.Generator().manual_seed(hidden_seed() if seed is None else seed)
    with exact_matmuls():
        for case in hidden_cases(exercise, generator):
            try:
                outputs = call_student(exercise, isolated, case, watch)
            except ExerciseFailure as failure:
                raise ExerciseFailure(explain_failure(exercise, case, str(failure))) from None
            # The reference runs in float64, on the CPU, on the same numbers.
            exact = case.on(torch.device("cpu")).to(torch.float64)
            with torch.no_grad():
                expected = normalise_outputs(exercise, run_case(reference, exact), exact)
            compare_with_reference(exercise, outputs, expected, case)
            count += 1
    print(f"✓ {function}: all {count} checks passed.")
    return isolated
