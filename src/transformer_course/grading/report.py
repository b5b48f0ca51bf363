"""Writing grading results: grades.csv, results.json, a feedback page per student, a summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .. import exercises
from .results import PASSED, StudentResult
from .submissions import safe_id


def exercise_titles(assignment: str) -> dict[str, str]:
    """grade_id -> the title shown for it, e.g. 'test_softmax' -> 'softmax'."""
    return {e.grade_id: f"{e.function}" for e in exercises.for_assignment(assignment)}


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula: a cell starting with = + - @ (or a
    tab or carriage return) gets a leading apostrophe, the usual escape (OWASP's CSV injection
    advice)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(path: Path, assignment: str, results: list[StudentResult]) -> None:
    """grades.csv: student, id (the feedback page's name), total, max_total, then one column per
    grade_id."""
    grade_ids = [e.grade_id for e in exercises.for_assignment(assignment)]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "id", "total", "max_total", *grade_ids])
        for r in results:
            points = {e.grade_id: e.points for e in r.exercises}
            writer.writerow(
                [spreadsheet_safe(r.student), spreadsheet_safe(r.id or safe_id(r.student)), f"{r.total:g}",
                 f"{r.max_total:g}", *(f"{points.get(g, 0):g}" for g in grade_ids)]
            )


def write_json(path: Path, assignment: str, results: list[StudentResult], **run: object) -> None:
    """results.json: every student's per-exercise score, status and message, and how the run
    was made (``run``: the grading mode, the seed of the hidden inputs)."""
    data = {"assignment": assignment, "run": run, "students": [r.to_dict() for r in results]}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_feedback(folder: Path, assignment: str, results: list[StudentResult]) -> None:
    """One HTML page per student: each exercise's score and message, never the hidden tests."""
    env = Environment(
        loader=PackageLoader("transformer_course.grading", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    template = env.get_template("feedback.html.j2")
    titles = exercise_titles(assignment)
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        page = template.render(assignment=assignment, result=r, titles=titles)
        (folder / f"{r.id or safe_id(r.student)}.html").write_text(page, encoding="utf-8")


def feedback_text(assignment: str, result: StudentResult, name: str | None = None) -> str:
    """The feedback page's content as plain text (what `transformer-course check` prints):
    the score, then each exercise's points and, where points were lost, the message."""
    titles = exercise_titles(assignment)
    lines = [f"{name or result.student} ({assignment}): {result.total:g} / {result.max_total:g} points", ""]
    if result.error:
        lines += [f"could not be graded: {result.error}", ""]
    for e in result.exercises:
        mark = "✓" if e.status == PASSED else "✗"
        lines.append(f"{mark} {titles.get(e.grade_id, e.grade_id)}: {e.points:g} / {e.max_points:g}")
        if e.status != PASSED and not result.error:
            lines.append("    " + e.message.replace("\n", "\n    "))
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def summary_table(assignment: str, results: list[StudentResult]) -> str:
    """A plain-text table: one row per student, one column per exercise, and what went wrong."""
    exs = exercises.for_assignment(assignment)
    headers = ["student", "total", *(e.function for e in exs), "first problem"]
    rows = []
    for r in results:
        points = {e.grade_id: e for e in r.exercises}
        problem = r.error or next(
            (f"{e.grade_id}: {e.message.splitlines()[0] if e.message else e.status}"
             for e in r.exercises if e.status != PASSED), "")
        rows.append([
            r.student, f"{r.total:g}/{r.max_total:g}",
            *(f"{points[e.grade_id].points:g}" if e.grade_id in points else "-" for e in exs),
            problem[:70],
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
