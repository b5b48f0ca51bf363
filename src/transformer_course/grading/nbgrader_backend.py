"""Grading one submission with plain nbgrader (``autograde``), and reading back scores and messages.

This is the grading *backend*: :mod:`.batch` hands it one student's notebook at a time and gets a
:class:`StudentResult` back. The hardened sandbox will be a second backend with the same two
methods (``prepare`` and ``grade``), so the batch, the reports and the command stay as they are.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nbformat

from .. import exercises
from .canonical import grade_id_of, read_notebook
from .course import load_config, nbgrader_api, sqlite_url
from .results import FAILED, PASSED, ExerciseResult, StudentResult, error_result


def grade_ids_in(nb: nbformat.NotebookNode) -> set[str]:
    return {grade_id_of(c) for c in nb.cells} - {None}


def test_cell_message(cell: nbformat.NotebookNode) -> str:
    """What a test cell said: our check's message, never its code or traceback."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            text = output.text.strip()
            if output.name == "stderr":
                text = "wrote to stderr (nbgrader gives 0 for that):\n" + text
            parts.append(text)
        elif output.output_type == "error":
            name = output.ename
            parts.append(output.evalue if name == "ExerciseFailure" else f"{name}: {output.evalue}")
    return "\n".join(p for p in parts if p)


class NbgraderBackend:
    """Grades submissions of one assignment with ``nbgrader autograde`` in a private course folder."""

    def __init__(self, root: Path, assignment: str, workdir: Path):
        self.root = root
        self.assignment = assignment
        self.workdir = workdir
        self.exercises = exercises.for_assignment(assignment)
        self.api = None

    @property
    def notebook_names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "solutions" / self.assignment).glob("*.ipynb"))

    def prepare(self) -> None:
        """Copy the assignment's source into the work folder and register it with nbgrader."""
        source = self.workdir / "source" / self.assignment
        shutil.copytree(self.root / "solutions" / self.assignment, source, dirs_exist_ok=True)
        config = load_config(
            self.root,
            source_directory="source",
            release_directory="release",
            db_url=sqlite_url(self.workdir / "gradebook.db"),
        )
        config.CourseDirectory.root = str(self.workdir)
        self.api = nbgrader_api(config)
        result = self.api.generate_assignment(self.assignment)
        if not result["success"]:
            raise RuntimeError(
                f"nbgrader could not generate {self.assignment}:\n{result.get('error') or result['log']}"
            )
        self.expected_ids = set().union(
            *(grade_ids_in(nbformat.read(p, as_version=4)) for p in source.glob("*.ipynb"))
        )

    def grade(self, student: str, notebook: Path, name: str) -> StudentResult:
        """Autograde ``notebook`` as student ``student`` (a safe id) and read the results."""
        result = StudentResult(student=student, source=name)
        nb, problem, notes = read_notebook(notebook)
        if nb is None:
            return self.error_result(result, problem)
        result.notes.extend(notes)
        if not grade_ids_in(nb) & self.expected_ids:
            return self.error_result(
                result,
                f"this notebook has none of the cells of assignment {self.assignment}: "
                "is it the right notebook?",
            )
        target = self.workdir / "submitted" / student / self.assignment / self.notebook_names[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        with warnings.catch_warnings():
            # nbgrader 0.9.6's gradebook trips SQLAlchemy's "not in session" warning on every
            # new student; it is harmless and would bury the progress bar.
            warnings.filterwarnings("ignore", message=".*not in session.*")
            outcome = self.api.autograde(self.assignment, student)
        if not outcome["success"]:
            log = outcome.get("log") or outcome.get("error") or ""
            lines = [ln for ln in log.splitlines() if ln.startswith("[ERROR]")]
            return self.error_result(result, "nbgrader could not grade it: " + " ".join(lines[:3])[:500])
        return self._read_results(result, target.name)

    def error_result(self, result: StudentResult, message: str) -> StudentResult:
        return error_result(result, self.exercises, message)

    def _read_results(self, result: StudentResult, notebook_name: str) -> StudentResult:
        from nbgrader.api import Gradebook

        autograded = (
            self.workdir / "autograded" / result.student / self.assignment / notebook_name
        )
        cells = {
            c.metadata.nbgrader.grade_id: c
            for c in nbformat.read(autograded, as_version=4).cells
            if "nbgrader" in c.metadata and "grade_id" in c.metadata.nbgrader
        }
        with Gradebook(self.api.coursedir.db_url) as gradebook:
            submission = gradebook.find_submission_notebook(
                Path(notebook_name).stem, self.assignment, result.student
            )
            scores = {g.name: (g.score, g.max_score) for g in submission.grades}
        for exercise in self.exercises:
            score, max_score = scores.get(exercise.grade_id, (0.0, float(exercise.points)))
            cell = cells.get(exercise.grade_id)
            message = test_cell_message(cell) if cell is not None else "the test cell is missing"
            passed = score is not None and score >= max_score
            # Our checks print "✓ <function>: all N checks passed." as their last act. Full marks
            # without that line means the check never finished (a dead kernel once counted as a
            # pass in nbgrader, jupyter/nbgrader#427), so it is not a pass.
            if passed and f"✓ {exercise.function}: all" not in message:
                passed = False
                message = (message + "\n" if message else "") + (
                    "the check did not run to completion (did the kernel die or the code exit?)"
                )
            result.exercises.append(
                ExerciseResult(
                    exercise.grade_id,
                    float(max_score if passed else 0.0),
                    float(max_score),
                    PASSED if passed else FAILED,
                    message,
                )
            )
        return result
