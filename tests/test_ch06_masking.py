"""Chapter 6: the reference's mask additions against PyTorch and hand-written values, the
messages a student gets for the classic mask mistakes, and the shortcuts that earn nothing."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.attention import softmax
from transformer_course.exercises import ExerciseFailure
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade
from transformer_course.masks import (
    causal_mask,
    causal_mask_lower_right,
    masked_self_attention,
    padding_mask,
    to_additive_mask,
    to_key_padding_mask,
    to_torch_module_mask,
)

matplotlib.use("Agg")

CH06 = "06-masking"


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s function gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    chapter = exercises.for_assignment(CH06)
    assert [e.grade_id for e in chapter] == [
        "test_causal_mask", "test_padding_mask", "test_combine_masks", "test_masked_self_attention",
    ]
    assert [e.points for e in chapter] == [2, 2, 2, 3]


# ---------------------------------------------------------------- reference additions


@pytest.mark.parametrize("L, S", [(1, 1), (1, 5), (2, 5), (4, 4), (3, 7)])
def test_causal_mask_lower_right_matches_torch_and_the_formula(L, S, device):
    from torch.nn.attention.bias import causal_lower_right

    mask = causal_mask_lower_right(L, S, device=device)
    assert mask.dtype == torch.bool and mask.shape == (L, S) and mask.device.type == device.type
    # query i sits at position S - L + i and sees keys 0..S-L+i
    expected = [[j <= S - L + i for j in range(S)] for i in range(L)]
    assert mask.tolist() == expected
    assert torch.equal(mask.cpu(), causal_lower_right(L, S)._materialize())
    if L == S:
        assert torch.equal(mask, causal_mask(S, device=device))


def test_causal_mask_lower_right_refuses_more_queries_than_keys():
    with pytest.raises(ValueError, match="query_len=3 > key_len=2"):
        causal_mask_lower_right(3, 2)


def test_is_causal_in_torch_aligns_upper_left():
    """The book says F.scaled_dot_product_attention(is_causal=True) uses torch.ones(L, S).tril()."""
    q, k = torch.randn(2, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    v = torch.randn(5, 3, dtype=torch.float64)
    torch_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    upper_left = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(2, 5, dtype=torch.bool).tril())
    torch.testing.assert_close(torch_causal, upper_left)


def test_to_key_padding_mask():
    mask = padding_mask(torch.tensor([[5, 6, 0], [0, 0, 0]]), pad_id=0)
    assert to_key_padding_mask(mask).tolist() == [[False, False, True], [True, True, True]]
    assert to_key_padding_mask(None) is None
    with pytest.raises(ValueError, match=r"\(batch, 1, 1, S\)"):
        to_key_padding_mask(causal_mask(3))


def test_to_additive_mask_values_and_equivalence(device):
    mask = torch.tensor([[True, False], [True, True]], device=device)
    additive = to_additive_mask(mask, dtype=torch.float64)
    assert additive.dtype == torch.float64 and additive.device.type == device.type
    assert additive.tolist() == [[0.0, -math.inf], [0.0, 0.0]]
    scores = torch.randn(3, 4, 4, dtype=torch.float64, device=device)
    causal = causal_mask(4, device=device)
    by_addition = torch.softmax(scores + to_additive_mask(causal, torch.float64), dim=-1)
    by_fill = torch.softmax(scores.masked_fill(~causal, -math.inf), dim=-1)
    torch.testing.assert_close(by_addition, by_fill, rtol=0, atol=0)
    with pytest.raises(TypeError, match="bool"):
        to_additive_mask(torch.ones(2, 2))


def test_float_masks_mean_the_same_to_sdpa_and_multihead_attention():
    """The book: additive masks need no flip, boolean ones do."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64).eval()
    causal = causal_mask(5)
    by_float, _ = mha(x, x, x, attn_mask=to_additive_mask(causal, torch.float64))
    by_bool, _ = mha(x, x, x, attn_mask=to_torch_module_mask(causal))
    torch.testing.assert_close(by_float, by_bool)
    q = x[:, None]
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, q, q, attn_mask=to_additive_mask(causal, torch.float64)),
        F.scaled_dot_product_attention(q, q, q, attn_mask=causal),
    )


def _masked_attention_by_hand(x, ids, pad_id, causal):
    """Independent of the package: a mask built in a loop, then torch's own SDPA per sequence."""
    batch, S, _ = x.shape
    outputs, weights = [], []
    for b in range(batch):
        allowed = torch.tensor([[ids[b, j].item() != pad_id and (not causal or j <= i) for j in range(S)]
                                for i in range(S)])
        scores = x[b] @ x[b].T / math.sqrt(x.shape[-1])
        w = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1).nan_to_num(0.0)
        outputs.append(w @ x[b])
        weights.append(w)
        # torch's SDPA agrees on the output, empty rows included (0 since PyTorch's safe softmax)
        torch.testing.assert_close(F.scaled_dot_product_attention(x[b], x[b], x[b], attn_mask=allowed), w @ x[b])
    return torch.stack(outputs), torch.stack(weights)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "not-causal"])
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_masked_self_attention_matches_a_hand_built_mask(causal, left, device, precise):
    ids = torch.tensor([[4, 5, 6, 7, 8], [4, 5, 6, 0, 0], [9, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    if left:
        ids = ids.flip(-1)
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    expected_out, expected_w = _masked_attention_by_hand(x, ids, 0, causal)
    out, w = masked_self_attention(x.to(device, precise.dtype), ids.to(device), 0, causal=causal)
    assert out.shape == (4, 5, 6) and w.shape == (4, 5, 5) and out.device.type == device.type
    assert not out.isnan().any() and not w.isnan().any()
    torch.testing.assert_close(out.cpu().double(), expected_out, atol=precise.atol * 10, rtol=precise.rtol * 10)
    torch.testing.assert_close(w.cpu().double(), expected_w, atol=precise.atol * 10, rtol=precise.rtol * 10)
    assert (w[3] == 0).all() and (out[3] == 0).all()  # all padding: nothing to attend to


def test_the_book_worked_example():
    """softmax([0, 0, -inf, -inf, -inf]) = [0.5, 0.5, 0, 0, 0]; zeroing after the softmax is not the same."""
    _, w = masked_self_attention(torch.zeros(1, 5, 4), torch.tensor([[1, 2, 3, 4, 5]]), 0)
    assert w[0, 1].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    allowed = causal_mask(5)[1]
    assert softmax(torch.zeros(5)).masked_fill(~allowed, 0.0).sum().item() == pytest.approx(0.4)


def test_fully_masked_rows_in_pytorch_as_the_book_describes():
    """The book's prose relies on the pinned PyTorch: plain softmax and nn.MultiheadAttention (with
    weights) give NaN for a row with nothing to attend to, F.scaled_dot_product_attention gives 0."""
    assert torch.softmax(torch.full((3,), -math.inf), dim=-1).isnan().all()
    x = torch.randn(1, 3, 4)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    out = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)
    assert (out[0, 1] == 0).all() and not out.isnan().any()
    mha = nn.MultiheadAttention(4, 1, batch_first=True).eval()
    out, _ = mha(x, x, x, attn_mask=to_torch_module_mask(mask))
    assert out[0, 1].isnan().all() and not out[0, 0].isnan().any()


def test_plot_helpers_draw_and_refuse_non_bool_masks():
    from transformer_course.plotting.masks import plot_attention_row, plot_mask, plot_mask_grid, plot_masks

    ax = plot_mask(causal_mask(3), ["a", "b", "c"], ["a", "b", "c"], legend=True)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert plot_masks([causal_mask(3), causal_mask_lower_right(2, 3)], ["x", "y"]).axes
    assert plot_mask_grid([[causal_mask(2), causal_mask(2)]], ["p", "q"], [["a", "b"]]).axes
    assert plot_attention_row([torch.eye(2), torch.eye(2)], ["p", "q"], ["a", "b"], ["a", "b"]).axes
    with pytest.raises(ValueError, match="bool"):
        plot_mask(torch.ones(2, 2))
    matplotlib.pyplot.close("all")


# ---------------------------------------------------------------- every typical mistake is named


MISTAKES = [
    pytest.param(e.function, i, id=f"{e.function}-{i}")
    for e in exercises.for_assignment(CH06)
    for i in range(len(hidden_tests.get(e.function).mistakes))
]


@pytest.mark.parametrize("name, index", MISTAKES)
def test_each_typical_mistake_gets_its_own_hint(tmp_path, name, index):
    exercise = exercises.get(name)
    mistake = hidden_tests.get(exercise.function).mistakes[index]
    module = solution_module(tmp_path, CH06)
    setattr(module, name, mistake.fn)
    assert mistake.hint in failure(name, module)


# ---------------------------------------------------------------- messages on student-like code


def test_causal_mask_written_with_arange_passes(tmp_path):
    code = """
import torch
def causal_mask(seq_len, device=None):
    positions = torch.arange(seq_len, device=device)
    return positions[None, :] <= positions[:, None]
"""
    grade("causal_mask", vars(student_module(tmp_path, code)))


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("torch.tril(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=-1)", "position i cannot see itself"),
        ("torch.tril(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=1)", "one step into the future"),
        ("torch.triu(torch.ones(n, n, dtype=torch.bool, device=device))", "torch.triu"),
        ("torch.ones(n, n, dtype=torch.bool, device=device).triu(1)", "wrong way round"),
        ("torch.tril(torch.ones(n, n, device=device))", "dtype torch.float32, expected torch.bool"),
        ("torch.tril(torch.ones(5, 5, dtype=torch.bool, device=device))", "causal_mask(1) has shape (5, 5)"),
    ],
    ids=["diagonal-1", "diagonal+1", "triu", "inverted", "float", "fixed-size"],
)
def test_causal_mask_mistakes_are_named(tmp_path, body, phrase):
    code = f"import torch\ndef causal_mask(n, device=None):\n    return {body}\n"
    assert phrase in failure("causal_mask", student_module(tmp_path, code))


def test_a_mask_made_elsewhere_than_the_device_asked_for_is_told_so_on_any_machine():
    """The meta device stands for a GPU: the outputs must come back where ``device`` says."""
    from transformer_course.exercises import Case
    from transformer_course.exercises import get as exercises_get
    from transformer_course.exercises.compare import call_student

    case = Case("causal_mask(3, device='meta')", (3,), {"device": torch.device("meta")})
    ignores = lambda n, device=None: torch.ones(n, n, dtype=torch.bool).tril()  # noqa: E731
    with pytest.raises(ExerciseFailure, match="create the mask on the device you are given"):
        call_student(exercises_get("causal_mask"), ignores, case)
    follows = lambda n, device=None: torch.ones(n, n, dtype=torch.bool, device=device).tril()  # noqa: E731
    assert call_student(exercises_get("causal_mask"), follows, case)[0].device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no cuda device on this machine")
def test_causal_mask_that_ignores_its_device_is_told(tmp_path):
    code = "import torch\ndef causal_mask(n, device=None):\n    return torch.ones(n, n, dtype=torch.bool).tril()\n"
    assert "create the mask on the device" in failure("causal_mask", student_module(tmp_path, code))


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("token_ids != pad_id", "is read as (L, S)"),
        ("(token_ids != pad_id)[:, None, :]", "land on head b"),
        ("(token_ids != pad_id)[:, :, None, None]", "S must be the LAST dimension"),
        ("(token_ids == pad_id)[:, None, None, :]", "wrong way round"),
        ("(token_ids != 0)[:, None, None, :]", "you compared with 0"),
        ("(token_ids != pad_id).float()[:, None, None, :]", "expected torch.bool"),
    ],
    ids=["batch-S", "3-D", "S-not-last", "inverted", "pad-zero", "float"],
)
def test_padding_mask_mistakes_are_named(tmp_path, body, phrase):
    code = f"def padding_mask(token_ids, pad_id):\n    return {body}\n"
    message = failure("padding_mask", student_module(tmp_path, code))
    assert phrase in message
    if "shape" in message:
        assert "(batch, 1, 1, S)" in message  # every shape message explains the right shape


def test_padding_mask_by_lengths_fails_on_left_padding(tmp_path):
    code = """
import torch
def padding_mask(token_ids, pad_id):
    lengths = (token_ids != pad_id).sum(dim=1)
    positions = torch.arange(token_ids.shape[1])
    return (positions[None, :] < lengths[:, None])[:, None, None, :]
"""
    assert "left padding" in failure("padding_mask", student_module(tmp_path, code))


COMBINE_PRELUDE = "def combine_masks(*masks):\n    present = [m for m in masks if m is not None]\n" \
                  "    if not present:\n        return None\n"


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("    out = present[0]\n    for m in present[1:]:\n        out = out | m\n    return out\n", "that is OR"),
        ("    out = present[0]\n    for m in present[1:]:\n        out &= m\n    return out\n",
         "combined = combined & m"),
        ("    import torch\n    return torch.stack(present).all(dim=0)\n", "torch.stack needs masks of equal shapes"),
        ("    out = present[0]\n    for m in present[1:]:\n        out = out * m\n    return out.float()\n",
         "expected torch.bool"),
        ("    return present[0] & present[1] if len(present) > 1 else present[0]\n", "ignores the third"),
        ("    import torch\n    return torch.ones(1, dtype=torch.bool)\n", "expected"),
    ],
    ids=["or", "in-place", "stack", "float", "first-two", "constant"],
)
def test_combine_masks_mistakes_are_named(tmp_path, body, phrase):
    module = student_module(tmp_path, COMBINE_PRELUDE + body)
    assert phrase in failure("combine_masks", module)


def test_combine_masks_that_does_not_skip_none_is_told_to(tmp_path):
    code = """
def combine_masks(*masks):
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out
"""
    assert "skip the masks that are None" in failure("combine_masks", student_module(tmp_path, code))


def test_the_head_dimension_trap_is_explained(tmp_path):
    code = """
def masked_self_attention(x, token_ids, pad_id, causal=True):
    mask = padding_mask(token_ids, pad_id)
    if causal:
        mask = combine_masks(mask, causal_mask(token_ids.shape[-1]))
    return scaled_dot_product_attention(x, x, x, mask)
"""
    message = failure("masked_self_attention", solution_module(tmp_path, CH06, masked_self_attention=code))
    assert "(2, 2, 5, 5), expected (2, 5, 5)" in message and "mask[:, 0]" in message


def test_own_attention_with_nan_rows_is_explained(tmp_path):
    code = """
def masked_self_attention(x, token_ids, pad_id, causal=True):
    mask = padding_mask(token_ids, pad_id)[:, 0]
    if causal:
        mask = mask & causal_mask(token_ids.shape[-1])
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)
    return weights @ x, weights
"""
    message = failure("masked_self_attention", solution_module(tmp_path, CH06, masked_self_attention=code))
    assert "gives NaN" in message and "nothing to attend to" in message


def test_own_attention_without_projections_passes(tmp_path):
    code = """
def masked_self_attention(x, token_ids, pad_id, causal=True):
    mask = padding_mask(token_ids, pad_id)[:, 0]
    if causal:
        mask = mask & causal_mask(token_ids.shape[-1], device=x.device)
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)
    weights = weights.masked_fill(~mask, 0.0)
    return weights @ x, weights
"""
    grade("masked_self_attention", vars(solution_module(tmp_path, CH06, masked_self_attention=code)))


def test_masked_attention_keeps_its_points_when_the_masks_are_wrong(tmp_path):
    broken = {
        "causal_mask": "def causal_mask(seq_len, device=None):\n"
                       "    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu()\n",
        "padding_mask": "def padding_mask(token_ids, pad_id):\n    return token_ids == pad_id\n",
        "combine_masks": "def combine_masks(*masks):\n    return masks[0]\n",
    }
    module = solution_module(tmp_path, CH06, **broken)
    for name in broken:
        failure(name, module)
    isolated = grade("masked_self_attention", vars(module))
    _, weights = isolated(torch.zeros(1, 3, 2), torch.tensor([[1, 2, 0]]), 0)
    assert weights[0].tolist() == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]


# ---------------------------------------------------------------- forbidden shortcuts

FORBIDDEN = {
    "causal_mask": {
        "nn.Transformer": (
            "import torch\ndef causal_mask(seq_len, device=None):\n"
            "    return torch.nn.Transformer.generate_square_subsequent_mask(seq_len, device=device) == 0\n"
        ),
        "attention.bias": (
            "from torch.nn.attention.bias import causal_lower_right\n"
            "def causal_mask(seq_len, device=None):\n"
            "    return causal_lower_right(seq_len, seq_len)._materialize(device)\n"
        ),
        "reference": (
            "from transformer_course import masks\n"
            "def causal_mask(seq_len, device=None):\n    return masks.causal_mask(seq_len, device)\n"
        ),
    },
    "padding_mask": {
        "reference": (
            "import importlib\ndef padding_mask(token_ids, pad_id):\n"
            "    return importlib.import_module('transformer_' + 'course.masks').padding_mask(token_ids, pad_id)\n"
        ),
    },
    "combine_masks": {
        "reference": (
            "from transformer_course.masks import combine_masks as c\n"
            "def combine_masks(*masks):\n    return c(*masks)\n"
        ),
    },
    "masked_self_attention": {
        "F.sdpa": (
            "import torch.nn.functional as F\n"
            "def masked_self_attention(x, token_ids, pad_id, causal=True):\n"
            "    mask = padding_mask(token_ids, pad_id)[:, 0]\n"
            "    if causal:\n        mask = mask & causal_mask(token_ids.shape[-1])\n"
            "    out = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)\n"
            "    return out, scaled_dot_product_attention(x, x, x, mask)[1]\n"
        ),
        "nn.MultiheadAttention": (
            "def masked_self_attention(x, token_ids, pad_id, causal=True):\n"
            "    m = torch.nn.MultiheadAttention(x.shape[-1], 1, batch_first=True, dtype=x.dtype)\n"
            "    return m(x, x, x)\n"
        ),
        "reference": (
            "from transformer_course.masks import masked_self_attention as m\n"
            "def masked_self_attention(x, token_ids, pad_id, causal=True):\n"
            "    return m(x, token_ids, pad_id, causal)\n"
        ),
    },
}
FORBIDDEN_CASES = [
    pytest.param(name, code, id=f"{name}-{how}") for name, ways in FORBIDDEN.items() for how, code in ways.items()
]


@pytest.mark.parametrize("name, code", FORBIDDEN_CASES)
def test_forbidden_shortcuts_earn_nothing(tmp_path, name, code):
    module = solution_module(tmp_path, CH06, **{name: code})
    assert "earns no points" in failure(name, module)


def test_chapter_4_attention_from_the_setup_cell_is_allowed(tmp_path):
    """The solution imports the reference scaled_dot_product_attention, listed in `uses`."""
    module = solution_module(tmp_path, CH06)
    assert module.scaled_dot_product_attention.__module__ == "transformer_course.attention"
    grade("masked_self_attention", vars(module))
