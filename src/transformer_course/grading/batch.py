"""``transformer-course grade``: grade a folder of submissions, never stopping on a bad one."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from .. import exercises
from .nbgrader_backend import NbgraderBackend
from .report import summary_table, write_csv, write_feedback, write_json
from .results import StudentResult
from .submissions import collect, safe_id


class Backend(Protocol):
    """How one submission is run and scored. Today: plain nbgrader (:class:`NbgraderBackend`);
    the hardened sandbox will be a second implementation of the same methods."""

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
) -> list[StudentResult]:
    """Grade every submission in ``submissions`` and write the reports into ``out``.

    Every submission ends as a score or as a per-student error in the reports.
    """
    if not exercises.for_assignment(assignment):
        known = ", ".join(sorted({e.assignment for e in exercises.ALL}))
        raise ValueError(f"unknown assignment {assignment!r}; graded assignments: {known}")
    results: list[StudentResult] = []
    with tempfile.TemporaryDirectory(prefix="transformer-course-grade-") as work:
        backend: Backend = NbgraderBackend(root, assignment, Path(work))
        found = collect(submissions, backend.notebook_names, Path(work), skip=out)
        if not found:
            raise ValueError(
                f"no submissions in {submissions}: expected <student>/<notebook>.ipynb or <student>.ipynb "
                "(or a zip of them, or a learning-management system's download)"
            )
        out.mkdir(parents=True, exist_ok=True)
        backend.prepare()
        used_ids: set[str] = set()
        bar = tqdm(found, desc=f"grading {assignment}", unit="submission", disable=not progress,
                   file=sys.stderr)
        for submission in bar:
            bar.set_postfix_str(submission.student)
            student = safe_id(submission.student)
            while student in used_ids:  # two names that differ only in odd characters
                student += "_"
            used_ids.add(student)
            if submission.path is None:
                result = backend.error_result(StudentResult(student, submission.student), submission.problem)
            else:
                source = str(submission.path.relative_to(submissions))
                try:
                    result = backend.grade(student, submission.path, source)
                except Exception as error:  # noqa: BLE001 - one submission never stops the class
                    result = backend.error_result(
                        StudentResult(student, source), f"grading failed: {type(error).__name__}: {error}"
                    )
            result.student = submission.student
            result.notes.extend(submission.all_notes())
            results.append(result)
    write_csv(out / "grades.csv", assignment, results)
    write_json(out / "results.json", assignment, results)
    write_feedback(out / "feedback", assignment, results)
    return results


def print_summary(assignment: str, results: list[StudentResult], out: Path) -> None:
    print(summary_table(assignment, results))
    print(f"\n{len(results)} submissions graded; grades in {out / 'grades.csv'}, "
          f"feedback pages in {out / 'feedback'}/, details in {out / 'results.json'}")
