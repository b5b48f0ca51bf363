"""Chapter 8: the reference against hand values and PyTorch, the training step's cases (a model and
its optimizer travelling together), and the messages a student gets for typical mistakes and
library shortcuts. (Fast: answers run as plain Python, no notebooks or kernels.)"""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from course_helpers import answer_sources, solution_module, student_module
from transformer_course import exercises
from transformer_course.exercises import ExerciseFailure
from transformer_course.exercises.ch08_training import (
    END,
    PAD,
    START,
    TinyTranslator,
    example_step_case,
    flat_parameters,
    parameter_at,
)
from transformer_course.exercises.compare import run_case
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade, hidden_seed
from transformer_course.training import (
    label_smoothed_loss,
    learning_rate,
    make_batch,
    sequence_accuracy,
    smoothing_floor,
    teacher_forcing,
    train_step,
)
from wrong_answers import by_assignment

CH08 = "08-training"
FUNCTIONS = ["teacher_forcing", "make_batch", "label_smoothed_loss", "learning_rate", "train_step",
             "sequence_accuracy"]


def failure(fn_name: str, namespace) -> str:
    """The message grading the function in ``namespace`` (a module or a dict) gives; fails the test
    if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, namespace if isinstance(namespace, dict) else vars(namespace))
    return str(caught.value)


def test_points_and_grade_ids():
    ids = [e.grade_id for e in exercises.for_assignment(CH08)]
    assert ids == [f"test_{f}" for f in FUNCTIONS]
    assert [e.points for e in exercises.for_assignment(CH08)] == [1, 3, 4, 2, 3, 2]


# ---------------------------------------------------------------- the reference by hand and against torch


def test_teacher_forcing_and_make_batch_by_hand():
    tgt = torch.tensor([[START, 3, 4, 5, END], [START, 6, END, PAD, PAD]])
    decoder_input, labels = teacher_forcing(tgt)
    assert decoder_input.tolist() == [[START, 3, 4, 5], [START, 6, END, PAD]]
    assert labels.tolist() == [[3, 4, 5, END], [6, END, PAD, PAD]]
    src, decoder_input, labels, src_mask, tgt_mask = make_batch([[5, 6, 7], [8]], [[7, 5], [4]])
    assert src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert decoder_input.tolist() == [[START, 7, 5], [START, 4, END]]
    assert labels.tolist() == [[7, 5, END], [4, END, PAD]]
    assert src_mask.tolist() == [[[[True, True, True]]], [[[True, False, False]]]]
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    assert tgt_mask.shape == (2, 1, 3, 3) and (tgt_mask == causal).all()  # no padding in the decoder input
    src, decoder_input, labels, src_mask, tgt_mask = make_batch([[5], [6]], [[7, 5, 3], []])
    assert decoder_input[1].tolist() == [START, END, PAD, PAD] and labels[1].tolist() == [END, PAD, PAD, PAD]
    assert tgt_mask[1, 0].tolist() == [[True, False, False, False], [True, True, False, False],
                                       [True, True, False, False], [True, True, False, False]]


def test_make_batch_refuses_unequal_lists():
    with pytest.raises(ValueError):
        make_batch([[3], [4]], [[5]])


def _random_loss_inputs(seed: int, pad_id: int = PAD):
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(3, 5, 9, generator=gen, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, 9, (3, 5), generator=gen)
    labels[labels == pad_id] = (pad_id + 1) % 9
    labels[0, 3:] = labels[2, 1:] = pad_id
    return log_probs, labels


@pytest.mark.parametrize("pad_id", [PAD, 4])
def test_label_smoothed_loss_without_smoothing_is_nll_loss(pad_id):
    log_probs, labels = _random_loss_inputs(0, pad_id)
    expected = F.nll_loss(log_probs.reshape(-1, 9), labels.reshape(-1), ignore_index=pad_id)
    torch.testing.assert_close(label_smoothed_loss(log_probs, labels, pad_id, 0.0), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothed_loss_is_the_cross_entropy_of_the_smoothed_target(smoothing):
    """The target written out: 1 - smoothing on the label, smoothing / (V - 2) elsewhere, 0 on padding."""
    log_probs, labels = _random_loss_inputs(1)
    vocab = log_probs.shape[-1]
    target = torch.full(log_probs.shape, smoothing / (vocab - 2), dtype=torch.float64)
    target[..., PAD] = 0.0
    target.scatter_(-1, labels.unsqueeze(-1), 1 - smoothing)
    real = labels != PAD
    assert torch.allclose(target.sum(-1)[real], torch.ones(int(real.sum()), dtype=torch.float64))
    per_token = -(target * log_probs).sum(-1)
    expected = per_token[real].mean()
    torch.testing.assert_close(label_smoothed_loss(log_probs, labels, PAD, smoothing), expected, rtol=1e-12, atol=0)
    # torch's own label smoothing is another target (smoothing / V on every token): not ours
    theirs = F.cross_entropy(log_probs[real], labels[real], label_smoothing=smoothing)
    assert not torch.isclose(theirs, expected)


def test_the_loss_of_the_smoothed_target_itself_is_the_floor():
    vocab, smoothing = 7, 0.1
    probs = torch.full((1, 1, vocab), smoothing / (vocab - 2), dtype=torch.float64)
    probs[..., 3] = 1 - smoothing
    probs[..., PAD] = 0.0  # log 0 = -inf: a model that rules padding out entirely, and still no NaN
    loss = label_smoothed_loss(probs.log(), torch.tensor([[3]]), PAD, smoothing)
    assert loss.item() == pytest.approx(smoothing_floor(vocab, smoothing), rel=1e-12)


def test_label_smoothed_loss_edge_cases():
    log_probs, labels = _random_loss_inputs(2)
    assert label_smoothed_loss(log_probs, torch.full_like(labels, PAD), PAD, 0.1).item() == 0.0
    assert label_smoothed_loss(log_probs.float(), labels, PAD, 0.1).dtype == torch.float32


def test_learning_rate_by_hand_and_the_papers_peak():
    steps = torch.tensor([1, 2, 4, 16, 64])
    assert learning_rate(steps, 16, 4).tolist() == [1 / 32, 1 / 16, 1 / 8, 1 / 16, 1 / 32]
    rates = learning_rate(torch.arange(1, 20_001), 512, 4000)
    assert rates.dtype == torch.float64 and int(rates.argmax()) + 1 == 4000
    assert rates.max().item() == pytest.approx(512 ** -0.5 * 4000 ** -0.5) == pytest.approx(6.988e-4, rel=1e-3)
    assert (rates[:3999].diff() > 0).all() and (rates[3999:].diff() < 0).all()
    assert learning_rate(torch.tensor(4), 16, 4, factor=2.0).shape == ()
    for bad in (torch.tensor([0, 1]), torch.tensor(-3)):
        with pytest.raises(ValueError):
            learning_rate(bad, 16, 4)


def test_sequence_accuracy_by_hand():
    labels = torch.tensor([[7, 5, END, PAD], [4, 3, 3, END], [8, END, PAD, PAD]])
    predicted = torch.tensor([[7, 5, END, 9], [4, 3, 6, END], [8, END, PAD, 4]])
    exact, token = sequence_accuracy(predicted, labels, PAD)
    assert exact.dtype == token.dtype == torch.float64
    assert (exact.item(), token.item()) == (pytest.approx(2 / 3), pytest.approx(8 / 9))


def test_train_step_is_one_gradient_step_on_the_label_smoothed_loss():
    """SGD by hand: p - lr * (the gradient of the loss alone: the stale gradients do not count)."""
    case = example_step_case("c", "sgd", 0.1).clone()
    model, optimizer, src, decoder_input, labels = case.args
    loss = label_smoothed_loss(model(src, decoder_input), labels, PAD, 0.1)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.cat([(p - 0.5 * g).detach().reshape(-1) for p, g in zip(model.parameters(), grads)])
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # stale
    returned = train_step(model, optimizer, src, decoder_input, labels, smoothing=0.1)
    assert returned.shape == () and not returned.requires_grad
    torch.testing.assert_close(returned, loss.detach(), rtol=0, atol=0)
    torch.testing.assert_close(flat_parameters(model), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the training step's cases


def _same_parameters(model, optimizer) -> bool:
    ids = {id(p) for p in model.parameters()}
    return all(id(p) in ids for group in optimizer.param_groups for p in group["params"])


def test_a_step_case_copies_model_and_optimizer_together():
    case = example_step_case("c", "adam", 0.1)
    before = flat_parameters(case.args[0])
    for copy in (case.clone(), case.to(torch.float32), case.to(torch.float64), case.on(torch.device("cpu")),
                 pickle.loads(pickle.dumps(case))):
        model, optimizer = copy.args[:2]
        assert model is not case.args[0] and _same_parameters(model, optimizer)
        assert copy.dtype == next(model.parameters()).dtype and len(copy.stale) == len(list(model.parameters()))
    assert case.to(torch.float32).dtype == torch.float32 and case.to(torch.float32).stale[0].dtype == torch.float32
    run_case(train_step, case.clone())
    assert torch.equal(flat_parameters(case.args[0]), before)  # the case itself is never stepped


def test_a_step_case_hands_over_stale_gradients_and_collects_the_parameters():
    case = example_step_case("c", "sgd", 0.1)
    seen = {}

    def spy(model, optimizer, src, decoder_input, labels, smoothing=0.1):
        seen["grads"] = [p.grad.clone() for p in model.parameters()]
        seen["grad_enabled"] = torch.is_grad_enabled()
        return 1.5  # a Python float is a loss too

    with torch.no_grad():  # (the grader runs references under no_grad)
        loss, parameters = run_case(spy, case.clone())
    assert all(torch.equal(g, s) for g, s in zip(seen["grads"], case.stale)) and seen["grad_enabled"]
    assert loss.dtype == torch.float64 and loss.item() == 1.5
    assert torch.equal(parameters, flat_parameters(case.args[0]))
    assert parameter_at(case.args[0], 0) == "src_table[0, 0]"
    assert parameter_at(case.args[0], parameters.numel() - 1) == "b_out[6]"


def test_the_tiny_model_uses_every_parameter_and_never_sees_the_future():
    model = TinyTranslator(torch.Generator().manual_seed(0))
    src = torch.tensor([[5, 6, PAD], [7, 8, 9]])
    decoder_input = torch.tensor([[START, 3, 4], [START, 5, 6]])
    out = model(src, decoder_input)
    assert out.shape == (2, 3, 7) and torch.allclose(out.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    changed = decoder_input.clone()
    changed[:, 2] = 6
    assert torch.equal(model(src, changed)[:, :2], out[:, :2])
    padded = torch.tensor([[5, 6, PAD, PAD]])
    assert torch.allclose(model(padded, decoder_input[:1]), out[:1])  # padding is no source token


def _pickled_globals(obj) -> set[tuple[str, str]]:
    found = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(pickle.dumps(obj))).load()
    return found


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_hidden_cases_bring_no_answer_along(name):
    """A case is pickled into the process that runs the student's code: what it brings from the course
    is answer-free (a training step's case: the step case and the tiny model of the student side), and
    it comes out of the pickle giving the reference's outputs."""
    cases = hidden_tests.get(name).make_cases(torch.Generator().manual_seed(hidden_seed()))
    brought = set().union(*(_pickled_globals(case) for case in cases))
    ours = {(module, n) for module, n in brought if module.startswith("transformer_course")}
    expected = {("transformer_course.exercises.base", "Case")}
    if name == "train_step":
        expected = {("transformer_course.exercises.ch08_training", "StepCase"),
                    ("transformer_course.exercises.ch08_training", "TinyTranslator")}
    assert ours == expected
    reference = hidden_tests.get(name).load_reference()
    for case in cases:
        copy = pickle.loads(pickle.dumps(case))
        with torch.no_grad():
            a, b = run_case(reference, case.clone()), run_case(reference, copy.clone())
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert torch.equal(x, y), case.label


def test_every_typical_mistake_of_a_step_differs_from_the_reference_on_every_optimizer():
    """Each mistake changes the loss or the parameters on SGD and on Adam cases alike (Adam's first
    step is nearly sign(gradient): a mistake must not hide in it)."""
    cases = hidden_tests.get("train_step").make_cases(torch.Generator().manual_seed(hidden_seed()))
    reference = hidden_tests.get("train_step").load_reference()
    for case in cases:
        with torch.no_grad():
            want = run_case(reference, case.clone())
            for mistake in hidden_tests.get("train_step").mistakes:
                got = run_case(mistake.fn, case.clone())
                smoothing_only = case.kwargs["smoothing"] == 0 and "smoothing" in mistake.hint.split(":")[0]
                differs = any(not torch.allclose(g, w, rtol=1e-6, atol=1e-9) for g, w in zip(got, want))
                assert differs or smoothing_only, (case.label, mistake.hint)


# ---------------------------------------------------------------- grading: each mistake costs its own points


@pytest.fixture
def solution(tmp_path):
    return solution_module(tmp_path, CH08)


def test_the_solution_passes(solution, capsys):
    for name in FUNCTIONS:
        grade(name, vars(solution))
    assert capsys.readouterr().out.count("checks passed") == len(FUNCTIONS)


@pytest.mark.parametrize("wrong", list(by_assignment()[CH08].WRONG))
def test_a_wrong_answer_costs_its_own_exercise_only(tmp_path, wrong):
    source, phrase = by_assignment()[CH08].WRONG[wrong]
    module = solution_module(tmp_path, CH08, **{wrong: source})
    for name in FUNCTIONS:
        if name == wrong:
            assert phrase in failure(name, module)
        else:
            grade(name, vars(module))  # later exercises are graded with the reference in its place


@pytest.mark.parametrize("name, cell", [
    ("label_smoothed_loss", "def label_smoothed_loss(log_probs, labels, pad_id, smoothing):\n"
     "    return F.cross_entropy(log_probs.transpose(1, 2), labels, ignore_index=pad_id, label_smoothing=smoothing)\n"),
    ("label_smoothed_loss", "def label_smoothed_loss(log_probs, labels, pad_id, smoothing):\n"
     "    loss = nn.KLDivLoss(reduction='sum')\n    return loss(log_probs, log_probs.exp())\n"),
    ("label_smoothed_loss", by_assignment()[CH08].FORBIDDEN[1]),
    ("train_step", "def train_step(model, optimizer, src, decoder_input, labels, smoothing=0.1):\n"
     "    optimizer.zero_grad()\n    log_probs = model(src, decoder_input)\n"
     "    loss = nn.CrossEntropyLoss(ignore_index=model.pad_id, label_smoothing=smoothing)(\n"
     "        log_probs.transpose(1, 2), labels)\n    loss.backward()\n    optimizer.step()\n"
     "    return loss.detach()\n"),
    ("make_batch", answer_sources(CH08)["make_batch"].replace(
        "    S = max(len(ids) for ids in sources)",
        "    from torch.nn.utils.rnn import pad_sequence\n"
        "    _ = pad_sequence([torch.tensor(s) for s in sources], batch_first=True, padding_value=pad_id)\n"
        "    S = max(len(ids) for ids in sources)")),
])
def test_library_losses_and_padding_earn_nothing(tmp_path, name, cell):
    module = student_module(tmp_path, "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
                            "from transformer_course.masks import causal_mask, combine_masks, padding_mask\n"
                            "PAD, START, END = 0, 1, 2\n"
                            + answer_sources(CH08)["teacher_forcing"] + "\n" + cell)
    message = failure(name, module)
    assert "earns no points" in message, message


def test_a_loss_returned_as_a_float_is_a_loss(tmp_path):
    source = answer_sources(CH08)["train_step"].replace("return loss.detach()", "return loss.item()")
    assert "loss.item()" in source
    grade("train_step", vars(solution_module(tmp_path, CH08, train_step=source)))


def test_a_float32_schedule_is_told_to_use_float64(tmp_path):
    source = answer_sources(CH08)["learning_rate"].replace("step = step.double()", "step = step.float()")
    message = failure("learning_rate", solution_module(tmp_path, CH08, learning_rate=source))
    assert "dtype torch.float32, expected torch.float64" in message and "step.double()" in message


def test_a_schedule_that_accepts_step_0_is_told_to_refuse_it(tmp_path):
    source = "def learning_rate(step, d_model, warmup, factor=1.0):\n" \
             "    step = step.double()\n" \
             "    return factor * d_model ** -0.5 * torch.minimum(step ** -0.5, step * warmup ** -1.5)\n"
    message = failure("learning_rate", solution_module(tmp_path, CH08, learning_rate=source))
    assert "should raise ValueError" in message and "steps [0, 1, 2]" in message


def test_a_step_on_a_model_without_zero_grad_is_named_with_the_parameter(tmp_path):
    source, _ = by_assignment()[CH08].WRONG["train_step"]
    message = failure("train_step", solution_module(tmp_path, CH08, train_step=source))
    assert message.startswith("the model's parameters after the step (sgd, smoothing 0.1) differ from the "
                              "reference's: ") and "Likely mistake: call optimizer.zero_grad()" in message


def test_hidden_cases_find_what_the_worked_examples_miss(tmp_path):
    """A loss that takes the padding column to be 0 passes the worked examples (whose pad_id is 0); a
    hidden case with another pad_id says where it differs."""
    source = answer_sources(CH08)["label_smoothed_loss"].replace("!= pad_id  # padding by index", "!= 0  # padding by index")
    assert source != answer_sources(CH08)["label_smoothed_loss"]
    module = solution_module(tmp_path, CH08, label_smoothed_loss=source)
    message = failure("label_smoothed_loss", module)
    assert message.startswith("`loss` on smoothing 0.3, pad_id 3 (id 0 is a real token): max abs difference"), message
