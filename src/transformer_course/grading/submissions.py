"""Finding the submissions in a folder: ``<student>/<notebook>.ipynb`` or ``<student>.ipynb``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.@+-]")


@dataclass
class Submission:
    """A student's notebook (``path``), or why there is none (``problem``)."""

    student: str
    path: Path | None
    problem: str | None = None
    note: str | None = None


def safe_id(student: str) -> str:
    """A student id usable as a folder name by nbgrader: other characters become '_'."""
    return _SAFE.sub("_", student) or "_"


def _pick_notebook(folder: Path, expected: list[str]) -> tuple[Path | None, str | None, str | None]:
    """The notebook in a student's folder: (path, problem, note)."""
    notebooks = sorted(
        p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    for name in expected:
        for p in notebooks:
            if p.name == name:
                return p, None, None
    if len(notebooks) == 1:
        return notebooks[0], None, f"graded {notebooks[0].name} as {expected[0]}"
    if not notebooks:
        return None, f"no notebook (.ipynb) in the folder {folder.name}/", None
    names = ", ".join(p.name for p in notebooks)
    return None, f"several notebooks ({names}) and none is called {expected[0]}", None


def find_submissions(folder: Path, expected: list[str], skip: Path | None = None) -> list[Submission]:
    """Every student's submission in ``folder``, sorted by student.

    ``expected`` lists the assignment's notebook file names; a student folder with one notebook
    of another name is graded as that notebook (students rename files), with a note. ``skip``
    is a folder to pass over (the reports' folder, when it lies among the submissions).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of submissions")
    found: dict[str, Submission] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip.resolve()):
            continue
        if entry.is_dir():
            path, problem, note = _pick_notebook(entry, expected)
            found[entry.name] = Submission(entry.name, path, problem, note)
        elif entry.suffix == ".ipynb":
            student = entry.stem
            if student in found:
                found[student].note = f"also sent {entry.name}, which was not graded"
                continue
            found[student] = Submission(student, entry)
    return [found[s] for s in sorted(found)]
