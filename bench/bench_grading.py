"""How much grading costs over just running the notebook.

Times, in the same run, (a) executing the solution notebook alone with nbclient and (b) grading
one submission of it with `transformer-course grade`, both ways: plain nbgrader (copy, execute with
the hidden tests, save to the gradebook, read back, write reports) and the hardened grader (rebuild
the notebook, run the probe in a sandbox, compare outside), and prints each as a ratio to (a).
Each grader's one-time set-up per run (registering the assignment with nbgrader; drawing the
hidden inputs and the reference outputs) is timed separately.

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
from transformer_course.grading.hardened import HardenedBackend
from transformer_course.grading.nbgrader_backend import NbgraderBackend
from transformer_course.grading.sandbox import sandbox_problem

ASSIGNMENT = "04-attention"


def run_alone(root: Path, notebook: Path) -> float:
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()
    return time.perf_counter() - start


def grade_one(root: Path, notebook: Path, work: Path, mode: str) -> tuple[float, float]:
    """(set-up seconds, seconds to grade one submission) for a fresh grading run."""
    subs = work / "subs"
    (subs / "student").mkdir(parents=True)
    (subs / "student" / notebook.name).write_bytes(notebook.read_bytes())
    backend = (NbgraderBackend(root, ASSIGNMENT, work / "setup-only") if mode == "nbgrader"
               else HardenedBackend(root, ASSIGNMENT, work / "setup-only", sandboxed=mode == "sandbox"))
    start = time.perf_counter()
    backend.prepare()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    results = grade_folder(root, ASSIGNMENT, subs, work / "out", progress=False, mode=mode)
    total = time.perf_counter() - start
    assert results[0].total == results[0].max_total, "the solution should get full marks"
    return setup, total - setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = find_course_root(Path(__file__).parent)
    (notebook,) = sorted((root / "solutions" / ASSIGNMENT).glob("*.ipynb"))
    modes = ["nbgrader", "sandbox" if sandbox_problem() is None else "unsandboxed"]
    alone: list[float] = []
    setups: dict[str, list[float]] = {m: [] for m in modes}
    graded: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits all alike
        alone.append(run_alone(root, notebook))
        for mode in modes:
            with tempfile.TemporaryDirectory() as work:
                setup, seconds = grade_one(root, notebook, Path(work), mode)
            setups[mode].append(setup)
            graded[mode].append(seconds)
    a = statistics.median(alone)
    print(f"notebook {notebook.relative_to(root)}, median of {args.repeats} runs")
    print(f"  execute alone (nbclient)                {a:6.2f} s")
    for mode in modes:
        g, s = statistics.median(graded[mode]), statistics.median(setups[mode])
        print(f"  grade one submission ({mode:11s})   {g:6.2f} s   ratio {g / a:.2f}x   "
              f"(one-time set-up per run {s:.2f} s)")


if __name__ == "__main__":
    main()
