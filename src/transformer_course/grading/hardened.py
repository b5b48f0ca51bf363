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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
import numpy as np
import torch

from .. import exercises
from ..exercises import Case, Exercise, ExerciseFailure
from ..exercises.compare import call_student, normalise_outputs, run_case
from ..exercises.forbidden import forbidden_message, is_reference_module, source_violation
from . import hidden_tests
from .canonical import Canonical, canonicalise, read_notebook
from .hidden import compare_with_reference, exact_matmuls
from .results import ERROR, FAILED, PASSED, ExerciseResult, StudentResult, error_result
from .sandbox import Limits, SandboxResult, run_sandboxed, sandbox_problem

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MAX_RESULT_BYTES = 64 * 1024**2  # what one exercise's outputs may weigh when read back
RERUN_BUDGET = 2  # all runs of one submission together: at most this many times one run's wall clock


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
    hidden = {hidden_tests.get(e.function).reference_module for e in exercises.for_assignment(assignment)}
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
    tests = hidden_tests.get(exercise.function)
    reference = tests.load_reference()
    visible: list[Case] = []
    exercise.visible_checks(_recorder(exercise, reference, visible))
    generator = torch.Generator().manual_seed(seed)
    hidden = tests.make_cases(generator)
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
        nb, problem, notes = read_notebook(notebook)
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
        result.notes.extend(notes + canonical.notes)
        folder = self.workdir / "runs" / student
        try:
            probed = self._probe(folder, canonical)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result.notes.extend(probed.notes)
        result.exercises = self._score(canonical, probed)
        return result

    def _probe(self, folder: Path, canonical: Canonical) -> Probed:
        """Run the probe until every exercise is checked or accounted for.

        A run that dies (a crash, a timeout, a limit) is run again without what killed it: the
        cell it was running, or the exercise it was checking; that exercise alone is lost, with
        the reason. Every rerun removes one cell or one exercise, and all of them together get
        at most ``RERUN_BUDGET`` times the wall-clock limit of one run.
        """
        probed = Probed()
        remaining = [p for p in self.prepared if p.exercise.function not in canonical.problems]
        skip_cells: set[int] = set()
        deadline = time.monotonic() + RERUN_BUDGET * self.limits.wall_seconds
        while remaining:
            left = deadline - time.monotonic()
            if left < 1:
                probed.stop(remaining, "not checked: the time for grading this notebook was used up "
                            "by the runs that were stopped before")
                break
            run, progress = self._run_probe(folder, canonical, remaining, skip_cells, left)
            probed.read_back(folder, remaining)
            remaining = [p for p in remaining if p.exercise.function not in probed.records]
            if not remaining or progress[-1:] == ["done"]:
                probed.stop(remaining, "not checked: the run ended without checking it")
                break
            step = _last_step(progress)
            why = "not checked: " + _where_it_stopped(step, run, started=bool(progress))
            if step.kind == "cell" and step.cell is not None and step.cell < len(canonical.cells) \
                    and step.cell not in skip_cells:
                cell = canonical.cells[step.cell]
                skip_cells.add(step.cell)
                if cell.kind == "answer":
                    probed.stop([p for p in remaining if p.exercise.function == cell.grade_id], why)
                elif cell.kind == "added":
                    probed.notes.append(f"a code cell you added stopped the grading run ({_why_it_ended(run)}); "
                                        "it was left out and your answers were graded without it")
                else:  # the course's own setup cell: nothing sensible runs without it
                    probed.stop(remaining, why)
                    break
            elif step.kind == "exercise" and step.name in {p.exercise.function for p in remaining}:
                probed.stop([p for p in remaining if p.exercise.function == step.name], why)
            else:  # the probe did not start, or died in between: a rerun would end the same way
                probed.stop(remaining, why)
                break
            remaining = [p for p in remaining if p.exercise.function not in probed.stopped]
        return probed

    def _run_probe(self, folder: Path, canonical: Canonical, exercises_left: list[PreparedExercise],
                   skip_cells: set[int], seconds_left: float) -> tuple[SandboxResult, list[str]]:
        """One run of the probe in a fresh copy of ``folder``; how it ended and its progress."""
        shutil.rmtree(folder, ignore_errors=True)  # nothing a previous run wrote is run again
        shutil.copytree(self.package, folder)
        job = {
            "cells": [{"kind": c.kind, "grade_id": c.grade_id, "source": c.source} for c in canonical.cells],
            "skip_cells": sorted(skip_cells),
            "exercises": [
                {"function": p.exercise.function, "uses": list(p.exercise.uses), "cases": p.visible + p.hidden}
                for p in exercises_left
            ],
            "reference_modules": self.modules,
            "hidden_modules": self.hidden_modules,
        }
        torch.save(job, folder / "job.pt")
        command = [_python(), "transformer_course/grading/probe.py", *self.site_packages]
        env = {"MPLBACKEND": "Agg", "PROBE_THREADS": "1", "OMP_NUM_THREADS": "1"}
        limits = replace(self.limits, wall_seconds=min(self.limits.wall_seconds, seconds_left))
        if self.sandboxed:
            run = run_sandboxed(command, folder, limits=limits, read_only=self.site_packages, env=env)
        else:
            run = _run_unsandboxed(command, folder, limits, env)
        return run, _read_text(folder / "progress.txt").splitlines()

    def _score(self, canonical: Canonical, probed: Probed) -> list[ExerciseResult]:
        scored = []
        for prepared in self.prepared:
            exercise = prepared.exercise
            if exercise.function in canonical.problems:
                scored.append(_failed(exercise, canonical.problems[exercise.function]))
                continue
            violation = source_violation(exercise, canonical.answer(exercise.function) or "")
            if violation:
                scored.append(_failed(exercise, forbidden_message(exercise, violation)))
            elif exercise.function in probed.records:
                scored.append(self._check(prepared, *probed.records[exercise.function], probed.cell_errors))
            else:
                message = probed.stopped.get(exercise.function, "not checked: the run ended without checking it")
                scored.append(ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), ERROR, message))
        return scored

    def _check(self, prepared: PreparedExercise, record: dict, arrays: dict | str,
               cell_errors: list) -> ExerciseResult:
        exercise = prepared.exercise
        if record.get("failure"):
            message = record["failure"]
            own_error = [e for e in cell_errors if e["grade_id"] == exercise.function]
            if own_error and "is not defined" in message:
                message = f"the cell `{exercise.function}` raised {own_error[0]['error']}, so it defines nothing."
            return _failed(exercise, message)
        if isinstance(arrays, str):
            return _failed(exercise, arrays)
        try:
            return self._compare(prepared, record["calls"], arrays)
        except (KeyError, TypeError, ValueError) as error:  # a record not as the probe writes it
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


@dataclass
class Probed:
    """What the probe's runs of one submission brought back, read into memory after each run."""

    records: dict[str, tuple[dict, dict | str]] = field(default_factory=dict)  # record, arrays or why not
    stopped: dict[str, str] = field(default_factory=dict)  # exercise -> why it was not checked
    cell_errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stop(self, prepared: list[PreparedExercise], why: str) -> None:
        for p in prepared:
            self.stopped.setdefault(p.exercise.function, why)

    def read_back(self, folder: Path, prepared: list[PreparedExercise]) -> None:
        """Keep the records this run wrote (plain JSON and arrays, never pickle)."""
        results = folder / "results"
        for error in _read_json(results / "cells.json") or []:
            if isinstance(error, dict) and error not in self.cell_errors:
                self.cell_errors.append(error)
        for p in prepared:
            function = p.exercise.function
            record = _read_json(results / f"{function}.json")
            if not isinstance(record, dict):
                continue
            self.records[function] = (record, _read_arrays(results / f"{function}.npz"))


def _read_arrays(path: Path) -> dict | str:
    """The arrays in ``path``, or why they cannot be read."""
    if not path.is_file() or path.stat().st_size > MAX_RESULT_BYTES:
        return "its outputs could not be read back (missing or far too large)"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return dict(arrays)
    except (ValueError, OSError, KeyError, TypeError) as error:
        return f"its outputs could not be read back ({type(error).__name__})"


def _failed(exercise: Exercise, message: str) -> ExerciseResult:
    return ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), FAILED, message)


def _why_it_ended(run: SandboxResult) -> str:
    """Why a run that did not finish ended, in words."""
    if run.ended_by:
        return run.ended_by
    if run.returncode:
        return f"it exited with code {run.returncode}"
    return "it ended the Python process early (os._exit, or a crash)"


class LastStep(NamedTuple):
    """Where the probe was when its run ended: the last line it wrote to progress.txt."""

    kind: str  # "cell", "exercise", or "" (no line, or not one the probe writes)
    cell: int | None  # for "cell": its index among the canonical cells
    name: str  # the cell's grade_id (or "added", "setup"), or the exercise's function


def _last_step(progress: list[str]) -> LastStep:
    """The probe writes "cell <index> <grade_id or kind>" and "exercise <function>"."""
    words = progress[-1].split(" ", 2) if progress else []
    if len(words) == 3 and words[0] == "cell":
        return LastStep("cell", int(words[1]) if words[1].isdigit() else None, words[2])
    if len(words) >= 2 and words[0] == "exercise":
        return LastStep("exercise", None, words[1])
    return LastStep("", None, "")


def _where_it_stopped(step: LastStep, run: SandboxResult, started: bool) -> str:
    """Which cell or exercise the run was in when it ended, and why, in words."""
    why = _why_it_ended(run)
    if not started:  # the probe itself could not start: say what it printed, for the instructor
        errors = run.stderr.decode("utf-8", "replace").strip().splitlines()
        if errors:
            why += f" ({errors[-1][:300]})"
    if step.kind == "cell":
        where = "a cell you added" if step.name == "added" else f"the cell `{step.name}`"
        return f"the run ended while running {where}: {why}"
    if step.kind == "exercise":
        return f"the run ended while checking `{step.name}`: {why}"
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
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, timeout=limits.wall_seconds,
                              env={**os.environ, **env})
        return SandboxResult(done.returncode, done.stdout[: limits.output_bytes],
                             done.stderr[: limits.output_bytes], time.perf_counter() - start)
    except subprocess.TimeoutExpired:
        return SandboxResult(None, b"", b"", time.perf_counter() - start, timed_out=True)
