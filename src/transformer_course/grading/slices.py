"""Slices of the course's modules: just the definitions some objects need, and nothing else.

When the grader checks an exercise that builds on earlier ones, the student's function runs with
the reference versions of those earlier exercises in place (``Exercise.uses``), and the exercise's
inputs may be objects of the course's own classes (a small model to decode with). Both must exist
in the sandboxed process that runs the student's code. Their modules must not: a module holds more
than the pieces asked for (``attention.py`` holds ``softmax`` and the very attention the student
is asked to write), and a function carries its whole module in ``__globals__``.

So the grader ships a **slice**: for each module involved, a new source holding only the top-level
definitions the requested names need, found by following the names each definition uses, within the
module and across the course's imports. Installed in the sandbox under the modules' own names,
the sliced functions and classes work (and unpickle) as the originals do, while everything else of
those modules simply does not exist there.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import pickle
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "transformer_course"


@dataclass
class _Module:
    """One module's top-level statements, indexed by the names they define."""

    name: str
    tree: ast.Module
    source: str
    defines: dict[str, int] = field(default_factory=dict)  # name -> index of its statement
    course_imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module, name)


def _path_of(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot slice {module}: no Python source found")
    return Path(spec.origin)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of what ``node`` (in ``module``) imports from."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".")[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


@cache
def _parse(module: str) -> _Module:
    source = _path_of(module).read_text(encoding="utf-8")
    parsed = _Module(module, ast.parse(source), source)
    for index, node in enumerate(parsed.tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            parsed.defines[node.name] = index
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        parsed.defines[name.id] = index
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, node)
            if source_module.split(".")[0] == PACKAGE:
                for alias in node.names:
                    parsed.course_imports[alias.asname or alias.name] = (source_module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    raise ValueError(f"{module}: `import {alias.name}` cannot be sliced; "
                                     "use `from ... import name`")
    return parsed


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _closure(roots: Iterable[tuple[str, str]], keep_whole: frozenset[str]) -> dict[str, set[str]]:
    """{module: names} that ``roots`` need, following uses within and across course modules.
    Modules in ``keep_whole`` are not sliced (they are shipped whole), so not followed."""
    needed: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        module, name = todo.pop()
        if module in keep_whole:
            continue
        if name in needed.get(module, set()):
            continue
        parsed = _parse(module)
        if name in parsed.course_imports:  # re-exported from another course module
            needed.setdefault(module, set()).add(name)
            todo.append(parsed.course_imports[name])
            continue
        if name not in parsed.defines:
            raise ValueError(f"{module} defines no top-level {name!r}")
        needed.setdefault(module, set()).add(name)
        statement = parsed.tree.body[parsed.defines[name]]
        for used in _names_used(statement):
            if used in parsed.defines and used not in needed[module]:
                todo.append((module, used))
            elif used in parsed.course_imports:
                todo.append((module, used))
    return needed


def _source(module: str, names: set[str]) -> str:
    """The slice of ``module``: its non-course imports, the course imports ``names`` need, and
    the statements defining ``names``, in the module's own order."""
    parsed = _parse(module)
    keep_statements = {parsed.defines[n] for n in names if n in parsed.defines}
    lines = []
    for index, node in enumerate(parsed.tree.body):
        if isinstance(node, ast.Import):
            lines.append(ast.get_source_segment(parsed.source, node))
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, node)
            if source_module.split(".")[0] != PACKAGE:
                lines.append(ast.get_source_segment(parsed.source, node))
                continue
            aliases = [a for a in node.names if (a.asname or a.name) in names]
            if aliases:
                imported = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)
                lines.append(f"from {source_module} import {imported}")
        elif index in keep_statements:
            lines.append(_with_decorators(parsed, node))
    return "\n".join(lines) + "\n"


def _with_decorators(parsed: _Module, node: ast.stmt) -> str:
    """A statement's source, decorators included (``get_source_segment`` starts at ``def``)."""
    decorators = getattr(node, "decorator_list", [])
    start = min([d.lineno for d in decorators] + [node.lineno])
    text_lines = parsed.source.splitlines()[start - 1: node.end_lineno]
    indent = min(len(line) - len(line.lstrip()) for line in text_lines if line.strip())
    return "\n".join(line[indent:] for line in text_lines)


def slice_modules(roots: Iterable[tuple[str, str]], keep_whole: Iterable[str] = ()) -> dict[str, str]:
    """{module: source}, in an order in which they can be run one after the other: the slices
    holding the top-level definitions ``roots`` ("module", "name") need. Names the roots reach in
    ``keep_whole`` modules (shipped whole beside the slices) are imported from there."""
    needed = _closure(roots, frozenset(keep_whole))
    order: list[str] = []

    def visit(module: str, path: tuple[str, ...] = ()) -> None:
        if module in order:
            return
        if module in path:
            raise ValueError(f"the course modules import each other in a circle: {' -> '.join(path + (module,))}")
        parsed = _parse(module)
        for name in needed[module]:
            if name in parsed.course_imports:
                source_module = parsed.course_imports[name][0]
                if source_module in needed:
                    visit(source_module, path + (module,))
        order.append(module)

    for module in sorted(needed):
        visit(module)
    return {module: _source(module, needed[module]) for module in order}


class _GlobalsRecorder(pickle.Pickler):
    """Pickles as usual, noting every course class and function the pickle will import."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=4)
        self.found: set[tuple[str, str]] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)):
            module = getattr(obj, "__module__", None) or ""
            if module.split(".")[0] == PACKAGE:
                self.found.add((module, obj.__qualname__.split(".")[0]))
        return NotImplemented  # pickle it the usual way


def pickle_with_globals(obj: Any) -> tuple[bytes, set[tuple[str, str]]]:
    """``obj`` pickled, and the (module, top-level name) of every course global it refers to."""
    buffer = io.BytesIO()
    pickler = _GlobalsRecorder(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.found
