"""The instructor's command line and how it finds submissions (fast: nothing is graded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from course_helpers import ROOT
from transformer_course.grading.submissions import find_submissions, safe_id


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "transformer_course", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "release" in result.stdout and "grade" in result.stdout


def test_grade_refuses_a_missing_folder_with_a_message(tmp_path):
    result = run_cli("grade", "04-attention", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "is not a folder of submissions" in result.stderr and "Traceback" not in result.stderr


def test_grade_refuses_an_unknown_assignment(tmp_path):
    result = run_cli("grade", "99-nothing", str(tmp_path))
    assert result.returncode == 2
    assert "unknown assignment '99-nothing'" in result.stderr and "04-attention" in result.stderr


def test_grade_says_when_a_folder_holds_no_submissions(tmp_path):
    result = run_cli("grade", "04-attention", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no submissions in" in result.stderr


def test_release_refuses_an_unknown_assignment():
    result = run_cli("release", "99-nothing")
    assert result.returncode == 2 and "no such assignment" in result.stderr


def test_commands_outside_the_course_say_where_to_run_them(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "transformer_course", "release"], capture_output=True, text=True, cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and "no course found" in result.stderr


def test_find_submissions_layouts(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "attention.ipynb").write_text("{}")
    (tmp_path / "ann" / "scratch.ipynb").write_text("{}")  # the right name wins
    (tmp_path / "ben").mkdir()
    (tmp_path / "ben" / "Untitled.ipynb").write_text("{}")  # one notebook: graded, with a note
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.ipynb").write_text("{}")
    (tmp_path / "cat" / "b.ipynb").write_text("{}")  # two, neither right: a problem
    (tmp_path / "dan.ipynb").write_text("{}")
    (tmp_path / "ann.ipynb").write_text("{}")  # ann also has a folder
    (tmp_path / ".hidden.ipynb").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    found = {s.student: s for s in find_submissions(tmp_path, ["attention.ipynb"])}
    assert sorted(found) == ["ann", "ben", "cat", "dan"]
    assert found["ann"].path.name == "attention.ipynb" and "ann.ipynb" in found["ann"].note
    assert found["ben"].path.name == "Untitled.ipynb" and "as attention.ipynb" in found["ben"].note
    assert found["cat"].path is None and "a.ipynb, b.ipynb" in found["cat"].problem
    assert found["dan"].path.name == "dan.ipynb"


@pytest.mark.parametrize("name, safe", [("ann", "ann"), ("a b/c", "a_b_c"), ("j.doe@uni.edu", "j.doe@uni.edu")])
def test_safe_ids(name, safe):
    assert safe_id(name) == safe


def test_the_reports_folder_is_not_taken_for_a_student(tmp_path):
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / "old.ipynb").write_text("{}")
    (tmp_path / "eve.ipynb").write_text("{}")
    found = find_submissions(tmp_path, ["attention.ipynb"], skip=tmp_path / "grades")
    assert [s.student for s in found] == ["eve"]
