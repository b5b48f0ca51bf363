"""The course's commands: ``release`` and ``grade`` for instructors, ``check`` for self-learners.

Also runnable as ``python -m transformer_course ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _release(args: argparse.Namespace) -> int:
    from .grading.course import find_course_root
    from .grading.release import release

    root = find_course_root()
    for path in release(root, args.assignment or None):
        for nb in sorted(path.glob("*.ipynb")):
            print(f"wrote {nb.relative_to(root)}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from .grading.batch import grade_folder, print_summary
    from .grading.course import find_course_root

    root = find_course_root()
    submissions = Path(args.submissions)
    if not (submissions.is_dir() or submissions.suffix.lower() == ".zip" and submissions.is_file()):
        print(f"error: {submissions} is not a folder or a .zip of submissions "
              "(<student>/<notebook>.ipynb or <student>.ipynb)", file=sys.stderr)
        return 2
    out = Path(args.out)
    mode = "nbgrader" if args.nbgrader else "unsandboxed" if args.unsandboxed else "sandbox"
    if mode == "sandbox" and not args.quiet:
        from .grading.sandbox import limits_in_force, sandbox_problem

        if sandbox_problem() is None:
            for line in limits_in_force():
                print(f"sandbox limits per submission, {line}", file=sys.stderr)
    results = grade_folder(root, args.assignment, submissions, out, progress=not args.quiet, mode=mode,
                           jobs=args.jobs, seed=args.seed, timeout=args.timeout)
    print_summary(args.assignment, results, out)
    return 0


def _check(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from .grading.batch import grade_folder
    from .grading.canonical import grade_id_of, read_notebook
    from .grading.course import assignments, find_course_for
    from .grading.report import feedback_text

    notebook = Path(args.notebook)
    if not notebook.is_file():
        print(f"error: {notebook} is not a file", file=sys.stderr)
        return 2
    root = find_course_for(notebook)
    nb, problem, _ = read_notebook(notebook)
    if nb is None:
        print(f"error: {notebook} cannot be graded: {problem}", file=sys.stderr)
        return 2
    ids = {grade_id_of(c) for c in nb.cells} - {None}
    candidates = [a for a in assignments(root) if {e.function for e in exercises_of(a)} & ids]
    assignment = args.assignment or (candidates[0] if len(candidates) == 1 else None)
    if assignment is None:
        print(f"error: cannot tell which assignment {notebook.name} belongs to; pass --assignment "
              f"(one of: {', '.join(assignments(root))})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="transformer-course-check-") as work:
        # Exactly the instructor's path: a class of one, graded by `grade` into a scratch folder.
        (name,) = sorted(p.name for p in (root / "notebooks" / assignment).glob("*.ipynb"))
        class_folder = Path(work) / "submissions"
        (class_folder / "you").mkdir(parents=True)
        shutil.copyfile(notebook, class_folder / "you" / name)
        mode = "unsandboxed" if args.unsandboxed else "sandbox"
        (result,) = grade_folder(root, assignment, class_folder, Path(work) / "grades", progress=False,
                                 mode=mode, jobs=1, timeout=args.timeout)
    print(feedback_text(assignment, result, name=notebook.name))
    return 0 if result.total == result.max_total else 1


def jupyter_session() -> Path | None:
    """The notebook that Jupyter started this kernel for, when it is in the working directory.

    JupyterLab names it in ``JPY_SESSION_NAME``; programs that run notebooks (nbgrader's autograde
    and Validate, the course's tests) do not. Cells that only make sense for a student at work (the
    hand-in check, chapter 8's longer training run) ask this first.
    """
    import os

    session = Path(os.environ.get("JPY_SESSION_NAME") or "nothing")
    if session.suffix != ".ipynb" or session.parent.resolve() != Path.cwd().resolve():
        return None
    return session


def check_notebook(name: str) -> None:
    """What the last cell of every notebook runs: ``transformer-course check`` on this notebook, as saved.

    It runs only in a kernel that Jupyter started for a notebook in the working directory (JupyterLab
    names it in ``JPY_SESSION_NAME``), and checks that notebook (``name`` is its name as released). A
    program that runs the notebook (nbgrader's autograde or Validate, the course's tests) starts its
    kernel otherwise: there the cell only says how to run the check, instead of grading the notebook
    inside its own grading. Without a sandbox on this machine the check runs without one: it is the
    student's own code.
    """
    import subprocess
    import time

    command = f"transformer-course check {name}"
    session = jupyter_session()
    if session is None:
        print(f"Not run here: this cell checks the notebook when you run it yourself in Jupyter. "
              f"In a terminal, in the notebook's folder: {command}")
        return
    notebook = session if session.is_file() else Path(name)
    if not notebook.is_file():
        print(f"error: {notebook.name} is not in {Path.cwd()}: save the notebook, then run this cell again, "
              f"or run in a terminal: transformer-course check <your notebook>")
        return
    from .grading.sandbox import sandbox_problem

    arguments = [sys.executable, "-m", "transformer_course", "check", notebook.name]
    if sandbox_problem():
        arguments.append("--unsandboxed")
        print(f"No sandbox on this machine ({sandbox_problem()}), so your code runs without one: it is your own.")
    saved = notebook.stat().st_mtime
    ago = max(0, round(time.time() - saved))
    print(f"Checking {notebook.name} as saved at {time.strftime('%H:%M:%S', time.localtime(saved))} "
          f"({f'{ago} s' if ago < 120 else f'{ago // 60} min'} ago: changes made since are not checked), "
          "hidden checks included...", flush=True)
    run = subprocess.run(arguments, capture_output=True, text=True, check=False)
    print(run.stdout + run.stderr, end="")


def exercises_of(assignment: str):
    from . import exercises

    return exercises.for_assignment(assignment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="transformer-course",
        description="Tools for the Transformer course: release notebooks, grade a class, check your own work.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    rel = commands.add_parser("release", help="regenerate notebooks/ (student notebooks) from solutions/")
    rel.add_argument("assignment", nargs="*", help="assignments to release (default: all)")
    rel.set_defaults(run=_release)

    grd = commands.add_parser("grade", help="grade a folder of submissions")
    grd.add_argument("assignment", help="the assignment, e.g. 04-attention")
    grd.add_argument("submissions", help="folder or .zip of <student>/<notebook>.ipynb or <student>.ipynb, "
                     "or a Canvas, Moodle or Blackboard download")
    grd.add_argument("--out", default="grades", help="where grades.csv and feedback/ go (default: grades)")
    grd.add_argument("--quiet", action="store_true", help="no progress bar")
    how = grd.add_mutually_exclusive_group()
    how.add_argument("--unsandboxed", action="store_true",
                     help="run student code without the sandbox (only for code you trust; for machines "
                          "without bubblewrap)")
    how.add_argument("--nbgrader", action="store_true",
                     help="grade with plain `nbgrader autograde` instead (student code runs unsandboxed)")
    grd.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: CPU cores)")
    grd.add_argument("--seed", type=int, default=None,
                     help="seed of the hidden inputs (default: a fresh secret one per run, kept in results.json)")
    grd.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="wall-clock limit of one submission's run in the sandbox (default: 180); a "
                          "run that hangs is stopped and run again without the cell or exercise that hung")
    grd.set_defaults(run=_grade)

    chk = commands.add_parser(
        "check", help="grade one notebook as the instructor would (hidden checks included), for self-study")
    chk.add_argument("notebook", help="your notebook, e.g. notebooks/04-attention/attention.ipynb")
    chk.add_argument("--assignment", default=None, help="the assignment (default: found from the notebook)")
    chk.add_argument("--unsandboxed", action="store_true", help="run without the sandbox (your own code only)")
    chk.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="wall-clock limit of one exercise's run (default: 180)")
    chk.set_defaults(run=_check)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
