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
from transformer_course.grading.release import RUN_ALL_TAG, registry_problems, release

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
def test_solution_notebook_runs_top_to_bottom(assignment, monkeypatch):
    _without_jupyter_session(monkeypatch)
    nb = nbformat.read(solution_path(assignment), as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - start
    assert seconds < 30, f"the solution notebook took {seconds:.0f} s"
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert text.count("checks passed") >= 2 * len(exercises.for_assignment(assignment))  # hidden + visible
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_notebook_ends_with_how_to_check_it_whole(assignment):
    """The last section says how to check the whole notebook; its cell names the notebook's own file."""
    path = release_path(assignment)
    nb = nbformat.read(path, as_version=4)
    *_, intro, cell = nb.cells
    assert intro.metadata.nbgrader.grade_id == "hand_in_intro" and "Save" in intro.source
    assert f"transformer-course check notebooks/{assignment}/{path.name}" in intro.source
    assert cell.metadata.nbgrader.grade_id == "hand_in_check" and cell.metadata.nbgrader.locked
    assert f'check_notebook("{path.name}")' in cell.source


def test_release_refuses_a_test_cell_that_would_stop_run_all(tmp_path):
    """Every test cell carries JupyterLab's `raises-exception` tag: release checks it."""
    nb = nbformat.read(solution_path("04-attention"), as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_softmax"]
    cell.metadata["tags"].remove(RUN_ALL_TAG)
    (tmp_path / "solutions" / "04-attention").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "solutions" / "04-attention" / solution_path("04-attention").name)
    (problem,) = registry_problems(tmp_path, "04-attention")
    assert "cell test_softmax: the test cell needs the tag `raises-exception`" in problem and "Run All" in problem


def _without_jupyter_session(monkeypatch):
    """Kernels started here are a program's, as under nbgrader: not JupyterLab's (see cli.check_notebook)."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_student_notebook_shows_a_plain_message_per_check(assignment, monkeypatch):
    """What a student sees before writing anything, after Run All: each check says what to do, no
    traceback, and the notebook runs to its last cell. Errors are not allowed, so any cell that raises
    in a blank notebook must carry the `raises-exception` tag, which nbclient honours as JupyterLab
    does (Run All would stop at an untagged one)."""
    _without_jupyter_session(monkeypatch)
    path = release_path(assignment)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert checks
    for cell in checks:
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        assert error.ename == "ExerciseFailure" and "is not implemented yet" in error.evalue
        shown = "\n".join(error.traceback)
        assert "check failed" in shown
        assert "transformer_course" not in shown and "raise ExerciseFailure" not in shown
    last = nb.cells[-1]
    said = "".join(o.get("text", "") for o in last.outputs)
    assert last.execution_count and "Not run here" in said and f"transformer-course check {path.name}" in said
