"""Chapter 5's checks on student-like code, and the chapter's worked examples checked against
PyTorch: the messages a student gets for typical mistakes, forbidden shortcuts, and the numbers
the book and the visible checks rely on."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.checks import check
from transformer_course.exercises import ExerciseFailure
from transformer_course.exercises.ch05_multihead import worked_example
from transformer_course.exercises.compare import mismatch, normalise_outputs, run_case
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import _likely_mistake, explain_failure, grade
from transformer_course.masks import to_torch_module_mask
from transformer_course.multihead import MultiHeadAttention

matplotlib.use("Agg")

CH05 = "05-multihead"
SETUP = (
    "import math\nimport torch\nfrom torch import nn\n"
    "from transformer_course.attention import scaled_dot_product_attention\n"
)


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s answer gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    ids = [e.grade_id for e in exercises.for_assignment(CH05)]
    assert ids == ["test_split_heads", "test_merge_heads", "test_MultiHeadAttention"]
    assert [e.points for e in exercises.for_assignment(CH05)] == [2, 2, 4]


# ---------------------------------------------------------------- split_heads and merge_heads

SPLIT = "def split_heads(x, n_heads):\n    b, s, d = x.shape\n"
MERGE = "def merge_heads(x):\n    b, h, s, d = x.shape\n"


@pytest.mark.parametrize("body, phrase", [
    # the classic bug: right shape, wrong numbers
    ("    return x.view(b, n_heads, s, d // n_heads)\n", "you reshaped to heads without the transpose"),
    ("    return x.reshape(b, n_heads, s, d // n_heads)\n", "you reshaped to heads without the transpose"),
    ("    return x.view(b, s, d // n_heads, n_heads).permute(0, 3, 1, 2)\n", "not every n_heads-th column"),
    ("    return x.view(b, s, n_heads, d // n_heads)\n", "swap them with .transpose(1, 2)"),
    ("    return x.view(b, s, n_heads, d // n_heads).transpose(2, 3)\n", "swap them with .transpose(1, 2)"),
], ids=["view", "reshape", "interleaved", "no transpose at all", "wrong transpose"])
def test_split_heads_mistakes_are_named(tmp_path, body, phrase):
    message = failure("split_heads", student_module(tmp_path, SPLIT + body))
    assert phrase in message, message


@pytest.mark.parametrize("body, phrase", [
    ("    return x.reshape(b, s, h * d)\n", "merged the heads without the transpose"),
    ("    return x.permute(0, 2, 3, 1).reshape(b, s, h * d)\n", "not interleaved"),
    ("    return x.transpose(1, 2)\n", "reshape the last two dimensions into one"),
    ("    return x.transpose(1, 2).view(b, s, h * d)\n", "Use .reshape(...) instead"),
], ids=["no transpose", "interleaved", "no reshape", "view after transpose"])
def test_merge_heads_mistakes_are_named(tmp_path, body, phrase):
    message = failure("merge_heads", student_module(tmp_path, MERGE + body))
    assert phrase in message, message


def test_the_no_transpose_split_is_caught_on_random_inputs_too():
    """The hidden cases tell the classic bug by its values alone, on every case but the
    degenerate ones (one position, or one head, where it happens to be right)."""
    exercise = exercises.get("split_heads")
    (mistake, *_) = hidden_tests.get(exercise.function).mistakes
    cases = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(1))
    wrong = [c.label for c in cases if not torch.equal(mistake.fn(*c.args), c.args[0].view(
        c.args[0].shape[0], c.args[0].shape[1], c.args[1], -1).transpose(1, 2))]
    degenerate = [c.label for c in cases if c.args[0].shape[1] == 1 or c.args[1] == 1]
    assert sorted(wrong + degenerate) == sorted(c.label for c in cases)


# ---------------------------------------------------------------- MultiHeadAttention

MHA_INIT = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.0, bias=True, kdim=None, vdim=None):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query, key, value, mask=None):
'''
GOOD_FORWARD = '''        q = split_heads(self.q_proj(query), self.n_heads)
        k = split_heads(self.k_proj(key), self.n_heads)
        v = split_heads(self.v_proj(value), self.n_heads)
        heads, weights = scaled_dot_product_attention(q, k, v, mask)
        return self.out_proj(merge_heads(heads)), weights
'''
INLINE = '''        b, L, d = query.shape
        h = self.n_heads
        q = self.q_proj(query).view(b, L, h, d // h).transpose(1, 2)
        k = self.k_proj(key).view(b, key.shape[1], h, d // h).transpose(1, 2)
        v = self.v_proj(value).view(b, value.shape[1], h, d // h).transpose(1, 2)
        s = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=-1)
        if mask is not None:
            w = w.masked_fill(~mask, 0.0)
        out = (w @ v).transpose(1, 2).reshape(b, L, d)
        return self.out_proj(out), w
'''


def mha_module(tmp_path, forward: str, init: str = MHA_INIT):
    """A student's notebook: the solution's split/merge and this MultiHeadAttention."""
    return solution_module(tmp_path, CH05, MultiHeadAttention=init + forward)


def test_an_inline_answer_without_the_helpers_passes(tmp_path):
    grade("MultiHeadAttention", vars(mha_module(tmp_path, INLINE)))


@pytest.mark.parametrize("forward, phrase", [
    (INLINE.replace("view(b, L, h, d // h).transpose(1, 2)", "view(b, h, L, d // h)")
     .replace("view(b, key.shape[1], h, d // h).transpose(1, 2)", "view(b, h, key.shape[1], d // h)")
     .replace("view(b, value.shape[1], h, d // h).transpose(1, 2)", "view(b, h, value.shape[1], d // h)"),
     "you reshaped to heads without the transpose"),
    (INLINE.replace("(w @ v).transpose(1, 2).reshape(b, L, d)", "(w @ v).reshape(b, L, d)"),
     "merged the heads without the transpose"),
    (GOOD_FORWARD.replace("self.out_proj(merge_heads(heads))", "merge_heads(heads)"),
     "output projection"),
    (INLINE.replace("math.sqrt(d // h)", "math.sqrt(d)"), "sqrt(d_head)"),
    (INLINE.replace("masked_fill(~mask", "masked_fill(mask"), "'may attend'"),
    (GOOD_FORWARD.replace("mask)", "~mask if mask is not None else None)"), "'may attend'"),
    (GOOD_FORWARD.replace("return self.out_proj(merge_heads(heads)), weights",
                          "return self.out_proj(merge_heads(heads)), weights.mean(dim=1)"),
     "do not average them over the heads"),
    (GOOD_FORWARD.replace("return self.out_proj(merge_heads(heads)), weights",
                          "return weights, self.out_proj(merge_heads(heads))"),
     "(output, weights), in that order"),
    (GOOD_FORWARD.replace("self.k_proj(key)", "self.k_proj(query)")
     .replace("self.v_proj(value)", "self.v_proj(query)"), "self.k_proj(query)"),
    (GOOD_FORWARD.replace("self.k_proj(key)", "self.k_proj(value)")
     .replace("self.v_proj(value)", "self.v_proj(key)"), "keys and values are swapped"),
], ids=["split without transpose", "merge without transpose", "no out_proj", "sqrt(d_model)",
        "inverted mask inline", "inverted mask passed on", "averaged weights", "outputs swapped",
        "keys from the query", "keys and values swapped"])
def test_multi_head_attention_mistakes_are_named(tmp_path, forward, phrase):
    message = failure("MultiHeadAttention", mha_module(tmp_path, forward))
    assert phrase in message, message


@pytest.mark.parametrize("name", ["split_heads", "merge_heads", "MultiHeadAttention"])
def test_each_mistake_is_recognised_by_its_own_hint_on_some_hidden_case(name):
    """No typical mistake hides behind another: on a hidden case where a mistake's outputs differ
    from the reference's, those outputs are named with that mistake's own hint."""
    exercise = exercises.get(name)
    reference = hidden_tests.get(exercise.function).load_reference()
    cases = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(0))
    for mistake in hidden_tests.get(exercise.function).mistakes:
        named = False
        for case in cases:
            try:
                with torch.no_grad():
                    wrong = normalise_outputs(exercise, run_case(mistake.answer(name), case), case)
            except ExerciseFailure as failure:  # it cannot be built for this case: named the same way
                named = mistake.hint in explain_failure(exercise, case, str(failure))
                if named:
                    break
                continue
            with torch.no_grad():
                right = normalise_outputs(exercise, run_case(reference, case), case)
            if all(mismatch(w, r, what="", rtol=1e-7, atol=1e-9) is None for w, r in zip(wrong, right)):
                continue  # this case cannot tell the mistake from the answer
            named = _likely_mistake(exercise, wrong, case) == mistake.hint
            if named:
                break
        assert named, f"{name}: no hidden case names the mistake {mistake.hint[:60]!r}"


@pytest.mark.parametrize("name", ["split_heads", "merge_heads", "MultiHeadAttention"])
def test_the_visible_checks_name_each_mistake_from_the_recorded_outputs(name):
    """The notebook's check() (the student side alone: recorded outputs, no mistake code) names
    every typical mistake by its own hint; keys made from the query already fail on the shape
    of the weights, and the shape hint says so."""
    by_shape = {"_KeysFromQuery": "did you project the query where the key belongs (self.k_proj(query))?"}
    for mistake in hidden_tests.get(name).mistakes:
        with pytest.raises(ExerciseFailure) as caught:
            check(name, mistake.answer(name))
        expected = by_shape.get(getattr(mistake.fn, "__name__", ""), mistake.hint)
        assert expected in str(caught.value), str(caught.value)


def test_parameters_with_other_names_are_listed(tmp_path):
    init = MHA_INIT.replace("self.q_proj", "self.W_q").replace("self.out_proj", "self.W_o")
    forward = GOOD_FORWARD.replace("self.q_proj", "self.W_q").replace("self.out_proj", "self.W_o")
    message = failure("MultiHeadAttention", mha_module(tmp_path, forward, init))
    assert "missing: out_proj.bias, out_proj.weight, q_proj.bias, q_proj.weight" in message
    assert "unexpected: W_o.bias, W_o.weight, W_q.bias, W_q.weight" in message


def test_ignoring_kdim_and_bias_is_reported(tmp_path):
    init = MHA_INIT.replace("kdim or d_model", "d_model")
    message = failure("MultiHeadAttention", mha_module(tmp_path, GOOD_FORWARD, init))
    assert "`k_proj.weight` has shape (8, 8), the reference's has (8, 6)" in message
    init = MHA_INIT.replace("bias=bias", "bias=True")
    message = failure("MultiHeadAttention", mha_module(tmp_path, GOOD_FORWARD, init))
    assert "unexpected: k_proj.bias, out_proj.bias, q_proj.bias, v_proj.bias" in message


def test_nan_for_an_all_padding_sequence_is_explained(tmp_path):
    forward = INLINE.replace("            w = w.masked_fill(~mask, 0.0)\n", "            pass\n")
    message = failure("MultiHeadAttention", mha_module(tmp_path, forward))
    assert "all padding gives NaN" in message


def test_blank_and_function_answers(tmp_path):
    blank = MHA_INIT.replace("        super().__init__()\n", "        super().__init__()\n"
                             "        raise NotImplementedError()\n")
    assert "not implemented yet" in failure("MultiHeadAttention", mha_module(tmp_path, "        pass\n", blank))
    module = solution_module(tmp_path, CH05, MultiHeadAttention="def MultiHeadAttention(d_model, n_heads):\n"
                             "    return None\n")
    assert "should be a class (derived from nn.Module)" in failure("MultiHeadAttention", module)


# ---------------------------------------------------------------- one exercise, one cost


def test_attention_is_graded_with_the_reference_split_and_merge(tmp_path):
    broken = {
        "split_heads": "def split_heads(x, n_heads):\n    return x.view(x.shape[0], n_heads, x.shape[1], -1)\n",
        "merge_heads": "def merge_heads(x):\n    return x.reshape(x.shape[0], x.shape[2], -1)\n",
    }
    module = solution_module(tmp_path, CH05, **broken)
    failure("split_heads", module)
    failure("merge_heads", module)
    isolated = grade("MultiHeadAttention", vars(module))
    assert isolated is not module.MultiHeadAttention and issubclass(isolated, module.MultiHeadAttention)


# ---------------------------------------------------------------- forbidden shortcuts

FORBIDDEN_MHA = {
    "nn.MultiheadAttention": GOOD_FORWARD,  # the init below replaces the projections
    "F.scaled_dot_product_attention": GOOD_FORWARD.replace(
        "heads, weights = scaled_dot_product_attention(q, k, v, mask)",
        "heads = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
        "        weights = torch.zeros(q.shape[:-1] + k.shape[-2:-1], dtype=q.dtype)"),
    "sdpa by getattr": GOOD_FORWARD.replace(
        "heads, weights = scaled_dot_product_attention(q, k, v, mask)",
        "heads = getattr(torch.nn.functional, 'scaled_dot_' + 'product_attention')(q, k, v, attn_mask=mask)\n"
        "        weights = torch.zeros(q.shape[:-1] + k.shape[-2:-1], dtype=q.dtype)"),
    "multi_head_attention_forward by getattr": GOOD_FORWARD.replace(
        "heads, weights = scaled_dot_product_attention(q, k, v, mask)",
        "forward = getattr(torch.nn.functional, 'multi_head_' + 'attention_forward')\n"
        "        w_in = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])\n"
        "        b_in = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])\n"
        "        return forward(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),\n"
        "                       query.shape[-1], self.n_heads, w_in, b_in, None, None, False, 0.0,\n"
        "                       self.out_proj.weight, self.out_proj.bias, training=False,\n"
        "                       average_attn_weights=False)"),
    "nn.TransformerEncoderLayer": GOOD_FORWARD.replace(
        "        q = ", "        nn.TransformerEncoderLayer(query.shape[-1], self.n_heads)\n        q = ", 1),
}


@pytest.mark.parametrize("how", list(FORBIDDEN_MHA))
def test_forbidden_calls_earn_nothing_in_multi_head_attention(tmp_path, how):
    init = MHA_INIT
    if how == "nn.MultiheadAttention":
        init = MHA_INIT.replace("        self.n_heads = n_heads\n",
                                "        self.n_heads = n_heads\n"
                                "        self.torch_mha = nn.MultiheadAttention(d_model, n_heads, batch_first=True)\n")
    message = failure("MultiHeadAttention", mha_module(tmp_path, FORBIDDEN_MHA[how], init))
    assert "earns no points" in message, message


@pytest.mark.parametrize("code", [
    # the reference itself, imported, subclassed or reached through the package
    "from transformer_course.multihead import MultiHeadAttention\n",
    "import transformer_course.multihead as ref\nclass MultiHeadAttention(ref.MultiHeadAttention):\n    pass\n",
], ids=["import", "subclass"])
def test_the_reference_module_earns_nothing(tmp_path, code):
    module = student_module(tmp_path, SETUP + code)
    assert "reference implementation" in failure("MultiHeadAttention", module)


@pytest.mark.parametrize("name, code", [
    ("split_heads", "from transformer_course.multihead import split_heads as s\n"
                    "def split_heads(x, n_heads):\n    return s(x, n_heads)\n"),
    ("merge_heads", "import importlib\ndef merge_heads(x):\n"
                    "    return importlib.import_module('transformer_' + 'course.multihead').merge_heads(x)\n"),
])
def test_the_reference_helpers_earn_nothing(tmp_path, name, code):
    message = failure(name, student_module(tmp_path, code))
    # (an import by a computed name is refused as such, before what it imports is looked at)
    assert "reference implementation" in message or "put together" in message


def test_chapter_4s_attention_is_allowed_because_it_is_listed(tmp_path):
    """The setup cell imports the reference scaled_dot_product_attention; `uses` allows it."""
    assert "scaled_dot_product_attention" in exercises.get("MultiHeadAttention").uses
    grade("MultiHeadAttention", vars(mha_module(tmp_path, GOOD_FORWARD)))


def test_the_setup_cells_import_repeated_in_the_answer_keeps_its_points(tmp_path):
    """An honest habit: the answer cell starts with the setup cell's own import (a false
    positive the fourth round of the attack found: it cost the exercise)."""
    init = "from transformer_course.attention import scaled_dot_product_attention\n\n\n" + MHA_INIT
    grade("MultiHeadAttention", vars(mha_module(tmp_path, GOOD_FORWARD, init)))


# ---------------------------------------------------------------- the numbers behind the checks


def _torch_copy(state: dict[str, torch.Tensor], d_model: int, n_heads: int, **kwargs) -> nn.MultiheadAttention:
    """A batch_first nn.MultiheadAttention holding the weights of a reference-layout state."""
    theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        w = [state[f"{p}_proj.weight"] for p in "qkv"]
        if theirs._qkv_same_embed_dim:
            theirs.in_proj_weight.copy_(torch.cat(w))
        else:
            theirs.q_proj_weight.copy_(w[0])
            theirs.k_proj_weight.copy_(w[1])
            theirs.v_proj_weight.copy_(w[2])
        theirs.out_proj.weight.copy_(state["out_proj.weight"])
        if theirs.in_proj_bias is not None:
            theirs.in_proj_bias.copy_(torch.cat([state[f"{p}_proj.bias"] for p in "qkv"]))
            theirs.out_proj.bias.copy_(state["out_proj.bias"])
    return theirs.eval()


def test_hidden_cases_carry_torch_weights_and_the_reference_agrees_with_torch_on_them():
    """Grading against the reference is grading against nn.MultiheadAttention: on every hidden
    case the reference equals torch, except that a query with nothing to attend to gets weights
    0 where torch gives NaN."""
    exercise = exercises.get("MultiHeadAttention")
    cases = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(3))
    for case in cases:
        exact = case.to(torch.float64)
        d_model, n_heads = exact.init
        theirs = _torch_copy(exact.state, d_model, n_heads, **exact.init_kwargs)
        ours = MultiHeadAttention(d_model, n_heads, **exact.init_kwargs).double().eval()
        ours.load_state_dict(exact.state)
        query, key, value = exact.args
        mask = exact.kwargs.get("mask")
        out, weights = ours(query, key, value, mask)
        if mask is not None:
            # torch wants a 2-D or 3-D (batch * heads, L, S) mask
            mask = mask.expand(query.shape[0], n_heads, query.shape[1], key.shape[1])
            mask = mask.reshape(-1, query.shape[1], key.shape[1])
        expected, expected_weights = theirs(query, key, value, attn_mask=to_torch_module_mask(mask),
                                            average_attn_weights=False)
        finite = ~expected_weights.isnan().any(-1)  # (batch, heads, L): queries torch can answer
        torch.testing.assert_close(weights[finite], expected_weights[finite], rtol=1e-10, atol=1e-12)
        rows = finite.all(1)  # (batch, L): positions every head could answer
        torch.testing.assert_close(out[rows], expected[rows], rtol=1e-10, atol=1e-12)
        assert not out.isnan().any() and (weights[~finite] == 0).all(), case.label


def test_making_the_cases_is_seeded_and_leaves_the_global_generator_alone():
    exercise = exercises.get("MultiHeadAttention")
    before = torch.get_rng_state()
    first = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)  # the student's notebook shares it
    second = hidden_tests.get(exercise.function).make_cases(torch.Generator().manual_seed(7))
    for a, b in zip(first, second, strict=True):
        assert a.label == b.label
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
        assert all(torch.equal(x, y) for x, y in zip(a.args, b.args))
    # torch starts its biases at 0; the cases' are random, so a forgotten bias shows
    assert all(first[0].state[f"{p}.bias"].abs().min() > 0 for p in ("q_proj", "out_proj"))


def test_worked_example_numbers_match_torch():
    """The visible check's numbers, recomputed by nn.MultiheadAttention with identity weights."""
    query, key, value = worked_example()
    eye = torch.eye(4, dtype=torch.float64)
    state = {f"{p}.weight": eye for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    state |= {f"{p}.bias": torch.zeros(4, dtype=torch.float64) for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    theirs = _torch_copy(state, 4, 2)
    out, weights = theirs(query, key, value, average_attn_weights=False)
    s = torch.softmax(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), dim=0)  # [0.665, 0.245, 0.090]
    torch.testing.assert_close(weights[0, 0, 0], s)
    torch.testing.assert_close(weights[0, 1, 0], s.flip(0))
    torch.testing.assert_close(weights[0, :, 1], torch.full((2, 3), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(out[0, 0], torch.stack([s[0], s[1], s[2], s[1]]))
    torch.testing.assert_close(out[0, 1], torch.full((4,), 1 / 3, dtype=torch.float64))
    # the check with out_proj = 2·I and bias 1 expects 2 * merged + 1
    theirs.out_proj.weight.data.mul_(2)
    theirs.out_proj.bias.data.fill_(1)
    out, _ = theirs(query, key, value)
    torch.testing.assert_close(out[0, 0], 2 * torch.stack([s[0], s[1], s[2], s[1]]) + 1)
    assert abs(out[0, 0, 0].item() - 2.330) < 1e-3 and abs(out[0, 0, 2].item() - 1.180) < 1e-3


def test_parameter_count_is_the_same_for_any_number_of_heads():
    d_model = 64
    expected = 4 * d_model**2 + 4 * d_model
    for n_heads in (1, 2, 8, 64):
        assert sum(p.numel() for p in MultiHeadAttention(d_model, n_heads).parameters()) == expected
    assert sum(p.numel() for p in nn.MultiheadAttention(d_model, 8).parameters()) == expected


# ---------------------------------------------------------------- figure helpers


def test_the_toy_heads_follow_their_relations_in_torch():
    """The book's toy, run by nn.MultiheadAttention: head 0 looks at the previous word, head 1
    follows the grammar, and one head with the same weights has to compromise."""
    from transformer_course.plotting.multihead import toy_heads

    toy = toy_heads()
    words = list(toy.words)
    theirs = _torch_copy(toy.state, toy.d_model, 2)
    _, weights = theirs(toy.x, toy.x, toy.x, average_attn_weights=False)  # (1, 2, 6, 6)
    previous = [0, 0, 1, 2, 3, 4]  # "the" (position 0) has no previous word and looks at itself
    assert weights[0, 0].argmax(-1).tolist() == previous
    assert (weights[0, 0].amax(-1) > 0.9).all()
    grammar = weights[0, 1]
    assert grammar[words.index("sat")].argmax() == words.index("cat")  # verb -> animal
    assert grammar[words.index("on")].argmax() == words.index("mat")  # preposition -> place
    assert grammar[1].argmax() == words.index("sat") and grammar[5].argmax() == words.index("sat")  # noun -> verb
    torch.testing.assert_close(grammar[0, 1], grammar[0, 5])  # "the": cat and mat tie
    one = _torch_copy(toy.state, toy.d_model, 1)
    _, single = one(toy.x, toy.x, toy.x)  # (1, 6, 6)
    assert single[0, words.index("on")].amax() < 0.5  # "on" splits between "sat" and "mat"


def test_figures_draw():
    import matplotlib.pyplot as plt

    from transformer_course.plotting.multihead import (
        plot_head_maps,
        plot_projection_blocks,
        plot_split_heads,
        toy_heads,
    )

    toy = toy_heads()
    fig = plot_head_maps(torch.rand(3, 6, 6).softmax(-1), toy.words, toy.words)
    assert len(fig.axes) == 4  # three maps and one colour bar
    assert [ax.get_title() for ax in fig.axes[:3]] == ["head 0", "head 1", "head 2"]
    with pytest.raises(ValueError, match="heads, L, S"):
        plot_head_maps(torch.rand(6, 6), toy.words, toy.words)
    fig = plot_projection_blocks(toy.state, toy.n_heads)
    assert "q_proj.weight 12×12" in fig.axes[0].get_title()
    fig = plot_split_heads(seq_len=3, d_model=6, n_heads=3)
    assert len(fig.axes) == 7  # x, three heads, three wrong "heads"
    with pytest.raises(ValueError, match="divisible"):
        plot_split_heads(d_model=5, n_heads=2)
    plt.close("all")


def test_split_heads_figure_shows_the_reference_and_the_bug():
    """Each panel's labels, read back from the figure, are where the numbers really go."""
    import matplotlib.pyplot as plt

    from transformer_course.plotting.multihead import plot_split_heads

    fig = plot_split_heads(seq_len=3, d_model=4, n_heads=2)
    texts = {ax.get_title(): sorted(t.get_text() for t in ax.texts) for ax in fig.axes}
    assert texts["split_heads: head 0 (3, 2)"] == sorted(f"p{p} c{c}" for p in range(3) for c in (0, 1))
    assert texts["view without transpose: 'head 0'"] == ["p0 c0", "p0 c1", "p0 c2", "p0 c3", "p1 c0", "p1 c1"]
    plt.close("all")


def test_shapes_used_by_the_checks_are_consistent_with_math():
    """d_head = d_model / n_heads in every hidden case, so the reference can build each module."""
    for case in hidden_tests.get("MultiHeadAttention").make_cases(torch.Generator().manual_seed(0)):
        d_model, n_heads = case.init
        assert d_model % n_heads == 0
        assert case.args[0].shape[-1] == d_model
        assert math.isclose(case.state["q_proj.weight"].shape[0] / n_heads, d_model // n_heads)
