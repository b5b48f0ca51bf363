"""The nbgrader course directory: where things are, and nbgrader's API set up for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader


def find_course_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder, upwards from ``start``, with autograder/ and solutions/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "autograder" / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise FileNotFoundError(
        f"no course found at or above {here}: run this inside the course repository "
        "(the folder with autograder/ and solutions/)"
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
