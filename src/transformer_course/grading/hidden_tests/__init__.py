"""The exercise registry, grader side: every exercise's reference, hidden inputs and typical mistakes.

One module per chapter (``ch04_attention``, ...), each with ``HIDDEN_TESTS``: a
:class:`~transformer_course.grading.hidden_spec.HiddenTests` per exercise of the student side's
``EXERCISES``, linked by the student's function name. Nothing here is ever copied into, or imported
by, the sandbox that runs a student's code.
"""

from __future__ import annotations

import importlib
import pkgutil

from ... import exercises
from ..hidden_spec import HiddenTests, Mistake

__all__ = ["HiddenTests", "Mistake", "get", "ALL"]


def _chapter_modules() -> list[str]:
    """``transformer_course.grading.hidden_tests.ch04_attention``, ...: found by name, so a new
    chapter adds its grader side by adding a module."""
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch"))


ALL: tuple[HiddenTests, ...] = tuple(
    tests for name in _chapter_modules() for tests in importlib.import_module(name).HIDDEN_TESTS
)
_BY_NAME = {h.function: h for h in ALL}
assert len(_BY_NAME) == len(ALL), "two hidden tests share a function name"
_missing = sorted({e.function for e in exercises.ALL} - set(_BY_NAME))
assert not _missing, f"exercises without hidden tests: {_missing}"


def get(function: str) -> HiddenTests:
    """The grader's side of the exercise whose student function is called ``function``."""
    try:
        return _BY_NAME[function]
    except KeyError:
        raise KeyError(f"no hidden tests for a function called {function!r}") from None
