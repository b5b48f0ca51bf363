"""Finding every function and class a student's code could reach in some modules, and trying each
one as the answer to an exercise: the test of the grader's trust boundary.

Nothing that passes an exercise's checks may be reachable from the process that runs the
student's code for that exercise. These helpers enumerate what is reachable (module attributes,
class members, functions kept in tuples, lists, dicts and dataclasses, and nested functions that
need no closure) and grade each candidate with the real checks, so a correct variant anywhere is
found, not only the ones somebody thought of.
"""

from __future__ import annotations

import dataclasses
import inspect
import signal
import types
from collections.abc import Iterable
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from io import StringIO
from typing import Any

import pytest

from transformer_course import exercises
from transformer_course.exercises import ExerciseFailure
from transformer_course.grading.hidden import grade


def _members(value: Any, seen: set[int], depth: int = 0) -> Iterable[Any]:
    """``value`` and the callables it holds, depth-first, each once."""
    if id(value) in seen or depth > 6:
        return
    seen.add(id(value))
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        for f in (value.fget, value.fset):
            if f is not None:
                yield from _members(f, seen, depth + 1)
        return
    if isinstance(value, types.FunctionType):
        yield value
        for const in value.__code__.co_consts:  # nested functions, where they need no closure
            if _is_function_code(const):
                yield from _members(types.FunctionType(const, value.__globals__), seen, depth + 1)
        for cell in value.__closure__ or ():
            try:
                yield from _members(cell.cell_contents, seen, depth + 1)
            except ValueError:  # an empty cell
                pass
        return
    if isinstance(value, type):
        yield value
        for member in vars(value).values():
            yield from _members(member, seen, depth + 1)
        return
    if isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from _members(item, seen, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _members(item, seen, depth + 1)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _members(getattr(value, f.name), seen, depth + 1)


def _is_function_code(code: Any) -> bool:
    """A nested ``def`` or lambda that needs no closure (not a class body or a comprehension, whose
    code objects cannot be called as functions)."""
    return (isinstance(code, types.CodeType) and not code.co_freevars
            and bool(code.co_flags & inspect.CO_OPTIMIZED)
            and (not code.co_name.startswith("<") or code.co_name == "<lambda>"))


def reachable(modules: Iterable[types.ModuleType], owned_by: tuple[str, ...]) -> list[Any]:
    """Every function and class reachable from ``modules``' attributes whose home module starts
    with one of ``owned_by`` (the library's own functions, torch's say, are not ours to judge)."""
    seen: set[int] = set()
    found = []
    for module in modules:
        for value in list(vars(module).values()):
            for member in _members(value, seen):
                home = getattr(member, "__module__", "") or ""
                if home.startswith(owned_by):
                    found.append(member)
    return found


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    def stop(*_):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def passing(candidates: Iterable[Any], exercise_names: Iterable[str], monkeypatch: pytest.MonkeyPatch
            ) -> list[str]:
    """"<exercise> <- <candidate>" for each candidate that passes an exercise's visible and hidden
    checks. The forbidden-call rules are switched off for this: a candidate must fail on its
    values, not only because it calls a library function a tripwire would notice."""
    found = []
    for name in exercise_names:
        exercise = exercises.get(name)
        monkeypatch.setitem(exercises._BY_NAME, name, replace(exercise, forbidden=()))
        for candidate in candidates:
            if isinstance(candidate, type) != exercise.is_module:
                continue
            try:
                with _time_limit(20), redirect_stdout(StringIO()):
                    grade(name, {name: candidate})
            except (ExerciseFailure, _Timeout):
                continue
            except Exception:  # noqa: BLE001 - grading itself broke on it: not a pass
                continue
            found.append(f"{name} <- {getattr(candidate, '__module__', '?')}."
                         f"{getattr(candidate, '__qualname__', candidate)}")
        monkeypatch.setitem(exercises._BY_NAME, name, exercise)
    return found
