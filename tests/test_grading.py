"""Grading round trips with real nbgrader runs on real notebooks (slow: a kernel per submission)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_helpers import ROOT, nbgrader_autograde, release_path, solution_path, write_submission
from transformer_course import exercises
from transformer_course.grading.report import feedback_text, write_feedback
from transformer_course.grading.results import ExerciseResult, StudentResult
from transformer_course.grading.sandbox import sandbox_problem
from wrong_answers import by_assignment

pytestmark = pytest.mark.slow

CH04 = "04-attention"  # the chapter whose batch also carries unreadable and odd submissions
CHAPTERS = by_assignment()


def full_points(assignment: str) -> dict[str, float]:
    return {e.grade_id: float(e.points) for e in exercises.for_assignment(assignment)}


# The hardened grader, sandboxed where bubblewrap works (CI installs it); elsewhere the same
# grader unsandboxed, so the scores are still checked (tests/test_sandbox.py says what is skipped).
MODE = [] if sandbox_problem() is None else ["--unsandboxed"]


def grade_batch(assignment: str, subs: Path, out: Path, *options: str) -> tuple[dict, dict, str]:
    """Run `transformer-course grade` on a folder; return grades.csv rows, results.json, stdout."""
    run = subprocess.run(
        [sys.executable, "-m", "transformer_course", "grade", assignment, str(subs), "--out", str(out),
         *(options or MODE)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    details = {s["student"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    return rows, details, run.stdout


_batches: dict[str, tuple] = {}


def graded_batch(assignment: str, tmp_path_factory) -> tuple:
    """One batch per chapter, graded once per test session: the solution, the blank notebook,
    each wrong answer alone and a forbidden shortcut. Chapter 4's also holds odd submissions."""
    if assignment in _batches:
        return _batches[assignment]
    module = CHAPTERS[assignment]
    notebook = solution_path(assignment).name
    subs = tmp_path_factory.mktemp(f"submissions-{assignment}")
    write_submission(subs / "full" / notebook, assignment)
    (subs / "blank").mkdir()
    (subs / "blank" / notebook).write_bytes(release_path(assignment).read_bytes())
    for function, (source, _) in module.WRONG.items():
        write_submission(subs / f"wrong_{function}.ipynb", assignment, **{function: source})
    function, source = module.FORBIDDEN
    write_submission(subs / "forbidden.ipynb", assignment, **{function: source})
    if assignment == CH04:
        write_submission(subs / "renamed" / f"{solution_path(assignment).stem} (1).ipynb", assignment)
        (subs / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")
        (subs / "empty.ipynb").write_text("", encoding="utf-8")
        other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
        nbformat.write(other, subs / "other_assignment.ipynb")
        (subs / "nothing").mkdir()
    out = tmp_path_factory.mktemp(f"out-{assignment}")
    rows, details, stdout = grade_batch(assignment, subs, out)
    _batches[assignment] = (assignment, module, rows, details, out, stdout, subs)
    return _batches[assignment]


@pytest.fixture(scope="module", params=sorted(CHAPTERS))
def chapter(request, tmp_path_factory):
    return graded_batch(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Chapter 4's batch, the one with the odd submissions: (rows, details, out, stdout)."""
    return graded_batch(CH04, tmp_path_factory)[2:6]


def points(row: dict, assignment: str = CH04) -> dict[str, float]:
    return {k: float(row[k]) for k in full_points(assignment)}


def test_csv_columns(chapter):
    assignment, _, rows, *_ = chapter
    first = next(iter(rows.values()))
    assert list(first) == ["student", "id", "total", "max_total", *full_points(assignment)]


def test_every_submission_ends_as_a_score_or_an_error(chapter):
    assignment, module, rows, details, _, stdout, _ = chapter
    expected = {"full", "blank", "forbidden", *(f"wrong_{f}" for f in module.WRONG)}
    if assignment == CH04:
        expected |= {"renamed", "broken", "empty", "other_assignment", "nothing"}
    assert set(rows) == expected and set(details) == expected
    for name in expected:
        assert name in stdout  # the summary table lists everyone


def test_the_solution_gets_full_marks(chapter):
    assignment, _, rows, details, *_ = chapter
    full = full_points(assignment)
    assert points(rows["full"], assignment) == full
    assert float(rows["full"]["total"]) == sum(full.values())
    assert all(e["status"] == "passed" for e in details["full"]["exercises"])


def test_the_blank_notebook_gets_zero_with_a_message_per_exercise(chapter):
    assignment, _, rows, details, *_ = chapter
    assert float(rows["blank"]["total"]) == 0
    assert len(details["blank"]["exercises"]) == len(full_points(assignment))
    for e in details["blank"]["exercises"]:
        assert e["status"] == "failed" and "is not implemented yet" in e["message"]


def test_every_exercise_has_a_wrong_answer_in_the_batch(chapter):
    assignment, module, *_ = chapter
    assert {f"test_{f}" for f in module.WRONG} == set(full_points(assignment))


def test_one_wrong_exercise_loses_exactly_its_points(chapter):
    """Also when a later exercise calls the wrong function: it is graded with the reference."""
    assignment, module, rows, details, *_ = chapter
    cases = [(f"wrong_{f}", f, phrase) for f, (_, phrase) in module.WRONG.items()]
    cases.append(("forbidden", module.FORBIDDEN[0], "earns no points"))
    for student, function, phrase in cases:
        lost = f"test_{function}"
        assert points(rows[student], assignment) == {**full_points(assignment), lost: 0}, student
        (failed,) = [e for e in details[student]["exercises"] if e["status"] != "passed"]
        assert failed["grade_id"] == lost and phrase in failed["message"], (student, failed["message"])


def test_a_renamed_notebook_is_graded_with_a_note(graded):
    rows, details, *_ = graded
    assert points(rows["renamed"]) == full_points(CH04)
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


def test_plain_nbgrader_gives_the_same_scores_on_honest_work(chapter, tmp_path):
    """The README's plain-nbgrader commands, run in a copy of the course, agree with `grade`."""
    assignment, module, rows, *_ = chapter
    function, (wrong, _) = next(iter(module.WRONG.items()))
    notebook = solution_path(assignment).name
    students = {
        "full": write_submission(tmp_path / "full" / notebook, assignment),
        f"wrong_{function}": write_submission(tmp_path / "wrong" / notebook, assignment, **{function: wrong}),
    }
    plain = nbgrader_autograde(tmp_path, assignment, students)
    for student in students:
        assert plain[student] == points(rows[student], assignment), student


def test_grade_with_nbgrader_gives_the_same_scores_and_messages(tmp_path_factory):
    """`grade --nbgrader` (plain nbgrader in the student's kernel) and the hardened grader agree
    on every submission of chapter 4's batch, errors included."""
    _, _, rows, details, _, _, subs = graded_batch(CH04, tmp_path_factory)
    out = tmp_path_factory.mktemp("out-nbgrader")
    plain_rows, plain_details, _ = grade_batch(CH04, subs, out, "--nbgrader")
    assert plain_rows == rows
    for student, detail in details.items():
        plain = plain_details[student]
        assert [e["status"] for e in plain["exercises"]] == [e["status"] for e in detail["exercises"]], student
        for mine, theirs in zip(detail["exercises"], plain["exercises"]):
            if mine["status"] == "failed":  # the same first problem, in the same words
                assert mine["message"].splitlines()[0] in theirs["message"], (student, mine, theirs)


def test_check_gives_a_self_learner_the_instructors_verdict(tmp_path_factory):
    *_, subs = graded_batch(CH04, tmp_path_factory)

    def check(notebook: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "transformer_course", "check", str(notebook), *MODE],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)

    full = check(subs / "full" / "attention.ipynb")
    assert full.returncode == 0 and "(04-attention): 7 / 7 points" in full.stdout, full.stderr
    assert "note:" not in full.stdout  # a notebook made from the course's own is not "changed"
    wrong = check(subs / "wrong_softmax.ipynb")
    assert wrong.returncode == 1 and "✗ softmax: 0 / 2" in wrong.stdout and "Subtract the maximum" in wrong.stdout
    assert "✓ scaled_dot_product_attention: 3 / 3" in wrong.stdout


EXAMPLE_HTML = ROOT / "autograder" / "example-feedback.html"
README_BLOCK = re.compile(
    r"(<!-- feedback-example:start -->\n```text\n)(.*?)(```\n<!-- feedback-example:end -->)", re.S)


def test_the_readme_example_feedback_is_what_grading_produces(graded, tmp_path):
    """README's example feedback and autograder/example-feedback.html are generated: they are
    chapter 4's wrong-softmax submission as graded here, shown as student "dave". To update both
    after a change to the checks or the page: UPDATE_EXAMPLES=1 pytest tests/test_grading.py -k example"""
    _, details, *_ = graded
    detail = dict(details["wrong_softmax"], student="dave", id="dave", source="dave/attention.ipynb")
    detail = {k: v for k, v in detail.items() if k not in ("total", "max_total")}
    result = StudentResult(**{**detail, "exercises": [ExerciseResult(**e) for e in detail["exercises"]]})
    write_feedback(tmp_path, CH04, [result])
    html = (tmp_path / "dave.html").read_text(encoding="utf-8")
    text = feedback_text(CH04, result)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if os.environ.get("UPDATE_EXAMPLES"):
        EXAMPLE_HTML.write_text(html, encoding="utf-8")
        (ROOT / "README.md").write_text(README_BLOCK.sub(lambda m: m[1] + text + "\n" + m[3], readme), encoding="utf-8")
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = README_BLOCK.search(readme)
    assert match, "README.md lost its feedback-example markers"
    hint = "out of date: UPDATE_EXAMPLES=1 pytest tests/test_grading.py -k example"
    assert match[2] == text + "\n", f"README.md's example feedback is {hint}"
    assert EXAMPLE_HTML.read_text(encoding="utf-8") == html, f"{EXAMPLE_HTML.name} is {hint}"
    assert "0 / 2" in text and "Subtract the maximum" in text  # the example shows a lost exercise


def test_grading_the_same_folder_twice_gives_the_same_scores(tmp_path_factory):
    """Each run draws other hidden inputs (a fresh secret seed); the scores and statuses stay."""
    _, _, rows, details, out, _, subs = graded_batch(CH04, tmp_path_factory)
    again = tmp_path_factory.mktemp("out-again")
    rows_again, details_again, _ = grade_batch(CH04, subs, again)
    assert rows_again == rows
    for student, detail in details.items():
        statuses = [e["status"] for e in detail["exercises"]]
        assert [e["status"] for e in details_again[student]["exercises"]] == statuses, student
    seeds = [json.loads((folder / "results.json").read_text())["run"]["seed"] for folder in (out, again)]
    assert seeds[0] != seeds[1]


def test_grading_into_the_same_folder_keeps_the_earlier_run(tmp_path):
    """Nothing is overwritten: the earlier reports move to <out>/earlier/<when>/, and the new
    feedback folder holds only the students of the new run."""
    notebook = release_path(CH04)
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for folder, student in ((first, "ann"), (second, "bob")):
        (folder / student).mkdir(parents=True)
        (folder / student / notebook.name).write_bytes(notebook.read_bytes())
    grade_batch(CH04, first, out)
    rows, _, _ = grade_batch(CH04, second, out)
    assert set(rows) == {"bob"}
    assert [p.name for p in (out / "feedback").iterdir()] == ["bob.html"]
    (earlier,) = (out / "earlier").iterdir()
    assert "ann" in (earlier / "grades.csv").read_text() and (earlier / "feedback" / "ann.html").is_file()
    assert json.loads((earlier / "results.json").read_text())["students"][0]["student"] == "ann"
