"""The nbgrader course directory: where things are, and nbgrader's API set up for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader


def course_at_or_above(start: Path) -> Path | None:
    """The nearest folder, ``start`` or one above it, that is a course (it has autograder/ and solutions/)."""
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / "autograder" / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    return None


def find_course_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder, upwards from ``start``, with autograder/ and solutions/."""
    here = (start or Path.cwd()).resolve()
    root = course_at_or_above(here)
    if root is None:
        raise FileNotFoundError(
            f"no course found at or above {here}: run this inside the course repository "
            "(the folder with autograder/ and solutions/)"
        )
    return root


def package_folder() -> Path:
    """Where the installed ``transformer_course`` package lives (inside the repository when it was
    installed with ``pip install -e .``, as the README does)."""
    return Path(__file__).resolve().parents[1]


def find_course_for(notebook: Path, package: Path | None = None) -> Path:
    """The course that grades ``notebook``, from wherever the command runs: the nearest course at or
    above the notebook's folder, else at or above the working directory, else the course the installed
    package belongs to (``package``, by default :func:`package_folder`)."""
    package = package or package_folder()
    places = [notebook.resolve().parent, Path.cwd().resolve(), package]
    for place in places:
        root = course_at_or_above(place)
        if root is not None:
            return root
    raise FileNotFoundError(
        f"no course found for {notebook}: none at or above the notebook's folder ({places[0]}), the working "
        f"directory ({places[1]}) or the installed transformer_course package ({package}). Install the "
        "course from its repository (pip install -e <the course folder>, as its README does), or run this "
        "inside the course folder"
    )


def load_config(root: Path, **overrides: object) -> Config:
    """autograder/nbgrader_config.py, with ``CourseDirectory.root`` and ``overrides`` applied.

    ``overrides`` are CourseDirectory traits, e.g. ``release_directory="/tmp/x"``,
    ``db_url="sqlite:///..."``.
    """
    loader = PyFileConfigLoader("nbgrader_config.py", path=str(root / "autograder"))
    config = loader.load_config()
    config.CourseDirectory.root = str(root)
    for name, value in overrides.items():
        setattr(config.CourseDirectory, name, value)
    return config


def nbgrader_api(config: Config):
    """An ``NbGraderAPI`` for ``config`` (imported lazily: nbgrader is slow to import)."""
    # nbgrader runs `alembic` (and kernels) as subprocesses found on PATH: make this Python's own
    # bin folder first, so the commands work without activating the virtual environment.
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def assignments(root: Path) -> list[str]:
    """The assignments: the folders of solutions/ that hold a notebook, sorted."""
    source = root / "solutions"
    return sorted(
        p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))
    )


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + os.fspath(path)
