"""The hardened grader: student code runs in a sandbox; checking and scoring happen outside.

For each submission (see the grading design in the course's design notes):

1. the notebook is read strictly and rebuilt on the pristine assignment (:mod:`.canonical`);
2. a fresh folder gets a copy of this package, the canonical cells and a job: every exercise's
   inputs, drawn from a per-run secret seed, plus the inputs its visible checks use;
3. the probe (:mod:`.probe`) runs there in a sandbox (:mod:`.sandbox`) and writes back the
   student's outputs as plain arrays;
4. here, outside, the outputs are replayed through the visible checks and compared with the
   reference, with the same messages as in the notebook, and scored.

Student code never sees the tests, the reference or the scores, and nothing it writes is loaded
with pickle. A crash, a timeout or a limit costs the exercises it prevented, with a message.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import torch

from .. import exercises
from ..exercises import Case, Exercise, ExerciseFailure
from ..exercises.compare import call_student, normalise_outputs, run_case
from ..exercises.forbidden import forbidden_message, is_reference_module, source_violation
from .canonical import Canonical, canonicalise, read_notebook
from .hidden import compare_with_reference, exact_matmuls
from .results import ERROR, FAILED, PASSED, ExerciseResult, StudentResult, error_result
from .sandbox import Limits, SandboxResult, run_sandboxed, sandbox_problem

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MAX_RESULT_BYTES = 64 * 1024**2  # what one exercise's outputs may weigh when read back


@dataclass
class PreparedExercise:
    """An exercise's inputs for one grading run, and what the reference makes of them."""

    exercise: Exercise
    visible: list[Case]  # the calls its visible checks make, in order
    hidden: list[Case]
    expected: list[tuple]  # the reference's outputs for each hidden case


class Replay:
    """Plays a student's recorded outputs back to the visible checks, call by call."""

    def __init__(self, exercise: Exercise, calls: list[dict], arrays: Any):
        self.exercise, self.calls, self.arrays = exercise, calls, arrays
        self.index = 0

    def __call__(self, label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        __tracebackhide__ = True
        if self.index >= len(self.calls):
            raise ExerciseFailure(f"`{self.exercise.function}` could not be checked (no output recorded).")
        call = self.calls[self.index]
        self.index += 1
        if "failure" in call:
            raise ExerciseFailure(call["failure"])
        return tuple(decode(o, self.arrays) for o in call["outputs"])


def decode(item: dict, arrays: Any) -> Any:
    """The value :func:`.probe.encode` described, from plain JSON and numpy arrays."""
    if "tensor" in item:
        array = arrays[item["tensor"]]
        tensor = torch.from_numpy(np.array(array))
        dtype = getattr(torch, item["dtype"], None)
        return tensor.to(dtype) if isinstance(dtype, torch.dtype) else tensor
    if "value" in item:
        return item["value"]
    if "list" in item:
        return [decode(v, arrays) for v in item["list"]]
    if "tuple" in item:
        return tuple(decode(v, arrays) for v in item["tuple"])
    if "dict" in item:
        return {k: decode(v, arrays) for k, v in item["dict"].items()}
    return object()  # unsupported: compares unequal to anything


def _recorder(exercise: Exercise, reference: Callable, into: list[Case]) -> Callable[..., tuple]:
    """A ``call`` for visible checks that notes each case and answers with the reference."""

    def call(label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        case = label if isinstance(label, Case) else Case(label, args, kwargs)
        into.append(case)
        return call_student(exercise, reference, case)

    return call


def reference_modules() -> list[str]:
    """Every module of the reference implementation (what the sandbox must not show)."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts)
        if is_reference_module(name) and parts[-1] != "__init__" and name != "transformer_course":
            names.append(name)
    return names


def _imports(module: str) -> set[str]:
    """The course modules that ``module``'s source imports."""
    path = PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            name = node.module if node.level == 0 else ".".join(
                [*module.split(".")[: -node.level], node.module])
            found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("transformer_course")}


def modules_to_hide(assignment: str, modules: list[str]) -> list[str]:
    """The reference modules a submission of ``assignment`` must not see: those holding its own
    exercises' references, and every module that imports one of them (it would hand the answer
    on). Earlier chapters' modules stay importable: a notebook may build on them (``uses``)."""
    hidden = {e.reference.split(":")[0] for e in exercises.for_assignment(assignment)}
    imports = {m: _imports(m) for m in modules}
    changed = True
    while changed:
        changed = False
        for module, names in imports.items():
            if module not in hidden and names & hidden:
                hidden.add(module)
                changed = True
    return sorted(hidden & set(modules))


def prepare_exercise(exercise: Exercise, seed: int) -> PreparedExercise:
    """Record the visible checks' calls and draw the hidden cases (CPU, from ``seed``)."""
    reference = exercise.load_reference()
    visible: list[Case] = []
    exercise.visible_checks(_recorder(exercise, reference, visible))
    generator = torch.Generator().manual_seed(seed)
    hidden = exercise.make_cases(generator)
    expected = []
    with exact_matmuls():
        for case in hidden:
            exact = case.to(torch.float64)
            with torch.no_grad():
                expected.append(normalise_outputs(exercise, run_case(reference, exact), exact))
    return PreparedExercise(exercise, visible, hidden, expected)


class HardenedBackend:
    """Grades submissions of one assignment in sandboxes (see the module docstring)."""

    def __init__(self, root: Path, assignment: str, workdir: Path, *, sandboxed: bool = True,
                 seed: int | None = None, limits: Limits | None = None):
        self.root = root
        self.assignment = assignment
        self.workdir = workdir
        self.sandboxed = sandboxed
        self.seed = secrets.randbits(31) if seed is None else seed
        self.limits = limits or Limits()
        self.exercises = exercises.for_assignment(assignment)
        self.prepared: list[PreparedExercise] = []

    @property
    def notebook_names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "notebooks" / self.assignment).glob("*.ipynb"))

    def prepare(self) -> None:
        if self.sandboxed and sandbox_problem():
            raise RuntimeError(
                f"{sandbox_problem()}\nTo grade without a sandbox anyway (only for code you trust), "
                "pass --unsandboxed."
            )
        (name,) = self.notebook_names or [None]
        if name is None:
            raise FileNotFoundError(
                f"no student notebook in notebooks/{self.assignment}: run `transformer-course release`"
            )
        self.pristine = nbformat.read(self.root / "notebooks" / self.assignment / name, as_version=4)
        self.prepared = [prepare_exercise(e, self.seed) for e in self.exercises]
        self.package = self.workdir / "package"
        shutil.copytree(PACKAGE_DIR, self.package / "transformer_course",
                        ignore=shutil.ignore_patterns("__pycache__", "templates", "*.pyc"))
        self.modules = reference_modules()
        self.hidden_modules = modules_to_hide(self.assignment, self.modules)
        self.site_packages = [p for p in site.getsitepackages() if Path(p).is_dir()]

    def error_result(self, result: StudentResult, message: str) -> StudentResult:
        return error_result(result, self.exercises, message)

    # ------------------------------------------------------------------ one submission

    def grade(self, student: str, notebook: Path, name: str) -> StudentResult:
        result = StudentResult(student=student, source=name)
        nb, problem = read_notebook(notebook)
        if nb is None:
            return self.error_result(result, problem)
        canonical = canonicalise(nb, self.pristine)
        if len(canonical.problems) == len(self.exercises) and all(
            "missing" in p for p in canonical.problems.values()
        ):
            return self.error_result(
                result, f"this notebook has none of the cells of assignment {self.assignment}: "
                "is it the right notebook?"
            )
        result.notes.extend(canonical.notes)
        folder = self.workdir / "runs" / student
        shutil.copytree(self.package, folder)
        run = self._run_probe(folder, canonical)
        result.exercises = self._score(folder, canonical, run)
        if run.ended_by and not any(e.status == PASSED for e in result.exercises):
            result.notes.append(f"the grading run was stopped: {run.ended_by}")
        shutil.rmtree(folder, ignore_errors=True)
        return result

    def _run_probe(self, folder: Path, canonical: Canonical) -> SandboxResult:
        job = {
            "cells": [{"kind": c.kind, "grade_id": c.grade_id, "source": c.source} for c in canonical.cells],
            "exercises": [
                {"function": p.exercise.function, "uses": list(p.exercise.uses), "cases": p.visible + p.hidden}
                for p in self.prepared
            ],
            "reference_modules": self.modules,
            "hidden_modules": self.hidden_modules,
        }
        torch.save(job, folder / "job.pt")
        command = [_python(), "transformer_course/grading/probe.py", *self.site_packages]
        env = {"MPLBACKEND": "Agg", "PROBE_THREADS": "1", "OMP_NUM_THREADS": "1"}
        if self.sandboxed:
            return run_sandboxed(command, folder, limits=self.limits, read_only=self.site_packages, env=env)
        return _run_unsandboxed(command, folder, self.limits, env)

    def _score(self, folder: Path, canonical: Canonical, run: SandboxResult) -> list[ExerciseResult]:
        progress = _read_text(folder / "progress.txt").splitlines()
        cell_errors = _read_json(folder / "results" / "cells.json") or []
        scored = []
        stopped_at = None
        for prepared in self.prepared:
            exercise = prepared.exercise
            record = _read_json(folder / "results" / f"{exercise.function}.json")
            if exercise.function in canonical.problems:
                scored.append(_failed(exercise, canonical.problems[exercise.function]))
                continue
            answer = canonical.answer(exercise.function) or ""
            violation = source_violation(exercise, answer)
            if violation:
                scored.append(_failed(exercise, forbidden_message(exercise, violation)))
                continue
            if record is None:
                if stopped_at is None:
                    stopped_at = _where_it_stopped(progress, run)
                scored.append(ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), ERROR,
                                             f"not checked: {stopped_at}"))
                continue
            scored.append(self._check(prepared, record, folder, cell_errors))
        return scored

    def _check(self, prepared: PreparedExercise, record: dict, folder: Path, cell_errors: list) -> ExerciseResult:
        exercise = prepared.exercise
        if record.get("failure"):
            message = record["failure"]
            own_error = [e for e in cell_errors if e["grade_id"] == exercise.function]
            if own_error and "is not defined" in message:
                message = f"the cell `{exercise.function}` raised {own_error[0]['error']}, so it defines nothing."
            return _failed(exercise, message)
        path = folder / "results" / f"{exercise.function}.npz"
        if not path.is_file() or path.stat().st_size > MAX_RESULT_BYTES:
            return _failed(exercise, "its outputs could not be read back (missing or far too large)")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return self._compare(prepared, record["calls"], dict(arrays))
        except (ValueError, OSError, KeyError, TypeError) as error:
            return _failed(exercise, f"its outputs could not be read back ({type(error).__name__})")

    def _compare(self, prepared: PreparedExercise, calls: list[dict], arrays: dict) -> ExerciseResult:
        exercise = prepared.exercise
        n_visible = len(prepared.visible)
        try:
            count = exercise.visible_checks(Replay(exercise, calls[:n_visible], arrays))
            for index, (case, expected) in enumerate(zip(prepared.hidden, prepared.expected)):
                position = n_visible + index
                if position >= len(calls):
                    raise ExerciseFailure(f"`{exercise.function}` could not be checked on {case.label}.")
                call = calls[position]
                if "failure" in call:
                    raise ExerciseFailure(call["failure"])
                outputs = tuple(decode(o, arrays) for o in call["outputs"])
                outputs = normalise_outputs(exercise, outputs if len(exercise.output_names) > 1 else outputs[0], case)
                compare_with_reference(exercise, outputs, expected, case)
                count += 1
        except ExerciseFailure as failure:
            return _failed(exercise, str(failure))
        return ExerciseResult(exercise.grade_id, float(exercise.points), float(exercise.points), PASSED,
                              f"✓ {exercise.function}: all {count} checks passed.")


def _failed(exercise: Exercise, message: str) -> ExerciseResult:
    return ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), FAILED, message)


def _where_it_stopped(progress: list[str], run: SandboxResult) -> str:
    """Which cell or exercise the run was in when it ended, and why, in words."""
    why = run.ended_by or (f"it exited with code {run.returncode}" if run.returncode else "it ended early")
    last = progress[-1] if progress else ""
    if not progress:  # the probe itself could not start: say what it printed, for the instructor
        errors = run.stderr.decode("utf-8", "replace").strip().splitlines()
        if errors:
            why += f" ({errors[-1][:300]})"
    if last.startswith("cell "):
        _, _, where = last.split(" ", 2)
        return f"the run ended while running the cell `{where}`: {why}"
    if last.startswith("exercise "):
        return f"the run ended while checking `{last.split(' ', 1)[1]}`: {why}"
    return f"the run ended before any cell ran: {why}"


def _read_text(path: Path, limit: int = 1024**2) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_json(path: Path) -> Any:
    if not path.is_file() or path.stat().st_size > MAX_RESULT_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def _python() -> str:
    """The interpreter itself (not a virtual environment's link to it): the sandbox mounts the
    Python installation and the packages, not the virtual environment folder."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def _run_unsandboxed(command: list[str], folder: Path, limits: Limits, env: dict) -> SandboxResult:
    """The probe as a plain subprocess with a time limit: for trusted code on machines with no
    sandbox, when the instructor asks for it."""
    import time

    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, timeout=limits.wall_seconds,
                              env={**os.environ, **env})
        return SandboxResult(done.returncode, done.stdout[: limits.output_bytes],
                             done.stderr[: limits.output_bytes], time.perf_counter() - start)
    except subprocess.TimeoutExpired:
        return SandboxResult(None, b"", b"", time.perf_counter() - start, timed_out=True)
