"""Grading round trips with real nbgrader runs on real notebooks (slow: a kernel per submission)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_helpers import ROOT, release_path, solution_path, write_submission

pytestmark = pytest.mark.slow

CH04 = "04-attention"
FULL = {"test_softmax": 2, "test_attention_scores": 2, "test_scaled_dot_product_attention": 3}
NAIVE_SOFTMAX = "def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)\n"
UNSCALED = "def attention_scores(q, k):\n    return q @ k.transpose(-2, -1)\n"
NO_MASK = (
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    w = softmax(attention_scores(q, k))\n"
    "    return w @ v, w\n"
)
LIBRARY_SOFTMAX = "def softmax(x, dim=-1):\n    return torch.softmax(x, dim=dim)\n"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One batch: honest, wrong, forbidden and broken submissions, graded by the CLI."""
    subs = tmp_path_factory.mktemp("submissions")
    write_submission(subs / "full" / "attention.ipynb", CH04)
    (subs / "blank").mkdir()
    (subs / "blank" / "attention.ipynb").write_bytes(release_path(CH04).read_bytes())
    write_submission(subs / "wrong_softmax.ipynb", CH04, softmax=NAIVE_SOFTMAX)
    write_submission(subs / "wrong_scores.ipynb", CH04, attention_scores=UNSCALED)
    write_submission(subs / "wrong_attention.ipynb", CH04, scaled_dot_product_attention=NO_MASK)
    write_submission(subs / "forbidden.ipynb", CH04, softmax=LIBRARY_SOFTMAX)
    write_submission(subs / "renamed" / "attention (1).ipynb", CH04)
    (subs / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")
    (subs / "empty.ipynb").write_text("", encoding="utf-8")
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    nbformat.write(other, subs / "other_assignment.ipynb")
    (subs / "nothing").mkdir()

    out = tmp_path_factory.mktemp("out")
    run = subprocess.run(
        [sys.executable, "-m", "transformer_course", "grade", CH04, str(subs), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    details = {s["student"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    return rows, details, out, run.stdout


def points(row: dict) -> dict[str, float]:
    return {k: float(row[k]) for k in FULL}


def test_csv_columns(graded):
    rows, *_ = graded
    first = next(iter(rows.values()))
    assert list(first) == ["student", "total", "max_total", *FULL]


def test_every_submission_ends_as_a_score_or_an_error(graded):
    rows, details, _, stdout = graded
    expected = {"full", "blank", "wrong_softmax", "wrong_scores", "wrong_attention", "forbidden",
                "renamed", "broken", "empty", "other_assignment", "nothing"}
    assert set(rows) == expected and set(details) == expected
    for name in expected:
        assert name in stdout  # the summary table lists everyone


def test_the_solution_gets_full_marks(graded):
    rows, details, *_ = graded
    assert points(rows["full"]) == FULL and rows["full"]["total"] == "7"
    assert all(e["status"] == "passed" for e in details["full"]["exercises"])


def test_the_blank_notebook_gets_zero_with_a_message_per_exercise(graded):
    rows, details, *_ = graded
    assert rows["blank"]["total"] == "0"
    for e in details["blank"]["exercises"]:
        assert e["status"] == "failed" and "is not implemented yet" in e["message"]


@pytest.mark.parametrize(
    "student, lost, phrase",
    [
        ("wrong_softmax", "test_softmax", "Subtract the maximum"),
        # attention calls the student's unscaled scores, yet keeps its 3 points
        ("wrong_scores", "test_attention_scores", "divide by sqrt(d_k)"),
        ("wrong_attention", "test_scaled_dot_product_attention", "causally masked"),
        ("forbidden", "test_softmax", "earns no points"),
    ],
)
def test_one_wrong_exercise_loses_exactly_its_points(graded, student, lost, phrase):
    rows, details, *_ = graded
    assert points(rows[student]) == {**FULL, lost: 0}
    (failed,) = [e for e in details[student]["exercises"] if e["status"] != "passed"]
    assert failed["grade_id"] == lost and phrase in failed["message"]


def test_a_renamed_notebook_is_graded_with_a_note(graded):
    rows, details, *_ = graded
    assert rows["renamed"]["total"] == "7"
    assert any("attention (1).ipynb" in n for n in details["renamed"]["notes"])


@pytest.mark.parametrize(
    "student, phrase",
    [
        ("broken", "not valid JSON"),
        ("empty", "the file is empty"),
        ("other_assignment", "none of the cells of assignment 04-attention"),
        ("nothing", "no notebook"),
    ],
)
def test_unreadable_submissions_are_per_student_errors(graded, student, phrase):
    rows, details, *_ = graded
    assert rows[student]["total"] == "0"
    assert phrase in details[student]["error"]


def test_feedback_pages_show_messages_but_never_hidden_tests(graded):
    _, _, out, _ = graded
    hidden_code = nbformat.read(solution_path(CH04), as_version=4)
    hidden = [c.source for c in hidden_code.cells if "BEGIN HIDDEN TESTS" in c.source]
    assert hidden
    page = (out / "feedback" / "wrong_softmax.html").read_text()
    assert "Subtract the maximum" in page and "5 / 7" in page
    for name in ("full", "wrong_softmax", "blank", "broken"):
        text = (out / "feedback" / f"{name}.html").read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "grading.hidden" not in text
        assert 'grade("softmax"' not in text


def test_plain_nbgrader_gives_the_same_scores_on_honest_work(graded, tmp_path):
    """The README's plain-nbgrader commands, run in a copy of the course, agree with `grade`."""
    rows, *_ = graded
    course = tmp_path / "course"
    for name in ("solutions", "autograder"):
        shutil.copytree(ROOT / name, course / name)
    for student, replace in (("full", {}), ("wrong_softmax", {"softmax": NAIVE_SOFTMAX})):
        write_submission(course / "submitted" / student / CH04 / "attention.ipynb", CH04, **replace)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    config = "--NbGrader.config_file=autograder/nbgrader_config.py"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    for step in (["generate_assignment", CH04, "--force", config], ["autograde", CH04, config]):
        run = subprocess.run(nbgrader + step, cwd=course, capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in ("full", "wrong_softmax"):
            nb = gradebook.find_submission_notebook("attention", CH04, student)
            plain = {g.name: g.score for g in nb.grades}
            assert plain == points(rows[student])
