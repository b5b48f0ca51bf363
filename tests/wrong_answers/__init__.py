"""Wrong answers for the grading round trips: per chapter, one wrong answer cell per exercise and
one forbidden shortcut, written as a student would write them.

Each chapter module (``ch04_attention.py``, ...) defines

* ``ASSIGNMENT``: the assignment folder, e.g. ``"04-attention"``;
* ``WRONG``: ``{function: (answer cell source, a phrase the feedback message must contain)}``,
  one entry per graded exercise. Prefer mistakes that a later exercise would trip over when it
  calls the wrong function: the test shows the later one keeps its points anyway;
* ``FORBIDDEN``: ``(function, answer cell source)``, a library call that does the exercise.

``tests/test_grading.py`` grades the solution, the blank notebook, each wrong answer alone and
the forbidden one, with real nbgrader runs, and checks that each costs exactly its own points.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def by_assignment() -> dict[str, ModuleType]:
    """``{assignment: chapter module}`` for every chapter module in this package."""
    modules = (importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__))
    return {module.ASSIGNMENT: module for module in modules}
