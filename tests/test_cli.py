"""The instructor's command line and how it finds submissions (fast: nothing is graded)."""

from __future__ import annotations

import shutil
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
    assert "is not a folder or a .zip of submissions" in result.stderr and "Traceback" not in result.stderr


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


@pytest.mark.slow
def test_check_grades_a_notebook_outside_the_course_from_any_folder(tmp_path):
    """A student's copy of a notebook, far from the course, checked from its own folder: the course is
    found from the installed package (an editable install lives in the repository)."""
    folder = tmp_path / "my work"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "04-attention" / "attention.ipynb", folder / "attention.ipynb")
    result = subprocess.run(
        [sys.executable, "-m", "transformer_course", "check", "attention.ipynb", "--unsandboxed"],
        capture_output=True, text=True, cwd=folder, check=False,
    )
    assert result.returncode == 1, result.stderr  # 1: not every point (a blank notebook)
    assert "attention.ipynb (04-attention): 0 / 7 points" in result.stdout
    assert "`softmax` is not implemented yet" in result.stdout and "Traceback" not in result.stderr


def test_check_finds_the_course_beside_the_notebook_first(tmp_path, monkeypatch):
    from transformer_course.grading.course import find_course_for

    course = tmp_path / "course"
    (course / "autograder").mkdir(parents=True)
    (course / "autograder" / "nbgrader_config.py").write_text("")
    (course / "solutions").mkdir()
    (course / "notebooks" / "04-attention").mkdir(parents=True)
    notebook = course / "notebooks" / "04-attention" / "attention.ipynb"
    monkeypatch.chdir(tmp_path)
    assert find_course_for(notebook) == course.resolve()  # not the installed package's course
    assert find_course_for(tmp_path / "x.ipynb") == ROOT  # nothing near: the installed package's


def test_check_says_where_it_looked_when_no_course_is_found(tmp_path, monkeypatch):
    from transformer_course.grading.course import find_course_for

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        find_course_for(tmp_path / "attention.ipynb", package=tmp_path / "site-packages" / "transformer_course")
    message = str(error.value)
    assert message.startswith(f"no course found for {tmp_path / 'attention.ipynb'}")
    assert "the working directory" in message and "pip install -e" in message


def test_the_notebook_s_last_cell_checks_only_in_jupyter(tmp_path, monkeypatch, capsys):
    """Run by a program (nbgrader, tests: no Jupyter session for a notebook in the working directory),
    the last cell says how to check instead of grading the notebook inside its own grading."""
    from transformer_course.cli import check_notebook

    monkeypatch.chdir(tmp_path)
    for session in (None, str(ROOT / "notebooks" / "04-attention" / "attention.ipynb")):
        if session is None:
            monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
        else:
            monkeypatch.setenv("JPY_SESSION_NAME", session)  # another folder's notebook
        check_notebook("attention.ipynb")
        said = capsys.readouterr().out
        assert said.startswith("Not run here") and "transformer-course check attention.ipynb" in said


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
    assert found["ann"].path.name == "attention.ipynb" and "ann.ipynb" in " ".join(found["ann"].notes)
    assert found["ben"].path.name == "Untitled.ipynb" and "as attention.ipynb" in found["ben"].notes[0]
    assert found["cat"].path is None and "a.ipynb, b.ipynb" in found["cat"].problem
    assert found["dan"].path.name == "dan.ipynb"


@pytest.mark.parametrize("name, safe", [("ann", "ann"), ("a b/c", "a_b_c"), ("j.doe@uni.edu", "j.doe@uni.edu")])
def test_safe_ids(name, safe):
    assert safe_id(name) == safe


def test_a_file_name_cannot_hand_in_for_a_classmate(tmp_path):
    """Bob's second Canvas upload named like a Blackboard attempt of Alice's stays Bob's."""
    for name in ("smithalice_1001_5001_attention.ipynb", "jonesbob_1002_5002_attention.ipynb",
                 "jonesbob_1002_5003_x_smithalice_attempt_2099-01-01-00-00-00_attention.ipynb"):
        (tmp_path / name).write_text("{}")
    found = {s.student: s for s in find_submissions(tmp_path, ["attention.ipynb"])}
    assert sorted(found) == ["jonesbob", "smithalice"]
    assert found["smithalice"].path.name == "smithalice_1001_5001_attention.ipynb"
    assert found["jonesbob"].path.name == "jonesbob_1002_5002_attention.ipynb"
    assert "x_smithalice_attempt" in found["jonesbob"].notes[0]


def test_the_reports_folder_is_not_taken_for_a_student(tmp_path):
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / "old.ipynb").write_text("{}")
    (tmp_path / "eve.ipynb").write_text("{}")
    found = find_submissions(tmp_path, ["attention.ipynb"], skip=tmp_path / "grades")
    assert [s.student for s in found] == ["eve"]


def test_learning_management_system_layouts(tmp_path):
    """Canvas, Moodle and Blackboard downloads: the student comes from each name."""
    for name in ("smithjohn_12345_678901_attention.ipynb",  # Canvas
                 "doejane_late_12346_678902_attention-1.ipynb",  # Canvas, late and renamed
                 "Homework 4_kwan_attempt_2026-11-20-09-30-00_attention.ipynb",  # Blackboard
                 "Homework 4_kwan_attempt_2026-11-21-08-00-00_attention.ipynb",  # ... a later attempt
                 "Homework 4_kwan_attempt_2026-11-21-08-00-00.txt"):  # ... its receipt
        (tmp_path / name).write_text("{}")
    moodle = tmp_path / "Ada Lovelace_4711_assignsubmission_file_"
    moodle.mkdir()
    (moodle / "attention.ipynb").write_text("{}")
    found = {s.student: s for s in find_submissions(tmp_path, ["attention.ipynb"])}
    assert sorted(found) == ["Ada Lovelace", "doejane", "kwan", "smithjohn"]
    assert found["kwan"].path.name.startswith("Homework 4_kwan_attempt_2026-11-21")
    assert "graded the latest attempt" in " ".join(found["kwan"].notes)
    assert found["Ada Lovelace"].path == moodle / "attention.ipynb"


def _zip(path, files: dict[str, str]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize("files, students", [
    ({"ann/attention.ipynb": "{}", "ben.ipynb": "{}"}, ["ann", "ben"]),
    ({"class/ann/attention.ipynb": "{}", "class/ben/attention.ipynb": "{}"}, ["ann", "ben"]),
    ({"class/ann.ipynb": "{}", "class/ben.ipynb": "{}", "__MACOSX/._x": ""}, ["ann", "ben"]),
    ({"smithjohn_12345_678901_attention.ipynb": "{}"}, ["smithjohn"]),
])
def test_a_zip_of_submissions_is_unpacked(tmp_path, files, students):
    from transformer_course.grading.submissions import collect

    found = collect(_zip(tmp_path / "class.zip", files), ["attention.ipynb"], tmp_path / "work")
    assert [s.student for s in found] == students


@pytest.mark.parametrize("name", ["../evil.ipynb", "/etc/evil.ipynb", "a/../../evil.ipynb"])
def test_a_zip_that_would_write_outside_its_folder_is_refused(tmp_path, name):
    from transformer_course.grading.submissions import SubmissionsError, collect

    with pytest.raises(SubmissionsError, match="unsafe entry"):
        collect(_zip(tmp_path / "class.zip", {name: "{}"}), ["attention.ipynb"], tmp_path / "work")
    assert not (tmp_path / "evil.ipynb").exists()


def test_a_damaged_zip_is_a_clear_error_from_the_command(tmp_path):
    (tmp_path / "class.zip").write_bytes(b"PK\x03\x04 not really")
    result = subprocess.run(
        [sys.executable, "-m", "transformer_course", "grade", "04-attention", str(tmp_path / "class.zip"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert result.returncode == 2 and "not a readable zip file" in result.stderr
    assert "Traceback" not in result.stderr


def test_devices_can_be_kept_to_the_cpu(monkeypatch):
    """The hardened grader's sandbox has no GPU: it sets TRANSFORMER_COURSE_DEVICES=cpu so that
    visible checks that loop over devices ask for the same ones inside and outside."""
    import torch

    from transformer_course.device import available_devices

    monkeypatch.setenv("TRANSFORMER_COURSE_DEVICES", "cpu")
    assert available_devices() == [torch.device("cpu")]
