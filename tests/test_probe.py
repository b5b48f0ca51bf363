"""Inside the grading sandbox, as the student's code sees it: what each exercise's process can reach.

Each test grades a chapter-4 notebook whose answers *report* what they find (as the numbers they
return) instead of computing attention, and reads those numbers straight from the probe's record.
So the tests see the sandbox from inside, the way an attacker would, and check that the trust
boundary holds: the exercise's own answer is nowhere, the trusted zygote cannot be traced or read,
the grader's files for other exercises are closed, and nothing of one exercise's process reaches
the next.
"""

from __future__ import annotations

import nbformat
import pytest
import torch

from course_helpers import ROOT, solution_path
from transformer_course.grading.canonical import canonicalise, grade_id_of
from transformer_course.grading.hardened import HardenedBackend, prepare_exercise, student_seed
from transformer_course.grading.sandbox import Limits, sandbox_problem

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(sandbox_problem()), reason=f"needs the sandbox: {sandbox_problem()}")]

CH04 = "04-attention"


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    grader = HardenedBackend(ROOT, CH04, tmp_path_factory.mktemp("probe"), seed=7, limits=Limits(wall_seconds=30))
    grader.prepare()
    return grader


def first_outputs(backend, **answers: str) -> dict[str, list]:
    """Grade the solution notebook with ``answers`` replaced; each exercise's first call's outputs
    as plain lists (or the failure message)."""
    nb = nbformat.read(solution_path(CH04), as_version=4)
    for cell in nb.cells:
        if grade_id_of(cell) in answers:
            cell.source = answers[grade_id_of(cell)]
    canonical = canonicalise(nb, backend.pristine)
    prepared = [prepare_exercise(e, student_seed(backend.seed, "probe"), backend.visible[e.function])
                for e in backend.exercises]
    probed = backend._probe(backend.workdir / "runs" / "probe", canonical, prepared)
    found = {}
    for function, record in probed.records.items():
        assert isinstance(record, dict), record
        call = record["calls"][0] if record["calls"] else {"failure": record.get("failure")}
        found[function] = (call["failure"] if "failure" in call
                           else [o.tolist() if isinstance(o, torch.Tensor) else o for o in call["outputs"]])
    found.update({f: f"stopped: {why}" for f, why in probed.stopped.items()})
    return found


REPORTING = '''
import os, sys, torch

def {name}(*args, **kwargs):
    return torch.tensor([float(x) for x in findings()], dtype=args[0].dtype)
'''


def reporting(name: str, findings: str) -> str:
    """An answer whose first output lists what ``findings`` (code of a function) found."""
    return findings + REPORTING.format(name=name)


def test_the_probe_cannot_be_traced_or_read(backend):
    findings = '''
def findings():
    import os
    parent = os.getppid()
    results = []
    for path in (f"/proc/{parent}/mem", f"/proc/{parent}/environ", f"/proc/{parent}/fd/0"):
        try:
            open(path, "rb").read(1)
            results.append(1)
        except OSError:
            results.append(0)
    # The numbers of its open files may be listed; none of them may be followed or opened.
    try:
        numbers = os.listdir(f"/proc/{parent}/fd")
    except OSError:
        numbers = []
    reached = 0
    for number in numbers:
        for attempt in (os.readlink, lambda p: open(p, "rb").read(1)):
            try:
                attempt(f"/proc/{parent}/fd/{number}")
                reached += 1
            except OSError:
                pass
    results.append(reached)
    return results
'''
    found = first_outputs(backend, softmax=reporting("softmax", findings))
    assert found["softmax"][0] == [0.0, 0.0, 0.0, 0.0], found["softmax"]


def test_an_exercise_process_holds_only_its_own_files(backend):
    """Descriptors open while the student's code runs: stdin (the null device), stdout, stderr,
    its own result file and the pipe it reports steps on. No job, none of another exercise's."""
    findings = '''
def findings():
    import os
    kinds = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        kinds.append(int(name))
    return kinds
'''
    found = first_outputs(backend, attention_scores=reporting("attention_scores", findings))
    fds = found["attention_scores"][0]
    assert fds[:3] == [0.0, 1.0, 2.0] and len(fds) <= 6, fds  # + result, pipe (+ the listing's own)


def test_no_module_of_the_exercises_answers_is_importable(backend):
    findings = '''
def findings():
    import importlib
    names = ["transformer_course.attention", "transformer_course.grading.hidden_tests",
             "transformer_course.grading.hidden_tests.ch04_attention", "transformer_course.grading.hardened",
             "transformer_course.multihead", "transformer_course.model"]
    found = []
    for name in names:
        try:
            importlib.import_module(name)
            found.append(1)
        except Exception:
            found.append(0)
    return found
'''
    found = first_outputs(backend, softmax=reporting("softmax", findings))
    assert found["softmax"][0] == [0.0] * 6, found["softmax"]


def test_the_references_an_exercise_builds_on_carry_nothing_else(backend):
    """sdpa is checked with the reference softmax and score matrix in place: their module, globals
    and package hold no attention."""
    answer = '''
import sys, torch

def scaled_dot_product_attention(q, k, v, mask=None):
    places = [softmax.__globals__, attention_scores.__globals__,
              vars(sys.modules.get(softmax.__module__, sys)),
              vars(sys.modules.get("transformer" + "_course", sys))]  # (in pieces: the look at the source)
    found = [float(any("scaled_dot_product_attention" in p for p in places)),
             float(sorted(k for k in softmax.__globals__ if not k.startswith("__")) != [
                 "annotations", "attention_scores", "math", "softmax", "torch"]),
             float(len(softmax.__globals__))]
    weights = torch.tensor(found, dtype=q.dtype)
    return weights, weights
'''
    found = first_outputs(backend, scaled_dot_product_attention=answer)
    first, _ = found["scaled_dot_product_attention"]
    assert first[:2] == [0.0, 0.0], (first, found)


def test_nothing_one_exercise_leaves_reaches_the_next(backend):
    """The first exercise's process writes files and starts a process; the second finds neither."""
    leave = '''
import os, subprocess, sys, torch
open("left-behind.txt", "w").write("x")
open("/tmp/left-behind.txt", "w").write("x")
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)

def softmax(x, dim=-1):
    return torch.zeros_like(x)
'''
    findings = '''
def findings():
    import os
    sleepers = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                sleepers += b"time.sleep(300)" in open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                pass
    return [os.path.exists("left-behind.txt"), os.path.exists("/tmp/left-behind.txt"), sleepers]
'''
    found = first_outputs(backend, softmax=leave, attention_scores=reporting("attention_scores", findings))
    # the softmax cell runs in the second process too (every process runs all cells), so it made
    # its own file and sleeper there: one each, not two
    assert found["attention_scores"][0] == [1.0, 1.0, 1.0], found


def test_each_student_gets_other_hidden_inputs():
    assert student_seed(7, "alice") != student_seed(7, "bob")
    assert student_seed(7, "alice") == student_seed(7, "alice")
    assert student_seed(7, "alice") != student_seed(8, "alice")


def test_the_sandbox_package_holds_only_the_student_side(backend):
    files = sorted(str(p.relative_to(backend.package)) for p in backend.package.rglob("*.py"))
    assert "transformer_course/grading/probe.py" in files
    reference_or_grader = {"transformer_course/attention.py", "transformer_course/grading/hardened.py",
                           "transformer_course/grading/hidden.py", "transformer_course/grading/slices.py"}
    assert not [f for f in files if "hidden_tests" in f or f in reference_or_grader], files
    assert (ROOT / "src" / "transformer_course" / "attention.py").is_file()  # it exists, outside
