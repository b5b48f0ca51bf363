"""Chapter 2: the reference additions against independent computations, and the messages a
student gets for typical mistakes in the positional-encoding exercises."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.checks import check
from transformer_course.exercises import ExerciseFailure
from transformer_course.exercises import ch02_positions as ch02
from transformer_course.exercises.compare import normalise_outputs, run_case
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade
from transformer_course.grading.hidden_tests import ch02_positions as ch02_hidden
from transformer_course.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    add_positions,
    permutation_experiment,
    permute_positions,
    position_similarity,
    sinusoidal_encoding,
)

matplotlib.use("Agg")

CH02 = "02-positions"


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s function gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    chapter = exercises.for_assignment(CH02)
    assert [e.grade_id for e in chapter] == [
        "test_sinusoidal_encoding", "test_add_positions", "test_permutation_experiment",
        "test_position_similarity", "test_LearnedPositionalEmbedding",
    ]
    assert [e.points for e in chapter] == [3, 2, 3, 2, 2]


# ---------------------------------------------------------------- the reference additions


def test_add_positions_adds_row_i_to_position_i(device):
    embeddings = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device)  # two leading dims
    table = torch.randn(7, 5, dtype=torch.float64, device=device)
    got = add_positions(embeddings, table).cpu().numpy()
    e, t = embeddings.cpu().numpy(), table.cpu().numpy()
    for a in range(2):
        for b in range(3):
            for i in range(4):
                np.testing.assert_array_equal(got[a, b, i], e[a, b, i] + t[i])
    single = torch.randn(4, 5, dtype=torch.float64, device=device)  # no batch
    torch.testing.assert_close(add_positions(single, table), single + table[:4], atol=0, rtol=0)
    with pytest.raises(ValueError, match="sequence length 8 exceeds max_len=7"):
        add_positions(torch.zeros(1, 8, 5, dtype=torch.float64, device=device), table)


def test_the_modules_still_add_their_tables_and_check_the_length():
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(SinusoidalPositionalEncoding(10, 6)(x), x + sinusoidal_encoding(4, 6))
    with pytest.raises(ValueError, match="exceeds max_len"):
        SinusoidalPositionalEncoding(3, 6)(x)
    with pytest.raises(ValueError, match="exceeds max_len"):
        LearnedPositionalEmbedding(3, 6)(x)


def test_permute_positions_moves_token_perm_i_to_place_i():
    x = torch.arange(2 * 4 * 3).reshape(2, 4, 3)
    perm = torch.tensor([2, 0, 3, 1])
    expected = np.take(x.numpy(), perm.numpy(), axis=1)
    np.testing.assert_array_equal(permute_positions(x, perm).numpy(), expected)
    np.testing.assert_array_equal(permute_positions(x[0], perm).numpy(), expected[0])


def _attention(y: torch.Tensor) -> torch.Tensor:
    """PyTorch's own attention, q = k = v = y: an implementation independent of the course's."""
    return F.scaled_dot_product_attention(y, y, y)


@pytest.mark.parametrize("shape", [(6, 8), (2, 6, 8), (2, 3, 6, 8)])
def test_permutation_experiment_against_pytorch_attention(shape, device):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)
    perm = torch.randperm(6, generator=gen).to(device)
    table = torch.randn(9, 8, generator=gen, dtype=torch.float64).to(device)

    after, before = permutation_experiment(x, perm)
    torch.testing.assert_close(after, _attention(x)[..., perm, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(before, _attention(x[..., perm, :]), atol=1e-12, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-12, rtol=0)  # attention ignores the order

    after, before = permutation_experiment(x, perm, table)
    torch.testing.assert_close(after, _attention(x + table[:6])[..., perm, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(before, _attention(x[..., perm, :] + table[:6]), atol=1e-12, rtol=0)
    assert (after - before).abs().max() > 0.1  # with positions, the shuffle is noticed


def test_position_similarity_against_a_loop_over_pairs(device):
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    t = table.numpy()
    expected = [np.mean([t[i] @ t[i + k] for i in range(9 - k)]) for k in range(9)]
    got = position_similarity(table.to(device))
    assert got.shape == (9,) and got.device.type == device.type
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert position_similarity(torch.tensor([[3.0, 4.0]])).tolist() == [25.0]


def test_sinusoidal_dot_products_depend_only_on_the_distance():
    """P(p)·P(p+k) = Σ_i cos(ω_i k) for every p (even d_model): the identity the chapter derives."""
    d_model, seq_len = 16, 40
    table = sinusoidal_encoding(seq_len, d_model, dtype=torch.float64).numpy()
    omegas = [1 / 10000 ** (2 * i / d_model) for i in range(d_model // 2)]
    for k in range(seq_len):
        closed_form = sum(math.cos(w * k) for w in omegas)
        pairs = [table[p] @ table[p + k] for p in range(seq_len - k)]
        np.testing.assert_allclose(pairs, closed_form, atol=1e-12)
        assert position_similarity(torch.from_numpy(table))[k].item() == pytest.approx(closed_form, abs=1e-12)


def test_a_shift_is_a_rotation_of_each_pair():
    """PE[p + k] = R_k PE[p], R_k block-diagonal with 2 x 2 rotations by ω_i k (the paper's motivation)."""
    d_model, k = 8, 5
    table = sinusoidal_encoding(30, d_model, dtype=torch.float64)
    rotation = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(d_model // 2):
        a = k / 10000 ** (2 * i / d_model)
        # [sin(x + a), cos(x + a)] = [[cos a, sin a], [-sin a, cos a]] @ [sin x, cos x]
        rotation[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = torch.tensor(
            [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
    torch.testing.assert_close(table[k:], table[:-k] @ rotation.T, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- TableCase: dtype and device are arguments


def test_table_case_reads_and_sets_dtype_and_device_in_the_keyword_arguments():
    case = ch02.TableCase("seq_len 3, d_model 4", (3, 4))
    assert case.dtype == torch.float32 and case.device == torch.device("cpu")
    exact = case.on(torch.device("cpu")).to(torch.float64)
    assert exact.kwargs == {"device": torch.device("cpu"), "dtype": torch.float64}
    assert exact.label == "seq_len 3, d_model 4 on cpu" and isinstance(exact, ch02.TableCase)
    assert ch02.TableCase("x", (3, 4), {"dtype": torch.float64}).to(torch.float32).dtype == torch.float32
    # normalise_outputs then checks the dtype asked for, as it does for a case with input tensors
    with pytest.raises(ExerciseFailure, match="dtype torch.float32 for torch.float64"):
        normalise_outputs(ch02.SINUSOIDAL, torch.zeros(3, 4), case.to(torch.float64))


def test_hidden_cases_cover_float32_float64_odd_and_default_dtype():
    cases = ch02_hidden.sinusoidal_cases(torch.Generator().manual_seed(0))
    assert {c.dtype for c in cases} == {torch.float32, torch.float64}
    assert any(c.args[1] % 2 == 1 for c in cases) and any(c.args[0] == 1 for c in cases)
    assert any("dtype" not in c.kwargs for c in cases)  # the default dtype is checked too


def test_the_table_must_land_on_the_device_asked_for(tmp_path, monkeypatch):
    # A machine with a second device, simulated with PyTorch's "meta" device (shapes, no data).
    monkeypatch.setattr(ch02, "available_devices", lambda: [torch.device("cpu"), torch.device("meta")])
    check("sinusoidal_encoding", solution_module(tmp_path, CH02).sinusoidal_encoding)
    code = """
import torch
def sinusoidal_encoding(seq_len, d_model, *, device=None, dtype=torch.float32):
    pos = torch.arange(seq_len, dtype=dtype)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=dtype)
    angle = pos / 10000 ** (two_i / d_model)
    pe = torch.zeros(seq_len, d_model, dtype=dtype)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe
"""
    with pytest.raises(ExerciseFailure, match="is on cpu but device='meta' was asked for .*create the table on "
                                              "the device you are given, with device=device"):
        check("sinusoidal_encoding", student_module(tmp_path, code).sinusoidal_encoding)


# ---------------------------------------------------------------- each typical mistake is named

MISTAKES = [
    pytest.param(e, m, id=f"{e.function}-{i}")
    for e in exercises.for_assignment(CH02) for i, m in enumerate(hidden_tests.get(e.function).mistakes)
]


@pytest.mark.parametrize("exercise, mistake", MISTAKES)
def test_each_typical_mistake_is_named_by_the_visible_checks(tmp_path, exercise, mistake):
    """Stronger than failing: the student sees the hint of their own mistake before handing in."""
    module = solution_module(tmp_path, CH02)
    setattr(module, exercise.function, mistake.fn)
    with pytest.raises(ExerciseFailure) as caught:
        check(exercise.function, getattr(module, exercise.function))
    assert mistake.hint in str(caught.value)


# ---------------------------------------------------------------- messages for student-like code

TABLE_HEADER = """
import torch
def sinusoidal_encoding(seq_len, d_model, *, device=None, dtype=torch.float32):
"""


def test_an_odd_d_model_crash_gets_a_hint(tmp_path):
    code = TABLE_HEADER + """
    pos = torch.arange(seq_len, dtype=dtype, device=device)[:, None]
    angle = pos / 10000 ** (torch.arange(0, d_model, 2, dtype=dtype, device=device) / d_model)
    pe = torch.zeros(seq_len, d_model, dtype=dtype, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe
"""
    message = failure("sinusoidal_encoding", student_module(tmp_path, code))
    assert "raised RuntimeError" in message and "(odd d_model)" in message
    assert "in your line: pe[:, 1::2] = torch.cos(angle)" in message and "angle[:, : d_model // 2]" in message


def test_float32_arithmetic_for_a_float64_table_is_explained(tmp_path):
    code = TABLE_HEADER + """
    pos = torch.arange(seq_len)[:, None]
    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)   # float32: the default dtype
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(dtype=dtype, device=device)
"""
    message = failure("sinusoidal_encoding", student_module(tmp_path, code))
    assert "row 999" in message and "every step must be float64" in message
    # the hidden checks say the same if the visible ones ever let it through
    rounded = sinusoidal_encoding(50, 16, dtype=torch.float32).double()
    hint = ch02_hidden.sinusoidal_diagnose((rounded,), ch02.TableCase("", (50, 16), {"dtype": torch.float64}))
    assert hint is not None and "float32 rounding" in hint


def test_a_float32_table_computed_in_float32_passes(tmp_path):
    code = TABLE_HEADER + """
    pos = torch.arange(seq_len, dtype=dtype, device=device).unsqueeze(1)
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=dtype, device=device) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(seq_len, d_model, dtype=dtype, device=device)
    pe[:, 0::2] = torch.sin(pos * rate)
    pe[:, 1::2] = torch.cos(pos * rate)[:, : d_model // 2]
    return pe
"""
    grade("sinusoidal_encoding", vars(student_module(tmp_path, "import math\n" + code)))


def test_a_default_dtype_that_is_not_float32_is_named(tmp_path):
    code = TABLE_HEADER.replace("dtype=torch.float32", "dtype=torch.float64") + """
    return torch.zeros(seq_len, d_model, dtype=dtype)
"""
    assert "should be float32, the default" in failure("sinusoidal_encoding", student_module(tmp_path, code))


def test_a_transposed_table_is_named(tmp_path):
    code = TABLE_HEADER + """
    pos = torch.arange(seq_len, dtype=dtype, device=device)[None, :]            # (1, seq_len)
    rate = 10000 ** (-torch.arange(0, d_model, 2, dtype=dtype, device=device) / d_model)[:, None]
    pe = torch.zeros(d_model, seq_len, dtype=dtype, device=device)
    pe[0::2] = torch.sin(rate * pos)
    pe[1::2] = torch.cos(rate * pos)[: d_model // 2]
    return pe
"""
    message = failure("sinusoidal_encoding", student_module(tmp_path, code))
    assert "shape (4, 3), expected (3, 4)" in message and "transposed" in message


def test_the_reference_passes_every_check_its_refusals_included(tmp_path):
    """Every call of the visible checks succeeds on the reference (a too-long sequence is a
    ``raises=ValueError`` case: it passes because the reference refuses it), and every hidden
    case runs on it."""
    from transformer_course.checks import student_caller

    for exercise in exercises.for_assignment(CH02):
        reference = hidden_tests.get(exercise.function).load_reference()
        exercise.visible_checks(student_caller(exercise, reference))  # raises if any call fails
        for case in hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(0)):
            normalise_outputs(exercise, run_case(reference, case), case)


def test_an_add_positions_without_a_length_check_is_told_to_raise_a_value_error(tmp_path):
    code = "def add_positions(embeddings, table):\n    return embeddings + table[: embeddings.shape[-2]]\n"
    message = failure("add_positions", student_module(tmp_path, code))
    assert "raised RuntimeError" in message and "a table of only 5 positions" in message
    assert "raise ValueError" in message


def test_an_add_positions_that_pads_a_short_table_is_told_to_refuse_it(tmp_path):
    code = """
import torch
def add_positions(embeddings, table):
    seq = embeddings.shape[-2]
    padded = torch.cat([table, table.new_zeros(max(0, seq - table.shape[0]), table.shape[1])])
    return embeddings + padded[:seq]
"""
    message = failure("add_positions", student_module(tmp_path, code))
    assert "should raise ValueError" in message and "returned a result" in message


def test_another_exception_than_value_error_is_not_a_refusal(tmp_path):
    code = """
def add_positions(embeddings, table):
    if embeddings.shape[-2] > table.shape[0]:
        raise IndexError("too long")
    return embeddings + table[: embeddings.shape[-2]]
"""
    message = failure("add_positions", student_module(tmp_path, code))
    assert "raised IndexError: too long" in message and "raise ValueError" in message


def test_add_positions_on_the_batch_axis_gets_a_hint(tmp_path):
    code = """
def add_positions(embeddings, table):
    if embeddings.shape[1] > table.shape[0]:
        raise ValueError("too long")
    return embeddings + table[: embeddings.shape[1]]
"""
    message = failure("add_positions", student_module(tmp_path, code))
    assert "no batch dimension" in message and "embeddings.shape[-2]" in message


def test_concatenated_positions_are_named(tmp_path):
    code = """
import torch
def add_positions(embeddings, table):
    n = embeddings.shape[-2]
    return torch.cat([embeddings, table[:n].expand_as(embeddings)], dim=-1)
"""
    message = failure("add_positions", student_module(tmp_path, code))
    assert "(2, 3, 8), expected (2, 3, 4)" in message and "not concatenated" in message


def test_shuffling_the_wrong_axis_is_named(tmp_path):
    code = """
def permutation_experiment(x, perm, table=None):
    def attend(y):
        if table is not None:
            y = add_positions(y, table)
        return scaled_dot_product_attention(y, y, y)[0]
    return attend(x)[:, perm], attend(x[:, perm])
"""
    module = solution_module(tmp_path, CH02, permutation_experiment=code)
    message = failure("permutation_experiment", module)
    assert "no batch dimension" in message and "x[..., perm, :]" in message


def test_pytorchs_attention_is_allowed_in_the_experiment(tmp_path):
    code = """
import torch.nn.functional as F
def permutation_experiment(x, perm, table=None):
    def attend(y):
        if table is not None:
            y = y + table[: y.shape[-2]]
        return F.scaled_dot_product_attention(y, y, y)
    return attend(x)[..., perm, :], attend(x[..., perm, :])
"""
    grade("permutation_experiment", vars(student_module(tmp_path, code)))


def test_a_learned_table_with_other_names_or_without_a_length_check_fails(tmp_path):
    header = "import torch\nfrom torch import nn\n"
    renamed = header + """
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model, dropout=0.0):
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, d_model))
    def forward(self, x):
        return x + self.table[: x.shape[1]]
"""
    message = failure("LearnedPositionalEmbedding", student_module(tmp_path, renamed))
    assert "missing: embedding.weight" in message and "unexpected: table" in message
    unchecked = header + """
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
    def forward(self, x):
        return self.dropout(x + self.embedding(torch.arange(x.shape[1], device=x.device)))
"""
    message = failure("LearnedPositionalEmbedding", student_module(tmp_path, unchecked))
    assert "raised IndexError" in message and "longer than max_len = 5" in message and "raise ValueError" in message


def test_a_learned_table_through_add_positions_passes(tmp_path):
    code = """
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(add_positions(x, self.embedding.weight))
"""
    grade("LearnedPositionalEmbedding", vars(solution_module(tmp_path, CH02, LearnedPositionalEmbedding=code)))


# ---------------------------------------------------------------- one exercise, one cost


def test_later_exercises_are_graded_with_the_reference_add_positions(tmp_path):
    broken = "def add_positions(embeddings, table):\n    return embeddings * table[: embeddings.shape[-2]]\n"
    learned = """
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d_model, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(add_positions(x, self.embedding.weight))
"""
    module = solution_module(tmp_path, CH02, add_positions=broken, LearnedPositionalEmbedding=learned)
    assert "multiplied" in failure("add_positions", module)
    grade("permutation_experiment", vars(module))
    grade("LearnedPositionalEmbedding", vars(module))


# ---------------------------------------------------------------- forbidden shortcuts

FORBIDDEN = {
    "sinusoidal_encoding": (
        "import torch\nfrom transformer_course.positional import sinusoidal_encoding as table\n"
        "def sinusoidal_encoding(seq_len, d_model, *, device=None, dtype=torch.float32):\n"
        "    return table(seq_len, d_model, device=device, dtype=dtype)\n"
    ),
    "add_positions": (
        "import transformer_course.positional as p\n"
        "def add_positions(embeddings, table):\n    return p.add_positions(embeddings, table)\n"
    ),
    "permutation_experiment": (
        "import importlib\ndef permutation_experiment(x, perm, table=None):\n"
        "    reference = importlib.import_module('transformer_' + 'course.positional')\n"
        "    return reference.permutation_experiment(x, perm, table)\n"
    ),
    "position_similarity": (
        "from transformer_course import positional\n"
        "def position_similarity(table):\n    return positional.position_similarity(table)\n"
    ),
    "LearnedPositionalEmbedding": (
        "import transformer_course.positional as p\n"
        "class LearnedPositionalEmbedding(p.LearnedPositionalEmbedding):\n    pass\n"
    ),
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_the_reference_earns_nothing(tmp_path, name):
    message = failure(name, student_module(tmp_path, FORBIDDEN[name]))
    # (an import by a computed name is refused as such, before what it imports is looked at)
    assert "earns no points" in message and ("reference implementation" in message or "put together" in message)


# ---------------------------------------------------------------- figure helpers


def test_figure_helpers_draw_and_reject_bad_shapes():
    import matplotlib.pyplot as plt

    from transformer_course.plotting import positional as figures

    table = sinusoidal_encoding(20, 8)
    assert figures.plot_position_table(table).images
    assert len(figures.plot_position_waves(table, [0, 1, 6]).lines) == 3
    assert figures.plot_position_gram(table).images
    ax = figures.plot_similarity_by_distance({"a": table, "b": torch.randn(20, 8)}, normalise=True)
    assert [line.get_ydata()[0] for line in ax.lines[:2]] == [1.0, 1.0]  # normalised: 1 at distance 0
    fig = figures.plot_shuffled_attention(["a", "b", "c"], [2, 0, 1], torch.randn(3, 8), table=table)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="seq_len, d_model"):
        figures.plot_position_table(torch.zeros(2, 3, 4))
    plt.close("all")
