"""``transformer-course grade``: grade a folder of submissions, never stopping on a bad one."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from .. import exercises
from .hardened import HardenedBackend
from .nbgrader_backend import NbgraderBackend
from .report import summary_table, write_csv, write_feedback, write_json
from .results import StudentResult
from .sandbox import Limits
from .submissions import collect, unique_ids


class Backend(Protocol):
    """How one submission is run and scored: plain nbgrader (:class:`NbgraderBackend`) or the
    hardened sandbox (:class:`HardenedBackend`)."""

    notebook_names: list[str]

    def prepare(self) -> None: ...

    def grade(self, student: str, notebook: Path, name: str) -> StudentResult: ...

    def error_result(self, result: StudentResult, message: str) -> StudentResult: ...


def grade_folder(
    root: Path,
    assignment: str,
    submissions: Path,
    out: Path,
    *,
    progress: bool = True,
    mode: str = "sandbox",
    jobs: int | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    timings: dict[str, float] | None = None,
) -> list[StudentResult]:
    """Grade every submission in ``submissions`` and write the reports into ``out``.

    ``mode`` is ``"sandbox"`` (the hardened grader, the default), ``"unsandboxed"`` (the same,
    without the sandbox: trusted code only) or ``"nbgrader"`` (plain ``nbgrader autograde``).
    Submissions are graded ``jobs`` at a time (default: one per CPU core; nbgrader: one).
    ``timeout`` is the wall-clock limit of one sandboxed run, in seconds (default: :class:`Limits`).
    ``timings``, if given, gets the seconds the hardened grader spent per phase, added up.
    Every submission ends as a score or as a per-student error in the reports.
    """
    if not exercises.for_assignment(assignment):
        known = ", ".join(sorted({e.assignment for e in exercises.ALL}))
        raise ValueError(f"unknown assignment {assignment!r}; graded assignments: {known}")
    # The sandbox has no GPU: the hardened grader checks on the CPU, in and out of the sandbox.
    cpu_only = mode != "nbgrader" and "TRANSFORMER_COURSE_DEVICES" not in os.environ
    if cpu_only:
        os.environ["TRANSFORMER_COURSE_DEVICES"] = "cpu"
    try:
        return _grade_folder(root, assignment, submissions, out, progress=progress, mode=mode, jobs=jobs,
                             seed=seed, timeout=timeout, timings=timings)
    finally:
        if cpu_only:
            del os.environ["TRANSFORMER_COURSE_DEVICES"]


def _grade_folder(root: Path, assignment: str, submissions: Path, out: Path, *, progress: bool, mode: str,
                  jobs: int | None, seed: int | None, timeout: float | None,
                  timings: dict[str, float] | None) -> list[StudentResult]:
    with tempfile.TemporaryDirectory(prefix="transformer-course-grade-") as work:
        if mode == "nbgrader":
            backend: Backend = NbgraderBackend(root, assignment, Path(work))
            jobs = 1  # one gradebook, one kernel at a time
        else:
            limits = Limits() if timeout is None else Limits(wall_seconds=timeout)
            backend = HardenedBackend(root, assignment, Path(work), sandboxed=mode == "sandbox", seed=seed,
                                      limits=limits)
            jobs = jobs or os.cpu_count() or 1
        found = collect(submissions, backend.notebook_names, Path(work), skip=out)
        if not found:
            raise ValueError(
                f"no submissions in {submissions}: expected <student>/<notebook>.ipynb or <student>.ipynb "
                "(or a zip of them, or a learning-management system's download)"
            )
        out.mkdir(parents=True, exist_ok=True)
        backend.prepare()
        students = unique_ids([s.student for s in found])
        with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(
            total=len(found), desc=f"grading {assignment}", unit="submission", disable=not progress,
            file=sys.stderr,
        ) as bar:
            futures = [pool.submit(_grade_one, backend, s, student, submissions)
                       for s, student in zip(found, students)]
            results = []
            for future in futures:  # in submission order, whatever order they finish in
                results.append(future.result())
                bar.update(1)
        if timings is not None:
            for phase, seconds in getattr(backend, "timings", {}).items():
                timings[phase] = timings.get(phase, 0.0) + seconds
    kept = keep_earlier_run(out)
    if kept:
        print(f"the earlier grades in {out} were moved to {kept}", file=sys.stderr)
    write_csv(out / "grades.csv", assignment, results)
    write_json(out / "results.json", assignment, results,
               seed=getattr(backend, "seed", None), mode=mode)
    write_feedback(out / "feedback", assignment, results)
    return results


REPORTS = ("grades.csv", "results.json", "feedback")


def keep_earlier_run(out: Path) -> Path | None:
    """Move the reports of an earlier run in ``out`` to ``out/earlier/<when it ran>/``, so a new
    run neither overwrites them nor leaves feedback pages of students it did not grade."""
    earlier = [out / name for name in REPORTS if (out / name).exists()]
    if not earlier:
        return None
    stamp = datetime.fromtimestamp(max(p.stat().st_mtime for p in earlier)).strftime("%Y-%m-%d_%H-%M-%S")
    target = out / "earlier" / stamp
    while target.exists():
        target = target.with_name(target.name + "+")
    target.mkdir(parents=True)
    for path in earlier:
        shutil.move(path, target / path.name)
    return target


def _grade_one(backend: Backend, submission, student: str, submissions: Path) -> StudentResult:
    """One submission's result; any failure becomes a per-student error, never an exception."""
    if submission.path is None:
        result = backend.error_result(StudentResult(student, submission.student), submission.problem)
    else:
        try:
            source = str(submission.path.relative_to(submissions))
        except ValueError:  # unpacked from a zip
            source = submission.path.name
        try:
            result = backend.grade(student, submission.path, source)
        except Exception as error:  # noqa: BLE001 - one submission never stops the class
            result = backend.error_result(
                StudentResult(student, source), f"grading failed: {type(error).__name__}: {error}"
            )
    result.student = submission.student
    result.id = student
    result.notes.extend(submission.notes)
    return result.make_printable()


def print_summary(assignment: str, results: list[StudentResult], out: Path) -> None:
    print(summary_table(assignment, results))
    print(f"\n{len(results)} submissions graded; grades in {out / 'grades.csv'}, "
          f"feedback pages in {out / 'feedback'}/, details in {out / 'results.json'}")
