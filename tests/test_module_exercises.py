"""Exercises whose answer is an nn.Module class: built per case, given the reference's weights.

A small exercise made for this test (the reference FeedForward as the answer) is registered for
the duration of each test, so the machinery is shown working before a chapter relies on it.
"""

from __future__ import annotations

import pytest
import torch

from course_helpers import student_module
from transformer_course import exercises
from transformer_course.checks import check
from transformer_course.device import available_devices
from transformer_course.exercises import Case, Exercise, ExerciseFailure
from transformer_course.exercises.compare import expect_close
from transformer_course.exercises.inputs import randn, with_float32
from transformer_course.exercises.library_calls import TRANSFORMER_CALLS
from transformer_course.exercises.running import with_globals
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade
from transformer_course.grading.hidden_spec import HiddenTests, Mistake


def _cases(gen: torch.Generator) -> list[Case]:
    from transformer_course.feedforward import FeedForward  # the reference, loaded when grading

    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    state = {k: v.double() for k, v in FeedForward(6, 10).state_dict().items()}
    cases = [Case("x (2, 3, 6), d_ff 10", (randn(gen, 2, 3, 6),), init=(6, 10), state=state)]
    return with_float32(cases, {"x (2, 3, 6), d_ff 10"})


def _visible(call) -> int:
    out, = call(Case("x (1, 2, 4) with zero weights", (torch.ones(1, 2, 4),), init=(4, 8),
                     state={"linear1.weight": torch.zeros(8, 4), "linear1.bias": torch.ones(8),
                            "linear2.weight": torch.ones(4, 8), "linear2.bias": torch.zeros(4)}))
    expect_close(out, torch.full((1, 2, 4), 8.0), what="FeedForward with known weights",
                 hint="linear2(relu(linear1(x))).")
    return 1


TOY = Exercise(
    function="ToyFeedForward",
    assignment="toy",
    points=1,
    visible_checks=_visible,
    is_module=True,
    forbidden=(TRANSFORMER_CALLS,),
)
TOY_HIDDEN = HiddenTests(
    function="ToyFeedForward",
    reference="transformer_course.feedforward:FeedForward",
    make_cases=_cases,
    mistakes=(Mistake(lambda d_model, d_ff: _LinearFeedForward(d_model, d_ff),
                      "you left out the activation between the two layers."),),
)


class _LinearFeedForward(torch.nn.Module):
    """A typical wrong answer, as a module: the mistake machinery builds it like the student's."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.linear1, self.linear2 = torch.nn.Linear(d_model, d_ff), torch.nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))

HEADER = "import torch\nfrom torch import nn\n"
GOOD = HEADER + """
class ToyFeedForward(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(torch.relu(self.linear1(x)))
"""


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(exercises._BY_NAME, TOY.function, TOY)
    monkeypatch.setitem(hidden_tests._BY_NAME, TOY.function, TOY_HIDDEN)


@pytest.fixture
def failure(tmp_path):
    """``failure(code)``: the message grading the student's ``code`` gives (it must fail)."""

    def grade_failing(code: str) -> str:
        module = student_module(tmp_path, code)
        with pytest.raises(ExerciseFailure) as caught:
            grade(TOY.function, vars(module))
        return str(caught.value)

    return grade_failing


def test_a_correct_module_passes_visible_and_hidden_checks(tmp_path, capsys):
    module = student_module(tmp_path, GOOD)
    check(TOY.function, module.ToyFeedForward)
    grade(TOY.function, vars(module))
    # one visible check, the hidden case in float64 and float32, and the float32 one on each GPU
    count = 1 + 2 + (len(available_devices()) - 1)
    assert f"✓ ToyFeedForward: all {count} checks passed" in capsys.readouterr().out


def test_parameters_named_differently_are_listed(failure):
    message = failure(GOOD.replace("linear1", "first"))
    assert "missing: linear1.bias, linear1.weight" in message
    assert "unexpected: first.bias, first.weight" in message


def test_a_transposed_weight_is_named_with_its_shape(failure):
    message = failure(GOOD.replace("nn.Linear(d_model, d_ff)", "nn.Linear(d_ff, d_model)")
                      .replace("self.linear1(x)", "self.linear1(x.T)"))
    assert "`linear1.weight` has shape (4, 8)" in message and "(out, in)" in message


def test_a_wrong_forward_fails_with_where_and_how_much(failure):
    message = failure(GOOD.replace("torch.relu", "torch.tanh"))  # caught by the visible check
    assert "max abs difference" in message and "linear2(relu(linear1(x)))" in message
    # no activation passes the visible example (relu(1) = 1) and is named by the hidden checks
    message = failure(GOOD.replace("torch.relu", ""))
    assert "Likely mistake: you left out the activation" in message


def test_a_function_instead_of_a_class_is_told_to_define_a_class(failure):
    message = failure(HEADER + "def ToyFeedForward(d_model, d_ff):\n    return None\n")
    assert "should be a class (derived from nn.Module), but it is a function" in message


def test_a_forbidden_layer_is_found_in_a_method(failure):
    code = GOOD.replace("self.linear2 = nn.Linear(d_ff, d_model)",
                        "self.linear2 = nn.Linear(d_ff, d_model)\n"
                        "        self.cheat = nn.TransformerEncoderLayer(d_model, 1, d_ff)")
    assert "earns no points" in failure(code) and "TransformerEncoderLayer" in failure(code)


def test_a_forbidden_layer_reached_by_a_computed_name_is_caught_at_run_time(failure):
    code = GOOD.replace("super().__init__()",
                        "super().__init__()\n        name = 'Transformer' + 'EncoderLayer'\n"
                        "        getattr(nn, name)(4, 1, 8)")
    message = failure(code)
    assert "earns no points" in message and "torch.nn.Transformer" in message


@pytest.mark.parametrize("where", ["__new__", "metaclass"])
def test_a_forbidden_layer_built_before_init_is_caught_too(failure, where):
    """The watch covers building the module as a whole, not only __init__ and forward."""
    cheat = "name = 'Transformer' + 'EncoderLayer'; getattr(nn, name)(4, 1, 8)"
    if where == "__new__":
        code = GOOD.replace("    def __init__(self, d_model, d_ff):",
                            f"    def __new__(cls, *args, **kwargs):\n        {cheat}\n"
                            "        return super().__new__(cls)\n\n    def __init__(self, d_model, d_ff):")
    else:
        code = GOOD.replace("class ToyFeedForward(nn.Module):",
                            "class Meta(type(nn.Module)):\n    def __call__(cls, *args, **kwargs):\n"
                            f"        {cheat}\n        return super().__call__(*args, **kwargs)\n\n"
                            "class ToyFeedForward(nn.Module, metaclass=Meta):")
    message = failure(code)
    assert "earns no points" in message and "torch.nn.Transformer" in message


def test_deriving_from_the_reference_earns_nothing(failure):
    code = HEADER + "from transformer_course.feedforward import FeedForward as ToyFeedForward\n"
    assert "reference implementation" in failure(code)
    subclass = HEADER + ("import transformer_course.feedforward as ff\n"
                         "class ToyFeedForward(ff.FeedForward):\n    pass\n")
    assert "reference implementation" in failure(subclass)


def test_with_globals_rebinds_a_classes_methods_and_keeps_super_working(tmp_path):
    module = student_module(tmp_path, HEADER + """
def helper(x):
    return x + 1

class Uses(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return helper(x)
""")
    rebound = with_globals(module.Uses, {"helper": lambda x: x * 10})
    assert rebound()(torch.tensor(2.0)).item() == 20.0
    assert module.Uses()(torch.tensor(2.0)).item() == 3.0  # the student's class is untouched
    assert issubclass(rebound, module.Uses) and rebound.__name__ == "Uses"


@pytest.mark.parametrize("choose", ["getattr(F, activation.lower())",
                                    "getattr(torch.nn.functional, {'relu': 'relu', 'gelu': 'gelu'}[activation])"])
def test_choosing_the_activation_by_its_name_is_honest(tmp_path, choose):
    """Picking relu or gelu by the name a caller gave is not a forbidden lookup (round 2 of the
    attack found the look at the source refusing it)."""
    code = GOOD.replace("import torch\n", "import torch\nimport torch.nn.functional as F\n").replace(
        "torch.relu(self.linear1(x))", f"{choose.replace('activation', repr('relu'))}(self.linear1(x))")
    grade(TOY.function, vars(student_module(tmp_path, code)))
