"""Grading a whole class: the hardened grader against plain `nbgrader autograde`.

Generates a class of submissions across every chapter (for each chapter: the solution, the
blank notebook, each typical wrong answer, the forbidden shortcut, cycled until there are
``--per-chapter`` of them), then, in the same run and on the same files:

1. executes each submitted notebook alone with nbclient, one after the other (bare execution:
   what running the students' code costs before any grading);
2. grades the class with plain ``nbgrader autograde`` (the README's commands, one assignment at a
   time; ``generate_assignment`` is timed apart, as instructors run it once at release);
3. grades the class with ``transformer-course grade`` (sandboxed), one submission at a time and
   one per core.

It prints the throughput of each grader, the hardened grader's as a ratio to nbgrader's (the
target is >= 3x on 2 cores), the per-submission overhead of grading over bare execution, where the
hardened grader's time goes per submission (what checking every exercise in a process of its own,
with hidden inputs per student, costs), and checks that both graders gave every submission the
same total.

    python bench/bench_class.py [--per-chapter 6] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from course_helpers import ROOT, nbgrader_grade_class, release_path, solution_path, write_submission  # noqa: E402
from transformer_course.exercises import for_assignment as exercises_of  # noqa: E402
from transformer_course.grading.batch import grade_folder  # noqa: E402
from transformer_course.grading.sandbox import sandbox_problem  # noqa: E402
from wrong_answers import by_assignment  # noqa: E402


def generate_class(folder: Path, per_chapter: int) -> dict[str, list[tuple[str, Path]]]:
    """``{assignment: [(student, notebook), ...]}``, written under ``folder/<assignment>/``."""
    chapters = {}
    for assignment, module in sorted(by_assignment().items()):
        name = solution_path(assignment).name
        kinds = [("full", {}), ("blank", None),
                 *((f"wrong_{f}", {f: source}) for f, (source, _) in module.WRONG.items()),
                 ("forbidden", {module.FORBIDDEN[0]: module.FORBIDDEN[1]})]
        students = []
        for index in range(per_chapter):
            kind, replace = kinds[index % len(kinds)]
            student = f"s{index:02d}_{kind}"
            path = folder / assignment / student / name
            if replace is None:
                path.parent.mkdir(parents=True)
                shutil.copy(release_path(assignment), path)
            else:
                write_submission(path, assignment, **replace)
            students.append((student, path))
        chapters[assignment] = students
    return chapters


def execute_alone(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute()


def nbgrader_class(work: Path, chapters: dict) -> tuple[float, float, dict[tuple[str, str], float]]:
    """(set-up seconds, autograde seconds, {(assignment, student): total}) for plain nbgrader."""
    notebooks = {assignment: dict(students) for assignment, students in chapters.items()}
    scores, seconds = nbgrader_grade_class(work, notebooks)
    totals = {key: sum(points.values()) for key, points in scores.items()}
    return seconds["generate_assignment"], seconds["autograde"], totals


def hardened_class(work: Path, chapters: dict, jobs: int, timings: dict[str, float] | None = None
                   ) -> tuple[float, dict[tuple[str, str], float]]:
    mode = "sandbox" if sandbox_problem() is None else "unsandboxed"
    class_folder = next(iter(next(iter(chapters.values()))))[1].parents[2]
    totals = {}
    start = time.perf_counter()
    for assignment in chapters:
        results = grade_folder(ROOT, assignment, class_folder / assignment, work / "out" / assignment,
                               progress=False, mode=mode, jobs=jobs, timings=timings)
        totals.update({(assignment, r.student): r.total for r in results})
    return time.perf_counter() - start, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-chapter", type=int, default=6, help="submissions per chapter (default 6)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="hardened grader's parallel runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        work = Path(tmp)
        chapters = generate_class(work / "class", args.per_chapter)
        count = sum(len(s) for s in chapters.values())
        print(f"class: {count} submissions, {args.per_chapter} per chapter in {len(chapters)} chapters; "
              f"{os.cpu_count()} cores; hardened grader with {args.jobs} jobs "
              f"({'sandboxed' if sandbox_problem() is None else 'UNSANDBOXED: no bubblewrap here'})")

        start = time.perf_counter()
        for students in chapters.values():
            for _, path in students:
                execute_alone(path)
        bare = time.perf_counter() - start
        print(f"  bare execution (nbclient, one by one)   {bare:7.1f} s   {bare / count:5.2f} s per submission")

        setup, plain, plain_totals = nbgrader_class(work / "nbgrader", chapters)
        print(f"  nbgrader autograde                      {plain:7.1f} s   {plain / count:5.2f} s per submission"
              f"   {60 * count / plain:5.1f} per minute   (generate_assignment, once: {setup:.1f} s)")

        timings: dict[str, float] = {}
        one_job, _ = hardened_class(work / "one-job", chapters, 1, timings)
        print(f"  transformer-course grade, 1 job          {one_job:7.1f} s   {one_job / count:5.2f} s per submission"
              f"   {60 * count / one_job:5.1f} per minute")
        hardened, totals = hardened_class(work, chapters, args.jobs)
        print(f"  transformer-course grade, {args.jobs} jobs         {hardened:7.1f} s   "
              f"{hardened / count:5.2f} s per submission   {60 * count / hardened:5.1f} per minute")

        print(f"\nthroughput, hardened ({args.jobs} jobs) / nbgrader autograde: {plain / hardened:.2f}x "
              "(target >= 3x)")
        print(f"  with 1 job: {plain / one_job:.2f}x")
        print(f"per-submission cost over bare execution (one at a time): nbgrader {(plain - bare) / count:+.2f} s, "
              f"hardened {(one_job - bare) / count:+.2f} s (it runs the answer cells in a sandbox, not the "
              "notebook's demo and test cells, and checks outside)")
        exercises = sum(len(exercises_of(a)) for a in chapters) * args.per_chapter
        print(f"where the hardened grader's time goes (1 job; per submission, {exercises / count:.1f} exercises "
              "each, every exercise checked in a process of its own):")
        for phase, seconds in sorted(timings.items()):
            print(f"  {phase:<62} {seconds / count:6.3f} s")
        differ = [key for key in totals if totals[key] != plain_totals.get(key)]
        print(f"same total from both graders: {count - len(differ)} of {count}"
              + (f"; differ: {differ}" if differ else ""))


if __name__ == "__main__":
    main()
