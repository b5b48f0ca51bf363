"""How much grading costs over just running the notebook.

Times, in the same run, (a) executing the solution notebook alone with nbclient and (b) grading
one submission of it with `transformer-course grade` (nbgrader autograde: copy, execute with the
hidden tests, save to the gradebook, read back, write reports), and prints the ratio b / a.
The grader's one-time set-up (registering the assignment with nbgrader) is timed separately.

    python bench/bench_grading.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from transformer_course.grading.batch import grade_folder
from transformer_course.grading.course import find_course_root
from transformer_course.grading.nbgrader_backend import NbgraderBackend

ASSIGNMENT = "04-attention"


def run_alone(root: Path, notebook: Path) -> float:
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()
    return time.perf_counter() - start


def grade_one(root: Path, notebook: Path, work: Path) -> tuple[float, float]:
    """(set-up seconds, seconds to grade one submission) for a fresh grading run."""
    subs = work / "subs"
    (subs / "student").mkdir(parents=True)
    (subs / "student" / notebook.name).write_bytes(notebook.read_bytes())
    start = time.perf_counter()
    NbgraderBackend(root, ASSIGNMENT, work / "setup-only").prepare()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    results = grade_folder(root, ASSIGNMENT, subs, work / "out", progress=False)
    total = time.perf_counter() - start
    assert results[0].total == results[0].max_total, "the solution should get full marks"
    return setup, total - setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = find_course_root(Path(__file__).parent)
    (notebook,) = sorted((root / "solutions" / ASSIGNMENT).glob("*.ipynb"))
    alone, setups, graded = [], [], []
    for _ in range(args.repeats):
        alone.append(run_alone(root, notebook))
        with tempfile.TemporaryDirectory() as work:
            setup, seconds = grade_one(root, notebook, Path(work))
        setups.append(setup)
        graded.append(seconds)
    a, g, s = statistics.median(alone), statistics.median(graded), statistics.median(setups)
    print(f"notebook {notebook.relative_to(root)}, median of {args.repeats} runs")
    print(f"  execute alone (nbclient)          {a:6.2f} s")
    print(f"  grade one submission (nbgrader)   {g:6.2f} s   ratio {g / a:.2f}x")
    print(f"  one-time set-up per grading run   {s:6.2f} s")


if __name__ == "__main__":
    main()
