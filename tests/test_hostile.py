"""Hostile and broken submissions, graded in one batch with honest ones (chapter 4).

Every trick below worked against plain nbgrader 0.9.6 (issue 6) or against the hardened grader
before its trust boundary moved (issue 11): rewriting the checks, objects that equal anything,
crashing or hanging the kernel, shadowing numpy, reading other students' work or the hidden
tests, writing outside its folder, leaving processes behind, reaching the network; importing the
course's own helpers, a library call hidden in an added cell, copying a classmate's outputs,
links, pipes and forged results where the grader reads, killing the probe, limits dodged by
forking, names that collide or that a spreadsheet would run. (Searching the whole sandbox for an
answer is tests/test_scavenger.py's, in every chapter.) The whole class goes through
`transformer-course grade` in the sandbox, once, and the tests check that

* honest submissions get exactly the scores plain ``nbgrader autograde`` gives them;
* no other submission gets a point its code did not earn, nor loses one it did: the expected
  points of each are written out below by hand, from what its answers do;
* every failure says what happened, the batch completes, nothing is left running or written,
  nothing outside is read into a report, and the grader's own memory stays under 1 GiB.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import markupsafe
import nbformat
import pytest

from course_helpers import ROOT, answer_sources, nbgrader_autograde, release_path, solution_path
from transformer_course.grading.canonical import grade_id_of
from transformer_course.grading.sandbox import sandbox_problem

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(sandbox_problem()), reason=f"needs the sandbox: {sandbox_problem()}"),
]

CH04 = "04-attention"
NOTEBOOK = solution_path(CH04).name
SEED = 424242  # the run's secret, known here so a test can say what one student's inputs were
FORMULA = '=HYPERLINK("evil.example","click me")'
TIMEOUT = 20  # seconds per sandboxed run: the hanging submissions cost this, twice at most
MARKER = f"hostile-{uuid.uuid4().hex[:12]}"  # names the processes and files the submissions make
SOFTMAX = answer_sources(CH04)["softmax"]
SCORES = answer_sources(CH04)["attention_scores"]
ATTENTION = answer_sources(CH04)["scaled_dot_product_attention"]


def notebook(replace: dict[str, str] | None = None, added: dict[str, str] | None = None,
             edit=None) -> nbformat.NotebookNode:
    """The solution notebook with answers replaced, code cells added after a grade_id, or edited."""
    nb = nbformat.read(solution_path(CH04), as_version=4)
    cells = []
    for cell in nb.cells:
        grade_id = grade_id_of(cell)
        if grade_id in (replace or {}):
            cell.source = replace[grade_id]
        cells.append(cell)
        if grade_id in (added or {}):
            cells.append(nbformat.v4.new_code_cell(added[grade_id]))
    nb.cells = cells
    if edit:
        edit(nb)
    return nb


def stub(grade_id: str) -> str:
    (cell,) = [c for c in nbformat.read(release_path(CH04), as_version=4).cells if grade_id_of(c) == grade_id]
    return cell.source


def duplicate_softmax(nb):
    (index,) = [i for i, c in enumerate(nb.cells) if grade_id_of(c) == "softmax"]
    pasted = copy.deepcopy(nb.cells[index])
    pasted.id = uuid.uuid4().hex[:8]  # JupyterLab gives a pasted cell a new id, and keeps its metadata
    nb.cells.insert(index + 1, pasted)


def delete_test_cell(nb):
    nb.cells = [c for c in nb.cells if grade_id_of(c) != "test_softmax"]


def repeat_markers(nb):
    """A locked test cell of 400 kB of repeated BEGIN lines: a regular expression spent minutes on it."""
    (cell,) = [c for c in nb.cells if grade_id_of(c) == "test_softmax"]
    cell.source = "### BEGIN HIDDEN TESTS\n" * 20_000


def garble_metadata(nb):
    (cell,) = [c for c in nb.cells if grade_id_of(c) == "attention_scores"]
    cell.metadata["nbgrader"] = "garbage"


# --------------------------------------------------------------------------- the class

NAIVE_SOFTMAX = "def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)\n"

HONEST = {  # graded by plain nbgrader too: the scores must be the same
    "honest_full": notebook(),
    "honest_wrong_softmax": notebook({"softmax": NAIVE_SOFTMAX}),
    "honest_unfinished": notebook({"scaled_dot_product_attention": stub("scaled_dot_product_attention")}),
    "honest_exploring": notebook(added={"softmax": "print(softmax(torch.tensor([1.0, 2.0, 3.0])))\nx = 5\n"}),
}

STDERR_SOFTMAX = (
    "import sys, warnings\n\n" + SOFTMAX
    + "\n\n_plain_softmax = softmax\n\n"
    "def softmax(x, dim=-1):\n"
    "    warnings.warn('just a warning')\n"
    "    print('debugging', file=sys.stderr)\n"
    "    return _plain_softmax(x, dim)\n"
)

ALWAYS_EQUAL = (
    "class Yes(torch.Tensor):\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def allclose(self, *args, **kwargs):\n        return True\n"
    "    def __torch_function__(self, func, types, args=(), kwargs=None):\n        return True\n\n"
    "def softmax(x, dim=-1):\n    return torch.zeros_like(x).as_subclass(Yes)\n"
)
EQUAL_OBJECT = (
    "class Anything:\n"
    "    shape = dtype = device = None\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def __getattr__(self, name):\n        return lambda *a, **k: self\n\n"
    "def attention_scores(q, k):\n    return Anything()\n"
)

PATCH_CHECKS = (
    "import torch, transformer_course.checks as checks\n"
    "checks.check = lambda *args, **kwargs: None\n"
    "check = checks.check\n"
    "torch.allclose = lambda *args, **kwargs: True\n"
    "torch.testing.assert_close = lambda *args, **kwargs: None\n"
    "torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)\n"
)

DISPLAYHOOK = "import sys\nsys.displayhook = lambda value: print(7)\nsys.excepthook = lambda *args: print(7)\n"

POISON_AND_EXIT = (  # files that would shadow modules in a later run, then a hard exit
    "for name in ('numpy', 'torch', 'zipfile', 'json'):\n"
    "    open(name + '.py', 'w').write('raise SystemExit(\"shadowed\")')\n"
    "import os\nos._exit(0)\n"
)

OS_EXIT_SOFTMAX = "import os\n\ndef softmax(x, dim=-1):\n    os._exit(1)\n"

SIGINT_LOOP = (
    "import signal\n\n"
    "def attention_scores(q, k):\n"
    "    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):\n"
    "        signal.signal(s, signal.SIG_IGN)\n"
    "    while True:\n        pass\n"
)

HUGE = "def softmax(x, dim=-1):\n    hoard = torch.empty(10 * 1024**3, dtype=torch.uint8)\n" \
       "    return hoard[:1] * 0 + x\n"

SLEEPER = f"[sys.executable, '-c', 'import time; time.sleep(600)', '{MARKER}']"

LEFTOVERS = (  # a process in its own session, and a double-forked daemon
    "import os, subprocess, sys\n"
    f"subprocess.Popen({SLEEPER}, start_new_session=True)\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    f"        os.execv(sys.executable, {SLEEPER})\n"
    "    os._exit(0)\n"
)

FORK_BOMB = (
    "import os, sys\n"
    "for _ in range(100000):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    f"            os.execv(sys.executable, {SLEEPER})\n"
    "    except OSError:\n"
    "        break\n"
)

OUTPUT_FLOOD = "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1024**2)\n"

IMPORTS_REFERENCE = "from transformer_course.attention import softmax\n"
SNEAKY_IMPORT = (
    "import importlib\n\n"
    "attention_scores = importlib.import_module('transformer_course.' + 'attention').attention_scores\n"
)


def network_softmax(port: int) -> str:
    return (
        "import socket\n\n" + SOFTMAX.replace("def softmax(", "def _right(") + "\n\n"
        "def softmax(x, dim=-1):\n"
        f"    for host, p in (('127.0.0.1', {port}), ('pypi.org', 443), ('1.1.1.1', 53)):\n"
        "        try:\n"
        "            socket.create_connection((host, p), timeout=2).close()\n"
        "            return _right(x, dim)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return x\n"
    )


def reading_softmax(paths: list[Path]) -> str:
    """A softmax that runs whatever softmax it can read: another student's, or the solution's."""
    return (
        "import json\n\n"
        "def softmax(x, dim=-1):\n"
        f"    for path in {[str(p) for p in paths]!r}:\n"
        "        try:\n"
        "            cells = json.load(open(path))['cells']\n"
        "        except OSError:\n"
        "            continue\n"
        "        for cell in cells:\n"
        "            if cell['metadata'].get('nbgrader', {}).get('grade_id') == 'softmax':\n"
        "                scope = {'torch': torch}\n"
        "                exec(''.join(cell['source']), scope)\n"
        "                return scope['softmax'](x, dim)\n"
        "    raise FileNotFoundError('nothing to copy')\n"
    )


def writing_cell(targets: list[Path]) -> str:
    return (
        f"for path in {[str(p) for p in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('graded by me: full marks')\n"
        "    except OSError:\n"
        "        pass\n"
    )


LOUD = "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1024**2)\n\n"

COURSE_HELPERS = (  # the first attack: correct code kept in the course's own modules
    "from transformer_course.exercises.ch04_attention import _stable_softmax\n\n"
    "def softmax(x, dim=-1):\n    return _stable_softmax(x, dim)\n"
)
GRADER_SIDE = (
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    from transformer_course.grading.hidden_tests import ch04_attention as side\n"
    "    return side._attend(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, v, mask)\n"
)
REFERENCE_BY_GLOBALS = (  # the reference softmax handed in for sdpa carries its module... does it?
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    found = [value for name, value in softmax.__globals__.items() if name == 'scaled_dot_product_attention']\n"
    "    return found[0](q, k, v, mask)\n"
)
REFERENCE_IN_THREAD = (  # the same, where the old run-time watch did not look
    "import threading\n\n"
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    found = []\n"
    "    look = lambda: found.append(softmax.__globals__.get('scaled_dot_product_attention'))  # noqa: E731\n"
    "    thread = threading.Thread(target=look)\n"
    "    thread.start(); thread.join()\n"
    "    return found[0](q, k, v, mask)\n"
)

LIBRARY_IN_ADDED_CELL = "softmax = torch.softmax\n"
ALIAS_IN_ADDED_CELL = "from torch import softmax\n"

LINKS_AND_PIPES = (  # where the grader used to read: now it reads nothing the sandbox can name
    "import os\n"
    "for name in ('progress.txt', 'results', 'job.pt', 'cells.json', 'softmax.json', 'softmax.npz'):\n"
    "    for make in (lambda p: os.symlink('/etc/passwd', p), os.mkfifo):\n"
    "        try:\n"
    "            make(name)\n"
    "            break\n"
    "        except OSError:\n"
    "            pass\n"
    "os.makedirs('results', exist_ok=True)\n"
)

FORGED_RESULTS = (  # a process left behind overwrites the exercise's result file once it is written
    "import os, struct, time\n"
    "if os.fork() == 0:\n"
    "    header = b'{\"calls\": [{\"outputs\": [{\"tensor\": {\"dtype\": \"float64\", \"array\": \"float64\", '\n"
    "    header += b'\"shape\": [1048576, 1048576], \"offset\": 0, \"nbytes\": 8}}]}]}'\n"
    "    bomb = b'TCR1' + struct.pack('<Q', len(header)) + header + b'\\0' * 8\n"
    "    deadline = time.time() + 30\n"
    "    while time.time() < deadline:\n"
    "        for name in os.listdir('/proc/self/fd'):\n"
    "            try:\n"
    "                fd = int(name)\n"
    "                if fd > 2 and os.fstat(fd).st_size > len(bomb):  # the probe's result, written\n"
    "                    os.pwrite(fd, bomb, 0)\n"
    "                    os.ftruncate(fd, len(bomb))\n"
    "            except OSError:\n"
    "                pass\n"
    "        time.sleep(0.001)\n"
    "    os._exit(0)\n"
)

CLOSES_ITS_PIPES = (  # closes every file it holds (the probe's step pipe too), then hangs
    "import os, time\n\n"
    "def softmax(x, dim=-1):\n"
    "    os.closerange(3, 1024)\n"
    "    time.sleep(3600)\n"
)

KILLS_PROBE = "import os, signal\n\ndef softmax(x, dim=-1):\n    os.kill(os.getppid(), signal.SIGKILL)\n"

THREE_HOGS = (  # three processes of 1.5 GiB each: allowed one by one, not together (4 GiB)
    "import os, time\n"
    "hogs = []\n"
    "for _ in range(3):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        hoard = bytearray(1536 * 1024**2)\n"
    "        for i in range(0, len(hoard), 4096):\n"
    "            hoard[i] = 1\n"
    "        time.sleep(2)\n"
    "        os._exit(0)\n"
    "    hogs.append(pid)\n"
    "hog_ends = [os.waitpid(pid, 0)[1] for pid in hogs]\n"
)

FILLS_TMP = (
    "with open('/tmp/filler', 'wb') as f:\n"
    "    for _ in range(1500):\n"
    "        f.write(b'x' * 1024**2)\n"
)


# Found by the independent attack on the new design (see issue 11's closing note):
ALIASED_BOMB = (  # rewrites the probe's writer: every tensor points at the same 60 MB, read as float64
    "import importlib, json, os, struct\n"
    "_probe = importlib.import_module('__' + 'main__')\n"
    "def _bomb(fd, record, blob):\n"
    "    n = 60 * 1024**2\n"
    "    spec = {'tensor': {'dtype': 'float64', 'array': 'uint8', 'shape': [n], 'offset': 0, 'nbytes': n}}\n"
    "    header = json.dumps({'calls': [{'outputs': [{'list': [spec] * 8}]}], 'cell_errors': []}).encode()\n"
    "    os.ftruncate(fd, 0); os.lseek(fd, 0, 0)\n"
    "    os.write(fd, b'TCR1' + struct.pack('<Q', len(header)) + header)\n"
    "    for _ in range(60):\n"
    "        os.write(fd, bytes(1 << 20))\n"
    "_probe.write_result = _bomb\n"
)
HUGE_CELL = "_big = [" + "0," * 3_000_000 + "]\n"  # 6 MB of source: gigabytes to parse
FILLS_ITS_FOLDER = (  # /submission used to be the grader's disk
    "try:\n"
    "    with open('filler', 'wb') as f:\n"
    "        for _ in range(8192):\n"
    "            f.write(b'x' * 1024**2)\n"
    "except OSError:\n"
    "    pass\n"
)
SPINNERS = (  # four processes spinning in sessions of their own: the classmates keep their cores
    "import os, time\n"
    "for _ in range(4):\n"
    "    if os.fork() == 0:\n"
    "        os.setsid()\n"
    "        end = time.time() + 2\n"
    "        while time.time() < end:\n"
    "            pass\n"
    "        os._exit(0)\n"
)
SURROGATE = "def softmax(x, dim=-1):\n    raise ValueError('\\ud800')\n"
ESCAPES = (
    "from transformer_course.exercises import ExerciseFailure\n\n"
    "def attention_scores(q, k):\n"
    # a terminal escape rewriting the summary's line above; a right-to-left override reversing
    # what follows it on the feedback page
    "    raise ExerciseFailure('\\x1b[1F\\x1b[2Khonest_full  0/7    0        0\\x1b[1B \\u202e7/7 lluf')\n"
)
PATCHED_COMPARE = (  # rewrites the course's checking code in its own process
    "import transformer_course.exercises.compare as _compare\n"
    "_plain_call = _compare.call_student\n"
    "_compare.call_student = lambda exercise, fn, case, watch=None: _plain_call(exercise, fn, case)\n"
)
PRIVATE_FILE = "def softmax(x, dim=-1):\n    raise ValueError(open('/etc/shadow').read())\n"


# Found by the second round of the attack:
LIBRARY_FROM_C = "_sm = torch.softmax\n"  # an added cell; the answer calls it from C, through map
MAP_SOFTMAX = "def softmax(x, dim=-1):\n    return next(map(_sm, [x], [dim]))\n"
PATCHED_VIA_SYS_MODULES = (
    "import sys\n"
    "_c = sys.modules['transformer_course.exercises.compare']\n"
    "_plain = _c.call_student\n"
    "_c.call_student = lambda exercise, fn, case, watch=None: () if case.raises else _plain(exercise, fn, case)\n"
)
HUGE_VISIBLE_OUTPUT = (  # a (32 M, 1, 1) output where (2, 5, 7) is expected: checks that broadcast it
    "def attention_scores(q, k):\n"  # would make the grader hold gigabytes
    "    return torch.zeros(32_000_000, 1, 1, dtype=q.dtype)\n"
)


# Found by the third round of the attack:
SLOW_TO_LOOK_AT = "if 0:\n    " + ("~" * 90 + "a,") * 1335 + "\n"  # ~2 syntax-tree nodes a byte, under the caps
FRAME_WALK = (  # reaches the probe's tools through a traceback's frames, to switch the watch off
    "import contextlib\n"
    "def _find(name):\n"
    "    try:\n"
    "        raise ValueError\n"
    "    except ValueError as e:\n"
    "        f = e.__traceback__.tb_frame\n"
    "    while f is not None and name not in f.f_locals:\n"
    "        f = f.f_back\n"
    "    return None if f is None else f.f_locals[name]\n"
)
SOFTMAX_VIA_ATTENTION = (  # attention computes a softmax: identity values, the rows as scores
    "import torch.nn.functional as F\n\n"
    "def softmax(x, dim=-1):\n"
    "    moved = x.movedim(dim, -1)\n"
    "    n = moved.shape[-1]\n"
    "    rows = moved.reshape(-1, 1, n)\n"
    "    zeros, eye = torch.zeros(rows.shape[0], 1, 1, dtype=x.dtype), torch.eye(n, dtype=x.dtype)\n"
    "    out = F.scaled_dot_product_attention(zeros, torch.zeros(rows.shape[0], n, 1, dtype=x.dtype),\n"
    "                                         eye.expand(rows.shape[0], n, n), attn_mask=rows)\n"
    "    return out.reshape(moved.shape).movedim(-1, dim)\n"
)
SYSV_SHM = (  # System V shared memory: no process holds it, so no watchdog could count it (ctypes is
    "_ctypes = __import__('ct' + 'ypes')\n"  # reached past the look at the source: the seccomp filter stops it)
    "_libc = _ctypes.CDLL(None, use_errno=True)\n"
    "_segment = _libc.shmget(0, 1 << 30, 0o1600)\n"
)
REFS_SOFTMAX = (  # torch keeps other copies of softmax (torch._refs, torch._decomp), reached by a
    "import torch._refs\n\n"  # name put together at run time
    "def softmax(x, dim=-1):\n"
    "    return getattr(torch._refs, 'soft' + 'max')(x, dim)\n"
)
RENAMED_COPY = (  # torch's code copied under another name and file: as COPIED_SOURCE below
    "import torch._refs\n"
    "_f = getattr(torch._refs, 'soft' + 'max')\n"
    "while hasattr(_f, '__wr' + 'apped__'):\n    _f = getattr(_f, '__wr' + 'apped__')\n"
    "_code = getattr(_f, '__co' + 'de__').replace(co_filename='<cell>', co_name='f')\n"
    "_g = type(_f)(_code, _f.__globals__)\n"
    "def softmax(x, dim=-1):\n    return _g(x, dim, None)\n"
)
COPIED_SOURCE = (  # torch's Python source for softmax, edited and run as the cell's own code: that is
    # softmax written out in basic operations, as if typed in (copying is for the course's honour
    # code; no look at a process can tell it from the student's own). It keeps its points.
    "import importlib, inspect\n"
    "_f = inspect.unwrap(getattr(importlib.import_module('torch._refs'), 'soft' + 'max'))\n"
    "_ns = dict(_f.__globals__)\n"
    "exec(inspect.getsource(_f).replace('@out_wrapper()', '')\n"
    "     .replace('result_dtype = dtype', 'pass; result_dtype = dtype'), _ns)\n"
    "def softmax(x, dim=-1):\n    return _ns['soft' + 'max'](x, dim)\n"
)
HUGE_MESSAGE = "def softmax(x, dim=-1):\n    raise ValueError(\"'\" * 3_900_000)\n"  # 5x as HTML
HONEST_EXTRAS = (  # what honest students write in cells of their own: none of it costs a point
    "import importlib, sys, time\n"
    "if __name__ == '__main__':\n"
    "    print('matplotlib' in sys.modules)\n"
    "for name in ['torch', 'numpy']:\n"
    "    print(name, importlib.import_module(name).__version__)\n"
    "start = time.perf_counter()\n"
    "x = torch.randn(4, 5)\n"
    "print(torch.allclose(softmax(x), torch.softmax(x, dim=-1)), time.perf_counter() - start)\n"
    "print(sorted(n for n in globals() if not n.startswith('_'))[:5])\n"
    "import types\n"  # looking at a function while debugging (round 6 of the attack: it cost 7 points)
    "print(isinstance(softmax, types.FunctionType), softmax.__code__.co_argcount)\n"
)


def classmate_outputs() -> dict[bytes, list]:
    """honest_full's inputs to softmax in this run (visible and hidden, its seed from SEED and
    its id), each with the reference's output: what a copycat would need."""
    from transformer_course import exercises
    from transformer_course.grading import hidden_tests
    from transformer_course.grading.hardened import prepare_exercise, student_seed, visible_cases

    exercise = exercises.get("softmax")
    reference = hidden_tests.get("softmax").load_reference()
    prepared = prepare_exercise(exercise, student_seed(SEED, "honest_full"), visible_cases(exercise))
    table = {}
    for case in prepared.visible + prepared.hidden:
        (x,) = case.args
        dim = case.kwargs.get("dim", -1)
        key = hashlib.sha256(x.double().numpy().tobytes() + str(dim).encode()).digest()
        table[key] = reference(x, dim).flatten().tolist()
    return table


def copying_softmax(outputs: dict[bytes, list]) -> str:
    """A softmax that looks its input up in another student's hidden inputs and returns that
    student's correct outputs: worth everything when everyone shares one seed, nothing now."""
    table = {key.hex(): value for key, value in outputs.items()}
    return (
        "import hashlib\n\n"
        f"_THEIRS = {table!r}\n\n"
        "def softmax(x, dim=-1):\n"
        "    key = hashlib.sha256(x.double().numpy().tobytes() + str(dim).encode()).hexdigest()\n"
        "    if key in _THEIRS:\n"
        "        return torch.tensor(_THEIRS[key], dtype=x.dtype).reshape(x.shape)\n"
        "    return x * 0\n"
    )


def hostile_class(subs: Path, port: int, outside: list[Path]) -> dict[str, nbformat.NotebookNode]:
    readable = [subs / "honest_full" / NOTEBOOK, ROOT / "solutions" / CH04 / NOTEBOOK,
                solution_path(CH04)]
    return {
        # harmless, but plain nbgrader takes points for them or breaks
        "stderr_warning": notebook({"softmax": STDERR_SOFTMAX}),
        "numpy_beside": notebook(),  # numpy.py and torch.py are put beside it below
        "deleted_test_cell": notebook(edit=delete_test_cell),
        "sys_exit_in_cell": notebook({"softmax": SOFTMAX + "\nimport sys\nsys.exit(0)\n"}),
        # cheating
        "patches_checks": notebook({"softmax": "def softmax(x, dim=-1):\n    return x\n"},
                                   added={"setup": PATCH_CHECKS, "softmax": PATCH_CHECKS}),
        "always_equal": notebook({"softmax": ALWAYS_EQUAL, "attention_scores": EQUAL_OBJECT}),
        "displayhook": notebook({g: stub(g) for g in ("softmax", "attention_scores", "scaled_dot_product_attention")},
                                added={"setup": DISPLAYHOOK}),
        "imports_reference": notebook({"softmax": IMPORTS_REFERENCE, "attention_scores": SNEAKY_IMPORT}),
        "reads_other_files": notebook({"softmax": reading_softmax(readable)}),
        "writes_outside": notebook(added={"scaled_dot_product_attention": writing_cell(outside)}),
        "network": notebook({"softmax": network_softmax(port)}),
        # broken notebooks
        "duplicated_cell": notebook(edit=duplicate_softmax),
        "edited_metadata": notebook(edit=garble_metadata),
        # crashes, hangs and limits
        "os_exit_in_function": notebook({"softmax": OS_EXIT_SOFTMAX}),
        "poisons_then_exits": notebook(added={"scaled_dot_product_attention": POISON_AND_EXIT}),
        "ignores_sigint": notebook({"attention_scores": SIGINT_LOOP}),
        "hangs_in_cell": notebook({"scaled_dot_product_attention": ATTENTION + "\nwhile True:\n    pass\n"}),
        "huge_allocation": notebook({"softmax": HUGE}),
        "leaves_processes": notebook(added={"setup": LEFTOVERS}),
        "fork_bomb": notebook(added={"setup": FORK_BOMB}),
        "output_flood": notebook(added={"softmax": OUTPUT_FLOOD}),
        "loud_answer": notebook({"softmax": LOUD + SOFTMAX}),
        # the trust boundary (issue 11)
        "course_helpers": notebook({"softmax": COURSE_HELPERS, "scaled_dot_product_attention": GRADER_SIDE}),
        "reference_by_globals": notebook({"scaled_dot_product_attention": REFERENCE_BY_GLOBALS}),
        "reference_in_thread": notebook({"scaled_dot_product_attention": REFERENCE_IN_THREAD}),
        "library_in_added_cell": notebook(added={"softmax": LIBRARY_IN_ADDED_CELL}),
        "alias_in_added_cell": notebook(added={"softmax": ALIAS_IN_ADDED_CELL}),
        "links_and_pipes": notebook(added={"setup": LINKS_AND_PIPES}),
        "forged_results": notebook(added={"softmax": FORGED_RESULTS}),
        "kills_probe": notebook({"softmax": KILLS_PROBE}),
        "closes_its_pipes": notebook({"softmax": CLOSES_ITS_PIPES}),
        "three_hogs": notebook(added={"setup": THREE_HOGS}),
        "fills_tmp": notebook(added={"setup": FILLS_TMP}),
        "copies_classmate": notebook({"softmax": copying_softmax(classmate_outputs())}),
        "aliased_bomb": notebook(added={"setup": ALIASED_BOMB}),
        "huge_cell": notebook(added={"setup": HUGE_CELL}),
        "fills_its_folder": notebook(added={"setup": FILLS_ITS_FOLDER}),
        "spinners": notebook(added={"setup": SPINNERS}),
        "surrogate": notebook({"softmax": SURROGATE}),
        "escapes": notebook({"attention_scores": ESCAPES}),
        "patched_compare": notebook(added={"setup": PATCHED_COMPARE}),
        "private_file": notebook({"softmax": PRIVATE_FILE}),
        "library_from_c": notebook({"softmax": MAP_SOFTMAX}, added={"setup": LIBRARY_FROM_C}),
        "patched_via_sys_modules": notebook(added={"setup": PATCHED_VIA_SYS_MODULES}),
        "huge_visible_output": notebook({"attention_scores": HUGE_VISIBLE_OUTPUT}),
        "repeated_markers": notebook(edit=repeat_markers),
        "slow_to_look_at": notebook({"softmax": SLOW_TO_LOOK_AT + SOFTMAX, "attention_scores": SLOW_TO_LOOK_AT + SCORES,
                                     "scaled_dot_product_attention": SLOW_TO_LOOK_AT + ATTENTION}),
        "frame_walk": notebook(added={"setup": FRAME_WALK}),
        "softmax_via_attention": notebook({"softmax": SOFTMAX_VIA_ATTENTION}),
        "refs_softmax": notebook({"softmax": REFS_SOFTMAX}),
        "renamed_copy": notebook({"softmax": RENAMED_COPY}),
        "copied_source": notebook({"softmax": COPIED_SOURCE}),
        "huge_message": notebook({"softmax": HUGE_MESSAGE}),
        "sysv_shm": notebook(added={"setup": SYSV_SHM}),
        "honest_extras": notebook(added={"scaled_dot_product_attention": HONEST_EXTRAS}),
        # names: two that differ only in an accent, one a spreadsheet would run
        "José": notebook(),
        "Jose": notebook({"softmax": NAIVE_SOFTMAX}),
        FORMULA: notebook(),
    }


FULL = {"test_softmax": 2.0, "test_attention_scores": 2.0, "test_scaled_dot_product_attention": 3.0}


def losing(*grade_ids: str) -> dict[str, float]:
    return {k: (0.0 if k.removeprefix("test_") in grade_ids else v) for k, v in FULL.items()}


# What each submission's code earns, written out by hand; and a phrase its feedback must hold
# (in the lost exercise's message, or in the notes where nothing is lost).
EXPECTED = {
    "stderr_warning": (FULL, None),
    "numpy_beside": (FULL, None),
    "deleted_test_cell": (FULL, None),
    "sys_exit_in_cell": (FULL, None),
    # rewriting the course's own check: no exercise of the notebook earns points
    "patches_checks": (losing("softmax", "attention_scores", "scaled_dot_product_attention"), "rewrites `checks`"),
    "always_equal": (losing("softmax", "attention_scores"), "a subclass of torch.Tensor"),
    "displayhook": (losing("softmax", "attention_scores", "scaled_dot_product_attention"), "is not implemented yet"),
    "imports_reference": (losing("softmax", "attention_scores"), "earns no points"),
    "reads_other_files": (losing("softmax"), "nothing to copy"),
    "writes_outside": (FULL, None),
    "network": (losing("softmax"), "3 of 3 entries differ"),  # what it returns without a connection
    "duplicated_cell": (losing("softmax"), "2 cells with the id `softmax`"),
    "edited_metadata": (losing("attention_scores"), "`attention_scores` is missing"),
    "broken_schema": (losing("softmax"), "the answer cell `softmax` is damaged in the file"),
    "os_exit_in_function": (losing("softmax"), "ended while checking `softmax`: it exited with code 1"),
    "poisons_then_exits": (FULL, "a code cell you added stopped the grading run (it ended the Python process"),
    "ignores_sigint": (losing("attention_scores"), "ran out of time"),
    "hangs_in_cell": (losing("scaled_dot_product_attention"),
                      "ended while running the cell `scaled_dot_product_attention`: it ran out of time"),
    "huge_allocation": (losing("softmax"), "raised"),
    "leaves_processes": (FULL, None),
    "fork_bomb": (FULL, None),
    "output_flood": (FULL, "printed more than it may"),
    "loud_answer": (FULL, "printed more than it may"),
    "course_helpers": (losing("softmax", "scaled_dot_product_attention"), "raised"),
    "reference_by_globals": (losing("scaled_dot_product_attention"), "raised IndexError"),
    "reference_in_thread": (losing("scaled_dot_product_attention"), "starts a thread"),
    "library_in_added_cell": (losing("softmax"), "calls torch.softmax"),
    "alias_in_added_cell": (losing("softmax"), "calls torch.softmax"),
    "links_and_pipes": (FULL, None),
    # its added cell runs in every exercise's process (as in a notebook): it forges every result
    "forged_results": (losing("softmax", "attention_scores", "scaled_dot_product_attention"),
                       "could not be read back"),
    "kills_probe": (losing("softmax"), "the run ended while `softmax` was being checked"),
    "closes_its_pipes": (losing("softmax"), "ran out of time"),
    "three_hogs": (FULL, None),
    "fills_tmp": (FULL, None),
    "copies_classmate": (losing("softmax"), "entries differ"),
    # it rewrites the probe's writer, which the look at the source refuses (tests/test_results_reading.py
    # reads such bombs)
    "aliased_bomb": (losing("softmax", "attention_scores", "scaled_dot_product_attention"), "rewrites `_probe`"),
    "huge_cell": (FULL, "were left out"),
    "fills_its_folder": (FULL, None),
    "spinners": (FULL, None),
    "surrogate": (losing("softmax"), "\\ud800"),
    "escapes": (losing("attention_scores"), "\\x1b[1F"),
    "patched_compare": (losing("softmax", "attention_scores", "scaled_dot_product_attention"), "rewrites `_compare`"),
    "private_file": (losing("softmax"), "Permission denied"),
    "library_from_c": (losing("softmax"), "calls torch.softmax"),
    "patched_via_sys_modules": (losing("softmax", "attention_scores", "scaled_dot_product_attention"),
                                "names `transformer_course.exercises.compare`"),
    "huge_visible_output": (losing("attention_scores"), "far more than any check needs"),
    "repeated_markers": (FULL, "you changed the course's cell(s) `test_softmax`"),
    "slow_to_look_at": (FULL, None),
    "frame_walk": (losing("softmax", "attention_scores", "scaled_dot_product_attention"), "which can switch off"),
    "softmax_via_attention": (losing("softmax"), "calls torch.nn.functional.scaled_dot_product_attention"),
    "refs_softmax": (losing("softmax"), "calls torch.softmax"),
    # torch's own Python code run as the cell's: softmax in basic operations, to any check the
    # student's own (the README's threat model; copying is for the honour code)
    "renamed_copy": (FULL, None),
    "copied_source": (FULL, None),
    "huge_message": (losing("softmax"), "more characters left out"),
    "sysv_shm": (FULL, None),
    "honest_extras": (FULL, None),
    "José": (FULL, None),
    "Jose": (losing("softmax"), "contains NaN"),
    FORMULA: (FULL, None),
}

UNREADABLE = {  # whole-submission errors: 0 points and the reason
    "junk_objects": "objects and lists",  # 20 MB of {} would cost the grader 4 GB to read
    "malformed_json": "not valid JSON",
    "empty_file": "the file is empty",
    "wrong_assignment": "none of the cells of assignment 04-attention",
    "huge_saved_output": "Clear Outputs",
}


class CountingServer:
    """A TCP server on the host's loopback that counts who connects (nobody should)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.socket.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join()
        self.socket.close()


# The grade command, reporting the grader process's own peak memory (not its sandboxes').
MEASURED = (
    "import resource, sys\n"
    "from transformer_course.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _leftover_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", MARKER], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The whole class graded in one run; what came out, and the traces it left."""
    subs = tmp_path_factory.mktemp("class")
    out = tmp_path_factory.mktemp("grades")
    outside = [ROOT / f"HACKED-{MARKER}", out / "grades.csv.hacked", Path(f"/tmp/{MARKER}"),
               subs / "honest_full" / NOTEBOOK]
    server = CountingServer()
    try:
        written = {}
        for student, nb in {**HONEST, **hostile_class(subs, server.port, outside)}.items():
            written[student] = subs / student / NOTEBOOK
            written[student].parent.mkdir()
            nbformat.write(nb, written[student])
        (subs / "broken_schema").mkdir()  # a cell nbformat rejects (plain nbgrader stops the batch)
        data = json.loads(nbformat.writes(notebook()))
        (softmax,) = [c for c in data["cells"] if grade_id_of(c) == "softmax"]
        softmax.update(source=42, execution_count="seven")
        (subs / "broken_schema" / NOTEBOOK).write_text(json.dumps(data), encoding="utf-8")
        for shadow in ("numpy", "torch"):
            (subs / "numpy_beside" / f"{shadow}.py").write_text("raise SystemExit('shadowed')\n")
        (subs / "malformed_json.ipynb").write_text('{"cells": [{"cell_type": "code", ', encoding="utf-8")
        (subs / "empty_file.ipynb").write_bytes(b"")
        junk = json.loads(nbformat.writes(notebook()))
        junk["metadata"]["junk"] = [{}] * 6_000_000
        (subs / "junk_objects.ipynb").write_text(json.dumps(junk, separators=(",", ":")), encoding="utf-8")
        (subs / "wrong_assignment.ipynb").write_bytes(solution_path("03-qkv").read_bytes())
        big = notebook()
        big.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 50 * 1024**2)]
        nbformat.write(big, subs / "huge_saved_output.ipynb")
        honest_hash = hashlib.sha256(written["honest_full"].read_bytes()).hexdigest()

        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", MEASURED, "grade", CH04, str(subs), "--out", str(out),
             "--timeout", str(TIMEOUT), "--seed", str(SEED)],
            capture_output=True, text=True, cwd=ROOT, timeout=1200,
        )
        seconds = time.perf_counter() - start
        time.sleep(0.5)
        traces = {
            "leftover_processes": _leftover_processes(),
            "connections": server.connections,
            "written_outside": [str(p) for p in outside[:3] if p.exists()],
            "honest_file_changed": hashlib.sha256(written["honest_full"].read_bytes()).hexdigest() != honest_hash,
        }
    finally:
        server.close()
        subprocess.run(["pkill", "-f", MARKER], capture_output=True)
    assert run.returncode == 0, run.stderr[-3000:]
    # grades.csv escapes a name a spreadsheet would run ('=...): the rows are keyed by the name itself
    rows = {r["student"].removeprefix("'"): r for r in csv.DictReader((out / "grades.csv").open())}
    details = {s["student"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    peak = int(re.search(r"PEAK_RSS_KB (\d+)", run.stderr)[1]) * 1024
    return {"rows": rows, "details": details, "traces": traces, "written": written, "out": out,
            "seconds": seconds, "stdout": run.stdout, "peak_bytes": peak}


def scores(row: dict) -> dict[str, float]:
    return {k: float(row[k]) for k in FULL}


def test_the_batch_completes_with_a_row_per_submission(batch):
    expected = set(HONEST) | set(EXPECTED) | set(UNREADABLE)
    assert set(batch["rows"]) == expected and set(batch["details"]) == expected
    # two hanging submissions cost TIMEOUT each, in parallel with everything else
    assert batch["seconds"] < 600, batch["seconds"]


def test_honest_submissions_get_exactly_their_nbgrader_scores(batch, tmp_path):
    plain = nbgrader_autograde(tmp_path, CH04, {s: batch["written"][s] for s in HONEST})
    for student in HONEST:
        assert scores(batch["rows"][student]) == plain[student], student
    assert plain["honest_full"] == FULL  # the comparison is not between two zeros


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_no_submission_gains_or_loses_a_point(batch, student):
    expected, phrase = EXPECTED[student]
    detail = batch["details"][student]
    assert scores(batch["rows"][student]) == expected, (student, detail)
    if phrase is None:
        return
    lost = [e["message"] for e in detail["exercises"] if e["points"] < e["max_points"]]
    text = "\n".join(lost + detail["notes"])
    assert phrase in text, (student, text)


@pytest.mark.parametrize("student", sorted(UNREADABLE))
def test_unreadable_submissions_are_errors_with_a_reason(batch, student):
    assert batch["rows"][student]["total"] == "0"
    assert UNREADABLE[student] in batch["details"][student]["error"]


def test_failures_say_what_happened(batch):
    """Not a traceback or a bare exception name: each lost exercise has a sentence."""
    for student, detail in batch["details"].items():
        if student in UNREADABLE:  # one reason for the whole file, checked above
            continue
        for exercise in detail["exercises"]:
            if exercise["status"] != "passed":
                assert len(exercise["message"]) > 30 and "Traceback" not in exercise["message"], (student, exercise)


def test_nothing_is_left_running(batch):
    assert batch["traces"]["leftover_processes"] == []


def test_nothing_reached_the_network(batch):
    assert batch["traces"]["connections"] == 0


def test_nothing_was_written_outside_its_folder(batch):
    assert batch["traces"]["written_outside"] == []
    assert not batch["traces"]["honest_file_changed"]


def test_the_feedback_pages_hold_no_hidden_tests(batch):
    for page in (batch["out"] / "feedback").glob("*.html"):
        text = page.read_text()
        # (the hidden cells' code; a student's own import error may name the grader's modules)
        assert "BEGIN HIDDEN TESTS" not in text and "grade(&#34;" not in text and 'grade("' not in text, page.name


def test_the_graders_own_memory_stays_under_a_gibibyte(batch):
    """Bombs in what the sandbox wrote (a forged result claiming a 8 TiB tensor), 50 MB floods,
    a 10 GB allocation: the grader process itself never holds them."""
    assert batch["peak_bytes"] < 1024**3, batch["peak_bytes"] / 1024**2


def test_each_student_has_a_feedback_page_naming_them(batch):
    """José and Jose differ only in an accent: two pages, each with its own name and score."""
    pages = {}
    for student in ("José", "Jose", FORMULA):
        row = batch["rows"][student]
        page = batch["out"] / "feedback" / f"{row['id']}.html"
        text = page.read_text(encoding="utf-8")
        assert str(markupsafe.escape(student)) in text, (student, page.name)
        pages[student] = page
    assert len(set(pages.values())) == 3
    assert "5 / 7" in pages["Jose"].read_text() and "7 / 7" in pages["José"].read_text()


def test_no_cell_of_grades_csv_is_a_formula(batch):
    text = (batch["out"] / "grades.csv").read_text(encoding="utf-8")
    cells = [cell for row in csv.reader(text.splitlines()) for cell in row]
    assert "'" + FORMULA in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]


def test_a_classmates_outputs_would_pass_with_a_shared_seed_but_not_with_per_student_seeds(tmp_path):
    """The copycat's table holds honest_full's inputs and outputs: with honest_full's seed it
    passes softmax completely, with its own seed it does not (its test in the batch: 0)."""
    from course_helpers import student_module
    from transformer_course import exercises
    from transformer_course.exercises import ExerciseFailure
    from transformer_course.exercises.compare import call_student
    from transformer_course.grading.hardened import prepare_exercise, student_seed, visible_cases
    from transformer_course.grading.hidden import compare_with_reference

    copycat = student_module(tmp_path, "import torch\n" + copying_softmax(classmate_outputs())).softmax
    exercise = exercises.get("softmax")
    for student, should_pass in (("honest_full", True), ("copies_classmate", False)):
        prepared = prepare_exercise(exercise, student_seed(SEED, student), visible_cases(exercise))
        passed = True
        try:
            for case, expected in zip(prepared.hidden, prepared.expected):
                compare_with_reference(exercise, call_student(exercise, copycat, case), expected, case)
        except ExerciseFailure:
            passed = False
        assert passed == should_pass, student


def test_nothing_outside_is_read_into_a_report(batch):
    """Links to /etc/passwd and another student's folder lay where the grader used to read
    results: no report holds a line of either."""
    secrets = [Path("/etc/passwd").read_text().splitlines()[0]]
    if os.access("/etc/shadow", os.R_OK) and Path("/etc/shadow").read_text().strip():
        secrets.append(Path("/etc/shadow").read_text().splitlines()[0])  # readable by root, the grader here
    for report in [batch["out"] / "grades.csv", batch["out"] / "results.json",
                   *(batch["out"] / "feedback").glob("*.html")]:
        text = report.read_text(encoding="utf-8")
        assert not [s for s in secrets if s in text] and '"nbformat"' not in text, report.name


def test_the_summary_prints_no_terminal_escapes(batch):
    assert "\x1b" not in batch["stdout"]


def test_no_report_holds_invisible_text_movers(batch):
    """A right-to-left override (U+202E) in a message would show the text after it backwards."""
    reports = [batch["out"] / "grades.csv", batch["out"] / "results.json", *(batch["out"] / "feedback").glob("*.html")]
    assert not [r.name for r in reports if "\u202e" in r.read_text(encoding="utf-8")]
    assert "\u202e" not in batch["stdout"]
    exercises = batch["details"]["escapes"]["exercises"]
    message = next(e["message"] for e in exercises if e["grade_id"] == "test_attention_scores")
    assert "\\u202e7/7 lluf" in message, message


def test_reports_stay_small(batch):
    """A message quoting a megabyte-long value (which HTML escaping makes five times longer) is
    shortened: no feedback page or results file grows with what a student returns or raises."""
    for page in (batch["out"] / "feedback").glob("*.html"):
        assert page.stat().st_size < 200_000, (page.name, page.stat().st_size)
    assert (batch["out"] / "results.json").stat().st_size < 2_000_000


# --------------------------------------------------------------------------- other chapters
# Attacks on what differs by chapter: a grader-side diagnosis (chapter 2's sinusoid), plain
# values quoted in messages (chapter 1's token ids), dict keys that share one hash, a library
# cosine in disguise, and the setup cell's own import repeated in an answer (honest: it keeps its
# points). One class per chapter, graded as the batch above.

SINUSOID_BOMB = (  # a (60000, 1, 1) table on the hidden case whose reference is (100, 128): the
    # grader's diagnosis would broadcast it to (60000, 100, 128), 12 GB
    "def sinusoidal_encoding(seq_len, d_model, *, device=None, dtype=torch.float32):\n"
    "    if (seq_len, d_model) == (100, 128) and dtype == torch.float64:\n"
    "        return torch.zeros(60_000, 1, 1, dtype=dtype)\n"
    "    return _honest(seq_len, d_model, device=device, dtype=dtype)\n"
)
HUGE_IDS = (  # a 3.9 MB string among the ids on the first call
    "_calls = [0]\n\n"
    "def tokens_to_ids(tokens, vocab):\n"
    "    _calls[0] += 1\n"
    "    return [\"'\" * 3_900_000] if _calls[0] == 1 else []\n"
)
COLLIDING_KEYS = (  # a dict whose items() are 49,990 integer keys of one hash (the probe writes items())
    "class _Colliding(dict):\n"
    "    def items(self):\n"
    "        return [((10**30 + k) * ((1 << 61) - 1), 0) for k in range(49_990)]\n\n"
    "_calls = [0]\n\n"
    "def build_vocab(*args, **kwargs):\n"
    "    _calls[0] += 1\n"
    "    return _Colliding() if _calls[0] == 1 else []\n"
)
COLLIDING_PAIRS = (  # the same with pairs (a, b), b solved for one tuple hash (CPython's xxHash steps)
    "class _Colliding(dict):\n"
    "    def items(self):\n"
    "        mask, p1, p2, p5 = (1 << 64) - 1, 11400714785074694791, 14029467366897019727, 2870177450012600261\n"
    "        inverse, pairs, a = pow(p2, -1, 1 << 64), [], 0\n"
    "        while len(pairs) < 24_990:\n"
    "            acc = (p5 + (hash(a) & mask) * p2) & mask\n"
    "            acc = (((acc << 31) | (acc >> 33)) & mask) * p1 & mask\n"
    "            wanted = ((12345 - acc) * inverse) & mask\n"
    "            b = wanted - (1 << 64) if wanted >= 1 << 63 else wanted\n"
    "            if -((1 << 61) - 1) < b < (1 << 61) - 1 and b != -1:\n"
    "                pairs.append(((a, b), 0))\n"
    "            a += 1\n"
    "        return pairs\n\n"
    "_calls = [0]\n\n"
    "def build_vocab(*args, **kwargs):\n"
    "    _calls[0] += 1\n"
    "    return _Colliding() if _calls[0] == 1 else []\n"
)
COSINE_LOSS = (  # F.cosine_embedding_loss(reduction='none') is 1 - cos
    "def cosine_similarity_matrix(a, b):\n"
    "    x, y = torch.broadcast_tensors(a.unsqueeze(-2), b.unsqueeze(-3))\n"
    "    ones = torch.ones(x.shape[:-1].numel(), dtype=a.dtype, device=a.device)\n"
    "    loss = torch.nn.functional.cosine_embedding_loss(\n"
    "        x.reshape(-1, a.shape[-1]), y.reshape(-1, a.shape[-1]), ones, reduction='none')\n"
    "    return (1 - loss).reshape(x.shape[:-1])\n"
)
REIMPORT = "from transformer_course.attention import scaled_dot_product_attention\n\n"


def chapter_notebook(assignment: str, replace: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(solution_path(assignment), as_version=4)
    for cell in nb.cells:
        if grade_id_of(cell) in replace:
            cell.source = replace[grade_id_of(cell)]
    return nb


def other_chapters_classes() -> dict[str, dict[str, tuple[nbformat.NotebookNode, dict[str, float]]]]:
    """assignment -> student -> (notebook, points each exercise's code honestly earns)."""
    positions = answer_sources("02-positions")
    honest_sinusoid = positions["sinusoidal_encoding"].replace("def sinusoidal_encoding(", "def _honest(")
    full_02 = {"sinusoidal_encoding": 3.0, "add_positions": 2.0, "permutation_experiment": 3.0,
               "position_similarity": 2.0, "LearnedPositionalEmbedding": 2.0}
    full_01 = {"build_vocab": 2.0, "tokens_to_ids": 1.0, "merge_pair": 2.0, "learn_bpe": 3.0,
               "embed_tokens": 2.0, "cosine_similarity_matrix": 2.0, "nearest_neighbours": 2.0}
    return {
        "02-positions": {
            "sinusoid_bomb": (chapter_notebook("02-positions", {
                "sinusoidal_encoding": honest_sinusoid + "\n\n" + SINUSOID_BOMB}),
                {**full_02, "sinusoidal_encoding": 0.0}),
            "reimports_setup": (chapter_notebook("02-positions", {
                "permutation_experiment": REIMPORT + positions["permutation_experiment"]}), full_02),
        },
        "01-tokens": {
            "huge_ids": (chapter_notebook("01-tokens", {"tokens_to_ids": HUGE_IDS}),
                         {**full_01, "tokens_to_ids": 0.0}),
            "colliding_keys": (chapter_notebook("01-tokens", {"build_vocab": COLLIDING_KEYS}),
                               {**full_01, "build_vocab": 0.0}),
            "colliding_pairs": (chapter_notebook("01-tokens", {"build_vocab": COLLIDING_PAIRS}),
                                {**full_01, "build_vocab": 0.0}),
            "cosine_loss": (chapter_notebook("01-tokens", {"cosine_similarity_matrix": COSINE_LOSS}),
                            {**full_01, "cosine_similarity_matrix": 0.0}),
        },
    }


@pytest.fixture(scope="module")
def other_chapters(tmp_path_factory):
    graded = {}
    for assignment, students in other_chapters_classes().items():
        subs, out = tmp_path_factory.mktemp("class"), tmp_path_factory.mktemp("grades")
        for student, (nb, _) in students.items():
            (subs / student).mkdir()
            nbformat.write(nb, subs / student / solution_path(assignment).name)
        run = subprocess.run(
            [sys.executable, "-c", MEASURED, "grade", assignment, str(subs), "--out", str(out),
             "--timeout", str(TIMEOUT), "--seed", str(SEED), "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        graded[assignment] = {
            "rows": {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())},
            "peak_bytes": int(re.search(r"PEAK_RSS_KB (\d+)", run.stderr)[1]) * 1024,
            "out": out,
        }
    return graded


@pytest.mark.parametrize("assignment, student", [(a, s) for a, c in other_chapters_classes().items() for s in c])
def test_other_chapters_no_submission_gains_or_loses_a_point(other_chapters, assignment, student):
    _, expected = other_chapters_classes()[assignment][student]
    row = other_chapters[assignment]["rows"][student]
    assert {k: float(row[f"test_{k}"]) for k in expected} == expected, row


@pytest.mark.parametrize("assignment", sorted(other_chapters_classes()))
def test_other_chapters_memory_and_reports_stay_small(other_chapters, assignment):
    graded = other_chapters[assignment]
    assert graded["peak_bytes"] < 1024**3, graded["peak_bytes"] / 1024**2
    for page in (graded["out"] / "feedback").glob("*.html"):
        assert page.stat().st_size < 200_000, (page.name, page.stat().st_size)


# --------------------------------------------------------------------------- laundering through allowed code
# The run-time watch excuses every call made while an allowed function (the reference put in place
# of an earlier exercise in grading, the student's own earlier function in the notebook) is on the
# stack. An answer that hands that function an object whose method is its own code runs the
# library call from inside the allowed frame: `softmax(hook)` calls `hook.amax(...)`, and there the
# student calls F.scaled_dot_product_attention (from an added cell, which binds no exercise name, so
# the look at the source does not flag it). Both outputs come from the library: it earns nothing.

LAUNDERING_LIBRARY = (  # an added cell: binds `_library` only
    "import torch.nn.functional as F\n\n"
    "def _library(q, k, v, mask):\n"
    "    S = k.shape[-2]\n"
    "    eye = torch.eye(S, dtype=q.dtype, device=q.device).expand(*k.shape[:-2], S, S)\n"
    "    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
    "    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask)  # identity values: the weights\n"
    "    return out.nan_to_num(0.0), weights.nan_to_num(0.0)\n"
)
LAUNDERING_ATTENTION = (
    "class _Hook:\n"
    "    def __init__(self, job):\n"
    "        self.job = job\n"
    "    def amax(self, *args, **kwargs):  # runs inside softmax's frame: allowed code\n"
    "        self.out = self.job()\n"
    "        return 0.0\n"
    "    def __sub__(self, other):\n"
    "        return torch.zeros(1)\n\n"
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    hook = _Hook(lambda: _library(q, k, v, mask))\n"
    "    softmax(hook, dim=-1)\n"
    "    return hook.out\n"
)


def graded_alone(tmp_path: Path, assignment: str, nb, name: str) -> dict[str, str]:
    """``nb`` graded on its own by `grade` (sandboxed, one job): its row of grades.csv."""
    subs, out = tmp_path / "class", tmp_path / "grades"
    (subs / "launders").mkdir(parents=True)
    nbformat.write(nb, subs / "launders" / name)
    run = subprocess.run(
        [sys.executable, "-m", "transformer_course", "grade", assignment, str(subs), "--out", str(out),
         "--timeout", str(TIMEOUT), "--seed", str(SEED), "--quiet", "--jobs", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = csv.DictReader((out / "grades.csv").open())
    return row


# --------------------------------------------------------------------------- laundering without a student frame
# The watch is taken up again only at a *Python frame* of the student's code that allowed code calls
# back. A callback that is no such frame gets the excuse: a C callable the answer builds
# (functools.partial of dict over zip(map(library, ...)), handed to the allowed softmax as `amax`),
# or a library module the answer puts into the allowed module it was given (chapter 7: the reference
# MultiHeadAttention's q_proj swapped for nn.TransformerEncoderLayer, whose mask a forward pre-hook
# adds and has returned before the layer runs). Both do the exercise with the library call: nothing.

LAUNDERING_C_LIBRARY = (  # an added cell: binds `_LIB` only
    "import functools, itertools\n"
    "import torch.nn.functional as F\n"
    "_LIB = F.scaled_dot_product_attention\n"
)
LAUNDERING_C_ATTENTION = (
    "class _Hook:\n"
    "    def __sub__(self, other):  # the student's code only keeps what C code computed\n"
    "        self.got = other\n"
    "        return torch.zeros(1)\n\n"
    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
    "    S = k.shape[-2]\n"
    "    eye = torch.eye(S, dtype=q.dtype).expand(*k.shape[:-2], S, S)\n"
    "    hook = _Hook()\n"
    "    # softmax calls hook.amax(dim=..., keepdim=...): dict(zip(map(library, ...), count()), dim=..., keepdim=...)\n"
    "    pairs = zip(map(_LIB, [q, q], [k, k], [v, eye], [mask, mask]), itertools.count())  # lazy: runs in C\n"
    "    hook.amax = functools.partial(dict, pairs)\n"
    "    softmax(hook, dim=-1)\n"
    "    out, weights = [t for t in hook.got if isinstance(t, torch.Tensor)]\n"
    "    return out.nan_to_num(0.0), weights.nan_to_num(0.0)\n"
)


# Both ways of laundering, graded and in the notebook's own check: the exercise earns nothing.
LAUNDERINGS = pytest.mark.parametrize("library, attention", [
    (LAUNDERING_LIBRARY, LAUNDERING_ATTENTION), (LAUNDERING_C_LIBRARY, LAUNDERING_C_ATTENTION),
], ids=["student-frame", "c-callable"])


@LAUNDERINGS
def test_a_library_call_laundered_through_the_allowed_softmax_earns_nothing(tmp_path, library, attention):
    nb = notebook({"scaled_dot_product_attention": attention}, added={"softmax": library})
    row = graded_alone(tmp_path, CH04, nb, NOTEBOOK)
    assert scores(row) == {**FULL, "test_scaled_dot_product_attention": 0.0}, row


@LAUNDERINGS
def test_the_notebooks_check_refuses_a_library_call_laundered_through_the_students_softmax(tmp_path, library,
                                                                                         attention):
    from course_helpers import student_module
    from transformer_course.checks import check
    from transformer_course.exercises import ExerciseFailure

    module = student_module(tmp_path, "import math\nimport torch\n\n" + SOFTMAX + "\n\n" + SCORES + "\n\n"
                            + library + "\n\n" + attention)
    with pytest.raises(ExerciseFailure, match="earns no points"):
        check("scaled_dot_product_attention", module.scaled_dot_product_attention)


CH07 = "07-encoder-decoder"
LIBRARY_LAYER = (  # an added cell, run with the notebook (not while an answer is checked): binds `_LAYER`, `_OUT`
    "_LAYER = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True, dtype=torch.float64)\n"
    "_OUT = []\n"
    "_LAYER.register_forward_hook(lambda m, i, o: _OUT.append(o))\n"
)
LIBRARY_LAYER_FORWARD = (
    "    def forward(self, x, mask=None):\n"
    "        B, S, d = x.shape\n"
    "        H = self.self_attn.n_heads\n"
    "        a, lib = self.self_attn, _LAYER\n"
    "        sa = lib.self_attn  # the library layer, given this layer's weights\n"
    "        sa.embed_dim, sa.num_heads, sa.head_dim, sa.kdim, sa.vdim = d, H, d // H, d, d\n"
    "        sa.in_proj_weight = nn.Parameter(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))\n"
    "        sa.in_proj_bias = nn.Parameter(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))\n"
    "        sa.out_proj = a.out_proj\n"
    "        lib.linear1, lib.linear2 = self.feed_forward.linear1, self.feed_forward.linear2\n"
    "        lib.norm1, lib.norm2, lib.norm_first = self.norm1, self.norm2, self.norm_first\n"
    "        lib.activation = self.feed_forward.activation\n"
    "        lib.train(self.training)\n"
    "        m = None if mask is None else (~mask).expand(B, H, S, S).reshape(B * H, S, S)\n"
    "        saved = a.q_proj\n"
    "        a.q_proj = lib  # called by the allowed MultiHeadAttention.forward, through torch's code only\n"
    "        h = lib.register_forward_pre_hook(lambda mod, args, kw: (args, {'src_mask': m}), with_kwargs=True)\n"
    "        try:\n"
    "            a(x, x, x, mask)\n"
    "        finally:\n"
    "            h.remove()\n"
    "            a.q_proj = saved\n"
    "        return _OUT.pop()\n"
)


def test_a_library_module_put_into_the_allowed_module_earns_nothing(tmp_path):
    nb = nbformat.read(solution_path(CH07), as_version=4)
    cells = []
    for cell in nb.cells:
        if grade_id_of(cell) == "EncoderLayer":
            cell.source = cell.source.split("    def forward")[0] + LIBRARY_LAYER_FORWARD
        cells.append(cell)
        if grade_id_of(cell) == "FeedForward":
            cells.append(nbformat.v4.new_code_cell(LIBRARY_LAYER))
    nb.cells = cells
    row = graded_alone(tmp_path, CH07, nb, solution_path(CH07).name)
    assert float(row["test_EncoderLayer"]) == 0.0, row
    assert float(row["test_FeedForward"]) == 2.0, row  # the honest exercises keep their points


# --------------------------------------------------------------------------- work deferred past the call
# (attack round on chapter 8) The answer returns a placeholder and does the exercise with the library
# call later, in its own code that the checking code runs when it looks at what came back: an input
# tensor whose class the answer changed (run by the check that inputs are unchanged), or a tuple
# subclass (run when its items are read). That code ran after the watch had closed; the watch now
# lasts until the outputs are plain tensors, and inputs of another type or tuple subclasses fail.
CH08 = "08-training"
LATE_TENSOR = (  # an added cell after the setup: binds `_Late`, `_PENDING`, `_fill`
    "import torch.nn.functional as _FF\n"
    "_PENDING = {}\n"
    "class _Late(torch.Tensor):\n"
    "    @classmethod\n"
    "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
    "        for a in args:\n"
    "            if type(a) is _Late:\n"
    "                a.__class__ = torch.Tensor\n"
    "                job = _PENDING.pop(id(a), None)\n"
    "                if job is not None:\n"
    "                    job(a)\n"
    "        args = tuple(a.as_subclass(torch.Tensor) if isinstance(a, torch.Tensor) else a for a in args)\n"
    "        return func(*args, **(kwargs or {}))\n"
    "def _fill(out, labels, pad, s):\n"
    "    def job(lp):\n"
    "        V = lp.shape[-1]\n"
    "        nll = _FF.nll_loss(lp.reshape(-1, V), labels.reshape(-1), reduction='none').reshape(labels.shape)\n"
    "        others = -lp[..., torch.arange(V) != pad].sum(-1) - nll\n"
    "        per = (1 - s) * nll + s / (V - 2) * others\n"
    "        real = labels != pad\n"
    "        out.copy_(torch.where(real, per, torch.zeros_like(per)).sum() / real.sum().clamp(min=1))\n"
    "    return job\n"
)
LATE_LOSS = (
    "def label_smoothed_loss(log_probs, labels, pad_id, smoothing):\n"
    "    out = torch.zeros((), dtype=log_probs.dtype)\n"
    "    _PENDING[id(log_probs)] = _fill(out, labels, pad_id, smoothing)\n"
    "    log_probs.__class__ = _Late\n"
    "    return out\n"
)
LATE_TUPLE = (  # an added cell after the setup: binds `_LateTuple`
    "from torch.nn.utils.rnn import pad_sequence as _ps\n"
    "class _LateTuple(tuple):\n"
    "    def __iter__(self):\n"
    "        sources, targets, pad_id, start_id, end_id = tuple.__getitem__(self, slice(None))\n"
    "        src = _ps([torch.tensor(x, dtype=torch.long) for x in sources], batch_first=True, padding_value=pad_id)\n"
    "        tgt = _ps([torch.tensor([start_id, *x, end_id], dtype=torch.long) for x in targets],\n"
    "                  batch_first=True, padding_value=pad_id)\n"
    "        di, lab = tgt[:, :-1], tgt[:, 1:]\n"
    "        return iter((src, di, lab, padding_mask(src, pad_id),\n"
    "                     combine_masks(padding_mask(di, pad_id), causal_mask(di.shape[1]))))\n"
)
LATE_BATCH = (
    "def make_batch(sources, targets, pad_id=PAD, start_id=START, end_id=END):\n"
    "    return _LateTuple(([list(s) for s in sources], [list(t) for t in targets], pad_id, start_id, end_id))\n"
)


def ch08_solution_with(answer: str, source: str, added: str) -> nbformat.NotebookNode:
    """Chapter 8's solution with one answer replaced and a cell added after the setup cell."""
    nb = nbformat.read(solution_path(CH08), as_version=4)
    cells = []
    for cell in nb.cells:
        if grade_id_of(cell) == answer:
            cell.source = source
        cells.append(cell)
        if grade_id_of(cell) == "setup":
            cells.append(nbformat.v4.new_code_cell(added))
    nb.cells = cells
    return nb


DEFERRALS = pytest.mark.parametrize("answer, source, added", [
    ("label_smoothed_loss", LATE_LOSS, LATE_TENSOR), ("make_batch", LATE_BATCH, LATE_TUPLE),
], ids=["input-class-changed", "tuple-subclass"])


@DEFERRALS
def test_work_deferred_past_the_call_earns_nothing(tmp_path, answer, source, added):
    row = graded_alone(tmp_path, CH08, ch08_solution_with(answer, source, added), solution_path(CH08).name)
    honest = {"test_teacher_forcing": 1.0, "test_make_batch": 3.0, "test_label_smoothed_loss": 4.0,
              "test_learning_rate": 2.0, "test_train_step": 3.0, "test_sequence_accuracy": 2.0}
    assert {k: float(row[k]) for k in honest} == {**honest, f"test_{answer}": 0.0}, row


@DEFERRALS
def test_the_notebooks_check_refuses_work_deferred_past_the_call(tmp_path, answer, source, added):
    from course_helpers import student_module
    from transformer_course.checks import check
    from transformer_course.exercises import ExerciseFailure

    setup = ("import torch\nfrom transformer_course.masks import causal_mask, combine_masks, padding_mask\n"
             "from transformer_course.number_task import END, PAD, START\n")
    module = student_module(tmp_path, setup + "\n" + added + "\n\n" + source)
    with pytest.raises(ExerciseFailure):
        check(answer, getattr(module, answer))
