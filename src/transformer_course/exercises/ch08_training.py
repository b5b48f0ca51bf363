"""Chapter 8 exercises: teacher forcing, batches with their masks, the label-smoothed loss, the
warm-up schedule, one training step and sequence accuracy.

Visible checks use examples whose answers follow by hand: the chapter's "start → I → am → fine →
end" split for teacher forcing, three number-word pairs ("42", "100", "5") padded into a batch
with their masks drawn row by row, a loss on probabilities such as 0.5 and 0.25 (with smoothing
0.1 the target puts 0.9 on the label and 0.1 / 3 on each of the 3 other real tokens), the schedule
at d_model 16 and warm-up 4 (rates 1/32, 1/16, 1/8 ...) and at the paper's d_model 512 and warm-up
4000, and predictions whose exact match and token accuracy are counted by hand. A training step's
answer is no hand arithmetic: its visible checks compare with the reference's recorded outputs
(``recorded/08-training.json``, see :mod:`.recorded`). Every check names the typical mistake whose
recorded outputs on the same input are the student's.

The hidden inputs, the references and the typical mistakes are the grader's side,
``grading.hidden_tests.ch08_training``. What a training step's cases hand to the student's code (a
small model, its optimizer) is defined here, since a case travels with it into the process that
runs the student's code: :class:`StepCase` and :class:`TinyTranslator`, which hold no answer.
Nothing of the reference is imported here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import fail, fmt_index, fmt_number
from .inputs import randn
from .recorded import recorded_outputs

ASSIGNMENT = "08-training"
PAD, START, END = 0, 1, 2  # the special ids of the checks (and of the chapter's task)

# --------------------------------------------------------------------------- library calls

# The losses that would compute the exercise's loss (or most of it) for the student.
CROSS_ENTROPY_CALLS = Forbidden(
    label="torch.nn.functional.cross_entropy / nn.CrossEntropyLoss (its label_smoothing included)",
    builtin_names=frozenset({"cross_entropy_loss", "cross_entropy"}),
    python_functions=frozenset({("torch/nn/functional.py", "cross_entropy"),
                                ("torch/nn/modules/loss.py", "CrossEntropyLoss")}),
    torch_name_parts=frozenset({"cross_entropy"}),
)
NLL_CALLS = Forbidden(
    label="torch.nn.functional.nll_loss / nn.NLLLoss",
    builtin_names=frozenset({"nll_loss", "nll_loss_nd", "nll_loss2d"}),
    python_functions=frozenset({("torch/nn/functional.py", "nll_loss"), ("torch/nn/modules/loss.py", "NLLLoss")}),
    torch_name_parts=frozenset({"nll_loss"}),
)
KL_DIV_CALLS = Forbidden(
    label="torch.nn.functional.kl_div / nn.KLDivLoss",
    builtin_names=frozenset({"kl_div"}),
    python_functions=frozenset({("torch/nn/functional.py", "kl_div"), ("torch/nn/modules/loss.py", "KLDivLoss")}),
    torch_name_parts=frozenset({"kl_div"}),
)
LOSS_CALLS = (CROSS_ENTROPY_CALLS, NLL_CALLS, KL_DIV_CALLS)
# Padding a list of sequences is what make_batch asks for.
PAD_SEQUENCE_CALLS = Forbidden(
    label="torch.nn.utils.rnn.pad_sequence",
    builtin_names=frozenset({"pad_sequence", "_pad_sequence"}),
    python_functions=frozenset({("torch/nn/utils/rnn.py", "pad_sequence")}),
    torch_name_parts=frozenset({"pad_sequence"}),
)

# --------------------------------------------------------------------------- helpers

# The words of the teacher-forcing example, by id (as in chapter 7's checks).
WORDS = ["<pad>", "<start>", "<end>", "I", "am", "fine", "you", "are"]
I_, AM, FINE, YOU, ARE = 3, 4, 5, 6, 7


def _fail(message: str) -> None:
    __tracebackhide__ = True
    raise ExerciseFailure(message)


def _words(ids: list[int]) -> str:
    return "'" + " ".join(WORDS[i] if 0 <= i < len(WORDS) else str(i) for i in ids) + "'"


def _numbers(ids: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in ids) + "]"


def token_words(index: tuple[int, ...], got: int, want: int) -> str:
    """"row 1, position 3 is token 7, expected token 2": an index of a (batch, seq) tensor of ids."""
    place = f"row {index[0]}, position {index[1]}" if len(index) == 2 else f"at {fmt_index(index)}"
    return f"{place} is token {got}, expected token {want}"


def _expect_integer(ids: Any, what: str) -> None:
    __tracebackhide__ = True
    if ids.is_floating_point() or ids.dtype == torch.bool:
        _fail(f"{what} has dtype {ids.dtype}; token ids are integers (torch.long): build them with "
              "dtype=torch.long, or slice the ids you were given.")


def _expect_shape(out: torch.Tensor, want: tuple, what: str, hint: str) -> None:
    __tracebackhide__ = True
    if tuple(out.shape) != want:
        fail(f"{what} has shape {tuple(out.shape)}, expected {want}", hint)


def _expect_ids(got: torch.Tensor, want: list[list[int]], what: str, hint: str,
                show: Callable[[list[int]], str] = _numbers) -> None:
    """Raise naming the first row of ids that differs, both rows written out."""
    __tracebackhide__ = True
    _expect_integer(got, what)
    _expect_shape(got, (len(want), len(want[0])), what, hint)
    rows = got.tolist()
    for b, (row, expected) in enumerate(zip(rows, want)):
        if row != expected:
            wrong = sum(a != e for r, w in zip(rows, want) for a, e in zip(r, w))
            fail(f"{what}: row {b} is {show(row)}, expected {show(expected)} ({wrong} of {got.numel()} ids "
                 "differ)", hint)


def _flags(row: torch.Tensor) -> str:
    return "[" + ", ".join("T" if bool(v) else "." for v in row.reshape(-1).tolist()) + "]"


def _picture(*rows: str) -> torch.Tensor:
    """A bool mask drawn row by row: "T" may attend, "." may not."""
    return torch.tensor([[c == "T" for c in row] for row in rows])


def _expect_mask(got: torch.Tensor, want: torch.Tensor, what: str, hint: str) -> None:
    """A bool mask equal to ``want``, or a message naming the first row that differs."""
    __tracebackhide__ = True
    if got.dtype != torch.bool:
        _fail(f"{what} has dtype {got.dtype}, expected torch.bool: masks are True (may attend) / False, "
              "built from comparisons such as ids != pad_id.")
    _expect_shape(got, tuple(want.shape), what, hint)
    got = got.detach().cpu()
    if torch.equal(got, want):
        return
    differ = got != want
    index = tuple(differ.nonzero()[0].tolist())
    row = index[:-1]
    fail(f"{what}: row {fmt_index(row)} is {_flags(got[row])}, expected {_flags(want[row])} (T = may attend; "
         f"{int(differ.sum())} of {got.numel()} entries differ)", hint)


def _expect_float64(out: torch.Tensor, what: str, hint: str) -> None:
    __tracebackhide__ = True
    if out.dtype != torch.float64:
        _fail(f"{what} has dtype {out.dtype}, expected torch.float64.\n  Hint: {hint}")


def _expect_number(out: torch.Tensor, want: float, what: str, hint: str, rtol: float = 1e-6,
                   atol: float = 1e-12) -> None:
    """A 0-d tensor close to ``want``, or a message with both numbers."""
    __tracebackhide__ = True
    _expect_shape(out, (), what, "return a single number as a 0-d tensor (a sum or mean over everything, "
                  "not per row).")
    got = float(out.detach().double())
    if math.isnan(got) or not math.isclose(got, want, rel_tol=rtol, abs_tol=atol):
        fail(f"{what} is {fmt_number(got)}, expected {fmt_number(want)}", hint)


# --------------------------------------------------------------------------- teacher_forcing


def teacher_forcing_visible(call: Callable[..., tuple]) -> int:
    """"start I am fine end" next to "start you are end" (padded), and the shortest target."""
    __tracebackhide__ = True
    tgt = torch.tensor([[START, I_, AM, FINE, END], [START, YOU, ARE, END, PAD]])
    label = "'<start> I am fine <end>' and '<start> you are <end> <pad>', tgt (2, 5)"
    decoder_input, labels = call(label, tgt)
    split = ("the decoder reads the target without its last position, decoder_input = tgt[:, :-1], and is "
             "asked for the target without its first, labels = tgt[:, 1:]: position t sees tokens 0..t and "
             "must predict token t + 1.")
    _expect_ids(decoder_input, [[START, I_, AM, FINE], [START, YOU, ARE, END]], "`decoder_input`", split, _words)
    _expect_ids(labels, [[I_, AM, FINE, END], [YOU, ARE, END, PAD]], "`labels`", split, _words)

    tgt = torch.tensor([[START, END]])
    decoder_input, labels = call("the shortest target, '<start> <end>', tgt (1, 2)", tgt)
    _expect_ids(decoder_input, [[START]], "`decoder_input` of '<start> <end>'",
                "the decoder reads the start token and must predict the end token.", _words)
    _expect_ids(labels, [[END]], "`labels` of '<start> <end>'",
                "the decoder reads the start token and must predict the end token.", _words)
    return 4


def _split_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    tgt = case.args[0]
    if actual == tuple(tgt.shape):
        return ("each output is one position shorter than tgt: decoder_input = tgt[:, :-1] drops the last, "
                "labels = tgt[:, 1:] the first.")
    return None


TEACHER_FORCING = Exercise(
    function="teacher_forcing",
    assignment=ASSIGNMENT,
    points=1,
    visible_checks=teacher_forcing_visible,
    output_names=("decoder_input", "labels"),
    index_outputs=("decoder_input", "labels"),
    index_words=token_words,
    shape_hint=_split_shape_hint,
)


# --------------------------------------------------------------------------- make_batch


def make_batch_visible(call: Callable[..., tuple]) -> int:
    """Three number-word pairs of different lengths: every output written out by hand."""
    __tracebackhide__ = True
    sources = [[5, 6, 7], [8, 9], [10]]  # three number words, e.g. "forty - two"
    targets = [[7, 5], [4, 3, 3], [8]]  # "42", "100", "5" with digit d = id d + 3
    label = "sources of lengths 3, 2, 1 and targets '42', '100', '5' (ids [7, 5], [4, 3, 3], [8])"
    src, decoder_input, labels, src_mask, tgt_mask = call(label, sources, targets)
    _expect_ids(src, [[5, 6, 7], [8, 9, PAD], [10, PAD, PAD]], "`src`",
                "pad every source on the right with pad_id to the length of the longest one.")
    targets_hint = ("each target becomes [start_id, *target, end_id], all padded on the right with pad_id to "
                    "the longest (here 5: '100' with its start and end), then teacher_forcing splits them: "
                    "decoder_input drops the last position, labels the first.")
    _expect_ids(decoder_input, [[START, 7, 5, END], [START, 4, 3, 3], [START, 8, END, PAD]], "`decoder_input`",
                targets_hint)
    _expect_ids(labels, [[7, 5, END, PAD], [4, 3, 3, END], [8, END, PAD, PAD]], "`labels`", targets_hint)
    want_src = torch.stack([_picture("TTT"), _picture("TT."), _picture("T..")])[:, None]  # (3, 1, 1, 3)
    _expect_mask(src_mask, want_src, "`src_mask`", "src_mask is True at real source tokens, (src != pad_id), "
                 "shaped (batch, 1, 1, S) so that it broadcasts over heads and queries.")
    causal = ["T...", "TT..", "TTT.", "TTTT"]
    want_tgt = torch.stack([_picture(*causal), _picture(*causal), _picture("T...", "TT..", "TTT.", "TTT.")])[:, None]
    _expect_mask(tgt_mask, want_tgt, "`tgt_mask`",
                 "tgt_mask allows position t to attend to position u when u <= t (causal) and decoder_input[u] "
                 "is not padding: combine the padding mask of decoder_input, (batch, 1, 1, T), with the causal "
                 "mask, (T, T), into (batch, 1, T, T).")

    label = "other special ids (pad_id=9, start_id=7, end_id=8), sources [[3, 4], [5]], targets [[6], [2, 1]]"
    src, decoder_input, labels, src_mask, tgt_mask = call(label, [[3, 4], [5]], [[6], [2, 1]], pad_id=9,
                                                          start_id=7, end_id=8)
    ids_hint = "use the pad_id, start_id and end_id you are given, not fixed numbers."
    _expect_ids(src, [[3, 4], [5, 9]], "`src` with pad_id=9", ids_hint)
    _expect_ids(decoder_input, [[7, 6, 8], [7, 2, 1]], "`decoder_input` with start_id=7, end_id=8, pad_id=9",
                ids_hint)
    _expect_ids(labels, [[6, 8, 9], [2, 1, 8]], "`labels` with start_id=7, end_id=8, pad_id=9", ids_hint)
    _expect_mask(src_mask, torch.stack([_picture("TT"), _picture("T.")])[:, None], "`src_mask` with pad_id=9",
                 ids_hint)
    _expect_mask(tgt_mask, torch.stack([_picture("T..", "TT.", "TTT")] * 2)[:, None], "`tgt_mask` with pad_id=9",
                 ids_hint)
    return 10


MAKE_BATCH = Exercise(
    function="make_batch",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=make_batch_visible,
    output_names=("src", "decoder_input", "labels", "src_mask", "tgt_mask"),
    index_outputs=("src", "decoder_input", "labels"),
    index_words=token_words,
    uses=("teacher_forcing", "padding_mask", "causal_mask", "combine_masks"),
    forbidden=(PAD_SEQUENCE_CALLS,),
)


# --------------------------------------------------------------------------- label_smoothed_loss

# The worked example: one sentence of three positions over a vocabulary of 5 (0 = padding). The
# probabilities are chosen so that every loss below is a sum of logarithms of simple numbers.
_PROBS = [[0.05, 0.5, 0.25, 0.125, 0.075],  # label 1: p = 0.5
          [0.1, 0.1, 0.2, 0.4, 0.2],  # label 3: p = 0.4
          [0.2, 0.2, 0.2, 0.2, 0.2]]  # label 0: padding, does not count
_LABELS = [[1, 3, PAD]]
ln = math.log
# smoothing 0: the mean of -log p(label) over the two real positions.
_PLAIN = -(ln(0.5) + ln(0.4)) / 2
# smoothing 0.1: 0.9 on the label, 0.1 / 3 on each of the other tokens but padding (V - 2 = 3).
_SMOOTHED = -(0.9 * ln(0.5) + 0.1 / 3 * (ln(0.25) + ln(0.125) + ln(0.075))
              + 0.9 * ln(0.4) + 0.1 / 3 * (ln(0.1) + ln(0.2) + ln(0.2))) / 2


def label_smoothed_loss_visible(call: Callable[..., tuple]) -> int:
    """Probabilities 0.5 and 0.4 on the labels, one padding position, smoothing 0 and 0.1."""
    __tracebackhide__ = True
    log_probs = torch.tensor([_PROBS], dtype=torch.float64).log()  # (1, 3, 5)
    labels = torch.tensor(_LABELS)
    label = "log_probs (1, 3, 5), labels [[1, 3, 0]] (p = 0.5 and 0.4 on the labels), smoothing 0"
    (loss,) = call(label, log_probs, labels, PAD, 0.0)
    _expect_number(loss, _PLAIN, "the loss with smoothing 0",
                   "with smoothing 0 the loss is the mean over the real positions of -log p(label): "
                   "-(log 0.5 + log 0.4) / 2 = 0.8047. The third position's label is padding: it does not count, "
                   "neither in the sum nor in the number you divide by.")

    label = "log_probs (1, 3, 5), labels [[1, 3, 0]], smoothing 0.1"
    (loss,) = call(label, log_probs, labels, PAD, 0.1)
    _expect_number(loss, _SMOOTHED, "the loss with smoothing 0.1",
                   "the target puts 1 - smoothing = 0.9 on the label and smoothing / (vocab - 2) = 0.1 / 3 on each "
                   "other token except padding (0 on padding); the loss at a position is -sum(target * log_probs), "
                   "then the mean over the real positions. Position 0: -(0.9 log 0.5 + 0.1/3 (log 0.25 + "
                   "log 0.125 + log 0.075)).")

    label = "log_probs (1, 3, 5), labels [[1, 3, 0]], smoothing 0.1, float32"
    (loss,) = call(label, log_probs.float(), labels, PAD, 0.1)
    _expect_number(loss, _SMOOTHED, "the loss in float32", "the same numbers in float32.", rtol=1e-5)

    label = "log_probs (1, 3, 5), every label padding, smoothing 0.1"
    (loss,) = call(label, log_probs, torch.zeros(1, 3, dtype=torch.long), PAD, 0.1)
    _expect_number(loss, 0.0, "the loss when every label is padding",
                   "with no real token there is nothing to average: the loss is 0. Divide by the number of real "
                   "tokens clamped to at least 1 (n.clamp(min=1)), and zero the padding positions with "
                   "torch.where (0 * inf is nan).")
    return 4


LABEL_SMOOTHED_LOSS = Exercise(
    function="label_smoothed_loss",
    assignment=ASSIGNMENT,
    points=4,
    visible_checks=label_smoothed_loss_visible,
    output_names=("loss",),
    forbidden=LOSS_CALLS,
    rtol={torch.float64: 1e-6, torch.float32: 1e-4},
    atol={torch.float64: 1e-9, torch.float32: 1e-5},
)


# --------------------------------------------------------------------------- learning_rate

_SCHEDULE_HINT = ("lr = factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5): it rises linearly "
                  "for `warmup` steps, peaks at step == warmup, then falls as 1 / sqrt(step).")


def learning_rate_visible(call: Callable[..., tuple]) -> int:
    """d_model 16 (d_model^-0.5 = 1/4) and warm-up 4 (warmup^-1.5 = 1/8), then the paper's numbers."""
    __tracebackhide__ = True
    steps = torch.tensor([1, 2, 4, 16, 64])
    label = "steps [1, 2, 4, 16, 64], d_model 16, warmup 4"
    (lr,) = call(label, steps, 16, 4)
    _expect_float64(lr, "the learning rates", "compute in float64: step.double() (or step.to(torch.float64)) "
                    "first; an integer tensor to a negative power gives float32.")
    _expect_shape(lr, (5,), "the learning rates for 5 steps", "one rate per step.")
    # 1/4 * min(s^-0.5, s/8): 1/4 * [1/8, 1/4, 1/2, 1/4, 1/8]
    want = [1 / 32, 1 / 16, 1 / 8, 1 / 16, 1 / 32]
    for i, (got, w) in enumerate(zip(lr.tolist(), want)):
        if not math.isclose(got, w, rel_tol=1e-9):
            fail(f"the learning rate at step {steps[i].item()} (d_model 16, warmup 4) is {fmt_number(got)}, expected "
                 f"{fmt_number(w)} (the rates should be [1/32, 1/16, 1/8, 1/16, 1/32]: up to the peak at step 4, "
                 "then down)", _SCHEDULE_HINT + " Here 1/4 * min(step ** -0.5, step / 8).")

    (lr,) = call("steps [4], d_model 16, warmup 4, factor 2", torch.tensor([4]), 16, 4, 2.0)
    _expect_number(lr[0] if lr.dim() == 1 else lr, 0.25, "the peak rate with factor 2",
                   "factor multiplies the whole rate: 2 * 1/8.", rtol=1e-9)

    paper = torch.tensor([1, 4000, 100000])
    label = "the paper's d_model 512, warmup 4000, steps [1, 4000, 100000]"
    (lr,) = call(label, paper, 512, 4000)
    want = [512 ** -0.5 * 4000 ** -1.5, 512 ** -0.5 * 4000 ** -0.5, 512 ** -0.5 * 100000 ** -0.5]
    _expect_shape(lr, (3,), "the learning rates for 3 steps", "one rate per step.")
    for s, got, w in zip(paper.tolist(), lr.tolist(), want):
        if not math.isclose(got, w, rel_tol=1e-6):
            fail(f"the paper's learning rate at step {s} is {fmt_number(got)}, expected {fmt_number(w)} (the peak is "
                 "512 ** -0.5 * 4000 ** -0.5 = 6.99e-4, at step 4000)", _SCHEDULE_HINT)

    (lr,) = call("a 0-d step, tensor(4), d_model 16, warmup 4", torch.tensor(4), 16, 4)
    _expect_shape(lr, (), "the learning rate for a 0-d step", "a 0-d step gives a 0-d rate: work elementwise "
                  "(torch.minimum), without indexing or stacking.")
    _expect_number(lr, 1 / 8, "the learning rate at step 4", _SCHEDULE_HINT, rtol=1e-9)

    call(Case("steps [0, 1, 2] (steps count from 1)", (torch.tensor([0, 1, 2]), 16, 4), raises=ValueError))
    return 6


LEARNING_RATE = Exercise(
    function="learning_rate",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=learning_rate_visible,
    output_names=("lr",),
    # float64 arithmetic done in another order: a few units in the last place of each power.
    rtol={torch.float64: 1e-6, torch.float32: 1e-4},
    atol={torch.float64: 1e-15, torch.float32: 1e-10},
)


# --------------------------------------------------------------------------- train_step


class TinyTranslator(nn.Module):
    """A small encoder-decoder stand-in for the training-step checks: ``forward(src, decoder_input)``
    gives ``(batch, T, vocab)`` log-probabilities, and ``pad_id`` is its padding id.

    It is no Transformer (and holds no answer of this chapter or any other): the source is the mean
    of its real tokens' vectors, each target position the running mean of the target vectors up to
    it (so nothing sees the future), their sum goes through one tanh layer and an output layer.
    Every parameter takes part in every step, and there is no dropout, so one step's result is
    exactly determined. The weights are drawn from ``gen``, never from the global random state.
    """

    def __init__(self, gen: torch.Generator, src_vocab: int = 11, tgt_vocab: int = 7, d: int = 6,
                 pad_id: int = PAD) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.src_table = nn.Parameter(randn(gen, src_vocab, d))
        self.tgt_table = nn.Parameter(randn(gen, tgt_vocab, d))
        self.w_mix = nn.Parameter(randn(gen, d, d, scale=1 / math.sqrt(d)))
        self.b_mix = nn.Parameter(randn(gen, d, scale=0.1))
        self.w_out = nn.Parameter(randn(gen, d, tgt_vocab, scale=2 / math.sqrt(d)))
        self.b_out = nn.Parameter(randn(gen, tgt_vocab, scale=0.1))

    def forward(self, src: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        real = (src != self.pad_id).to(self.src_table.dtype)[..., None]  # (batch, S, 1)
        memory = (self.src_table[src] * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
        y = self.tgt_table[decoder_input]  # (batch, T, d)
        count = torch.arange(1, y.shape[1] + 1, device=y.device, dtype=y.dtype)[:, None]  # (T, 1)
        h = torch.tanh((y.cumsum(1) / count + memory) @ self.w_mix + self.b_mix)  # (batch, T, d)
        return torch.log_softmax(h @ self.w_out + self.b_out, dim=-1)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """Every parameter of ``model``, flattened into one vector, in ``model.parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def parameter_at(model: nn.Module, index: int) -> str:
    """The parameter entry at ``index`` of :func:`flat_parameters`: "w_out[2, 5]"."""
    for name, p in model.named_parameters():
        if index < p.numel():
            place = torch.unravel_index(torch.tensor(index), p.shape)
            return f"{name}{fmt_index([int(i) for i in place])}"
        index -= p.numel()
    return f"entry {index}"


@dataclass(frozen=True)
class StepCase(Case):
    """A call of ``train_step(model, optimizer, src, decoder_input, labels, ...)``: its ``args``
    start with a model and an optimizer over the model's parameters.

    A training step's effect is on the model, so what the checks compare is ``(loss, the model's
    parameters after the step, flattened)`` (:meth:`collect`), and the loss may come back as a
    0-d tensor or a Python float. The parameters arrive holding the gradients ``stale`` (one per
    parameter, as an earlier batch would have left them), so a step that does not zero them first
    adds them in. The model and its optimizer are copied together (``copy.deepcopy((model,
    optimizer))``), so the copy's optimizer steps the copy's parameters; ``to``/``on`` convert the
    copy. The outputs' floating dtype is the model's.
    """

    stale: tuple[torch.Tensor, ...] = ()

    @property
    def dtype(self) -> torch.dtype | None:
        return next(self.args[0].parameters()).dtype

    def _copied(self, change: Callable[[torch.Tensor], torch.Tensor]) -> StepCase:
        """The case with a copy of its model and optimizer, the model's tensors (and the stale
        gradients) passed through ``change`` (a cast, a move, or a copy)."""
        model, optimizer = copy.deepcopy(self.args[:2])
        like = change(next(model.parameters()).detach())
        # Module.to changes each parameter's data in place: they stay the optimizer's parameters.
        model.to(device=like.device, dtype=like.dtype)
        return replace(self, args=(model, optimizer, *self.args[2:]), stale=tuple(change(g) for g in self.stale))

    def to(self, dtype: torch.dtype) -> StepCase:
        return super().to(dtype)._copied(lambda t: t.to(dtype))

    def on(self, device: torch.device) -> StepCase:
        return super().on(device)._copied(lambda t: t.to(device))

    def clone(self) -> StepCase:
        return super().clone()._copied(torch.Tensor.clone)

    def apply(self, fn: Callable[..., Any]) -> Any:
        for p, g in zip(self.args[0].parameters(), self.stale):
            p.grad = g.clone()
        with torch.enable_grad():  # (the grader runs the reference under no_grad)
            return self.collect(fn(*self.args, **self.kwargs))

    def collect(self, result: Any) -> tuple:
        loss = result
        if isinstance(loss, float):
            loss = torch.tensor(loss, dtype=self.dtype, device=self.device)
        elif isinstance(loss, torch.Tensor):
            loss = loss.detach()
        return loss, flat_parameters(self.args[0])


def example_step_case(label: str, optimizer: str, smoothing: float) -> StepCase:
    """A visible training step: a TinyTranslator (seed 8), a batch of three with padding, stale
    gradients, and a fresh optimizer: ``"sgd"`` (lr 0.5) or ``"adam"`` (lr 0.05, eps 1e-3)."""
    gen = torch.Generator().manual_seed(8)
    model = TinyTranslator(gen)
    stale = tuple(randn(gen, *p.shape) for p in model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.9, 0.98), eps=1e-3, foreach=False)
    src = torch.tensor([[5, 6, 7, 8], [9, 4, PAD, PAD], [10, PAD, PAD, PAD]])
    decoder_input = torch.tensor([[START, 6, 3, 4], [START, 5, END, PAD], [START, 3, 3, END]])
    labels = torch.tensor([[6, 3, 4, END], [5, END, PAD, PAD], [3, 3, END, PAD]])
    return StepCase(label, (model, opt, src, decoder_input, labels), {"smoothing": smoothing}, stale=stale)


_STEP = ("one step: optimizer.zero_grad(); log_probs = model(src, decoder_input); loss = "
         "label_smoothed_loss(log_probs, labels, model.pad_id, smoothing); loss.backward(); optimizer.step(); "
         "return the loss (loss.detach() or loss.item()).")


def train_step_visible(call: Callable[..., tuple]) -> int:
    """A small model's step with SGD and with Adam, compared with the reference's recorded outputs."""
    __tracebackhide__ = True
    count = 0
    for label, optimizer, smoothing in (
            ("TinyTranslator (seed 8), SGD lr 0.5, a batch of 3 with padding, stale gradients, smoothing 0.1",
             "sgd", 0.1),
            ("TinyTranslator (seed 8), Adam lr 0.05, a batch of 3 with padding, stale gradients, smoothing 0.2",
             "adam", 0.2)):
        case = example_step_case(label, optimizer, smoothing)
        loss, parameters = call(case)
        want_loss, want_parameters = recorded_outputs("train_step", label)
        _expect_number(loss, float(want_loss), f"the loss returned ({optimizer}, smoothing {smoothing})",
                       "return the batch's label-smoothed loss, label_smoothed_loss(log_probs, labels, model.pad_id, "
                       "smoothing), computed before the update. " + _STEP, rtol=1e-6, atol=1e-9)
        before = flat_parameters(case.args[0])
        if tuple(parameters.shape) == tuple(before.shape) and torch.equal(parameters.cpu(), before):
            fail(f"the model's parameters did not change in the step ({optimizer})",
                 "call optimizer.step() after loss.backward(): backward only computes the gradients.")
        difference = (parameters.detach().double().cpu() - want_parameters).abs()
        if difference.shape != want_parameters.shape or not bool((difference <= 1e-9 + 1e-6 * want_parameters.abs()
                                                                 ).all()):
            index = int(difference.argmax()) if difference.shape == want_parameters.shape else 0
            where = parameter_at(case.args[0], index)
            fail(f"the model's parameters after the step ({optimizer}, smoothing {smoothing}) differ from the "
                 f"reference's: {where} is {fmt_number(float(parameters.reshape(-1)[index]))}, expected "
                 f"{fmt_number(float(want_parameters[index]))} ({int((difference > 1e-9).sum())} of "
                 f"{want_parameters.numel()} entries differ)", "the parameters arrive holding gradients of an "
                 "earlier batch, and backward() adds to them. " + _STEP)
        count += 3
    return count


TRAIN_STEP = Exercise(
    function="train_step",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=train_step_visible,
    output_names=("loss", "parameters"),
    uses=("label_smoothed_loss",),
    forbidden=LOSS_CALLS,
)


# --------------------------------------------------------------------------- sequence_accuracy


def sequence_accuracy_visible(call: Callable[..., tuple]) -> int:
    """Three predicted sequences ("42", "100", "5" as labels), counted by hand."""
    __tracebackhide__ = True
    labels = torch.tensor([[7, 5, END, PAD], [4, 3, 3, END], [8, END, PAD, PAD]])
    predicted = torch.tensor([[7, 5, END, 9],  # right; something else where the label is padding
                              [4, 3, 6, END],  # one digit wrong
                              [8, END, PAD, 4]])  # right
    label = "labels '42', '100', '5' (9 real tokens), predictions with one wrong digit and junk after the end"
    exact, token = call(label, predicted, labels, PAD)
    for out, name in ((exact, "exact_match"), (token, "token_accuracy")):
        _expect_float64(out, f"`{name}`", "return fractions as float64: e.g. right.sum().double() / real.sum(), "
                        "or .to(torch.float64).")
    _expect_number(exact, 2 / 3, "`exact_match`",
                   "rows 0 and 2 are right at every real position (what follows the end, where the label is "
                   "padding, does not count); row 1 has a wrong digit: 2 of 3 rows. A row counts only when all "
                   "its real tokens are right: ((predicted == labels) | (labels == pad_id)).all(dim=-1), then the "
                   "mean over rows.", rtol=1e-12)
    _expect_number(token, 8 / 9, "`token_accuracy`",
                   "8 of the 9 real (non-padding) labels are predicted: count right tokens only where "
                   "labels != pad_id, and divide by the number of real labels.", rtol=1e-12)

    labels = torch.tensor([[6, END], [PAD, PAD]])
    label = "labels [[6, 2], [0, 0]] (a row of padding only), predictions [[6, 4], [5, 5]]"
    exact, token = call(label, torch.tensor([[6, 4], [5, 5]]), labels, PAD)
    _expect_number(exact, 1 / 2, "`exact_match` with a row of padding only",
                   "row 0 misses its end token; row 1 has no real label, so nothing in it can be wrong: it counts "
                   "as right. 1 of 2 rows.", rtol=1e-12)
    _expect_number(token, 1 / 2, "`token_accuracy` with a row of padding only",
                   "1 of the 2 real labels is predicted; padding counts in neither number.", rtol=1e-12)
    return 6


SEQUENCE_ACCURACY = Exercise(
    function="sequence_accuracy",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=sequence_accuracy_visible,
    output_names=("exact_match", "token_accuracy"),
)

EXERCISES = (TEACHER_FORCING, MAKE_BATCH, LABEL_SMOOTHED_LOSS, LEARNING_RATE, TRAIN_STEP, SEQUENCE_ACCURACY)
