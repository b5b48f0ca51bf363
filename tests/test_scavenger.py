"""A notebook with no code of its own earns nothing, in any chapter, whatever it searches.

Every answer cell is :mod:`scavenger`'s: when graded, it looks through every object in memory,
every loaded or importable module and every readable file for something that passes the
exercise's visible checks, and hands that in. Graded by `transformer-course grade` in the sandbox,
every exercise of every chapter must score 0. The last test shows the search is not toothless:
where the course is reachable (outside the sandbox), it finds answers.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import torch

from course_helpers import ROOT, release_path
from scavenger import SEARCH, answer_cell
from transformer_course import exercises
from transformer_course.grading.canonical import grade_id_of
from transformer_course.grading.course import assignments
from transformer_course.grading.sandbox import sandbox_problem

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(sandbox_problem()), reason=f"needs the sandbox: {sandbox_problem()}")]


def scavenging_notebook(assignment: str) -> nbformat.NotebookNode:
    nb = nbformat.read(release_path(assignment), as_version=4)
    registered = {e.function: e for e in exercises.for_assignment(assignment)}
    for cell in nb.cells:
        exercise = registered.get(grade_id_of(cell))
        if exercise is not None and cell.cell_type == "code":
            cell.source = answer_cell(exercise.function, exercise.is_module)
    return nb


def _grade_scavenger(assignment: str, folder: Path) -> tuple[int, str, Path]:
    subs, out = folder / "subs", folder / "out"
    (subs / "scavenger").mkdir(parents=True)
    nbformat.write(scavenging_notebook(assignment), subs / "scavenger" / release_path(assignment).name)
    run = subprocess.run([sys.executable, "-m", "transformer_course", "grade", assignment, str(subs), "--out",
                          str(out), "--timeout", "120", "--quiet", "--jobs", "1"], capture_output=True, text=True,
                         cwd=ROOT, timeout=1800)
    return run.returncode, run.stderr, out


@pytest.fixture(scope="module")
def scavenged(tmp_path_factory):
    """Every chapter's scavenger graded, one chapter per core at a time (each is one submission,
    which the grader runs on one core): assignment -> (return code, stderr, output folder)."""
    chapters = assignments(ROOT)
    folders = [tmp_path_factory.mktemp(a) for a in chapters]  # (mktemp is not for threads)
    with ThreadPoolExecutor(max_workers=max(1, min(len(chapters), os.cpu_count() or 1))) as pool:
        return dict(zip(chapters, pool.map(_grade_scavenger, chapters, folders)))


@pytest.mark.parametrize("assignment", assignments(ROOT))
def test_a_notebook_that_only_searches_earns_nothing(assignment, scavenged):
    returncode, stderr, out = scavenged[assignment]
    assert returncode == 0, stderr[-3000:]
    (row,) = csv.DictReader((out / "grades.csv").open())
    (detail,) = json.loads((out / "results.json").read_text())["students"]
    messages = {e["grade_id"]: e["message"] for e in detail["exercises"]}
    assert row["total"] == "0", messages
    # It searched to the end and found nothing, rather than being stopped before it could look
    # (a timeout or a crash would also score 0, and prove nothing).
    for grade_id, message in messages.items():
        assert "nothing that passes" in message or "max abs difference" in message or "expected" in message, \
            (grade_id, message)


def test_the_search_finds_answers_where_the_course_is_reachable(tmp_path):
    """Outside the sandbox, with the course importable and the solutions on disk, the very same
    search hands in a softmax that passes (so the sandbox test above is not passing by luck)."""
    import transformer_course.attention  # noqa: F401 - loaded, as a notebook outside the sandbox may have it

    scope: dict = {"__name__": "scavenger"}
    exec(compile(SEARCH, "scavenger", "exec"), scope)  # noqa: S102 - our own test code
    scope["_ROOTS"][:] = [str(ROOT / "solutions")]
    found = scope["_search"]("softmax", False)
    x = torch.tensor([[1000.0, 1001.0, 1002.0]], dtype=torch.float64)
    assert torch.allclose(found(x, dim=-1), torch.softmax(x, dim=-1))
    found_class = scope["_search"]("MultiHeadAttention", True)
    assert issubclass(found_class, torch.nn.Module)
