"""Finding library calls that do an exercise for the student.

Two independent looks, so that neither an alias nor a string trick gets through:

* **statically**, in the function's source: an attribute such as ``torch.softmax`` or
  ``F.scaled_dot_product_attention``, an import of the reference package, or a global name
  that is bound to something of the reference package;
* **at run time**, with ``sys.setprofile`` while the student's function runs: Python reports
  every call into a C function (``torch.softmax``, ``Tensor.softmax``,
  ``torch._C._nn.scaled_dot_product_attention``) and every Python function entered (the
  reference package's own code), however the student reached it.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import os
import sys
import sysconfig
import textwrap
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .base import Exercise, ExerciseFailure, Forbidden

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
# Parts of the package that are tooling, not answers: using them is allowed.
_TOOLING = ("exercises", "grading", "checks", "device", "plotting", "cli", "__main__")
# Where code that is not the student's own lives: Python's standard library and installed packages,
# torch, this package, and the slices of it the grading sandbox installs (compiled as
# "<course slice ...>", see grading/probe.py). Everything else (a notebook cell, a file next to it)
# is the student's.
_LIBRARY_PLACES = tuple(sorted({
    *(os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib", "purelib", "platlib")),
    _TORCH_DIR, os.path.join(_PACKAGE_DIR, ""), "<frozen ", "<course slice ",
}))


def is_students_code(code: types.CodeType) -> bool:
    """Whether ``code`` is the student's own (see ``_LIBRARY_PLACES``)."""
    return not code.co_filename.startswith(_LIBRARY_PLACES)


def is_reference_module(module_name: str) -> bool:
    """True for modules of the reference implementation (``transformer_course.attention``…)."""
    parts = module_name.split(".")
    if parts[0] != "transformer_course":
        return False
    return len(parts) == 1 or parts[1] not in _TOOLING


def _is_reference_file(filename: str) -> bool:
    if not filename.startswith(_PACKAGE_DIR + os.sep):
        return False
    relative = os.path.relpath(filename, _PACKAGE_DIR)
    top = relative.split(os.sep)[0].removesuffix(".py")
    return top not in _TOOLING and top != "__init__"


def _all_code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and every function nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_code_names(const)
    return names


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
    name = getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if name and module != getattr(obj, "__name__", None) else module


def static_violation(
    exercise: Exercise, fn: Callable[..., Any], allowed: dict[str, Any]
) -> str | None:
    """What forbidden thing ``fn``'s source or globals name, or None.

    ``allowed`` maps global names to the reference functions we substituted ourselves. For a
    class, each method it defines is looked at (a class typed into a notebook has no source
    file that ``inspect`` could read as a whole, but its methods do).
    """
    if isinstance(fn, type):
        methods = [v for v in vars(fn).values() if isinstance(v, types.FunctionType)]
        for method in methods:
            violation = static_violation(exercise, method, allowed)
            if violation:
                return violation
        for base in fn.__bases__:
            if is_reference_module(getattr(base, "__module__", "")):
                return f"derives from {_describe(base)} of the course's reference implementation"
        return None
    code = getattr(fn, "__code__", None)
    fn_globals = getattr(fn, "__globals__", {})
    if code is not None:
        for name in sorted(_all_code_names(code)):
            if name in allowed or name not in fn_globals:
                continue
            value = fn_globals[name]
            module = getattr(value, "__name__", "") if inspect.ismodule(value) else getattr(
                value, "__module__", ""
            )
            if module and is_reference_module(module):
                return f"uses `{name}` = {_describe(value)} from the course's reference implementation"
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None  # no source to read (e.g. built in a string); the run-time look still applies
    return source_violation(exercise, source)


def rules_it_names(exercise: Exercise, fn: Any) -> frozenset[Forbidden]:
    """The rules of ``exercise`` whose library calls the source of the student's own function (or
    class) ``fn`` writes: in the notebook, the forbidden calls an earlier function of the student's
    makes itself, which cost that function its points and not the exercise that calls it. Nothing
    for code that is not the student's (the references) or whose source cannot be read."""
    methods = [v for v in vars(fn).values() if isinstance(v, types.FunctionType)] if isinstance(fn, type) else [fn]
    named: set[str] = set()
    for method in methods:
        code = getattr(method, "__code__", None)
        if code is None or not is_students_code(code):
            return frozenset()
        try:
            tree = _parse(textwrap.dedent(inspect.getsource(method)))
        except (OSError, TypeError):
            return frozenset()
        if tree is not None:
            named |= source_facts(tree).attributes
    return frozenset(rule for rule in exercise.forbidden if rule.attribute_names & named)


# Names that switch off or get around the run-time watch; an answer has no use for them.
TAMPERING = frozenset({"setprofile", "settrace", "_getframe", "get_objects", "get_referrers",
                       "__subclasses__", "ctypes", "ctypeslib", "pythonapi",
                       # walking the stack into the checking code's frames
                       "__traceback__", "tb_frame", "f_back", "f_locals", "f_globals", "gi_frame", "cr_frame",
                       "ag_frame", "currentframe", "getouterframes", "getinnerframes",
                       # taking torch's function and operator modes off
                       "_python_dispatch", "_pop_torch_function_mode",
                       "_pop_torch_dispatch_mode", "_set_torch_function_mode", "_set_torch_dispatch_mode",
                       "DisableTorchFunction", "DisableTorchFunctionSubclass", "_DisableTorchDispatch",
                       "_disable_current_modes"})
# (Copying a function's code, ``f.__code__.replace(...)``, is not refused: a debugging cell that
# asks ``isinstance(f, types.FunctionType)`` is honest, and the refusal was dodged by spelling the
# names in pieces. Nor is it caught at run time: a copy of torch's Python code, renamed or edited,
# is the student's own code to any check; see the README's threat model.)
# C functions that, called while an answer runs, would switch the watch off...
SWITCHES_OFF = frozenset({"setprofile", "settrace", "_pop_torch_function_mode", "_pop_torch_dispatch_mode",
                          "_set_torch_function_mode", "_set_torch_dispatch_mode", "DisableTorchFunction",
                          "DisableTorchFunctionSubclass", "_DisableTorchDispatch", "_disable_current_modes"})
# ... or run code where it cannot look: a thread started by ``_thread`` directly (``threading``'s
# threads are watched), or another process.
STARTS_ELSEWHERE = frozenset({"start_new_thread", "start_new", "_start_new_thread", "fork", "forkpty",
                              "fork_exec", "posix_spawn", "posix_spawnp", "execv", "execve", "system",
                              "spawnv", "spawnve"})


def _parse(source: str) -> ast.AST | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # it will fail to run, with its own message


@dataclass
class SourceFacts:
    """What the look at a cell's source needs, gathered in one walk over its syntax tree (a walk
    per question and exercise cost a crafted cell minutes of the grader's time)."""

    attributes: set[str] = field(default_factory=set)  # x.<name>, and names imported from modules
    modules: set[str] = field(default_factory=set)  # modules imported
    strings: set[str] = field(default_factory=set)  # string constants that name the course
    # names imported from the reference (``from transformer_course.attention import
    # scaled_dot_product_attention``): allowed where the exercise builds on them (its ``uses``)
    reference_names: set[str] = field(default_factory=set)
    bound: set[str] = field(default_factory=set)  # names the cell binds at its top level
    binds_dynamically: bool = False  # exec(...) or globals()[...] = ...: any name, maybe
    tampering: str | None = None  # the first thing that could switch off the run-time watch


def source_facts(tree: ast.AST) -> SourceFacts:
    """:class:`SourceFacts` of ``tree``, in a single walk."""
    facts = SourceFacts()
    checking_names: set[str] = set()  # names the cell binds to the course's checking code
    stores: list[ast.AST] = []  # attribute stores and setattr calls, judged once the walk is done
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]  # (node, at the cell's top level)
    while stack:
        node, top = stack.pop()
        inner = top and not isinstance(node, scopes)
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names = [] if isinstance(node, ast.Import) else [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and not node.level and is_reference_module(node.module or ""):
                # the setup cell's own line, repeated in an answer, brings a building block
                facts.reference_names.update(names)
            else:
                facts.modules.update(m for m in modules if m)
                facts.attributes.update(names)
            for alias in node.names:
                if top:
                    facts.bound.add(alias.asname or alias.name.split(".")[0])
            for name in [*(m.split(".")[0] for m in modules if m), *names]:
                if name in TAMPERING:
                    facts.tampering = facts.tampering or f"uses `{name}`"
            if "__main__" in modules or "__main__" in names:
                facts.tampering = facts.tampering or "imports `__main__` (the program that checks it)"
            if isinstance(node, ast.Import):
                checking_names.update(alias.asname or alias.name.split(".")[0] for alias in node.names
                                      if _checking_code(alias.name))
            elif _checking_code(node.module or ""):
                checking_names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Attribute):
            facts.attributes.add(node.attr)
            if node.attr in TAMPERING:
                facts.tampering = facts.tampering or f"uses `{node.attr}`"
            if isinstance(node.ctx, ast.Store):
                stores.append(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "transformer_course" in node.value:
            facts.strings.add(node.value)
            if _checking_code(node.value):
                facts.tampering = facts.tampering or f"names `{node.value[:60]}`"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("exec", "eval"):
                facts.binds_dynamically = True
            elif node.func.id == "setattr":
                stores.append(node)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and isinstance(
                node.value, ast.Call) and isinstance(node.value.func, ast.Name) and node.value.func.id in (
                    "globals", "vars"):
            facts.binds_dynamically = True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and top:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            facts.bound.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            if _fetches_a_module(node.value):
                checking_names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and top:
            facts.bound.add(node.name)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith, ast.AugAssign, ast.NamedExpr)) and top:
            facts.bound.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(
                n.ctx, ast.Store))
        elif isinstance(node, ast.Global):
            facts.bound.update(node.names)
    # Rewriting the course's own checking code (compare.call_student = ..., importlib.import_module
    # (...).call_student = ...) rewrites what the checks see in the student's process.
    for node in stores:
        target = node.value if isinstance(node, ast.Attribute) else (node.args[0] if node.args else None)
        rewrites = (isinstance(target, ast.Name) and target.id in checking_names) or _fetches_a_module(target)
        if rewrites:
            name = target.id if isinstance(target, ast.Name) else "a module"
            facts.tampering = facts.tampering or f"rewrites `{name}` of the course's checks"
    return facts


def tampering_in_source(source: str, tree: ast.AST | None = None) -> str | None:
    """What in ``source`` could switch off or get around the run-time watch (``sys.setprofile``,
    ``ctypes``, walking frames or the garbage collector's objects, rewriting the course's checking
    code), said as "uses `ctypes`", or None. A course notebook has no use for any of them.
    ``tree``: ``source`` already parsed."""
    tree = tree if tree is not None else _parse(source)
    return source_facts(tree).tampering if tree is not None else None


def _checking_code(module: str) -> bool:
    """The course's own checking code (the registry, the checks, the grader), which a student's
    cell has no business touching: rewriting it in the student's own process could forge what the
    checks see there. (The reference and the plotting helpers are the course's too, but may be
    used: an earlier chapter's building blocks, a figure's colours.)"""
    parts = module.split(".")
    return parts[0] == "transformer_course" and len(parts) > 1 and parts[1] in ("exercises", "grading", "checks")


def _fetches_a_module(node: ast.AST | None) -> bool:
    """``importlib.import_module(...)``, ``__import__(...)``, ``sys.modules[...]`` or
    ``sys.modules.get(...)``: a module reached by a name, maybe put together at run time."""
    if isinstance(node, ast.Call):
        func = node.func
        return _names_import(func) or (isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(
            func.value, ast.Attribute) and func.value.attr == "modules")
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "modules"


def _names_import(func: ast.AST) -> bool:
    """``__import__(...)``, ``importlib.import_module(...)`` or ``import_module(...)``."""
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr in ("__import__", "import_module")


def building_blocks(exercise: Exercise) -> set[str]:
    """What an answer of ``exercise`` may import from the reference: what it builds on (its
    ``uses``) and the earlier chapters' pieces its notebook's setup cell gives ready-made (an
    import repeated at the top of any answer cell is harmless), never an exercise of its own
    notebook that it does not build on."""
    from . import for_assignment  # the registry imports this module

    siblings = for_assignment(exercise.assignment)
    own = {e.function for e in siblings}
    return set(exercise.uses) | {name for e in siblings for name in e.uses if name not in own}


def violation_in_facts(exercise: Exercise, facts: SourceFacts) -> str | None:
    """What forbidden thing a cell with ``facts`` names, for ``exercise``, or None."""
    for rule in exercise.forbidden:
        if facts.attributes & rule.attribute_names:
            return f"calls {rule.label}"
    if any(is_reference_module(m) for m in facts.modules) or facts.reference_names - building_blocks(exercise):
        return "imports the course's reference implementation"
    if facts.strings:
        return "names the course's reference implementation"
    return f"{facts.tampering}, which interferes with the grader" if facts.tampering else None


def source_violation(exercise: Exercise, source: str, tree: ast.AST | None = None) -> str | None:
    """What forbidden thing the source code of an answer names, or None (syntax-tree look).
    ``tree``: ``source`` already parsed."""
    tree = tree if tree is not None else _parse(source)
    return violation_in_facts(exercise, source_facts(tree)) if tree is not None else None


class Tripwire:
    """A context manager that records the first forbidden call made while it is active.

    ``allowed_code`` is the code of the implementations put in place of earlier exercises (the
    references in grading, the student's own earlier functions in the notebook). Calling it is
    not a call into the course's reference, and inside it only the rules in ``excused_rules`` are
    not enforced: the forbidden calls the student's own earlier function makes itself (it loses its
    own points for them). Nothing else is excused there, since an answer can make allowed code run
    a library call for it in many ways (a method of an object it hands over, ``map`` or
    ``functools.partial`` called back from C, a library module put into an allowed module); the
    references make no forbidden call. The student's own code that allowed code calls back is
    watched as if called directly.
    """

    def __init__(self, exercise: Exercise, allowed_code: set[types.CodeType] = frozenset(),
                 excused_rules: frozenset[Forbidden] = frozenset()):
        self.rules: tuple[Forbidden, ...] = exercise.forbidden
        self.allowed_code = set(allowed_code)
        self.excused_rules = excused_rules
        self.violation: str | None = None
        self.entered: set[types.CodeType] = set()  # the allowed code that ran (see checks.check)
        # Frames where the watch changed its mind, innermost last: (frame, True) where allowed code
        # was entered (not watched from there), (frame, False) where the student's own code was
        # entered from allowed code (watched again).
        self._turns: list[tuple[types.FrameType, bool]] = []
        self._previous: Any = None
        self._closing = False

    def _profile(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if self._closing:  # our own __exit__ switching the watch off
            return
        excused = bool(self._turns) and self._turns[-1][1]
        if event == "return":
            if self._turns and frame is self._turns[-1][0]:
                self._turns.pop()
            return
        if event == "call":
            code = frame.f_code
            if code in self.allowed_code:
                self._turns.append((frame, True))
                self.entered.add(code)
                return
            if excused and is_students_code(code):
                self._turns.append((frame, False))
                excused = False
        if self.violation is not None:
            return
        rules = [r for r in self.rules if r not in self.excused_rules] if excused else self.rules
        if event == "call":
            if not excused and _is_reference_file(code.co_filename):
                module = os.path.relpath(code.co_filename, _PACKAGE_DIR).removesuffix(".py")
                self.violation = (
                    f"calls transformer_course.{module.replace(os.sep, '.')}.{code.co_name}, "
                    "the course's reference implementation"
                )
            else:
                for rule in rules:
                    if _is_forbidden_code(rule, code):
                        self.violation = f"calls {rule.label}"
        elif event == "c_call":
            name = getattr(arg, "__name__", "")
            for rule in rules:
                if name in rule.builtin_names:
                    self.violation = f"calls {rule.label}"
            if name in SWITCHES_OFF:
                self.violation = f"calls `{name}`, which switches off the checks' watch"
            elif name in STARTS_ELSEWHERE:
                self.violation = (f"starts a thread or a process (`{name}`) while it is being checked, "
                                  "where the checks cannot see what it calls")

    def saw_library_call(self, name: str) -> None:
        """A torch function or operator called ``name`` ran (seen by the modes below)."""
        if self._closing or self.violation is not None:
            return
        for rule in self.rules:
            if (name in rule.builtin_names or any(name == f for _, f in rule.python_functions)
                    or any(part in name for part in rule.torch_name_parts)):
                # An excused call's gradient (nll_loss_backward, ...) runs later, when the answer calls
                # backward(), from autograd rather than from the allowed code that made the call: it is
                # the same call's, excused with it.
                if rule not in self.excused_rules or not (self._inside_allowed_code() or "backward" in name):
                    self.violation = f"calls {rule.label}"
                return

    def _inside_allowed_code(self) -> bool:
        """Whether the call being made comes from allowed code, through library code only (not
        through the student's own code that allowed code called back)."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code in self.allowed_code:
                return True
            if is_students_code(frame.f_code):
                return False
            frame = frame.f_back
        return False

    def __enter__(self) -> Tripwire:
        if self.rules:  # (the modes below watch for the rules' calls only)
            prepare_watch()
        self._previous = sys.getprofile(), threading.getprofile()
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)  # threads started while it is active are watched too
        # The profiler sees calls made from Python only: ``map(torch.softmax, ...)`` calls from C.
        # torch's own modes see every torch function and every operator, whoever calls them.
        self._modes = [_FunctionWatch(self), _OperatorWatch(self)] if self.rules else []
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing = True
        for mode in reversed(self._modes):
            try:
                mode.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - the student's code took it off the stack itself
                self.violation = self.violation or "switches off the checks' watch (torch's mode stack)"
        sys.setprofile(self._previous[0])
        threading.setprofile(self._previous[1])


def _is_forbidden_code(rule: Forbidden, code: types.CodeType) -> bool:
    """Whether ``code`` is one of the Python functions ``rule`` names."""
    if any(name in ("*", code.co_name) and code.co_filename.endswith(suffix)
           for suffix, name in rule.python_functions):
        return True
    return code.co_filename.startswith(_TORCH_DIR) and any(part in code.co_name for part in rule.torch_name_parts)


_MODES_READY: list[bool] = []


def prepare_watch() -> None:
    """Make torch's dispatch modes ready before a :class:`Tripwire` watches anything: their first
    use imports some 800 modules (torch._dynamo, sympy...), which took seconds under the watch's
    profiler. The grader's probe calls this once before it forks a process per exercise, so none
    of them pays it."""
    if not _MODES_READY:
        import torch

        with _OperatorWatch(None), _FunctionWatch(None):
            torch.zeros(1).exp()
        _MODES_READY.append(True)


class _FunctionWatch(TorchFunctionMode):
    """Tells the tripwire the name of every torch function called (torch.softmax, F.embedding...)."""

    def __init__(self, tripwire: Tripwire | None) -> None:
        super().__init__()
        self.tripwire = tripwire

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.tripwire is not None:  # (None: :func:`prepare_watch`'s first use)
            self.tripwire.saw_library_call(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


class _OperatorWatch(TorchDispatchMode):
    """Tells the tripwire the name of every operator run (aten::_softmax, ...), also those reached
    below torch's Python functions (torch.ops.aten._softmax)."""

    def __init__(self, tripwire: Tripwire | None) -> None:
        super().__init__()
        self.tripwire = tripwire

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.tripwire is not None:
            self.tripwire.saw_library_call(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


def forbidden_message(exercise: Exercise, violation: str) -> str:
    """The message for a forbidden call: what was found and why it earns nothing."""
    return (
        f"`{exercise.function}` {violation}. This exercise asks you to write that yourself, "
        "so it earns no points while the call is there. Build it from basic tensor "
        "operations (matrix products, exp, sum, max, masked_fill, ...)."
    )


def tampering_message(where: str, tampering: str) -> str:
    """The message for a cell (``where``: "the cell `softmax`") that could switch off the watch."""
    return (f"{where} {tampering}, which can switch off the checks' watch for library calls, so no "
            "exercise of this notebook earns points while it is there. Remove it.")


def cell_source(fn: Any) -> str | None:
    """The source of the notebook cell that defined ``fn`` (a function, or a class by its methods),
    or None when ``fn`` comes from a file. A notebook's cells are in ``linecache`` with no file
    behind them (IPython puts them there, and the grader's probe does the same in its sandbox)."""
    codes = [fn.__code__] if isinstance(getattr(fn, "__code__", None), types.CodeType) else [
        v.__code__ for v in vars(fn).values() if isinstance(v, types.FunctionType)] if isinstance(fn, type) else []
    for code in codes:
        entry = linecache.cache.get(code.co_filename)
        if entry is not None and len(entry) == 4 and entry[1] is None and isinstance(entry[2], list):
            return "".join(entry[2])
    return None


def answer_problem(exercise: Exercise, fn: Callable[..., Any], allowed: dict[str, Any]) -> str | None:
    """The static look at an answer, as the grader takes it: the cell that defines ``fn`` (anything
    in it that could switch off the watch, then a forbidden call or the reference named anywhere in
    it), then ``fn`` itself (:func:`static_violation`); the message, or None.

    The notebook's check, ``--nbgrader`` grading and the hardened grader (which looks at the answer
    cell outside its sandbox, and at the function inside) say the same thing for the same cell."""
    source = cell_source(fn)
    tree = _parse(source) if source is not None else None
    if tree is not None:
        facts = source_facts(tree)
        if facts.tampering:
            return tampering_message(f"the cell `{exercise.function}`", facts.tampering)
        violation = violation_in_facts(exercise, facts)
        if violation:
            return forbidden_message(exercise, violation)
    violation = static_violation(exercise, fn, allowed)
    return forbidden_message(exercise, violation) if violation else None


def raise_if_forbidden(exercise: Exercise, violation: str | None) -> None:
    __tracebackhide__ = True
    if violation:
        raise ExerciseFailure(forbidden_message(exercise, violation))
