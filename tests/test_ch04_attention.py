"""Chapter 4's checks on student-like code: the messages a student gets for typical mistakes."""

from __future__ import annotations

import pytest
import torch

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.exercises import ExerciseFailure
from transformer_course.grading.hidden import grade

CH04 = "04-attention"


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s function gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    ids = [e.grade_id for e in exercises.for_assignment(CH04)]
    assert ids == ["test_softmax", "test_attention_scores", "test_scaled_dot_product_attention"]
    assert sum(e.points for e in exercises.for_assignment(CH04)) == 7


# ---------------------------------------------------------------- messages a student can act on

NAIVE_SOFTMAX = """
import torch
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
"""


def test_naive_softmax_is_told_to_subtract_the_maximum(tmp_path):
    message = failure("softmax", student_module(tmp_path, NAIVE_SOFTMAX))
    assert "NaN" in message and "Subtract the maximum" in message


def test_fixed_dimension_softmax_is_told_to_use_dim(tmp_path):
    code = """
import torch
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)
"""
    message = failure("softmax", student_module(tmp_path, code))
    assert "does not sum to 1" in message and "`dim`" in message


def test_k_instead_of_k_transpose_is_named(tmp_path):
    code = """
import math
def attention_scores(q, k):
    return k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])
"""
    message = failure("attention_scores", student_module(tmp_path, code))
    assert "(2, 7, 5), expected (2, 5, 7)" in message and "K Qᵀ" in message


def test_missing_scaling_is_named_in_hidden_checks(tmp_path):
    # Passes the shape check, fails the worked example with the scaling hint.
    code = """
def attention_scores(q, k):
    return q @ k.transpose(-2, -1)
"""
    message = failure("attention_scores", student_module(tmp_path, code))
    assert "divide by sqrt(d_k)" in message


def test_value_mismatch_says_where_and_how_much(tmp_path):
    code = """
import math
def attention_scores(q, k):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if s.shape[-1] == 7:   # wrong only on the first hidden case, not on the worked examples
        s = s * 1.5
    return s
"""
    message = failure("attention_scores", student_module(tmp_path, code))
    assert "max abs difference" in message and " at [" in message and "entries differ" in message


def test_inverted_mask_is_named(tmp_path):
    code = """
import math, torch
def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    w = torch.softmax(s, dim=-1)
    return w @ v, w
"""
    message = failure("scaled_dot_product_attention", student_module(tmp_path, code))
    assert "masked" in message and "'may attend'" in message


def test_nan_for_a_row_with_nothing_to_attend_to_is_explained(tmp_path):
    code = """
import math, torch
def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1)
    return w @ v, w
"""
    message = failure("scaled_dot_product_attention", student_module(tmp_path, code))
    assert "NaN" in message and "masked_fill(~mask, 0.0)" in message


def test_not_implemented_and_wrong_return_kinds(tmp_path):
    module = student_module(tmp_path, "def softmax(x, dim=-1):\n    raise NotImplementedError()\n")
    assert "not implemented yet" in failure("softmax", module)
    module = student_module(tmp_path, "def scaled_dot_product_attention(q, k, v, mask=None):\n    return q\n")
    assert "should return a tuple (output, weights)" in failure("scaled_dot_product_attention", module)
    module = student_module(tmp_path, "def softmax(x, dim=-1):\n    x = x.exp()\n")
    assert "returned None" in failure("softmax", module)
    assert "is not defined" in str(pytest.raises(ExerciseFailure, grade, "softmax", {}).value)


def test_dtype_and_in_place_changes_are_reported(tmp_path):
    code = """
import torch
def softmax(x, dim=-1):
    x = x.double()
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)
"""
    assert "dtype torch.float64 for torch.float32 inputs" in failure("softmax", student_module(tmp_path, code))
    code = """
import torch
def softmax(x, dim=-1):
    x -= x.amax(dim, keepdim=True)
    return x.exp() / x.exp().sum(dim, keepdim=True)
"""
    assert "in place" in failure("softmax", student_module(tmp_path, code))


def test_error_message_points_at_the_students_line(tmp_path):
    code = """
import math
def attention_scores(q, k):
    d_k = q.shape[-1]
    return q @ k / math.sqrt(d_k)
"""
    message = failure("attention_scores", student_module(tmp_path, code))
    assert "raised RuntimeError" in message and "in your line: return q @ k / math.sqrt(d_k)" in message


def test_warnings_go_to_stdout_not_stderr(tmp_path, capfd):
    # nbgrader gives 0 to a test cell that writes to stderr, so a harmless warning must not.
    code = """
import math, warnings
def attention_scores(q, k):
    warnings.warn("just a note")
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
"""
    grade("attention_scores", vars(student_module(tmp_path, code)))
    out, err = capfd.readouterr()
    assert "just a note" in out and err == ""


# ---------------------------------------------------------------- one exercise, one cost


def test_attention_is_graded_with_the_reference_in_place_of_earlier_exercises(tmp_path):
    broken = {
        "softmax": "def softmax(x, dim=-1):\n    return x\n",
        "attention_scores": "def attention_scores(q, k):\n    return q @ k.transpose(-2, -1)\n",
    }
    module = solution_module(tmp_path, CH04, **broken)
    failure("softmax", module)
    failure("attention_scores", module)
    isolated = grade("scaled_dot_product_attention", vars(module))
    # The student's module is untouched; the returned copy sees the reference helpers.
    assert module.softmax(torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    _, weights = isolated(torch.zeros(1, 2), torch.zeros(3, 2), torch.ones(3, 1))
    assert torch.allclose(weights, torch.full((1, 3), 1 / 3))


# ---------------------------------------------------------------- forbidden calls

FORBIDDEN_SOFTMAX = {
    "torch.softmax": "import torch\ndef softmax(x, dim=-1):\n    return torch.softmax(x, dim)\n",
    "Tensor.softmax": "def softmax(x, dim=-1):\n    return x.softmax(dim)\n",
    "F.softmax": "import torch.nn.functional as F\ndef softmax(x, dim=-1):\n    return F.softmax(x, dim=dim)\n",
    "nn.Softmax": "import torch\ndef softmax(x, dim=-1):\n    return torch.nn.Softmax(dim)(x)\n",
    "getattr alias": "def softmax(x, dim=-1):\n    return getattr(x, 'soft' + 'max')(dim)\n",
    "log_softmax": "import torch\ndef softmax(x, dim=-1):\n    return torch.log_softmax(x, dim).exp()\n",
    "reference": (
        "from transformer_course.attention import softmax as s\ndef softmax(x, dim=-1):\n    return s(x, dim)\n"
    ),
    "reference by string": (
        "import importlib\ndef softmax(x, dim=-1):\n"
        "    return importlib.import_module('transformer_' + 'course.attention').softmax(x, dim)\n"
    ),
    # around the run-time watch (issue 11), the library function reached through a variable so that
    # only the watch can see it: in a thread, in a raw thread, with the watch switched off
    "in a thread": (
        "import threading, torch\nNAME = 'soft' + 'max'\ndef softmax(x, dim=-1):\n    out = []\n"
        "    t = threading.Thread(target=lambda: out.append(getattr(torch, NAME)(x, dim)))\n"
        "    t.start(); t.join()\n    return out[0]\n"
    ),
    "in a raw thread": (
        "import _thread, time, torch\nNAME = 'soft' + 'max'\ndef softmax(x, dim=-1):\n    out = []\n"
        "    _thread.start_new_thread(lambda: out.append(getattr(torch, NAME)(x, dim)), ())\n"
        "    while not out:\n        time.sleep(0.001)\n    return out[0]\n"
    ),
    "watch switched off": (
        "import sys, torch\nOFF, NAME = 'set' + 'profile', 'soft' + 'max'\ndef softmax(x, dim=-1):\n"
        "    getattr(sys, OFF)(None)\n    return getattr(torch, NAME)(x, dim)\n"
    ),
    "import alias": "from torch import softmax as plain\ndef softmax(x, dim=-1):\n    return plain(x, dim)\n",
    # ... and called from C (map), where Python's profiler cannot see: torch's own modes see every
    # torch function and operator, whoever calls them (found by the second round of the attack)
    "spelled out, called from C": (
        "import torch\ndef softmax(x, dim=-1):\n"
        "    return list(map(getattr(torch, 'soft' + 'max'), [x], [dim]))[0]\n"
    ),
    "alias from another cell, called from C": (
        "import torch\n_sm = torch.softmax\ndef softmax(x, dim=-1):\n    return next(map(_sm, [x], [dim]))\n"
    ),
    "reversed name, called from C": (
        "import torch\n_sm = getattr(torch, 'xamtfos'[::-1])\ndef softmax(x, dim=-1):\n"
        "    return next(map(_sm, [x], [dim]))\n"
    ),
    "the operator itself": (
        "import torch\ndef softmax(x, dim=-1):\n    return torch.ops.aten._softmax(x, dim, False)\n"
    ),
    # torch's other copies, in Python (found by the fourth round of the attack)
    "torch._refs": (
        "import torch._refs\ndef softmax(x, dim=-1):\n    return getattr(torch._refs, 'soft' + 'max')(x, dim)\n"
    ),
    "torch._decomp": (
        "import torch._decomp.decompositions as d\ndef softmax(x, dim=-1):\n"
        "    return getattr(d, '_soft' + 'max')(x, dim, False)\n"
    ),
    "torch.masked": (
        "import torch\ndef softmax(x, dim=-1):\n    return getattr(torch.masked, 'soft' + 'max')(x, dim)\n"
    ),
}


FORBIDDEN_SDPA = {
    "F.sdpa": (
        "import torch, torch.nn.functional as F\n"
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
        "    return out, torch.zeros(q.shape[:-1] + k.shape[-2:-1], dtype=q.dtype)\n"
    ),
    "nn.MultiheadAttention": (
        "import torch\n"
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    m = torch.nn.MultiheadAttention(q.shape[-1], 1, batch_first=True, dtype=q.dtype)\n"
        "    return m(q, k, v)\n"
    ),
}


FORBIDDEN = [("softmax", how, code) for how, code in FORBIDDEN_SOFTMAX.items()] + [
    ("scaled_dot_product_attention", how, code) for how, code in FORBIDDEN_SDPA.items()
]


@pytest.mark.parametrize("name, how, code", FORBIDDEN, ids=[f"{n}-{h}" for n, h, _ in FORBIDDEN])
def test_forbidden_calls_earn_nothing(tmp_path, name, how, code):
    message = failure(name, student_module(tmp_path, code))
    assert "earns no points" in message


def test_torch_softmax_is_allowed_inside_attention(tmp_path):
    code = """
import math, torch
def scaled_dot_product_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w
"""
    grade("scaled_dot_product_attention", vars(student_module(tmp_path, code)))
