"""What grading needs of an exercise beyond what its visible checks need: the grader's side.

The exercise registry is split in two (see the grading design in the course's design notes):

* the **student side**, :class:`transformer_course.exercises.Exercise`: the function's name, its
  points and outputs, the forbidden library calls and the visible checks. It holds worked
  examples and properties only, so it may be imported anywhere, the grading sandbox included;
* the **grader side**, :class:`HiddenTests` here: the reference, the generator of hidden inputs and
  the typical mistakes (each written as code, so a message can name them). Much of this is
  correct code, or code one argument away from correct, so it never enters the process that runs
  a student's code: the hardened grader compares outside the sandbox.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..exercises.base import Case


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer, as code: if the student's output equals ``fn``'s, say ``hint``."""

    fn: Callable[..., Any]
    hint: str

    def answer(self, function: str) -> Callable[..., Any]:
        """The mistake as a student's answer called ``function``: a class is given that name (a
        message that names the class, such as one about its parameters, then reads the same as
        for the student's own class)."""
        if isinstance(self.fn, type) and self.fn.__name__ != function:
            return type(function, (self.fn,), {"__module__": self.fn.__module__, "__qualname__": function})
        return self.fn


@dataclass(frozen=True)
class HiddenTests:
    """The grader's side of one exercise (the student's side is the registry's ``Exercise``)."""

    function: str  # the student's function name: links this to its Exercise
    reference: str  # "module:function", imported only when grading
    make_cases: Callable[[torch.Generator], list[Case]]  # seeded inputs, edge cases included
    mistakes: tuple[Mistake, ...] = ()
    # A property message for a mismatch no mistake explains (e.g. "row 2 does not sum to 1").
    diagnose: Callable[[tuple, Case], str | None] | None = None

    def load_reference(self) -> Callable[..., Any]:
        """Import the reference function or class."""
        module, name = self.reference.split(":")
        return getattr(importlib.import_module(module), name)

    @property
    def reference_module(self) -> str:
        return self.reference.split(":")[0]
