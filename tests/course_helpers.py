"""Helpers for tests that work with the course's notebooks as a student would."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import nbformat

ROOT = Path(__file__).resolve().parents[1]
_counter = itertools.count()


def solution_path(assignment: str) -> Path:
    (path,) = sorted((ROOT / "solutions" / assignment).glob("*.ipynb"))
    return path


def release_path(assignment: str) -> Path:
    (path,) = sorted((ROOT / "notebooks" / assignment).glob("*.ipynb"))
    return path


def answer_sources(assignment: str) -> dict[str, str]:
    """grade_id -> source of each answer (solution) cell of the solution notebook."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    return {
        c.metadata.nbgrader.grade_id: c.source
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def setup_source(assignment: str) -> str:
    nb = nbformat.read(solution_path(assignment), as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    return cell.source


def student_module(tmp_path: Path, code: str) -> ModuleType:
    """Run ``code`` as a real file, the way a notebook cell defines functions (source readable)."""
    path = tmp_path / f"student_{next(_counter)}.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solution_code(assignment: str, **replace: str) -> str:
    """The solution notebook's setup cell and answer cells, some replaced, as one script."""
    sources = {**answer_sources(assignment), **replace}
    return setup_source(assignment) + "\n\n" + "\n\n".join(sources.values()) + "\n"


def solution_module(tmp_path: Path, assignment: str, **replace: str) -> ModuleType:
    """The solution's setup and answer cells as a student's module, with some cells replaced."""
    return student_module(tmp_path, solution_code(assignment, **replace))


def write_submission(path: Path, assignment: str, **replace: str) -> Path:
    """The solution notebook with the answer cells named in ``replace`` swapped for other code."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in replace:
            cell.source = replace[grade_id]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def nbgrader_autograde(workdir: Path, assignment: str, notebooks: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Plain nbgrader on one assignment's ``notebooks`` (student -> notebook): each student's
    score per grade_id (see :func:`nbgrader_grade_class`)."""
    scores, _ = nbgrader_grade_class(workdir, {assignment: notebooks})
    return {student: points for (_, student), points in scores.items()}


def nbgrader_grade_class(
    workdir: Path, notebooks: dict[str, dict[str, Path]]
) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, float]]:
    """Plain nbgrader, as the README's commands run it (generate_assignment, then autograde, per
    assignment), on copies of ``notebooks`` ({assignment: {student: notebook}}) in a fresh copy
    of the course under ``workdir``. Returns each (assignment, student)'s score per grade_id,
    read from nbgrader's own gradebook, and the seconds each of the two steps took in all."""
    course = workdir / "course"
    for name in ("solutions", "autograder"):
        shutil.copytree(ROOT / name, course / name)
    for assignment, students in notebooks.items():
        for student, notebook in students.items():
            target = course / "submitted" / student / assignment / solution_path(assignment).name
            target.parent.mkdir(parents=True)
            shutil.copy(notebook, target)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    config = "--NbGrader.config_file=autograder/nbgrader_config.py"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    seconds = {}
    for step in ("generate_assignment", "autograde"):
        start = time.perf_counter()
        for assignment in notebooks:
            options = ["--force"] if step == "generate_assignment" else []
            run = subprocess.run(nbgrader + [step, assignment, *options, config], cwd=course, capture_output=True,
                                 text=True, env=env, timeout=900)
            assert run.returncode == 0, run.stderr[-2000:]
        seconds[step] = time.perf_counter() - start
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {
            (assignment, student): {
                g.name: g.score
                for g in gradebook.find_submission_notebook(solution_path(assignment).stem, assignment, student).grades
            }
            for assignment, students in notebooks.items()
            for student in students
        }
    return scores, seconds
