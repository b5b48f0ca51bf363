"""Every registered exercise, whatever its chapter: the solution passes, typical mistakes fail for
the right reason, the registry and the solution notebook agree, and the visible checks need no
reference implementation. (Fast: answer cells run as plain Python, no notebooks or kernels.)"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
import torch

from course_helpers import ROOT, solution_code, solution_module
from transformer_course import exercises
from transformer_course.checks import check
from transformer_course.exercises import ExerciseFailure
from transformer_course.exercises.compare import normalised
from transformer_course.exercises.running import with_globals
from transformer_course.grading import hidden_tests
from transformer_course.grading.course import assignments
from transformer_course.grading.hardened import visible_cases
from transformer_course.grading.hidden import grade
from transformer_course.grading.release import registry_problems

ASSIGNMENTS = assignments(ROOT)
ALL = [pytest.param(e, id=e.function) for e in exercises.ALL]


def test_every_assignment_has_exercises_and_every_exercise_an_assignment():
    assert ASSIGNMENTS, "no assignment under solutions/"
    for assignment in ASSIGNMENTS:
        assert exercises.for_assignment(assignment), f"{assignment} has no registered exercise"
    for exercise in exercises.ALL:
        assert exercise.assignment in ASSIGNMENTS, f"{exercise.function}: no solutions/{exercise.assignment}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_registry_and_solution_notebook_agree(assignment):
    assert registry_problems(ROOT, assignment) == []


@pytest.mark.parametrize("exercise", ALL)
def test_the_solution_passes_visible_and_hidden_checks(tmp_path, exercise, capsys):
    module = solution_module(tmp_path, exercise.assignment)
    name = exercise.function
    check(name, getattr(module, name))
    grade(name, vars(module))
    out = capsys.readouterr().out
    assert f"✓ {name}: all" in out and "visible checks passed" in out


@pytest.mark.parametrize("exercise", ALL)
def test_each_typical_mistake_fails_its_exercise_for_the_right_reason(tmp_path, exercise):
    name = exercise.function
    assert hidden_tests.get(exercise.function).mistakes, f"{name} lists no typical mistakes"
    for mistake in hidden_tests.get(exercise.function).mistakes:
        if exercise.is_module:
            assert isinstance(mistake.fn, type), f"{name}: a module exercise's mistakes are classes"
        module = solution_module(tmp_path, exercise.assignment)
        setattr(module, name, mistake.fn)  # the mistake, dropped in as the student's answer
        with pytest.raises(ExerciseFailure) as caught:
            grade(name, vars(module))
        message = str(caught.value)
        for wrong_reason in ("should be a", "not implemented", "is not defined", "earns no points"):
            assert wrong_reason not in message, f"{name}: mistake {mistake.hint!r} failed with {message!r}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_visible_checks_need_no_reference_implementation(tmp_path, assignment):
    """The visible checks import no reference module: they give away no answer.

    (A notebook's setup cell may import an earlier chapter's reference class that the exercises
    build on, e.g. chapter 7's layers use chapter 5's MultiHeadAttention, listed in the
    exercise's ``uses``; the checks themselves must add nothing.)"""
    names = [e.function for e in exercises.for_assignment(assignment)]
    (tmp_path / "sol.py").write_text(solution_code(assignment), encoding="utf-8")
    code = f"""
import importlib.util, sys
from transformer_course.checks import check
from transformer_course.exercises.forbidden import is_reference_module
spec = importlib.util.spec_from_file_location("sol", {str(tmp_path / 'sol.py')!r})
sol = importlib.util.module_from_spec(spec); spec.loader.exec_module(sol)
before = set(sys.modules)
for name in {names!r}:
    check(name, getattr(sol, name))
loaded = sorted(m for m in set(sys.modules) - before if is_reference_module(m))
assert not loaded, f"the visible checks loaded reference modules: {{loaded}}"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_the_registry_imports_no_reference_module():
    """Importing the checks (and so every chapter's exercises) loads no reference module:
    references are named by strings and loaded only when grading."""
    code = (
        "import sys\n"
        "import transformer_course.checks\n"
        "from transformer_course.exercises.forbidden import is_reference_module\n"
        "loaded = sorted(m for m in sys.modules if is_reference_module(m) and m != 'transformer_course')\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", f"reference modules loaded by the registry: {result.stdout}"


def _visible_failure(exercise, fn) -> str | None:
    """The message of ``fn``'s visible check, as the notebook's check() gives it, with the references
    of the exercises it builds on in their places (as the grader has them); None if it passes."""
    isolated = with_globals(fn, {name: hidden_tests.get(name).load_reference() for name in exercise.uses})
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check(exercise.function, isolated)
    except ExerciseFailure as failure:
        return str(failure)
    return None


@pytest.mark.parametrize("exercise", ALL)
def test_each_typical_mistake_fails_its_own_visible_checks_by_name(exercise):
    """Every typical mistake in the registry fails its own exercise's visible checks, and the
    message names it (its hint), or names a mistake the visible inputs cannot tell from it (one
    whose check fails with the same message, but for the numbers in it). So a student learns their
    mistake in the notebook, and a new mistake without a visible check that catches it fails here."""
    mistakes = hidden_tests.get(exercise.function).mistakes
    messages = [_visible_failure(exercise, m.answer(exercise.function)) for m in mistakes]
    for mistake, message in zip(mistakes, messages):
        assert message is not None, f"{exercise.function}: the visible checks let through {mistake.hint!r}"
        if mistake.hint in message:
            continue
        twins = [other.hint for other, theirs in zip(mistakes, messages) if other is not mistake and theirs
                 and normalised(theirs) == normalised(message) and other.hint in message]
        assert twins, f"{exercise.function}: the mistake {mistake.hint!r} is not named:\n{message}"


def test_visible_and_hidden_cases_have_labels_of_their_own():
    """A failure on a visible call names the mistake recorded on that call, looked up by its
    label (in the notebook and inside the grader's sandbox alike): no hidden case may share one."""
    for exercise in exercises.ALL:
        visible = {case.label for case in visible_cases(exercise).cases}
        cases = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(0))
        hidden = {case.label for case in cases}
        assert not visible & hidden, f"{exercise.function}: {sorted(visible & hidden)}"
