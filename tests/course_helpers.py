"""Helpers for tests that work with the course's notebooks as a student would."""

from __future__ import annotations

import importlib.util
import itertools
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
