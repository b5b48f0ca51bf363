"""The hardened grader: student code runs in a sandbox; checking and scoring happen outside.

For each submission (see the grading design in the course's design notes):

1. the notebook is read strictly and rebuilt on the pristine assignment (:mod:`.canonical`);
2. the hidden inputs are drawn from a seed of this student's own (from the run's secret and the
   student's id), and the reference's outputs on them computed, here, outside;
3. the probe (:mod:`.probe`) runs in a sandbox (:mod:`.sandbox`) holding the **student side** of
   the course only (the visible checks, the setup's building blocks), and checks each exercise in
   a process of its own, which gets that exercise's inputs and the slices of the course it builds
   on (:mod:`.slices`) through a file of the grader's, and hands back plain numbers through another;
4. here, once every process of the sandbox has ended, the numbers are read strictly (sizes
   checked before anything is decoded, no pickle, nothing followed), replayed through the visible
   checks and compared with the reference, with the same messages as in the notebook, and scored.

Nothing that passes an exercise's checks is ever in the process that runs the student's code for
it. A crash, a timeout or a limit costs the exercise it happened in, with a message.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import site
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
import numpy as np
import torch

from .. import exercises
from ..exercises import Case, Exercise, ExerciseFailure
from ..exercises.compare import call_student, normalise_outputs, run_case
from ..exercises.forbidden import forbidden_message, source_facts, tampering_message, violation_in_facts
from ..exercises.running import run_visible_checks, with_globals
from . import hidden_tests
from .canonical import Canonical, canonicalise, read_notebook
from .hidden import compare_with_reference, exact_matmuls, explain_failure
from .probe import MAGIC, beyond_64_bits
from .results import ERROR, FAILED, PASSED, ExerciseResult, StudentResult, error_result, printable
from .sandbox import Limits, SandboxResult, run_sandboxed, sandbox_problem
from .slices import pickle_with_globals, slice_modules

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MAX_SHARED_HASH = 16  # keys of one dict with the same hash (honest: 1, by chance 2)
MAX_RESULT_BYTES = 16 * 1024**2  # one exercise's result file, arrays included (honest ones: kilobytes)
MAX_HEADER_BYTES = 4 * 1024**2  # its description of the outputs (JSON)
MAX_PROGRESS_BYTES = 256 * 1024
RERUN_BUDGET = 2  # all runs of one submission together: at most this many times one run's wall clock
ARRAY_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                "complex64", "complex128"}


@dataclass
class PreparedExercise:
    """An exercise's inputs for one student, and what the reference makes of them."""

    exercise: Exercise
    visible: list[Case]  # the calls its visible checks make, in order
    hidden: list[Case]
    expected: list[tuple]  # the reference's outputs for each hidden case
    visible_sizes: list[int] = field(default_factory=list)  # numbers the reference returns per visible call


class Replay:
    """Plays a student's recorded outputs back to the visible checks, call by call.

    The checks run here, in the grader, on the student's outputs: an output far larger than the
    reference's on the same call (a (32000000, 1, 1) mask where a (3, 3) one was expected) is
    refused before any check broadcasts it, so no submission makes the grader hold gigabytes.
    """

    def __init__(self, exercise: Exercise, calls: list[dict], sizes: list[int]):
        self.exercise, self.calls, self.sizes = exercise, calls, sizes
        self.index = 0

    def __call__(self, label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        __tracebackhide__ = True
        if self.index >= len(self.calls):
            raise ExerciseFailure(f"`{self.exercise.function}` could not be checked (no output recorded).")
        call, expected = self.calls[self.index], self.sizes[self.index] if self.index < len(self.sizes) else 0
        self.index += 1
        if "failure" in call:
            raise ExerciseFailure(call["failure"])
        size = _size(call["outputs"])
        if size > 4 * expected + 4096:
            name = label.label if isinstance(label, Case) else label
            raise ExerciseFailure(f"`{self.exercise.function}` returned {size} numbers on {name}, where "
                                  f"{expected} were expected: check the shape of what you return.")
        return call["outputs"]


def _size(value: Any) -> int:
    """How many numbers (or other values) ``value`` holds."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value) + 1
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items()) + 1
    return 1


def _recorder(exercise: Exercise, reference: Callable, into: list[Case], sizes: list[int]) -> Callable[..., tuple]:
    """A ``call`` for visible checks that notes each case (and the size of the reference's outputs)
    and answers with the reference."""

    def call(label: str | Case, *args: Any, **kwargs: Any) -> tuple:
        case = label if isinstance(label, Case) else Case(label, args, kwargs)
        into.append(case)
        outputs = call_student(exercise, reference, case)
        sizes.append(_size(outputs))
        return outputs

    return call


def student_seed(run_seed: int, student: str) -> int:
    """The seed of one student's hidden inputs: a keyed hash of their id with the run's secret
    seed, so a classmate's outputs are worth nothing, and ``--seed`` replays every student."""
    digest = hmac.new(int(run_seed).to_bytes(16, "big", signed=True), student.encode("utf-8"), hashlib.sha256)
    return int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF


class Visible(NamedTuple):
    """The calls an exercise's visible checks make, and how many numbers the reference returns on each."""

    cases: list[Case]
    sizes: list[int]


def visible_cases(exercise: Exercise) -> Visible:
    """The calls the exercise's visible checks make (recorded by running them on the reference)."""
    tests = hidden_tests.get(exercise.function)
    uses = {name: hidden_tests.get(name).load_reference() for name in exercise.uses}
    visible = Visible([], [])
    exercise.visible_checks(_recorder(exercise, with_globals(tests.load_reference(), uses), *visible))
    return visible


def prepare_exercise(exercise: Exercise, seed: int, visible: Visible) -> PreparedExercise:
    """Draw the hidden cases from ``seed`` (CPU) and compute the reference's outputs on them."""
    tests = hidden_tests.get(exercise.function)
    reference = tests.load_reference()
    hidden = tests.make_cases(torch.Generator().manual_seed(seed))
    expected = []
    with exact_matmuls():
        for case in hidden:
            exact = case.to(torch.float64)
            with torch.no_grad():
                expected.append(normalise_outputs(exercise, run_case(reference, exact), exact))
    return PreparedExercise(exercise, visible.cases, hidden, expected, visible.sizes)


# --------------------------------------------------------------------------- what the sandbox holds


def _course_imports(module: str) -> set[str]:
    """The course modules that ``module``'s source imports (anywhere in it, lazily too)."""
    path = _module_path(module)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
            else:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)  # `from package import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] == "transformer_course" and _exists(m)}


def _module_path(module: str) -> Path:
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def _exists(module: str) -> bool:
    return _module_path(module).is_file()


def setup_imports(pristine: nbformat.NotebookNode) -> set[str]:
    """The course modules the assignment's setup cell imports."""
    found: set[str] = set()
    for cell in pristine.cells:
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup":
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "transformer_course"}


def student_side_modules() -> set[str]:
    names = {"transformer_course", "transformer_course.checks", "transformer_course.exercises",
             "transformer_course.grading", "transformer_course.grading.probe"}
    names |= {f"transformer_course.exercises.{p.stem}" for p in (PACKAGE_DIR / "exercises").glob("*.py")
              if p.stem != "__init__"}
    return names


def sandbox_modules(assignment: str, setup: set[str]) -> list[str]:
    """The modules the sandbox of ``assignment`` holds, whole: the student side of the course, the
    probe, and what the setup cell builds on, with everything they import. Raises ValueError if
    that would include a module holding one of the assignment's own answers, or the grader side."""
    todo = sorted(student_side_modules() | setup)
    found: set[str] = set()
    while todo:
        module = todo.pop()
        if module in found:
            continue
        found.add(module)
        todo.extend(_course_imports(module) - found)
    answers = {hidden_tests.get(e.function).reference_module for e in exercises.for_assignment(assignment)}
    probe = "transformer_course.grading.probe"
    grader = {m for m in found if m.startswith("transformer_course.grading.") and m != probe}
    if found & answers or grader:
        raise ValueError(f"the sandbox of {assignment} would hold {sorted((found & answers) | grader)}, "
                         "which hold answers: check what the setup cell and the student side import")
    return sorted(found)


def build_package(target: Path, modules: list[str]) -> Path:
    """Copy ``modules`` (and the recorded outputs) into ``target``/transformer_course; return target."""
    for module in modules:
        source = _module_path(module)
        destination = target / source.relative_to(PACKAGE_DIR.parent)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    recorded = PACKAGE_DIR / "exercises" / "recorded"
    if recorded.is_dir():
        shutil.copytree(recorded, target / "transformer_course" / "exercises" / "recorded", dirs_exist_ok=True)
    return target


def installed_copies(mounted: list[Path]) -> list[Path]:
    """Copies of the course a sandbox with ``mounted`` folders could read: installed packages in
    them, and this package or the course folder where they lie below one of them."""
    course = [PACKAGE_DIR, PACKAGE_DIR.parent.parent / "solutions"]
    found = [Path(m) / "transformer_course" for m in mounted if (Path(m) / "transformer_course").is_dir()]
    found += [c for c in course if c.is_dir() and any(_below(c, m) for m in mounted)]
    return found


def _below(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- the grader


class HardenedBackend:
    """Grades submissions of one assignment in sandboxes (see the module docstring)."""

    def __init__(self, root: Path, assignment: str, workdir: Path, *, sandboxed: bool = True,
                 seed: int | None = None, limits: Limits | None = None):
        self.root = root
        self.assignment = assignment
        self.workdir = workdir
        self.sandboxed = sandboxed
        self.seed = secrets.randbits(63) if seed is None else seed
        self.limits = limits or Limits()
        self.exercises = exercises.for_assignment(assignment)
        self.visible: dict[str, Visible] = {}
        # Seconds spent per phase, over all submissions (bench/bench_class.py prints them).
        self.timings: dict[str, float] = {}
        self._timings_lock = threading.Lock()

    def _timed(self, phase: str, seconds: float) -> None:
        with self._timings_lock:
            self.timings[phase] = self.timings.get(phase, 0.0) + seconds

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
        self.visible = {e.function: visible_cases(e) for e in self.exercises}
        self.modules = sandbox_modules(self.assignment, setup_imports(self.pristine))
        self.package = build_package(self.workdir / "package", self.modules)
        self.site_packages = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
        self.hide = installed_copies([*self.site_packages, Path(sys.base_prefix), Path("/usr"), Path("/etc")])

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
        seed = student_seed(self.seed, student)
        start = time.perf_counter()
        prepared = [prepare_exercise(e, seed, self.visible[e.function]) for e in self.exercises]
        self._timed("host: hidden inputs and the reference's outputs", time.perf_counter() - start)
        folder = self.workdir / "runs" / student
        try:
            probed = self._probe(folder, canonical, prepared)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result.notes.extend(probed.notes)
        result.exercises = self._score(canonical, prepared, probed)
        return result

    def _probe(self, folder: Path, canonical: Canonical, prepared: list[PreparedExercise]) -> Probed:
        """Run the probe until every exercise is checked or accounted for.

        Inside one run, an exercise whose process dies or hangs costs that exercise, and a cell
        that kills or hangs another exercise's process is left out for the rest (see
        :func:`.probe.run_exercise`). If the probe itself is ended (by a student's code, say),
        the exercises it had not reached are run again in a fresh sandbox; all runs of one
        submission together get at most ``RERUN_BUDGET`` times the wall-clock limit of one.
        """
        probed = Probed()
        remaining = [p for p in prepared if p.exercise.function not in canonical.problems]
        skip_cells: set[int] = set()
        deadline = time.monotonic() + RERUN_BUDGET * self.limits.wall_seconds
        while remaining:
            left = deadline - time.monotonic()
            if left < 1:
                probed.stop(remaining, "not checked: the time for grading this notebook was used up "
                            "by the runs that were stopped before")
                break
            run, progress = self._run_probe(folder, canonical, remaining, skip_cells, left, probed)
            probed.account(run, progress, canonical, remaining, skip_cells)
            reached = [p for p in remaining if p.exercise.function in probed.records
                       or p.exercise.function in probed.stopped]
            if not reached and remaining:  # the probe could not start, or ended before any exercise
                probed.stop(remaining, "not checked: " + _before_any_cell(run))
                break
            remaining = [p for p in remaining if p not in reached]
        return probed

    def _run_probe(self, folder: Path, canonical: Canonical, left: list[PreparedExercise],
                   skip_cells: set[int], seconds_left: float, probed: Probed) -> tuple[SandboxResult, list[dict]]:
        """One run of the probe in a fresh ``folder``: how it ended and the progress it reported.
        The records it wrote are read into ``probed`` after every process of it has ended."""
        shutil.rmtree(folder, ignore_errors=True)
        work, io = folder / "work", folder / "io"
        work.mkdir(parents=True)
        io.mkdir()
        files: list[int] = []
        try:
            plan_exercises = []
            start = time.perf_counter()
            for index, p in enumerate(left):
                job = io / f"job-{index}"
                job.write_bytes(self._job(p))
                result = io / f"result-{index}"
                job_fd = os.open(job, os.O_RDONLY)
                result_fd = os.open(result, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                files += [job_fd, result_fd]
                plan_exercises.append({"function": p.exercise.function, "job_fd": job_fd, "result_fd": result_fd})
            progress_path = io / "progress"
            progress_fd = os.open(progress_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            files.append(progress_fd)
            self._timed("host: jobs (slicing the course, pickling the inputs)", time.perf_counter() - start)
            run = self._start(work, canonical, plan_exercises, skip_cells, progress_fd, seconds_left, files)
            self._timed("sandbox: whole runs", run.seconds)
        finally:
            for fd in files:
                os.close(fd)
        # Every process of the run has ended: now, and only now, read what it wrote.
        start = time.perf_counter()
        for index, p in enumerate(left):
            probed.results[p.exercise.function] = read_result(io / f"result-{index}")
        progress = read_progress(io / "progress")
        self._timed("host: reading the results", time.perf_counter() - start)
        for event in progress:
            if event.get("event") == "times":
                for phase in ("start", "cells", "calls", "cleanup"):
                    if isinstance(event.get(phase), (int, float)):
                        self._timed(f"sandbox: per exercise, {phase}", float(event[phase]))
        return run, progress

    def _job(self, prepared: PreparedExercise) -> bytes:
        """An exercise's job: the slices of the course its inputs and the references of the
        exercises it builds on need (JSON), then those inputs and references, pickled."""
        exercise = prepared.exercise
        dependencies = {name: hidden_tests.get(name).load_reference() for name in exercise.uses}
        payload, found = pickle_with_globals({"cases": prepared.visible + prepared.hidden,
                                              "dependencies": dependencies})
        slices = slice_modules(sorted(found), keep_whole=self.modules)
        encoded = json.dumps(slices).encode("utf-8")
        return struct.pack("<Q", len(encoded)) + encoded + payload

    def _start(self, work: Path, canonical: Canonical, plan_exercises: list[dict], skip_cells: set[int],
               progress_fd: int, seconds_left: float, fds: list[int]) -> SandboxResult:
        seconds = min(self.limits.wall_seconds * RERUN_BUDGET, seconds_left)
        plan = {
            "cells": [{"kind": c.kind, "grade_id": c.grade_id, "source": c.source} for c in canonical.cells],
            "skip_cells": sorted(skip_cells),
            "exercises": plan_exercises,
            "progress_fd": progress_fd,
            "path": [str(self.package), *map(str, self.site_packages)],
            "child_seconds": self.limits.wall_seconds,
            "total_seconds": max(1.0, seconds - 5),  # leaves the probe time to report before the kill
            "sandboxed": self.sandboxed,
            "wipe": ["/submission", "/tmp", "/dev/shm"] if self.sandboxed else [str(work)],
        }
        command = [_python(), "-I", "-S", str(self.package / "transformer_course" / "grading" / "probe.py")]
        env = {"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "TRANSFORMER_COURSE_DEVICES": "cpu"}
        limits = Limits(**{**self.limits.__dict__, "wall_seconds": seconds})
        stdin = json.dumps(plan).encode("utf-8")
        if self.sandboxed:  # /submission in memory: nothing the student writes reaches the disk
            return run_sandboxed(command, None, limits=limits, read_only=[self.package, *self.site_packages],
                                 hide=self.hide, env=env, stdin=stdin, pass_fds=fds)
        return _run_unsandboxed(command, work, limits, env, stdin, fds)

    # ------------------------------------------------------------------ scoring

    def _score(self, canonical: Canonical, prepared: list[PreparedExercise], probed: Probed) -> list[ExerciseResult]:
        scored = []
        tampering, violations = _look_at_sources(canonical, [p.exercise for p in prepared])
        for p in prepared:
            exercise = p.exercise
            if exercise.function in canonical.problems:
                scored.append(_failed(exercise, canonical.problems[exercise.function]))
                continue
            violation = violations.get(exercise.function)
            if tampering:
                scored.append(_failed(exercise, tampering))
            elif violation:
                scored.append(_failed(exercise, forbidden_message(exercise, violation)))
            elif exercise.function in probed.stopped:
                scored.append(ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), ERROR,
                                             probed.stopped[exercise.function]))
            elif exercise.function in probed.records:
                scored.append(self._check(p, probed.records[exercise.function]))
            else:
                scored.append(ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), ERROR,
                                             "not checked: the run ended without checking it"))
        return scored

    def _check(self, prepared: PreparedExercise, record: dict | str) -> ExerciseResult:
        exercise = prepared.exercise
        if isinstance(record, str):
            return _failed(exercise, record)
        if record.get("failure"):
            message = record["failure"]
            own_error = [e for e in record["cell_errors"] if e["grade_id"] == exercise.function]
            if own_error and "is not defined" in message:
                message = f"the cell `{exercise.function}` raised {own_error[0]['error']}, so it defines nothing."
            return _failed(exercise, message)
        try:
            return self._compare(prepared, record["calls"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:  # not as the probe writes it
            return _failed(exercise, f"its outputs could not be read back ({type(error).__name__})")

    def _compare(self, prepared: PreparedExercise, calls: list[dict]) -> ExerciseResult:
        exercise = prepared.exercise
        n_visible = len(prepared.visible)
        try:
            count = run_visible_checks(exercise, Replay(exercise, calls[:n_visible], prepared.visible_sizes))
            for index, (case, expected) in enumerate(zip(prepared.hidden, prepared.expected)):
                position = n_visible + index
                if position >= len(calls):
                    raise ExerciseFailure(f"`{exercise.function}` could not be checked on {case.label}.")
                call = calls[position]
                if "failure" in call:
                    raise ExerciseFailure(explain_failure(exercise, case, call["failure"]))
                outputs = call["outputs"]
                outputs = normalise_outputs(exercise, outputs if len(exercise.output_names) > 1 else outputs[0], case)
                compare_with_reference(exercise, outputs, expected, case)
                count += 1
        except ExerciseFailure as failure:
            return _failed(exercise, str(failure))
        return ExerciseResult(exercise.grade_id, float(exercise.points), float(exercise.points), PASSED,
                              f"✓ {exercise.function}: all {count} checks passed.")


def _look_at_sources(canonical: Canonical, exercises_: list[Exercise]) -> tuple[str | None, dict[str, str]]:
    """The look at the source, outside the sandbox: why no exercise earns points (a cell that could
    switch off the run-time watch), and per exercise the forbidden call its answer cell, or a cell
    that binds its name (a later definition there is the one graded), names. Each of the student's
    cells is parsed once and dropped: a syntax tree costs some 300 times its source in memory."""
    tampering, violations = None, {}
    for cell in canonical.cells:
        if cell.kind not in ("answer", "added"):
            continue
        try:
            tree = ast.parse(cell.source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # it fails to run, with its own message
        facts = source_facts(tree)  # one walk: what follows only looks at the facts
        del tree
        if facts.tampering and not tampering:
            where = f"the cell `{cell.grade_id}`" if cell.kind == "answer" else "a code cell you added"
            tampering = tampering_message(where, facts.tampering)
        for exercise in exercises_:
            if exercise.function not in violations and (
                    cell.grade_id == exercise.function or exercise.function in facts.bound
                    or facts.binds_dynamically):
                violation = violation_in_facts(exercise, facts)
                if violation:
                    violations[exercise.function] = violation
    return tampering, violations


# --------------------------------------------------------------------------- what came back


@dataclass
class Probed:
    """What the probe's runs of one submission brought back."""

    results: dict[str, dict | str] = field(default_factory=dict)  # exercise -> record, or why unreadable
    records: dict[str, dict | str] = field(default_factory=dict)  # exercises the probe finished
    stopped: dict[str, str] = field(default_factory=dict)  # exercise -> why it was not checked
    notes: list[str] = field(default_factory=list)

    def stop(self, prepared: list[PreparedExercise], why: str) -> None:
        for p in prepared:
            self.stopped.setdefault(p.exercise.function, why)

    def account(self, run: SandboxResult, progress: list[dict], canonical: Canonical,
                remaining: list[PreparedExercise], skip_cells: set[int]) -> None:
        """Sort the run's exercises into finished, stopped (and why) and not reached."""
        names = {p.exercise.function for p in remaining}
        current = None
        for event in progress:
            kind = event.get("event")
            if kind == "exercise" and event.get("function") in names:
                current = event["function"]
            elif kind == "skip" and isinstance(event.get("cell"), int) and 0 <= event["cell"] < len(canonical.cells):
                index = event["cell"]
                skip_cells.add(index)
                cell = canonical.cells[index]
                why = _why(str(event.get("how", "")), run)
                if cell.kind == "answer" and cell.grade_id in names and cell.grade_id not in self.records:
                    self.stopped.setdefault(
                        cell.grade_id, f"not checked: the run ended while running the cell `{cell.grade_id}`: {why}")
                elif cell.kind == "added":
                    self.notes.append(f"a code cell you added stopped the grading run ({why}); it was left out "
                                      "and your answers were graded without it")
            elif kind == "ended" and event.get("function") in names:
                function = event["function"]
                current = None
                if event.get("how") == "done":
                    if function not in self.stopped:
                        self.records[function] = self.results.get(function, "its outputs could not be read back")
                    continue
                self.stopped.setdefault(function, "not checked: " + _where(function, event, canonical, run))
        if current is not None:  # the probe itself ended while this exercise was being checked
            self.stopped.setdefault(current, f"not checked: the run ended while `{current}` was being checked: "
                                             f"{_why_it_ended(run)}")
        if run.output_overflow:
            note = ("your notebook printed more than it may while it was graded (stdout or stderr over "
                    f"{Limits().output_bytes // 1024**2} MB); the rest of the output was not kept")
            if note not in self.notes:
                self.notes.append(note)


def _where(function: str, event: dict, canonical: Canonical, run: SandboxResult) -> str:
    why = _why(str(event.get("how", "")), run)
    where = str(event.get("where", ""))
    words = where.split()
    if len(words) == 2 and words[0] == "cell" and words[1].isdigit() and int(words[1]) < len(canonical.cells):
        cell = canonical.cells[int(words[1])]
        what = "a cell you added" if cell.kind == "added" else f"the cell `{cell.grade_id}`"
        return f"the run ended while running {what}: {why}"
    if where == "probe":
        return f"the run ended while checking `{function}`: {why}"
    if event.get("how") == "budget":
        return "the time for grading this notebook was used up by the runs that were stopped before"
    return f"the run ended before any cell ran: {why}"


def _why(how: str, run: SandboxResult) -> str:
    """A child's end (as the probe reports it: "timeout", "signal SIGKILL", "exit 1") in words."""
    if how == "timeout":
        return "it ran out of time and was stopped"
    if how.startswith("signal "):
        name = how.split()[1]
        if name == "SIGKILL" and run.memory_exceeded:
            return "it was killed: it used more memory than allowed"
        if name == "SIGKILL" and run.cpu_exceeded:
            return "it was killed: it kept more CPU cores busy than allowed"
        return {
            "SIGKILL": "it was killed (usually: it used more memory or CPU time than allowed)",
            "SIGXCPU": "it used more CPU time than allowed",
            "SIGXFSZ": "it wrote a file larger than allowed",
            "SIGSEGV": "it crashed (segmentation fault)",
        }.get(name, f"it was ended by signal {name}")
    if how.startswith("exit "):
        code = how.split()[1]
        return ("it ended the Python process early (os._exit, or a crash)" if code == "0"
                else f"it exited with code {code}")
    return "it ended for a reason the grader cannot tell"


def _why_it_ended(run: SandboxResult) -> str:
    """Why a whole run that did not finish ended, in words."""
    if run.ended_by:
        return run.ended_by
    if run.returncode:
        return f"it exited with code {run.returncode}"
    return "it ended the Python process early (os._exit, or a crash)"


def _before_any_cell(run: SandboxResult) -> str:
    why = _why_it_ended(run)
    errors = run.stderr.decode("utf-8", "replace").strip().splitlines()
    if errors:  # the probe itself could not start: say what it printed, for the instructor
        why += f" ({errors[-1][:300]})"
    return f"the run ended before any cell ran: {why}"


def _failed(exercise: Exercise, message: str) -> ExerciseResult:
    return ExerciseResult(exercise.grade_id, 0.0, float(exercise.points), FAILED, message)


# --------------------------------------------------------------------------- reading it strictly


def _read_capped(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path`` (never following a link or opening a
    pipe or device: the grader made these files itself, but it checks anyway), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not (info.st_mode & 0o170000 == 0o100000) or info.st_size > limit:
            return None
        chunks, size = [], 0
        while size < info.st_size:
            chunk = os.read(fd, min(1 << 20, info.st_size - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_progress(path: Path) -> list[dict]:
    """The probe's progress events (JSON lines), read strictly; malformed lines are skipped."""
    data = _read_capped(path, MAX_PROGRESS_BYTES) or b""
    events = []
    for line in data.splitlines()[:10_000]:
        if len(line) > 4096:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def read_result(path: Path) -> dict | str:
    """One exercise's result file, decoded strictly: the record, its outputs as tensors and plain
    values; or why it cannot be read. Every size is checked before anything is decoded, so the
    work and memory are bounded by the file's size."""
    data = _read_capped(path, MAX_RESULT_BYTES)
    if data is None:
        return "its outputs could not be read back (missing or far too large)"
    if len(data) < 12 or data[:4] != MAGIC:
        return "its outputs could not be read back (not written by the grader's probe)"
    (length,) = struct.unpack("<Q", data[4:12])
    if length > MAX_HEADER_BYTES or 12 + length > len(data):
        return "its outputs could not be read back (their description is far too large)"
    blob = memoryview(data)[12 + length:]
    try:
        header = json.loads(data[12:12 + length])
        return _record(header, blob)
    except (ValueError, TypeError, KeyError, RecursionError) as error:
        return f"its outputs could not be read back ({type(error).__name__})"


def _record(header: Any, blob: memoryview) -> dict:
    if not isinstance(header, dict):
        raise TypeError("not a record")
    failure = header.get("failure")
    if failure is not None and not isinstance(failure, str):
        raise TypeError("failure")
    calls = header.get("calls", [])
    errors = header.get("cell_errors", [])
    if not isinstance(calls, list) or not isinstance(errors, list) or len(calls) > 10_000 or len(errors) > 10_000:
        raise TypeError("calls")
    # How many values may be decoded in all, and how many bytes of arrays: every byte of the file
    # at most once, in the dtype it was written in, so the grader never holds more than the file.
    budget = {"values": 100_000, "bytes": len(blob)}
    decoded = []
    for call in calls:
        if not isinstance(call, dict):
            raise TypeError("call")
        if "failure" in call:
            decoded.append({"failure": printable(str(call["failure"]))})
        else:
            outputs = call.get("outputs")
            if not isinstance(outputs, list) or len(outputs) > 16:
                raise TypeError("outputs")
            decoded.append({"outputs": tuple(_decode(o, blob, budget, 0) for o in outputs)})
    cell_errors = [{"cell": e.get("cell"), "grade_id": e.get("grade_id") if isinstance(e.get("grade_id"), str)
                    else None, "error": printable(str(e.get("error", ""))[:500])}
                   for e in errors if isinstance(e, dict)]
    return {"failure": printable(failure) if failure else None, "calls": decoded, "cell_errors": cell_errors}


def _decode(item: Any, blob: memoryview, budget: dict[str, int], depth: int) -> Any:
    """The value :func:`.probe.encode` described, from plain JSON and the raw arrays."""
    budget["values"] -= 1
    if budget["values"] < 0 or depth > 32 or not isinstance(item, dict) or len(item) != 1:
        raise ValueError("not a value the probe writes")
    ((kind, value),) = item.items()
    if kind == "tensor":
        return _tensor(value, blob, budget)
    if kind == "value":  # (data, compared as it is: messages show it through repr, which escapes)
        if beyond_64_bits(value):
            # Integers beyond 64 bits can share one hash by the thousand (k * (2**61 - 1)): as the
            # keys of a dict they made building it quadratic, 25 s of the grader's time per file.
            raise ValueError("an integer beyond 64 bits")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError("value")
    if kind in ("list", "tuple"):
        if not isinstance(value, list):
            raise TypeError(kind)
        items = [_decode(v, blob, budget, depth + 1) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise TypeError("dict")
        pairs = [(_decode(k, blob, budget, depth + 1), _decode(v, blob, budget, depth + 1)) for k, v in value]
        if not all(isinstance(k, (str, int, float, bool, tuple)) or k is None for k, _ in pairs):
            raise TypeError("dict key")
        # Keys can be crafted to share one hash (integers k * (2**61 - 1); pairs solved for one
        # tuple hash): building the dict is then quadratic, seconds of the grader's time per file.
        # Counting the hashes is linear; honest keys (tokens, ids, pairs of ids) barely repeat one.
        if pairs and max(Counter(hash(k) for k, _ in pairs).values()) > MAX_SHARED_HASH:
            raise ValueError("dict keys crafted to share one hash")
        return dict(pairs)
    if kind == "unsupported":
        return Unsupported(str(value)[:60])
    raise ValueError(kind)


class Unsupported:
    """Something the probe could not write as numbers (an object of the student's own class): equal
    to nothing but itself, and its repr names what it was. (The name is data: a class per name
    let a student's 99,000 names cost the grader a gigabyte.)"""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<a {self.name}>"


def _tensor(spec: Any, blob: memoryview, budget: dict[str, int]) -> torch.Tensor:
    if not isinstance(spec, dict):
        raise TypeError("tensor")
    dtype, array, shape = spec.get("dtype"), spec.get("array"), spec.get("shape")
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if array not in ARRAY_DTYPES or not isinstance(shape, list) or len(shape) > 16 or not all(
            isinstance(n, int) and 0 <= n for n in shape) or not isinstance(offset, int) or not isinstance(nbytes, int):
        raise ValueError("tensor description")
    # The tensor's dtype is the one its bytes were written in (bfloat16 is written as float32): no
    # description may turn a byte into eight.
    if dtype != array and (dtype, array) != ("bfloat16", "float32"):
        raise ValueError("tensor dtype")
    itemsize = np.dtype(array).itemsize
    count = math.prod(shape)  # Python integers: a crafted shape cannot overflow into a small count
    budget["bytes"] -= nbytes
    if count * itemsize != nbytes or offset < 0 or offset + nbytes > len(blob) or budget["bytes"] < 0:
        raise ValueError("tensor size")
    values = np.frombuffer(blob, dtype=np.dtype(array), count=count, offset=offset).reshape(shape).copy()
    tensor = torch.from_numpy(values)
    return tensor.to(torch.bfloat16) if dtype == "bfloat16" else tensor


# --------------------------------------------------------------------------- without a sandbox


def _python() -> str:
    """The interpreter itself (not a virtual environment's link to it): the sandbox mounts the
    Python installation and the packages, not the virtual environment folder."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def _run_unsandboxed(command: list[str], folder: Path, limits: Limits, env: dict, stdin: bytes,
                     fds: list[int]) -> SandboxResult:
    """The probe as a plain subprocess with a time limit: for trusted code on machines with no
    sandbox, when the instructor asks for it."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, timeout=limits.wall_seconds,
                              env={**os.environ, **env}, input=stdin, pass_fds=fds)
        return SandboxResult(done.returncode, done.stdout[: limits.output_bytes],
                             done.stderr[: limits.output_bytes], time.perf_counter() - start,
                             output_overflow=len(done.stdout) > limits.output_bytes)
    except subprocess.TimeoutExpired:
        return SandboxResult(None, b"", b"", time.perf_counter() - start, timed_out=True)
