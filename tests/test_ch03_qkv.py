"""Chapter 3: the reference projections and lookups against PyTorch and hand-computed values,
the messages a student gets for typical mistakes, forbidden shortcuts, and the figure helpers."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.checks import check
from transformer_course.exercises import ExerciseFailure
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade
from transformer_course.projections import QKVProjection, hard_lookup, score_matrix, soft_lookup

matplotlib.use("Agg")

CH03 = "03-qkv"


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s answer gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    chapter = exercises.for_assignment(CH03)
    assert [e.grade_id for e in chapter] == [
        "test_QKVProjection", "test_score_matrix", "test_hard_lookup", "test_soft_lookup",
    ]
    assert [e.points for e in chapter] == [3, 2, 2, 2]
    assert chapter[0].is_module


# ================================================================ the reference, QKVProjection


def test_projection_shapes_names_and_defaults():
    projection = QKVProjection(8, 4, 6)
    q, k, v = projection(torch.randn(2, 5, 8))
    assert (q.shape, k.shape, v.shape) == ((2, 5, 4), (2, 5, 4), (2, 5, 6))
    assert sorted(projection.state_dict()) == [
        "k_proj.bias", "k_proj.weight", "q_proj.bias", "q_proj.weight", "v_proj.bias", "v_proj.weight",
    ]
    assert QKVProjection(8, 4).v_proj.out_features == 4  # d_v defaults to d_k
    assert sorted(QKVProjection(8, 4, bias=False).state_dict()) == ["k_proj.weight", "q_proj.weight", "v_proj.weight"]
    # three separate layers, not one shared
    assert len({id(p) for p in projection.parameters()}) == 6


def test_projection_is_x_times_the_transposed_weight_plus_bias(device, precise):
    projection = QKVProjection(6, 3, 5).to(device, precise.dtype)
    x = torch.randn(2, 4, 6, device=device, dtype=precise.dtype)
    outputs = projection(x)
    layers = (projection.q_proj, projection.k_proj, projection.v_proj)
    for out, layer in zip(outputs, layers):
        expected = torch.einsum("bsi,oi->bso", x, layer.weight) + layer.bias  # written independently
        torch.testing.assert_close(out, expected, atol=precise.atol, rtol=precise.rtol)
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), atol=precise.atol, rtol=precise.rtol)


def test_from_matrices_reads_the_weights_as_the_paper_writes_them():
    w_q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # (d_model 3, d_k 2)
    w_k = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    w_v = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)  # d_v 3
    projection = QKVProjection.from_matrices(w_q, w_k, w_v)
    x = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    q, k, v = projection(x)
    # by hand: [1, 2, 3] W_Q = [1 + 3, 2 + 3]; [1, 2, 3] W_V = [2, 9, 1]
    assert q.tolist() == [[[4.0, 5.0], [0.0, 1.0]]]
    assert k.tolist() == [[[2.0, 1.0], [1.0, 0.0]]]
    assert v.tolist() == [[[2.0, 9.0, 1.0], [0.0, 0.0, 0.0]]]
    assert projection.q_proj.bias is None and v.dtype == torch.float64
    with pytest.raises(ValueError, match="same shape"):
        QKVProjection.from_matrices(w_q, w_k[:, :1], w_v)
    with pytest.raises(ValueError, match="d_model = 3"):
        QKVProjection.from_matrices(w_q, w_k, w_v[:2])


def test_projections_and_soft_lookup_rebuild_torch_multihead_attention_with_one_head():
    """With torch's weights copied in, out_proj(soft_lookup(q / √d, k, v)) is nn.MultiheadAttention
    with a single head: our three projections are exactly its in-projection."""
    d = 6
    mha = torch.nn.MultiheadAttention(d, num_heads=1, batch_first=True, dtype=torch.float64).eval()
    projection = QKVProjection(d, d).double()
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    with torch.no_grad():
        layers = (projection.q_proj, projection.k_proj, projection.v_proj)
        for layer, w, b in zip(layers, (w_q, w_k, w_v), (b_q, b_k, b_v)):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    x = torch.randn(2, 5, d, dtype=torch.float64)
    expected, expected_weights = mha(x, x, x)
    q, k, v = projection(x)
    output, weights = soft_lookup(q / math.sqrt(d), k, v)
    torch.testing.assert_close(mha.out_proj(output), expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights, expected_weights, atol=1e-10, rtol=1e-10)


# ================================================================ score_matrix, hard and soft lookups


def test_score_matrix_by_hand_and_against_einsum(device, precise):
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=precise.dtype, device=device)
    k = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=precise.dtype, device=device)
    assert score_matrix(q, k).tolist() == [[2.0, 6.0], [0.0, 6.0]]  # row = query, column = key
    q = torch.randn(2, 3, 4, 8, dtype=precise.dtype, device=device)
    k = torch.randn(2, 3, 6, 8, dtype=precise.dtype, device=device)
    scores = score_matrix(q, k)
    assert scores.shape == (2, 3, 4, 6)
    torch.testing.assert_close(scores, torch.einsum("bhld,bhsd->bhls", q, k), atol=precise.atol, rtol=precise.rtol)


def test_hard_lookup_is_a_dictionary_with_the_best_key():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    values = torch.tensor([[10.0, 0.0], [0.0, 20.0], [5.0, 5.0]], dtype=torch.float64)
    queries = torch.tensor([[2.0, 0.5], [0.1, 3.0], [-1.0, -0.2]], dtype=torch.float64)
    output, weights = hard_lookup(queries, keys, values)
    assert weights.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert output.tolist() == values.tolist()
    assert weights.dtype == torch.float64
    # a tie goes to the first of the best keys, as torch.argmax documents
    _, weights = hard_lookup(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), values[:2].float())
    assert weights.tolist() == [[1.0, 0.0]]


def test_hard_lookup_against_gather(device, precise):
    q = torch.randn(2, 3, 4, 5, dtype=precise.dtype, device=device)
    k = torch.randn(2, 3, 7, 5, dtype=precise.dtype, device=device)
    v = torch.randn(2, 3, 7, 2, dtype=precise.dtype, device=device)
    output, weights = hard_lookup(q, k, v)
    best = torch.einsum("bhld,bhsd->bhls", q, k).argmax(-1)  # (2, 3, 4)
    expected = torch.gather(v, 2, best[..., None].expand(-1, -1, -1, 2))
    assert torch.equal(output, expected)
    assert torch.equal(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_soft_lookup_by_hand_and_against_torch_attention_without_scaling(device, precise):
    q = torch.tensor([[1.0, 0.0]], dtype=precise.dtype, device=device)
    k = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=precise.dtype, device=device)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=precise.dtype, device=device)
    output, weights = soft_lookup(q, k, v)
    e = [math.exp(2), math.exp(1), 1.0]  # softmax([2, 1, 0]) by hand
    expected = [x / sum(e) for x in e]
    torch.testing.assert_close(weights[0].cpu(), torch.tensor(expected, dtype=precise.dtype))
    torch.testing.assert_close(output[0].cpu(), torch.tensor(expected[:2], dtype=precise.dtype))

    q = torch.randn(2, 3, 4, 8, dtype=precise.dtype, device=device)
    k = torch.randn(2, 3, 6, 8, dtype=precise.dtype, device=device)
    v = torch.randn(2, 3, 6, 5, dtype=precise.dtype, device=device)
    output, weights = soft_lookup(q, k, v)
    theirs = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # softmax(Q Kᵀ) V, unscaled
    torch.testing.assert_close(output, theirs, atol=1e-6 if precise.dtype == torch.float32 else 1e-10, rtol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 4, dtype=precise.dtype, device=device))


def test_soft_lookup_approaches_the_hard_lookup_and_has_gradients():
    q = torch.randn(3, 4, dtype=torch.float64)
    k = torch.randn(6, 4, dtype=torch.float64)
    v = torch.randn(6, 2, dtype=torch.float64)
    hard, _ = hard_lookup(q, k, v)
    far = (soft_lookup(1000 * q, k, v)[0] - hard).abs().max()
    near = (soft_lookup(q, k, v)[0] - hard).abs().max()
    assert far < 1e-8 < near

    q.requires_grad_()
    soft, _ = soft_lookup(q, k, v)
    (gradient,) = torch.autograd.grad(soft.sum(), q)
    assert gradient.abs().sum() > 0
    hard, _ = hard_lookup(q, k, v)
    assert not hard.requires_grad  # argmax: no path from the output back to the query


def test_hidden_cases_are_seeded_and_leave_the_global_generator_alone():
    """The student's notebook keeps its random state while being graded."""
    for exercise in exercises.for_assignment(CH03):
        state = torch.get_rng_state()
        first = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(7))
        again = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(7))
        assert torch.equal(state, torch.get_rng_state()), exercise.function
        for a, b in zip(first, again):
            assert a.label == b.label and all(torch.equal(x, y) for x, y in zip(a.args, b.args))


# ================================================================ messages a student can act on

PROJECTION = """
import torch
from torch import nn

class QKVProjection(nn.Module):
    def __init__(self, d_model, d_k, d_v=None, bias=True):
        super().__init__()
        self.q_proj = nn.Linear(d_model, d_k, bias=bias)
        self.k_proj = nn.Linear(d_model, d_k, bias=bias)
        self.v_proj = nn.Linear(d_model, d_k if d_v is None else d_v, bias=bias)

    def forward(self, x):
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)
"""


def projection_failure(tmp_path, old: str, new: str) -> str:
    assert old in PROJECTION
    return failure("QKVProjection", student_module(tmp_path, PROJECTION.replace(old, new)))


def test_the_projection_template_passes(tmp_path):
    grade("QKVProjection", vars(student_module(tmp_path, PROJECTION)))


@pytest.mark.parametrize(
    "old, new, phrases",
    [
        ("return self.q_proj(x), self.k_proj(x), self.v_proj(x)", "q = self.q_proj(x)\n        return q, q, q",
         ["all the same", "each needs its own layer"]),
        ("self.k_proj = nn.Linear(d_model, d_k, bias=bias)", "self.k_proj = self.q_proj",
         ["q and k are the same", "two separate nn.Linear objects"]),
        ("return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
         "return self.q_proj(x), self.v_proj(x), self.k_proj(x)",
         ["k and v are swapped"]),
        ("bias=bias)\n        self.k_proj", "bias=True)\n        self.k_proj",
         ["unexpected: q_proj.bias", "pass bias=bias"]),
        ("nn.Linear(d_model, d_k, bias=bias)", "nn.Linear(d_model, d_k, bias=False)",
         ["missing: k_proj.bias, q_proj.bias", "pass bias=bias"]),
        ("self.v_proj = nn.Linear(d_model, d_k if d_v is None else d_v, bias=bias)",
         "self.v_proj = nn.Linear(d_model, d_k, bias=bias)", ["v has shape (2, 3, 3)", "nn.Linear(d_model, d_v)"]),
        ("return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
         "return x @ self.q_proj.weight, x @ self.k_proj.weight, x @ self.v_proj.weight",
         ["is x @ weight (+ bias)", "(out, in)"]),
        ("return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
         "return [x @ l.weight.T for l in (self.q_proj, self.k_proj, self.v_proj)]",
         ["without the bias", "self.q_proj(x)"]),
        ("self.q_proj = nn.Linear", "self.W_q = nn.Linear",
         ["missing: q_proj.bias, q_proj.weight", "unexpected: W_q.bias, W_q.weight"]),
        ("return self.q_proj(x), self.k_proj(x), self.v_proj(x)", "return self.q_proj(x), self.k_proj(x)",
         ["should return 3 values (q, k, v)"]),
        ("def __init__(self, d_model, d_k, d_v=None, bias=True)", "def __init__(self, d_model, d_k, d_v=None)",
         ["unexpected keyword argument 'bias'", "__init__(self, d_model, d_k, d_v=None, bias=True)"]),
    ],
    ids=["one layer", "aliased layer", "k v swapped", "bias ignored", "no bias", "v too narrow", "x @ W",
         "bias left out", "other names", "two outputs", "no bias argument"],
)
def test_projection_mistakes_are_named(tmp_path, old, new, phrases):
    message = projection_failure(tmp_path, old, new)
    for phrase in phrases:
        assert phrase in message, message


def test_the_visible_checks_leave_the_notebooks_random_state_alone(tmp_path, capsys):
    """Building the module draws its initial weights: from a seeded copy of the generator, so the
    visible checks compute the same on every run and the notebook's random numbers stay its own."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    check("QKVProjection", student_module(tmp_path, PROJECTION).QKVProjection)
    assert "✓ QKVProjection: all" in capsys.readouterr().out
    assert torch.equal(state, torch.get_rng_state())


def test_a_function_instead_of_a_module_is_told_to_define_a_class(tmp_path):
    code = "def QKVProjection(d_model, d_k, d_v=None, bias=True):\n    return None\n"
    assert "should be a class (derived from nn.Module)" in failure("QKVProjection", student_module(tmp_path, code))


def test_a_non_square_x_times_weight_gets_the_layout_hint(tmp_path):
    # The first worked example is square, so this student's non-square trouble shows there only
    # as numbers; the bias-free example then fails to multiply, with a hint on (out, in).
    code = PROJECTION.replace(
        "return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
        "return tuple(x @ l.weight.T.T for l in (self.q_proj, self.k_proj, self.v_proj))",
    )
    message = failure("QKVProjection", student_module(tmp_path, code))
    assert "x @ weight" in message and "(out, in)" in message


@pytest.mark.parametrize(
    "body, phrases",
    [
        ("return k @ q.transpose(-2, -1)", ["(2, 7, 5), expected (2, 5, 7)", "K Qᵀ"]),
        ("return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])", ["divided by sqrt(d_k)", "chapter 4"]),
        ("return torch.softmax(q @ k.transpose(-2, -1), dim=-1)", ["applied a softmax"]),
        ("return q @ k", ["raised RuntimeError", "in your line: return q @ k"]),
        ("return (q * k).sum(-1)", ["raised RuntimeError"]),
        ("return q @ k.T", ["in your line: return q @ k.T", "k.transpose(-2, -1)"]),
    ],
    ids=["K Q^T", "scaled", "softmax", "no transpose", "elementwise", "k.T"],
)
def test_score_matrix_mistakes_are_named(tmp_path, body, phrases):
    code = f"import math, torch\ndef score_matrix(q, k):\n    {body}\n"
    message = failure("score_matrix", student_module(tmp_path, code))
    for phrase in phrases:
        assert phrase in message, message


def test_k_q_transposed_with_square_inputs_is_named_by_its_numbers(tmp_path):
    code = """
def score_matrix(q, k):
    if q.shape[-2] == k.shape[-2]:
        return k @ q.transpose(-2, -1)
    return q @ k.transpose(-2, -1)
"""
    message = failure("score_matrix", student_module(tmp_path, code))
    assert "[[2, 0], [6, 6]], which is K Qᵀ" in message


LOOKUP_HEADER = """
import math, torch
from torch import nn

def score_matrix(q, k):
    return q @ k.transpose(-2, -1)
"""


@pytest.mark.parametrize(
    "body, phrases",
    [
        ("best = score_matrix(q, k).argmin(-1)\n    w = nn.functional.one_hot(best, k.shape[-2]).to(q.dtype)\n"
         "    return w @ v, w", ["worst key (argmin)"]),
        ("best = score_matrix(q, k).argmax(-1)\n    w = nn.functional.one_hot(best, k.shape[-2]).to(q.dtype)\n"
         "    return w @ k, w", ["best key itself"]),
        ("best = score_matrix(q, k).argmax(-1)\n    w = nn.functional.one_hot(best, k.shape[-2])\n"
         "    return w.to(q.dtype) @ v, w", ["`weights` has dtype torch.int64"]),
        ("w = torch.softmax(score_matrix(q, k), -1)\n    return w @ v, w", ["every key got some weight"]),
        ("best = score_matrix(q, k).argmax(-1)\n    return v[best], best", ["`weights` has dtype torch.int64"]),
    ],
    ids=["argmin", "returns the key", "integer weights", "soft", "indices as weights"],
)
def test_hard_lookup_mistakes_are_named(tmp_path, body, phrases):
    code = LOOKUP_HEADER + f"def hard_lookup(q, k, v):\n    {body}\n"
    message = failure("hard_lookup", student_module(tmp_path, code))
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize(
    "body, phrases",
    [
        ("w = torch.softmax(score_matrix(q, k) / math.sqrt(q.shape[-1]), -1)\n    return w @ v, w",
         ["divided the scores by sqrt(d_k)", "chapter 4"]),
        ("w = torch.softmax(score_matrix(q, k), dim=-2)\n    return w @ v, w", ["the softmax ran over the queries"]),
        ("w = score_matrix(q, k)\n    return w @ v, w", ["the weights are the raw scores", "torch.softmax"]),
        ("w = torch.softmax(score_matrix(q, k), -1)\n    return w @ k, w", ["you mixed the keys"]),
        ("w = torch.softmax(score_matrix(q, k), -1)\n    return w @ v", ["should return a tuple (output, weights)"]),
    ],
    ids=["scaled", "dim -2", "no softmax", "mixes keys", "output only"],
)
def test_soft_lookup_mistakes_are_named(tmp_path, body, phrases):
    code = LOOKUP_HEADER + f"def soft_lookup(q, k, v):\n    {body}\n"
    message = failure("soft_lookup", student_module(tmp_path, code))
    for phrase in phrases:
        assert phrase in message, message


def test_torch_softmax_is_allowed_in_the_soft_lookup(tmp_path, capsys):
    code = LOOKUP_HEADER + "def soft_lookup(q, k, v):\n    w = torch.softmax(score_matrix(q, k), -1)\n"
    code += "    return w @ v, w\n"
    grade("soft_lookup", vars(student_module(tmp_path, code)))
    assert "✓ soft_lookup: all" in capsys.readouterr().out


# ================================================================ one exercise, one cost


def test_lookups_are_graded_with_the_reference_score_matrix(tmp_path):
    scaled = "def score_matrix(q, k):\n    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
    module = solution_module(tmp_path, CH03, score_matrix=scaled)
    failure("score_matrix", module)
    grade("hard_lookup", vars(module))
    isolated = grade("soft_lookup", vars(module))
    # The student's module is untouched; the graded copy sees the reference score matrix.
    q, k = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert module.score_matrix(q, k)[0].tolist() == pytest.approx([4 / math.sqrt(2), 0.0])
    _, weights = isolated(q, k, torch.eye(2))
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([[4.0, 0.0]]), -1))


# ================================================================ forbidden shortcuts

FORBIDDEN = {
    ("soft_lookup", "F.sdpa with scale=1"): (
        "import torch, torch.nn.functional as F\n"
        "def soft_lookup(q, k, v):\n"
        "    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)\n"
        "    return out, torch.softmax(q @ k.transpose(-2, -1), -1)\n"
    ),
    ("soft_lookup", "reference"): (
        "from transformer_course.projections import soft_lookup as reference\n"
        "def soft_lookup(q, k, v):\n    return reference(q, k, v)\n"
    ),
    ("score_matrix", "chapter 4's reference"): (
        "import math\nfrom transformer_course.attention import attention_scores\n"
        "def score_matrix(q, k):\n    return attention_scores(q, k) * math.sqrt(q.shape[-1])\n"
    ),
    ("hard_lookup", "reference by getattr"): (
        "import importlib\n"
        "def hard_lookup(q, k, v):\n"
        "    module = importlib.import_module('transformer_' + 'course.projections')\n"
        "    return getattr(module, 'hard_' + 'lookup')(q, k, v)\n"
    ),
    ("QKVProjection", "in-projection"): PROJECTION.replace(
        "return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
        "return nn.functional._in_projection(x, x, x, self.q_proj.weight, self.k_proj.weight, "
        "self.v_proj.weight, self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)",
    ),
    ("QKVProjection", "derived from the reference"): (
        "from transformer_course import projections\n"
        "class QKVProjection(projections.QKVProjection):\n    pass\n"
    ),
}


@pytest.mark.parametrize("name, how", list(FORBIDDEN), ids=[f"{n}-{h}" for n, h in FORBIDDEN])
def test_forbidden_shortcuts_earn_nothing(tmp_path, name, how):
    message = failure(name, student_module(tmp_path, FORBIDDEN[name, how]))
    assert "earns no points" in message or "reference implementation" in message, message


# ================================================================ figure helpers


def test_lookup_sweep_hard_is_a_staircase_and_soft_slides_towards_it():
    from transformer_course.plotting.qkv import lookup_sweep

    sweep = lookup_sweep(strengths=(1.0, 3.0, 30.0), n_angles=181)
    assert set(sweep.hard_output.round(12).tolist()) == {0.0, 1.0, 2.0}
    assert sweep.hard_output[sweep.angles < 44].max() == 0 and sweep.hard_output[sweep.angles > 136].min() == 2
    for soft in sweep.soft_output:
        assert (soft[1:] - soft[:-1] > 0).all()  # turning towards larger values always helps a little
    away_from_jumps = (abs(sweep.angles - 45) > 10) & (abs(sweep.angles - 135) > 10)
    errors = [abs(s - sweep.hard_output)[away_from_jumps].max() for s in sweep.soft_output]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    assert sweep.soft_weights.shape == (3, 181, 3)
    assert abs(sweep.soft_weights.sum(-1) - 1).max() < 1e-12


def test_figure_helpers_draw_and_check_their_labels():
    from transformer_course.plotting.qkv import (
        WordInContext,
        format_matrix,
        lookup_sweep,
        plot_lookup_sweep,
        plot_scores,
        plot_token_matrices,
        plot_word_in_contexts,
    )

    words = ["a", "b", "c"]
    scores = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, 3.0]])
    table = format_matrix(scores, ["x", "y"], words, digits=1)
    assert table.splitlines()[1].split() == ["x", "1.0", "-2.0", "0.0"]
    ax = plot_scores(scores, ["x", "y"], words)
    assert ax.images[0].get_clim() == (-3.0, 3.0)  # symmetric around 0
    with pytest.raises(ValueError, match="2 x 3"):
        plot_scores(scores, words, words)
    fig = plot_token_matrices([("X", torch.eye(3), words), ("Q", torch.ones(3, 2), ["p", "q"])], words)
    assert len(fig.axes) == 2
    assert len(plot_lookup_sweep(lookup_sweep(n_angles=19)).axes) == 2
    contexts = [WordInContext("s1", ["a", "w"], torch.tensor([0.3, 0.7]), torch.tensor([1.0, 0.0])),
                WordInContext("s2", ["w", "b"], torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]))]
    fig = plot_word_in_contexts("w", ["f1", "f2"], torch.tensor([0.5, 0.5]), contexts)
    assert "cosine similarity 0.00" in fig.axes[-1].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")
