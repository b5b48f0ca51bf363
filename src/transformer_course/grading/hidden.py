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
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..checks import student_caller
from ..device import available_devices
from ..exercises import Case, Exercise, ExerciseFailure, get
from ..exercises.compare import (
    call_student,
    expect_right_kind,
    mismatch,
    normalise_outputs,
    plain_mismatch,
    run_case,
)
from ..exercises.forbidden import Tripwire, raise_if_forbidden, static_violation
from . import hidden_tests

DEFAULT_SEED = 20171206  # "Attention Is All You Need" went to NeurIPS in December 2017


def hidden_seed() -> int:
    """The seed for hidden inputs: ``TRANSFORMER_COURSE_SEED`` if set (graders may rotate it)."""
    return int(os.environ.get("TRANSFORMER_COURSE_SEED", DEFAULT_SEED))


def with_globals(fn: Callable[..., Any], overrides: dict[str, Any]) -> Callable[..., Any]:
    """A copy of ``fn`` that sees ``overrides`` in place of those global names.

    This is how an exercise is graded with the reference in place of the student's earlier
    functions: ``scaled_dot_product_attention`` calling ``softmax`` gets the reference softmax,
    while the student's notebook is left untouched.
    """
    if not overrides:
        return fn
    if isinstance(fn, type):
        return _class_with_globals(fn, overrides)
    if not isinstance(fn, types.FunctionType):
        return fn
    copy = types.FunctionType(
        fn.__code__, {**fn.__globals__, **overrides}, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__dict__.update(fn.__dict__)
    copy.__qualname__ = fn.__qualname__
    return copy


def _class_with_globals(cls: type, overrides: dict[str, Any]) -> type:
    """A subclass of ``cls`` whose own methods see ``overrides`` in place of those globals.

    A subclass rather than a copy: the methods' zero-argument ``super()`` still refers to
    ``cls``, and the subclass's method resolution order makes that work unchanged.
    """
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    for name, value in vars(cls).items():
        if isinstance(value, types.FunctionType):
            namespace[name] = with_globals(value, overrides)
    return type(cls.__name__, (cls,), namespace)


def guarded(exercise: Exercise, fn: Callable[..., Any], allowed: dict[str, Any]) -> Callable[..., Any]:
    """``fn`` wrapped so that a forbidden call made while it runs raises ExerciseFailure."""
    allowed_code = {code for f in allowed.values() for code in _code_objects(f)}
    if isinstance(fn, type):
        return _guarded_class(exercise, fn, allowed_code)

    def run(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        tripwire = Tripwire(exercise, allowed_code)
        try:
            with tripwire:
                return fn(*args, **kwargs)
        finally:
            raise_if_forbidden(exercise, tripwire.violation)

    return run


def _code_objects(obj: Any) -> list[types.CodeType]:
    """The code of a function, or of every method a class defines itself."""
    if isinstance(obj, type):
        return [v.__code__ for v in vars(obj).values() if isinstance(v, types.FunctionType)]
    return [obj.__code__] if hasattr(obj, "__code__") else []


def _guarded_class(exercise: Exercise, cls: type, allowed_code: set[types.CodeType]) -> type:
    """A subclass of ``cls`` that watches for forbidden calls while it is built and called."""

    def watch(method: Callable[..., Any]) -> Callable[..., Any]:
        def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            tripwire = Tripwire(exercise, allowed_code)
            try:
                with tripwire:
                    return method(self, *args, **kwargs)
            finally:
                raise_if_forbidden(exercise, tripwire.violation)

        return watched

    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__init__": watch(cls.__init__),
        "__call__": watch(cls.__call__),
    }
    return type(cls.__name__, (cls,), namespace)


def _difference(exercise: Exercise, out: Any, want: Any, name: str, case: Case) -> str | None:
    """Why one output differs from the expected one (a tensor, or a plain value), or None."""
    what = f"`{name}` on {case.label}"
    if exercise.plain_values:
        return plain_mismatch(out, want, name=name, what=what)
    dtype = case.dtype or torch.float64
    return mismatch(out, want, what=what, rtol=exercise.rtol[dtype], atol=exercise.atol[dtype])


def _likely_mistake(exercise: Exercise, outputs: tuple, case: Case) -> str | None:
    """The hint of the first typical mistake whose output equals the student's, if any."""
    for mistake in hidden_tests.get(exercise.function).mistakes:
        try:
            with torch.no_grad():
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
        if (
            not exercise.plain_values
            and tuple(out.shape) != tuple(want.shape)
            and exercise.shape_hint is not None
        ):
            hint = exercise.shape_hint(tuple(out.shape), tuple(want.shape), case)
        if hint is None:
            hint = _likely_mistake(exercise, outputs, case)
        diagnose = hidden_tests.get(exercise.function).diagnose
        if hint is None and diagnose is not None:
            hint = diagnose(outputs, case)
        raise ExerciseFailure(problem + (f".\n  Likely mistake: {hint}" if hint else "."))


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
    """The exercise's seeded cases on the CPU, and its float32 cases again on every other device."""
    cases = hidden_tests.get(exercise.function).make_cases(generator)
    for device in available_devices()[1:]:
        cases += [c.on(device) for c in cases if c.dtype == torch.float32]
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
    raise_if_forbidden(exercise, static_violation(exercise, fn, dependencies))
    safe = guarded(exercise, isolated, dependencies)

    count = exercise.visible_checks(student_caller(exercise, safe))
    reference = hidden_tests.get(function).load_reference()
    generator = torch.Generator().manual_seed(hidden_seed() if seed is None else seed)
    with exact_matmuls():
        for case in hidden_cases(exercise, generator):
            outputs = call_student(exercise, safe, case)
            # The reference runs in float64, on the CPU, on the same numbers.
            exact = case.on(torch.device("cpu")).to(torch.float64)
            with torch.no_grad():
                expected = normalise_outputs(exercise, run_case(reference, exact), exact)
            compare_with_reference(exercise, outputs, expected, case)
            count += 1
    print(f"✓ {function}: all {count} checks passed.")
    return isolated
