"""Running a student's answer the way every check does: earlier exercises replaced, calls watched.

* :func:`with_globals`: the answer sees given implementations in place of some global names, so an
  exercise that calls an earlier one (attention calls ``softmax``) is checked with the reference
  in the earlier one's place, and a mistake there costs nothing here;
* :func:`watcher`: a fresh :class:`~.forbidden.Tripwire` per call, which notes a forbidden library
  call made anywhere while the answer is built and called (``__new__``, a metaclass, ``__init__``,
  ``forward``, threads it starts), except inside the implementations substituted above.

Used by the notebook's hidden checks, by ``--nbgrader`` grading and inside the grading sandbox,
so it holds no reference code itself.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from .base import Case, Exercise, ExerciseFailure
from .forbidden import Tripwire, rules_it_names


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


def code_objects(obj: Any) -> list[types.CodeType]:
    """The code of a function, or of every method a class defines itself."""
    if isinstance(obj, type):
        return [v.__code__ for v in vars(obj).values() if isinstance(v, types.FunctionType)]
    return [obj.__code__] if hasattr(obj, "__code__") else []


def watcher(exercise: Exercise, allowed: dict[str, Any]) -> Callable[[], Tripwire]:
    """A factory of tripwires for ``exercise`` that know ``allowed``'s code (the implementations
    put in place of earlier exercises) and excuse, inside it, only the forbidden calls the
    student's own earlier functions write themselves (see :class:`~.forbidden.Tripwire`)."""
    allowed_code = {code for f in allowed.values() for code in code_objects(f)}
    excused = frozenset(rule for f in allowed.values() for rule in rules_it_names(exercise, f))
    return lambda: Tripwire(exercise, allowed_code, excused)


def namespace_of(fn: Any) -> dict[str, Any]:
    """The global names ``fn`` sees: a function's globals, or those of the first method a class (or
    one of its own base classes, before torch's) defines."""
    if isinstance(fn, type):
        for cls in fn.__mro__:
            if cls.__module__.split(".")[0] == "torch":
                break
            for value in vars(cls).values():
                if isinstance(value, types.FunctionType):
                    return value.__globals__
        return {}
    return getattr(fn, "__globals__", {})


def earlier_answers(exercise: Exercise, fn: Any) -> dict[str, Any]:
    """What the answer ``fn`` finds under the names of the earlier exercises it builds on
    (``exercise.uses``): in the notebook, the student's own functions (or the course's, where the
    setup cell gives them ready-made); in ``--nbgrader`` grading, the references put there."""
    namespace = namespace_of(fn)
    return {name: namespace[name] for name in exercise.uses if name in namespace}


def run_visible_checks(exercise: Exercise, call: Callable[..., tuple]) -> int:
    """``exercise.visible_checks(call)``, naming the typical mistake when a check fails.

    When a check (not a call: a call names its own failure) fails after a call whose outputs are
    those a typical mistake recorded on the same visible input (see :mod:`.recorded`), the message
    says "Likely mistake: <its hint>" in place of the check's general hint. The notebook's checks,
    ``--nbgrader`` grading and the hardened grader (which replays the outputs it recorded in its
    sandbox) all run the visible checks through here, so they say the same thing.
    """
    __tracebackhide__ = True
    seen: list[tuple[str, tuple]] = []
    failed_call: list[bool] = []

    def noting(label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        __tracebackhide__ = True
        try:
            outputs = call(label, *args, **kwargs)
        except ExerciseFailure:
            failed_call.append(True)
            raise
        seen.append((label.label if isinstance(label, Case) else label, outputs))
        return outputs

    try:
        return exercise.visible_checks(noting)
    except ExerciseFailure as failure:
        named = None if failed_call else name_mistake(exercise.function, str(failure), seen)
        if named is None:
            raise
        raise ExerciseFailure(named) from None


def name_mistake(function: str, message: str, seen: list[tuple[str, tuple]]) -> str | None:
    """``message`` with the likely mistake named: the hint of the recorded typical mistake whose
    outputs on one of the calls ``seen`` (the latest first) are the student's; None when the
    message names one already, or no recorded mistake gave those outputs."""
    from .recorded import recorded_mistake  # (it reads the registry, which imports this module)

    if "Likely mistake:" in message:
        return None
    for label, outputs in reversed(seen):
        hint = recorded_mistake(function, label, outputs)
        if hint:
            if hint in message:
                return None
            problem = message.split("\n  Hint: ", 1)[0]
            return f"{problem}\n  Likely mistake: {hint}"
    return None
