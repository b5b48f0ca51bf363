"""``transformer-course release``: generate the student notebooks in notebooks/ from solutions/.

Before generating, the solution notebooks are checked against the exercise registry, so the
points, the grade_ids and the names of the functions exist in one place and agree everywhere, and
every test cell carries the tag that lets JupyterLab's Run All go past it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import nbformat

from .. import exercises
from .course import assignments, load_config, nbgrader_api, sqlite_url

# JupyterLab's cell tag for "this cell is expected to raise": Run All goes on past it. A check cell
# raises until its exercise is done, so every test cell carries it (nbgrader still scores the error 0).
RUN_ALL_TAG = "raises-exception"


def registry_problems(root: Path, assignment: str) -> list[str]:
    """Where the solution notebooks of ``assignment`` and the exercise registry disagree."""
    problems = []
    registered = {e.grade_id: e for e in exercises.for_assignment(assignment)}
    seen_tests: dict[str, int] = {}
    answers: set[str] = set()
    for path in sorted((root / "solutions" / assignment).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            grade_id = meta.get("grade_id")
            if not grade_id:
                continue
            if meta.get("solution"):
                answers.add(grade_id)
            if not meta.get("grade") or cell.cell_type != "code":
                continue
            seen_tests[grade_id] = seen_tests.get(grade_id, 0) + 1
            exercise = registered.get(grade_id)
            where = f"{path.name}, cell {grade_id}"
            if exercise is None:
                problems.append(f"{where}: a graded cell with no exercise in the registry")
                continue
            if float(meta.get("points", -1)) != float(exercise.points):
                problems.append(
                    f"{where}: {meta.get('points')} points in the notebook, {exercise.points} in the registry"
                )
            if RUN_ALL_TAG not in cell.metadata.get("tags", []):
                problems.append(
                    f"{where}: the test cell needs the tag `{RUN_ALL_TAG}` (in metadata.tags): it raises until its "
                    "exercise is done, and without the tag JupyterLab's Run All stops there"
                )
            fn = exercise.function
            wanted = [rf'{fn}\s*=\s*grade\(\s*"{fn}"\s*,\s*globals\(\)\s*\)', rf'check\(\s*"{fn}"\s*,\s*{fn}\s*\)']
            for pattern in wanted:
                if not re.search(pattern, cell.source):
                    problems.append(f"{where}: the test cell should contain `{pattern}`")
    for grade_id, exercise in registered.items():
        if seen_tests.get(grade_id, 0) != 1:
            problems.append(
                f"exercise {exercise.function}: {seen_tests.get(grade_id, 0)} test cells {grade_id} (need 1)"
            )
        if exercise.function not in answers:
            problems.append(f"exercise {exercise.function}: no answer cell with grade_id {exercise.function}")
    return problems


def generate(root: Path, assignment: str, release_directory: Path) -> Path:
    """Generate the student version of ``assignment`` into ``release_directory/assignment``."""
    problems = registry_problems(root, assignment)
    if problems:
        raise ValueError(f"{assignment} disagrees with the exercise registry:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="transformer-course-release-") as work:
        staging = Path(work) / "release"
        config = load_config(
            root, release_directory=str(staging), db_url=sqlite_url(Path(work) / "gradebook.db")
        )
        result = nbgrader_api(config).generate_assignment(assignment)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not generate {assignment}:\n{result.get('error') or result['log']}")
        target = release_directory / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(staging / assignment, target)
    return target


def release(root: Path, only: list[str] | None = None, release_directory: Path | None = None) -> list[Path]:
    """Regenerate the student notebooks of every (or each named) assignment."""
    names = only or assignments(root)
    unknown = sorted(set(names) - set(assignments(root)))
    if unknown:
        raise ValueError(f"no such assignment in solutions/: {', '.join(unknown)}")
    folder = release_directory or root / "notebooks"
    return [generate(root, name, folder) for name in names]
