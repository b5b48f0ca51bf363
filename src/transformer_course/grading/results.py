"""What grading produces: a score and a message per exercise, per student."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ..exercises.compare import shown

PASSED, FAILED, ERROR = "passed", "failed", "error"


MAX_MESSAGE_CHARS = 8000  # one message in a report (a traceback included); the checks write under 2000


def printable(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` safe to print and to write as UTF-8: control characters (but newlines and tabs),
    lone surrogates and invisible text movers are written as escapes (``\\x1b``, ``\\ud800``), and
    shortened to ``limit`` characters (a message quoting a student's megabyte-long value would make every report as
    long). Everything that came from a student (a message, a cell's error, a file name) goes
    through this before it reaches a report: the same escapes as the checks' own messages
    (:func:`~transformer_course.exercises.compare.shown`), with the reports' longer limit."""
    return shown(text, limit)


@dataclass
class ExerciseResult:
    """One exercise of one student."""

    grade_id: str  # e.g. "test_softmax"
    points: float
    max_points: float
    status: str  # PASSED, FAILED or ERROR (the exercise could not be graded at all)
    message: str = ""


@dataclass
class StudentResult:
    """One student's submission: per-exercise results, or an error that stopped grading."""

    student: str
    source: str  # the submitted file, relative to the submissions folder
    exercises: list[ExerciseResult] = field(default_factory=list)
    error: str | None = None  # set when the submission as a whole could not be graded
    notes: list[str] = field(default_factory=list)  # things the instructor should know
    # A distinct, file-safe id for this student in this run: names the feedback page, seeds the
    # hidden inputs. Two names that differ only in accents or odd characters get different ids.
    id: str = ""

    @property
    def total(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_total(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def make_printable(self) -> StudentResult:
        """Every text in it passed through :func:`printable` (in place; returns itself)."""
        self.student, self.source = printable(self.student), printable(self.source)
        self.error = printable(self.error) if self.error else self.error
        self.notes = [printable(n) for n in self.notes]
        for e in self.exercises:
            e.message = printable(e.message)
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "max_total": self.max_total}


def error_result(result: StudentResult, exercises: Iterable, message: str) -> StudentResult:
    """``result`` as a submission that could not be graded at all: every exercise of the
    assignment (registry entries) gets 0 points, status ERROR and ``message``."""
    result.error = message
    result.exercises = [ExerciseResult(e.grade_id, 0.0, float(e.points), ERROR, message) for e in exercises]
    return result
