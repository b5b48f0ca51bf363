"""Chapter 7: beam search against exhaustive search, the chapter's reference additions, the models
the checks decode with, and the messages a student gets for typical mistakes."""

from __future__ import annotations

import io
import itertools
import math
import pickle

import pytest
import torch
from torch import nn

from course_helpers import answer_sources, solution_module, student_module
from transformer_course import exercises
from transformer_course.decoding import beam_search, greedy_decode, length_penalty
from transformer_course.exercises import ExerciseFailure
from transformer_course.exercises.ch07_encoder_decoder import (
    END,
    PAD,
    START,
    LayerStackModel,
    MixingModel,
    ModelCase,
    TransformerParts,
    example_table_model,
)
from transformer_course.exercises.compare import run_case
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade, hidden_seed
from transformer_course.grading.hidden_tests.ch07_encoder_decoder import (
    layer_stack_of,
    parts_of,
    random_model,
)
from transformer_course.layers import DecoderLayer, EncoderLayer
from transformer_course.model import TransformerConfig, make_model, transformer_forward

CH07 = "07-encoder-decoder"


def failure(fn_name: str, namespace) -> str:
    """The message grading the function in ``namespace`` (a module or a dict) gives; fails the test
    if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, namespace if isinstance(namespace, dict) else vars(namespace))
    return str(caught.value)


def test_points_and_grade_ids():
    ids = [e.grade_id for e in exercises.for_assignment(CH07)]
    assert ids == ["test_FeedForward", "test_EncoderLayer", "test_DecoderLayer", "test_transformer_forward",
                   "test_greedy_decode", "test_beam_search"]
    assert sum(e.points for e in exercises.for_assignment(CH07)) == 20


# ---------------------------------------------------------------- beam search (reference)

V = 5  # a tiny vocabulary: pad, start, end and two words


def tiny_model(seed: int, norm_first: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    config = TransformerConfig(src_vocab=7, tgt_vocab=V, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                               dropout=0.0, max_len=16, norm_first=norm_first)
    model = make_model(config).double().eval()
    with torch.no_grad():  # sharper, source-dependent choices than at initialisation
        model.generator.proj.weight.mul_(4.0)
    return model


def output_tokens(row: torch.Tensor, end_id: int) -> list[int]:
    """A decoded row without its padding: up to its first end_id, or all of it."""
    tokens = row.tolist()
    return tokens[: tokens.index(end_id, 1) + 1] if end_id in tokens[1:] else tokens


def sequence_log_prob(model: nn.Module, src: torch.Tensor, sequence: list[int]) -> float:
    """log p(sequence | src), from one teacher-forced pass: independent of any decoding code."""
    log_probs = model(src[None], torch.tensor([sequence[:-1]]))[0]  # (len - 1, vocab)
    return sum(log_probs[t, token].item() for t, token in enumerate(sequence[1:]))


def exhaustive_search(model, src, max_len, end_id, alpha):
    """The best-scoring complete output among *all* of them: those that end at their first end_id,
    and those cut at max_len tokens without one."""
    best_score, best = -math.inf, None
    for n in range(1, max_len):
        for tokens in itertools.product(range(V), repeat=n):
            if end_id in tokens[:-1] or (n < max_len - 1 and tokens[-1] != end_id):
                continue
            sequence = [START, *tokens]
            score = sequence_log_prob(model, src, sequence) / ((5 + n) / 6) ** alpha
            if score > best_score:
                best_score, best = score, sequence
    return best, best_score


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed, norm_first, end_id", [(0, False, END), (1, True, END), (2, False, 3)])
def test_a_wide_beam_is_exhaustive_search(seed, norm_first, end_id, alpha):
    """With width >= the number of candidates of every step (V^3 here), nothing is pruned."""
    model = tiny_model(seed, norm_first)
    src = torch.tensor([[3, 4, 5, 0], [6, 3, 0, 0], [4, 4, 4, 4]])
    max_len = 4
    seqs, scores = beam_search(model, src, max_len, START, end_id, width=V ** (max_len - 1), alpha=alpha)
    for b in range(src.shape[0]):
        best, best_score = exhaustive_search(model, src[b], max_len, end_id, alpha)
        n = len(best)
        assert seqs[b, :n].tolist() == best and (seqs[b, n:] == PAD).all(), (b, seqs[b], best)
        assert scores[b].item() == pytest.approx(best_score, abs=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_width_one_is_greedy_decoding(norm_first):
    model = tiny_model(3, norm_first)
    src = torch.tensor([[3, 4, 5, 6], [6, 3, 0, 0], [5, 0, 0, 0]])
    for end_id, max_len in ((END, 6), (3, 6), (4, 3)):
        greedy = greedy_decode(model, src, max_len, START, end_id)
        seqs, scores = beam_search(model, src, max_len, START, end_id, width=1, alpha=0.6)
        assert torch.equal(seqs, greedy)
        for b in range(3):
            sequence = output_tokens(greedy[b], end_id)
            n = len(sequence) - 1
            expected = sequence_log_prob(model, src[b], sequence) / ((5 + n) / 6) ** 0.6
            assert scores[b].item() == pytest.approx(expected, abs=1e-10)


def test_beam_search_of_a_batch_equals_one_sentence_at_a_time():
    model = tiny_model(4)
    src = torch.tensor([[3, 4, 5, 6, 3], [6, 3, 0, 0, 0], [5, 6, 4, 0, 0]])
    seqs, scores = beam_search(model, src, 7, START, END, width=3, alpha=0.6)
    for b in range(3):
        alone_src = src[b : b + 1, : int((src[b] != PAD).sum())]  # no padding at all
        alone, alone_score = beam_search(model, alone_src, 7, START, END, width=3, alpha=0.6)
        n = alone.shape[1]
        assert seqs[b, :n].tolist() == alone[0].tolist() and (seqs[b, n:] == PAD).all()
        assert scores[b].item() == pytest.approx(alone_score.item(), abs=1e-10)


def test_a_beam_never_scores_worse_than_greedy_without_normalisation():
    """With alpha = 0 the score is the log-probability, and the greedy output is among the
    hypotheses a beam keeps or beats."""
    for seed in range(3):
        model = tiny_model(10 + seed)
        src = torch.tensor([[3, 4, 5], [6, 3, 0]])
        _, greedy_score = beam_search(model, src, 6, START, END, width=1, alpha=0.0)
        for width in (2, 3, 5):
            _, score = beam_search(model, src, 6, START, END, width=width, alpha=0.0)
            assert (score >= greedy_score - 1e-12).all()


def test_beam_search_on_the_how_are_you_table_by_hand():
    """The numbers of the chapter, worked out by hand from the table's probabilities."""
    model = example_table_model()
    src = torch.tensor([[1]])
    p_long, p_short = 0.5 * 0.65 * 0.9 * 1.0, 0.4 * 0.9  # "I am fine <end>", "fine <end>"
    greedy = greedy_decode(model, src, 8, START, END)
    seqs, score = beam_search(model, src, 8, START, END, width=2, alpha=0.0)
    assert seqs[0].tolist() == [START, 5, END] and greedy[0].tolist() == [START, 3, 4, 5, END]
    assert score.item() == pytest.approx(math.log(p_short), abs=1e-4)
    seqs, score = beam_search(model, src, 8, START, END, width=2, alpha=1.0)
    assert seqs[0].tolist() == [START, 3, 4, 5, END]
    assert score.item() == pytest.approx(math.log(p_long) / 1.5, abs=1e-4)  # ((5 + 4) / 6) ** 1
    seqs, score = beam_search(model, src, 2, START, END, width=2, alpha=0.0)
    assert seqs.tolist() == [[START, 3]] and score.item() == pytest.approx(math.log(0.5), abs=1e-4)


def test_beam_search_edge_cases():
    model = tiny_model(5).train()
    src = torch.tensor([[3, 4], [5, 0]])
    seqs, scores = beam_search(model, src, 1, START, END, width=3)
    assert seqs.tolist() == [[START], [START]] and scores.tolist() == [0.0, 0.0]
    assert model.training  # restored
    seqs, _ = beam_search(model, src, 5, START, END, width=50)  # far wider than the vocabulary
    assert seqs.dtype == torch.long and seqs.shape[0] == 2
    with pytest.raises(ValueError, match="width"):
        beam_search(model, src, 5, START, END, width=0)


def test_length_penalty_is_wu_et_al():
    assert length_penalty(1, 0.6) == pytest.approx(1.0)  # ((5 + 1) / 6) ** alpha
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(4, 0.0) == 1.0
    assert length_penalty(13, 0.5) == pytest.approx(math.sqrt(3.0))


def test_beam_search_runs_on_every_device(device):
    model = tiny_model(6)
    src = torch.tensor([[3, 4, 5], [6, 3, 0]])
    expected = beam_search(model, src, 6, START, END, width=3)
    seqs, scores = beam_search(model.to(device), src.to(device), 6, START, END, width=3)
    assert seqs.device.type == device.type and torch.equal(seqs.cpu(), expected[0])
    torch.testing.assert_close(scores.cpu(), expected[1])


# ---------------------------------------------------------------- transformer_forward and the checks' models


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_forward_equals_the_models_forward(norm_first, device):
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab=13, tgt_vocab=11, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                               norm_first=norm_first)
    model = make_model(config).double().to(device).eval()
    src = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0]], device=device)
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]], device=device)
    torch.testing.assert_close(transformer_forward(model, src, tgt), model(src, tgt), atol=1e-12, rtol=0)


@pytest.mark.parametrize("changes", [{}, {"norm_first": True, "activation": "gelu"}, {"n_layers": 3}])
def test_the_forward_pass_on_a_models_parts_is_the_models_forward_pass(changes):
    """The hidden cases of transformer_forward hand over a model's parts (TransformerParts), not the
    model: the reference gives the same outputs on them as on the model, so grading against them
    is grading against the real model, in float64 and in float32."""
    model = random_model(torch.Generator().manual_seed(0), **changes)
    parts = parts_of(model)
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]])
    expected = model(src, tgt)
    torch.testing.assert_close(transformer_forward(parts, src, tgt), expected, atol=0, rtol=0)
    torch.testing.assert_close(transformer_forward(model, src, tgt), expected, atol=0, rtol=0)
    case = ModelCase("c", (parts, src, tgt)).to(torch.float32)
    assert case.dtype == torch.float32
    torch.testing.assert_close(transformer_forward(*case.args), model.float()(src, tgt), atol=0, rtol=0)


def test_the_parts_of_a_model_cannot_run_it():
    """No module in a transformer_forward case runs more than one part: plain containers, torch's
    building blocks and the reference layers (which the exercise uses), and a model that refuses
    to be called."""
    allowed = (nn.ModuleList, nn.Embedding, nn.Dropout, nn.LayerNorm, nn.Identity, nn.Linear, EncoderLayer,
               DecoderLayer)

    def check(module: nn.Module, path: str) -> None:
        assert type(module) in (nn.Module, TransformerParts) or isinstance(module, allowed), (path, module)
        if not isinstance(module, (EncoderLayer, DecoderLayer)):
            for name, child in module.named_children():
                check(child, f"{path}.{name}")

    for case in hidden_tests.get("transformer_forward").make_cases(torch.Generator().manual_seed(hidden_seed())):
        model, src, tgt = case.args
        assert type(model) is TransformerParts, case.label
        check(model, "model")
        for method, args in ((model, (src, tgt)), (model.encode, (src,)), (model.decode, (tgt, None))):
            with pytest.raises(TypeError, match="earns no points"):
                method(*args)


def _pickled_globals(obj) -> set[tuple[str, str]]:
    """The (module, name) of every class and function that unpickling ``obj`` imports."""
    found = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(pickle.dumps(obj))).load()
    return found


# What the hidden cases of each exercise may bring along from the course (outside torch): their
# classes' modules are imported beside the student's code, so none may hold that exercise's answer.
_CASE = {("transformer_course.exercises.base", "Case")}
_MODEL_CASE = {("transformer_course.exercises.ch07_encoder_decoder", "ModelCase")}
_LAYERS = {("transformer_course.layers", "EncoderLayer"), ("transformer_course.layers", "DecoderLayer"),
           ("transformer_course.multihead", "MultiHeadAttention"), ("transformer_course.feedforward", "FeedForward")}
_DECODING_MODELS = {("transformer_course.exercises.ch07_encoder_decoder", "MixingModel"),
                    ("transformer_course.exercises.ch07_encoder_decoder", "LayerStackModel")}
CASE_GLOBALS = {
    "FeedForward": _CASE,
    "EncoderLayer": _CASE,
    "DecoderLayer": _CASE,
    "transformer_forward": _MODEL_CASE | _LAYERS
    | {("transformer_course.exercises.ch07_encoder_decoder", "TransformerParts")},
    "greedy_decode": _MODEL_CASE | _LAYERS | _DECODING_MODELS,
    "beam_search": _MODEL_CASE | _LAYERS | _DECODING_MODELS,
}


def _outputs(fn, case) -> tuple:
    """What ``fn`` returns on a copy of ``case``, as a tuple."""
    with torch.no_grad():
        out = run_case(fn, case.clone())
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", list(CASE_GLOBALS))
def test_the_hidden_cases_bring_no_answer_along(name):
    """A case is pickled into the process that runs the student's code: what it brings from the
    course is answer-free (no reference model whose forward is the answer, nothing that decodes,
    nothing of the grader's side), and it comes out of the pickle giving the reference's outputs."""
    cases = hidden_tests.get(name).make_cases(torch.Generator().manual_seed(hidden_seed()))
    brought = set().union(*(_pickled_globals(case) for case in cases))
    ours = {(module, n) for module, n in brought if not module.startswith(("torch", "collections", "types"))}
    assert ours == CASE_GLOBALS[name]
    reference = hidden_tests.get(name).load_reference()
    for case in cases:
        copy = pickle.loads(pickle.dumps(case))
        for a, b in zip(_outputs(reference, case), _outputs(reference, copy), strict=True):
            assert torch.equal(a, b), case.label


def test_the_layer_stack_models_depend_on_prefix_source_and_masks():
    """The models of real layers that greedy decoding is graded with: a missing mask changes what
    they compute, and their outputs differ from source to source."""
    models = [case for case in _decode_cases("greedy_decode") if isinstance(case.args[0], LayerStackModel)]
    assert len(models) == 2
    for case in models:
        model, src = case.args
        assert src[0].all() and not src[1].all(), case.label  # source 0 has no padding, source 1 some
        tgt = greedy_decode(model, src, 4, START, -1)
        memory = model.encode(src, model.make_src_mask(src))
        full = model.decode(tgt, memory, model.make_tgt_mask(tgt), model.make_src_mask(src))
        no_causal = model.decode(tgt, memory, None, model.make_src_mask(src))
        assert not torch.allclose(full[:, -1], no_causal[:, -1])  # two layers: the future leaks in
        unmasked = model.decode(tgt, model.encode(src), model.make_tgt_mask(tgt), None)
        assert not torch.allclose(full[1], unmasked[1])  # source padding matters
        assert torch.allclose(full[0], unmasked[0])  # ... and only where there is some
        out = greedy_decode(model, src, case.kwargs["max_len"], START, -1)
        assert len({tuple(r) for r in out[:, 1:].tolist()}) >= 3, case.label  # not one output for everything


def test_the_layer_stack_model_is_not_the_transformer():
    """Its layers are a Transformer's, its embeddings not: nothing of it computes the forward pass
    that transformer_forward asks for."""
    model = random_model(torch.Generator().manual_seed(0))
    stack = layer_stack_of(model)
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]])
    src_mask, tgt_mask = stack.make_src_mask(src), stack.make_tgt_mask(tgt)
    assert torch.equal(src_mask, model.make_src_mask(src)) and torch.equal(tgt_mask, model.make_tgt_mask(tgt))
    log_probs = stack.generator(stack.decode(tgt, stack.encode(src, src_mask), tgt_mask, src_mask))
    assert not torch.allclose(log_probs, model(src, tgt), atol=1e-3)


def test_the_mixing_model_depends_on_prefix_source_and_masks():
    model = MixingModel(torch.Generator().manual_seed(0))
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    tgt = torch.tensor([[1, 4, 5], [1, 6, 7]])
    memory = model.encode(src, model.make_src_mask(src))
    full = model.decode(tgt, memory, model.make_tgt_mask(tgt), model.make_src_mask(src))
    no_causal = model.decode(tgt, memory, None, model.make_src_mask(src))
    assert not torch.allclose(full[:, -1], no_causal[:, -1])  # two "layers": the future leaks in
    unmasked = model.decode(tgt, model.encode(src), model.make_tgt_mask(tgt), None)
    assert not torch.allclose(full[1], unmasked[1])  # source padding matters
    assert torch.allclose(full[0], unmasked[0])  # ... and only where there is some
    out = greedy_decode(model, src, 10, START, END)
    assert len({tuple(r) for r in out[:, 1:].tolist()}) == 2  # not one token repeated for everything


def _decode_cases(name: str):
    return hidden_tests.get(name).make_cases(torch.Generator().manual_seed(hidden_seed()))


def test_greedy_cases_cover_ending_early_and_running_to_max_len():
    reference = hidden_tests.get("greedy_decode").load_reference()
    cases = _decode_cases("greedy_decode")
    assert all(isinstance(c, ModelCase) for c in cases)
    ended_early = cut_at_max_len = shorter_than_max_len = 0
    for case in cases:
        out = reference(*case.args, **case.kwargs)
        for row in out.tolist():
            if case.kwargs["end_id"] in row[1:]:
                ended_early += row[-1] == PAD or row.index(case.kwargs["end_id"], 1) < len(row) - 1
            elif len(row) == case.kwargs["max_len"] > 1:
                cut_at_max_len += 1
        shorter_than_max_len += out.shape[1] < case.kwargs["max_len"]
        distinct = {tuple(r) for r in out.tolist()}
        assert len(distinct) > 1 or out.shape[0] == 1 or case.kwargs["max_len"] <= 2, case.label
    assert ended_early >= 3 and cut_at_max_len >= 3 and shorter_than_max_len >= 2


def test_beam_cases_cover_finished_and_cut_hypotheses_and_differ_from_greedy():
    reference = hidden_tests.get("beam_search").load_reference()
    cases = _decode_cases("beam_search")
    ended = cut = differs = 0
    for case in cases:
        seqs, scores = reference(*case.args, **case.kwargs)
        assert scores.dtype == torch.float64 and torch.isfinite(scores).all(), case.label
        greedy = greedy_decode(case.args[0], case.args[1], case.kwargs["max_len"], START, case.kwargs["end_id"])
        differs += not torch.equal(seqs, greedy)
        for row in seqs.tolist():
            ended += case.kwargs["end_id"] in row[1:]
            cut += case.kwargs["end_id"] not in row[1:] and len(row) == case.kwargs["max_len"] > 1
    assert ended >= 3 and cut >= 2 and differs >= 2


def test_a_students_call_cannot_change_the_model_the_reference_runs():
    model = MixingModel(torch.Generator().manual_seed(0))
    case = ModelCase("c", (model, torch.tensor([[3, 4]])), {"max_len": 4, "start_id": START, "end_id": END})
    copy = case.clone()
    with torch.no_grad():
        copy.args[0].w_out.zero_()
    assert model.w_out.abs().sum() > 0
    moved = case.to(torch.float32)
    assert moved.dtype == torch.float32 and model.w_out.dtype == torch.float64


def test_the_toy_translator_learns_the_held_out_sentence():
    """The book's claim: 60 steps of teacher forcing, and "yo estoy bien" (never seen) decodes
    to "I am fine"."""
    from transformer_course.plotting.encoder_decoder import toy_translation

    data = toy_translation()
    src = data.src_ids([s for s, _ in data.training_pairs])
    tgt = data.tgt_ids([t for _, t in data.training_pairs])
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab=len(data.src_vocab), tgt_vocab=len(data.tgt_vocab), d_model=32,
                               n_heads=2, n_layers=1, d_ff=64, dropout=0.1, max_len=16)
    model = make_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        log_probs = model(src, tgt[:, :-1])
        loss = nn.functional.nll_loss(log_probs.transpose(1, 2), tgt[:, 1:], ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out = greedy_decode(model, data.src_ids([data.held_out[0]]), 10, START, END)
    assert data.tgt_words(out[0]) == ["<start>", "I", "am", "fine", "<end>"]


def test_the_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transformer_course.plotting import encoder_decoder as figures

    figures.plot_add_and_norm()
    stats = figures.layer_statistics(False, n_layers=2, seeds=(0,))
    assert stats.gradient_norm.shape == (2,) and stats.stream_norm.shape == (3,)
    figures.plot_layer_statistics(stats, figures.layer_statistics(True, n_layers=2, seeds=(0,)))
    model, words = figures.how_are_you_model()
    figures.plot_beam_tree(model, words)
    probs = torch.softmax(torch.randn(len(words)), -1)
    figures.plot_decoding_step(["yo", "estoy", "bien"], ["<start>", "I"], probs, words)
    figures.plot_greedy_steps([(["<start>"], probs), (["<start>", "I"], probs)], words)
    tiny = tiny_model(0)
    weights = figures.cross_attention_weights(tiny, torch.tensor([[3, 4, 5]]), torch.tensor([[1, 3, 4]]))
    assert weights.shape == (2, 1, 2, 3, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1, 2, 3, dtype=torch.float64))
    figures.plot_cross_attention(weights[-1, 0], ["a", "b", "c"], ["x", "y", "z"])
    plt.close("all")


# ---------------------------------------------------------------- messages a student can act on

HEADER = "import math\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n" \
         "from transformer_course.multihead import MultiHeadAttention\n"


def with_answer(tmp_path, **replace):
    return solution_module(tmp_path, CH07, **replace)


def test_a_feed_forward_without_activation_is_told_about_negatives(tmp_path):
    code = HEADER + """
class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0, activation="relu"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(self.linear1(x))
"""
    assert "sets negatives to 0" in failure("FeedForward", student_module(tmp_path, code))


def test_a_wrong_feed_forward_costs_the_layers_nothing(tmp_path):
    wrong = "class FeedForward(nn.Module):\n    def __init__(self, *a, **k):\n        raise NotImplementedError()\n"
    module = with_answer(tmp_path, FeedForward=wrong)
    for name in ("EncoderLayer", "DecoderLayer"):
        grade(name, vars(module))  # graded with the reference FeedForward


def test_parameters_named_differently_are_listed(tmp_path):
    renamed = answer_sources(CH07)["EncoderLayer"].replace("self.self_attn", "self.attention")
    message = failure("EncoderLayer", with_answer(tmp_path, EncoderLayer=renamed))
    assert "missing: self_attn." in message and "unexpected: attention." in message


def test_the_wrong_arrangement_of_add_and_norm_is_named(tmp_path):
    code = HEADER + """
class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0, activation="relu"):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(torch.relu(self.linear1(x)))

class EncoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation="relu", norm_first=False, layer_norm_eps=1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.feed_forward = FeedForward(d_model, d_ff, activation=activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps), nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, x, mask=None):
        x = x + self.self_attn(self.norm1(x), self.norm1(x), self.norm1(x), mask)[0]
        return x + self.feed_forward(self.norm2(x))
"""
    message = failure("EncoderLayer", student_module(tmp_path, code))
    assert "norm_first=False your layer computes the other arrangement: pre-LN instead of post-LN" in message


@pytest.mark.parametrize("cheat, named", [
    ("self.layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, batch_first=True)",
     "TransformerEncoderLayer"),
    ("self.layer = nn.MultiheadAttention(d_model, n_heads, batch_first=True)", "MultiheadAttention"),
])
def test_library_layers_earn_nothing(tmp_path, cheat, named):
    code = HEADER + f"""
class EncoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation="relu", norm_first=False, layer_norm_eps=1e-5):
        super().__init__()
        {cheat}

    def forward(self, x, mask=None):
        return x
"""
    message = failure("EncoderLayer", student_module(tmp_path, code))
    assert "earns no points" in message and named in message


def test_fused_attention_earns_nothing_in_a_decoder_layer(tmp_path):
    module = with_answer(tmp_path)
    source = vars(module)["DecoderLayer"]

    class DecoderLayer(source):
        def forward(self, x, memory, self_mask=None, memory_mask=None):
            out = torch.nn.functional.scaled_dot_product_attention(x, memory, memory)
            return super().forward(x + 0 * out, memory, self_mask, memory_mask)

    message = failure("DecoderLayer", {**vars(module), "DecoderLayer": DecoderLayer})
    assert "earns no points" in message and "scaled_dot_product_attention" in message


def test_cross_attention_with_the_memory_as_queries_is_named(tmp_path):
    code = HEADER + """
class DecoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation="relu", norm_first=False, layer_norm_eps=1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.feed_forward = FeedForward(d_model, d_ff, activation=activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model, eps=layer_norm_eps) for _ in range(3))

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, self_mask)[0])
        x = self.norm2(memory + self.cross_attn(memory, x, x)[0])
        return self.norm3(x + self.feed_forward(x))
"""
    module = student_module(tmp_path, code)
    solution = with_answer(tmp_path)
    module.FeedForward = solution.FeedForward
    message = failure("DecoderLayer", module)
    assert "queries come from the decoder" in message


def test_calling_the_model_itself_earns_nothing(tmp_path):
    code = "def transformer_forward(model, src, tgt):\n    return model(src, tgt)\n"
    assert "earns no points" in failure("transformer_forward", student_module(tmp_path, code))
    code = ("from transformer_course.model import transformer_forward as ref\n"
            "def transformer_forward(model, src, tgt):\n    return ref(model, src, tgt)\n")
    assert "reference implementation" in failure("transformer_forward", student_module(tmp_path, code))


def test_a_forward_pass_without_the_causal_mask_is_named(tmp_path):
    no_causal = answer_sources(CH07)["transformer_forward"].replace(" & causal", "")
    message = failure("transformer_forward", with_answer(tmp_path, transformer_forward=no_causal))
    assert "hide the future" in message


def test_greedy_decoding_without_the_target_mask_is_named(tmp_path):
    code = """
import torch
def greedy_decode(model, src, max_len, start_id, end_id):
    src_mask = model.make_src_mask(src)
    memory = model.encode(src, src_mask)
    out = torch.full((src.shape[0], 1), start_id, dtype=torch.long)
    finished = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len - 1):
        token = model.generator(model.decode(out, memory, None, src_mask)[:, -1]).argmax(-1)
        token = token.masked_fill(finished, model.pad_id)
        out = torch.cat([out, token[:, None]], dim=1)
        finished |= token == end_id
        if finished.all():
            break
    return out
"""
    message = failure("greedy_decode", student_module(tmp_path, code))
    assert "Likely mistake: give the decoder the target mask" in message


def test_greedy_decoding_that_never_stops_early_is_told_to(tmp_path):
    code = """
import torch
def greedy_decode(model, src, max_len, start_id, end_id):
    src_mask = model.make_src_mask(src)
    memory = model.encode(src, src_mask)
    out = torch.full((src.shape[0], 1), start_id, dtype=torch.long)
    finished = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len - 1):
        token = model.generator(model.decode(out, memory, model.make_tgt_mask(out), src_mask)[:, -1]).argmax(-1)
        token = token.masked_fill(finished, model.pad_id)
        out = torch.cat([out, token[:, None]], dim=1)
        finished |= token == end_id
    return out
"""
    message = failure("greedy_decode", student_module(tmp_path, code))
    assert "(1, 10)" in message and "produced end_id" in message


def test_beam_search_ignoring_alpha_is_named(tmp_path):
    no_alpha = answer_sources(CH07)["beam_search"].replace(" / ((5 + t) / 6) ** alpha", "")
    message = failure("beam_search", with_answer(tmp_path, beam_search=no_alpha))
    assert "width=2, alpha=1" in message and "((5 + n) / 6) ** alpha" in message


def test_beam_search_from_the_reference_earns_nothing(tmp_path):
    code = ("import transformer_course.decoding as d\n"
            "def beam_search(model, src, max_len, start_id, end_id, width=4, alpha=0.6):\n"
            "    return d.beam_search(model, src, max_len, start_id, end_id, width, alpha)\n")
    assert "reference implementation" in failure("beam_search", student_module(tmp_path, code))


def test_blank_answers_say_not_implemented(tmp_path):
    blank_class = ("class FeedForward(nn.Module):\n    def __init__(self, d_model, d_ff, dropout=0.0, "
                   "activation='relu'):\n        super().__init__()\n        raise NotImplementedError()\n")
    module = with_answer(tmp_path, FeedForward=blank_class,
                         beam_search="def beam_search(*args, **kwargs):\n    raise NotImplementedError()\n")
    assert "not implemented yet" in failure("FeedForward", module)
    assert "not implemented yet" in failure("beam_search", module)
