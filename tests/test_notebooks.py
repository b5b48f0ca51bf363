"""The notebooks: the solution runs, the student copy is generated and up to date."""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbclient import NotebookClient

from course_helpers import ROOT, release_path, solution_path
from transformer_course import exercises
from transformer_course.grading.course import assignments
from transformer_course.grading.release import release

ASSIGNMENTS = assignments(ROOT)


def test_every_assignment_has_a_student_notebook():
    assert ASSIGNMENTS == sorted(p.name for p in (ROOT / "notebooks").iterdir() if p.is_dir())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebooks_are_committed_without_outputs_or_answers(assignment):
    for path in (solution_path(assignment), release_path(assignment)):
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
    student = release_path(assignment).read_text()
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "grading.hidden"):
        assert marker not in student


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_notebooks_are_up_to_date(tmp_path, assignment):
    """notebooks/ is generated from solutions/: regenerate and compare byte for byte."""
    (fresh,) = release(ROOT, [assignment], release_directory=tmp_path)
    for path in sorted(fresh.glob("*.ipynb")):
        committed = ROOT / "notebooks" / assignment / path.name
        assert committed.exists(), f"{committed} is missing: run `transformer-course release`"
        assert json.loads(path.read_text()) == json.loads(committed.read_text()), (
            f"{committed.relative_to(ROOT)} is out of date with solutions/: run `transformer-course release`"
        )


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_runs_top_to_bottom(assignment):
    nb = nbformat.read(solution_path(assignment), as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - start
    assert seconds < 30, f"the solution notebook took {seconds:.0f} s"
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert text.count("checks passed") >= 2 * len(exercises.for_assignment(assignment))  # hidden + visible
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_student_notebook_shows_a_plain_message_per_check(assignment):
    """What a student sees before writing anything: each check says what to do, no traceback."""
    nb = nbformat.read(release_path(assignment), as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert checks
    for cell in checks:
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        assert error.ename == "ExerciseFailure" and "is not implemented yet" in error.evalue
        shown = "\n".join(error.traceback)
        assert "check failed" in shown
        assert "transformer_course" not in shown and "raise ExerciseFailure" not in shown
