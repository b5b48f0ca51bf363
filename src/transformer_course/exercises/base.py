"""What an exercise *is*: the one description that visible tests, hidden tests and the grader read.

An :class:`Exercise` names the student's function (the same name and signature as the reference
function it mirrors), its points, its outputs, the tolerance, the library calls it may not use and
its visible checks.

This is the **student side** of the registry: it imports nothing of the reference implementation
and holds no code that computes an exercise's answer, so the visible checks work from the student
bundle alone and may be imported anywhere, the grading sandbox included. What grading needs beyond
it (the reference, hidden inputs, typical mistakes as code) is the grader's side,
:mod:`transformer_course.grading.hidden_tests`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch


class ExerciseFailure(AssertionError):
    """A check failed; the message says what differs, where, and the likely mistake."""

    def _render_traceback_(self) -> list[str]:
        """How IPython and Jupyter show it: the message alone.

        A traceback through the checking code would only bury the message (and would show the
        checks' source); the message already names the student's own line when there is one.
        """
        red, bold, reset = "\x1b[31m", "\x1b[1m", "\x1b[0m"
        return [f"{bold}{red}✗ check failed{reset}", *str(self).splitlines()]


@dataclass(frozen=True)
class Case:
    """One call of the student's function, ``fn(*args, **kwargs)``, with a label for messages.

    For an exercise whose answer is a class (an ``nn.Module``), the case also says how to
    build it: ``module = cls(*init, **init_kwargs)``, then ``module.load_state_dict(state)``
    when ``state`` is given (so the student's module and the reference hold the same weights),
    then ``module.eval()`` and ``module(*args, **kwargs)``. ``init`` is None for functions.
    A case with ``raises`` checks that bad input is refused: the call returns no outputs.
    """

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    init: tuple | None = None
    init_kwargs: dict = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    # An input the function must refuse: the call passes when it raises this exception (a
    # ValueError for a sequence longer than the table, say) and fails when it returns.
    raises: type[Exception] | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        """The floating dtype of the inputs (outputs must come back in it)."""
        for a in (*self.args, *self.kwargs.values(), *(self.state or {}).values()):
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                return a.dtype
        return None

    @property
    def device(self) -> torch.device | None:
        """The device of the inputs, or the one asked for by a ``device`` argument where there are
        no tensor inputs (``causal_mask(5, device=...)``): outputs must come back on it."""
        for a in (*self.args, *self.kwargs.values(), *(self.state or {}).values()):
            if isinstance(a, torch.Tensor):
                return a.device
        asked = self.kwargs.get("device")
        if not isinstance(asked, (str, torch.device)):
            return None
        # torch.device("cuda") and a tensor's torch.device("cuda:0") differ: ask torch where a
        # tensor made with this argument lands.
        return torch.empty(0, device=asked).device

    @property
    def asks_for_device(self) -> bool:
        """Whether the device comes from a ``device`` argument rather than from tensor inputs."""
        return self.device is not None and not any(
            isinstance(a, torch.Tensor) for a in (*self.args, *self.kwargs.values(), *(self.state or {}).values()))

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor], label: str | None = None) -> Case:
        """The same case with ``fn`` applied to every tensor (inputs and weights)."""

        def apply(a: Any) -> Any:
            return fn(a) if isinstance(a, torch.Tensor) else a

        return replace(
            self,
            label=self.label if label is None else label,
            args=tuple(apply(a) for a in self.args),
            kwargs={k: apply(v) for k, v in self.kwargs.items()},
            state=None if self.state is None else {k: apply(v) for k, v in self.state.items()},
        )

    def to(self, dtype: torch.dtype) -> Case:
        """The same case with every floating tensor cast to ``dtype`` (masks and ids stay)."""
        return self.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t)

    def on(self, device: torch.device) -> Case:
        """The same case with every tensor (and a ``device`` argument) moved to ``device``."""
        moved = self.map_tensors(lambda t: t.to(device), label=f"{self.label} on {device.type}")
        if "device" in self.kwargs:
            moved = replace(moved, kwargs={**moved.kwargs, "device": device})
        return moved

    def apply(self, fn: Callable[..., Any]) -> Any:
        """What the checks compare of calling ``fn`` on this case: ``collect(fn(*args, **kwargs))``.

        The hook for an exercise whose effect is not (only) its return value: a case class of its
        own may prepare the inputs first and collect what the call changed (a training step: the
        model's parameters after it, see ``ch08_training.StepCase``). Every check calls functions
        through here (``compare.run_case``): visible, hidden, ``--nbgrader`` and the sandbox's probe.
        """
        return self.collect(fn(*self.args, **self.kwargs))

    def collect(self, result: Any) -> Any:
        """The outputs to compare, from what the call returned (by default: what it returned)."""
        return result

    def clone(self) -> Case:
        """A deep copy of the inputs, so the student's call cannot change ours.

        Tensors are cloned; lists, dicts and sets (the inputs of plain-value exercises, such
        as a list of token ids) are deep-copied; everything else is immutable and shared.
        """
        cloned = self.map_tensors(torch.Tensor.clone)
        return replace(
            cloned,
            args=tuple(_copy_container(a) for a in cloned.args),
            kwargs={k: _copy_container(v) for k, v in cloned.kwargs.items()},
        )


def _copy_container(value: Any) -> Any:
    """A deep copy of a list, dict or set; any other value as it is."""
    return copy.deepcopy(value) if isinstance(value, (list, dict, set)) else value


@dataclass(frozen=True)
class Forbidden:
    """A library call that does the exercise for the student.

    Recognised statically (an attribute of that name in the function's source) and at run
    time (a C function of one of ``builtin_names`` called, or a Python function whose file
    ends with ``python_function[0]`` and whose name is ``python_function[1]`` entered; the
    name ``"*"`` stands for every function of that file; or any function of torch itself, or
    any torch function or operator, whose name contains one of ``torch_name_parts``).
    """

    label: str  # what the message calls it, e.g. "torch.softmax / Tensor.softmax"
    builtin_names: frozenset[str] = frozenset()
    python_functions: frozenset[tuple[str, str]] = frozenset()
    source_names: frozenset[str] = frozenset()  # more names to look for in the source only
    # torch holds more than one copy of some functions (torch._refs.softmax, torch._decomp's
    # _softmax, torch.masked.softmax...): every function of torch whose name contains one of these.
    torch_name_parts: frozenset[str] = frozenset()

    @property
    def attribute_names(self) -> frozenset[str]:
        """Names that, written as ``something.<name>`` in the source, mean this call."""
        named = {name for _, name in self.python_functions if name != "*"}
        return self.builtin_names | self.source_names | named


@dataclass(frozen=True)
class Exercise:
    """One graded exercise; see the module docstring."""

    function: str  # the student's function name == the reference function's name
    assignment: str  # the nbgrader assignment (chapter folder) it belongs to
    points: int
    visible_checks: Callable[[Callable[..., tuple]], int]  # worked examples; returns checks run
    is_module: bool = False  # the answer is an nn.Module class, built per Case (see Case)
    output_names: tuple[str, ...] = ("output",)  # names of the returned tensors, for messages
    # Outputs that are integer tensors (indices, as from torch.topk): they must be integer,
    # and are exempt from the rule that outputs come back in the inputs' floating dtype.
    index_outputs: tuple[str, ...] = ()
    # How a message names one index that differs, in the exercise's terms: ``(place, got, expected)``
    # -> "row 2: neighbour 1 is token 7, expected token 3" (see compare.index_mismatch).
    index_words: Callable[[tuple[int, ...], int, int], str] | None = None
    # The function returns plain Python values (lists, dicts, tuples of ints or strings, e.g.
    # token ids or BPE merges), compared with ``==``; messages name the first difference.
    plain_values: bool = False
    uses: tuple[str, ...] = ()  # earlier exercises it may call: graded with the reference instead
    forbidden: tuple[Forbidden, ...] = ()
    # A message for an output of the wrong shape (e.g. "did you compute K Qᵀ?"), from the shapes.
    shape_hint: Callable[[tuple, tuple, Case], str | None] | None = None
    rtol: dict[torch.dtype, float] = field(
        default_factory=lambda: {torch.float64: 1e-7, torch.float32: 1e-4}
    )
    atol: dict[torch.dtype, float] = field(
        default_factory=lambda: {torch.float64: 1e-9, torch.float32: 1e-5}
    )

    @property
    def grade_id(self) -> str:
        """The nbgrader grade_id of the exercise's test cell."""
        return f"test_{self.function}"
