"""Chapter 8, grader side: references, hidden inputs and typical mistakes.

Hidden checks compare with the reference (:mod:`transformer_course.training`) on seeded random
inputs and edge cases: batches of one, targets of length one, rows of padding only, other special
ids, float32 and float64, and training steps with SGD and Adam on small models whose parameters
arrive holding stale gradients. The typical mistakes are written as code, one function with a
knob per mistake where they share most of their code, right with every knob at its default, so a
message can name the one a student made. That is why this module lives on the grader's side: it is
never imported by the student side or inside the grading sandbox.

What a training step's case hands to the student's code travels with it into that sandbox, so it
holds only answer-free objects of the student side:
:class:`~transformer_course.exercises.ch08_training.StepCase`,
:class:`~transformer_course.exercises.ch08_training.TinyTranslator` and torch's optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...exercises.base import Case
from ...exercises.ch08_training import END, PAD, START, StepCase, TinyTranslator
from ...exercises.inputs import randn, with_float32
from ...masks import causal_mask, padding_mask
from ...training import label_smoothed_loss
from ..hidden_spec import HiddenTests, Mistake

# --------------------------------------------------------------------------- inputs


def _lengths(gen: torch.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` lengths in [low, high]."""
    return torch.randint(low, high + 1, (n,), generator=gen).tolist()


def _id_lists(gen: torch.Generator, lengths: Sequence[int], low: int, high: int) -> list[list[int]]:
    """One list of ids in [low, high) per length."""
    return [torch.randint(low, high, (n,), generator=gen).tolist() for n in lengths]


def _targets(gen: torch.Generator, lengths: Sequence[int], vocab: int = 13, pad_id: int = PAD,
             start_id: int = START, end_id: int = END) -> torch.Tensor:
    """``(batch, longest + 2)`` full targets ``[start, y_1, ..., y_n, end]`` right-padded; the
    tokens are drawn from [3, vocab)."""
    longest = max(lengths) + 2
    out = torch.full((len(lengths), longest), pad_id, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, : n + 2] = torch.tensor([start_id, *torch.randint(3, vocab, (n,), generator=gen).tolist(), end_id])
    return out


def _labels(gen: torch.Generator, batch: int, T: int, vocab: int, lengths: Sequence[int], pad_id: int = PAD
            ) -> torch.Tensor:
    """``(batch, T)`` labels: random real ids (never ``pad_id``) for ``lengths[b]`` positions, then padding."""
    ids = torch.randint(0, vocab - 1, (batch, T), generator=gen)
    ids = ids + (ids >= pad_id).long()  # every id but pad_id
    for b, n in enumerate(lengths):
        ids[b, n:] = pad_id
    return ids


# --------------------------------------------------------------------------- teacher_forcing


def teacher_forcing_cases(gen: torch.Generator) -> list[Case]:
    return [
        Case("tgt (4, 8), targets of 6, 4, 1 and 3 tokens", (_targets(gen, [6, 4, 1, 3]),)),
        Case("a batch of one, tgt (1, 7)", (_targets(gen, [5]),)),
        Case("targets of length 0: tgt (3, 2) = start and end only", (_targets(gen, [0, 0, 0]),)),
        Case("long targets, tgt (2, 14)", (_targets(gen, [12, 9], vocab=40),)),
        Case("int32 ids, tgt (3, 6)", (_targets(gen, [4, 2, 3]).to(torch.int32),)),
        Case("a row of padding only, tgt (3, 5)", (torch.cat([_targets(gen, [3, 1]), torch.zeros(1, 5).long()]),)),
        Case("other special ids (start 10, end 11, pad 12), tgt (3, 6)",
             (_targets(gen, [4, 2, 1], vocab=10, pad_id=12, start_id=10, end_id=11),)),
    ]


TEACHER_FORCING_HIDDEN = HiddenTests(
    function="teacher_forcing",
    reference="transformer_course.training:teacher_forcing",
    make_cases=teacher_forcing_cases,
    mistakes=(
        Mistake(lambda tgt: (tgt[:, :-1], tgt[:, :-1]),
                "the labels are the decoder input itself: position t would be asked for the token it already "
                "reads, and a model learns to copy. Shift them by one: labels = tgt[:, 1:]."),
        Mistake(lambda tgt: (tgt[:, 1:], tgt[:, :-1]),
                "decoder_input and labels are swapped: the decoder reads tgt[:, :-1] (from the start token on) and "
                "predicts tgt[:, 1:] (up to the end token)."),
        Mistake(lambda tgt: (tgt[:, :-1], tgt),
                "the labels keep the start token: nobody predicts it, the decoder starts from it. labels = "
                "tgt[:, 1:], one position shorter than tgt, like decoder_input."),
        Mistake(lambda tgt: (tgt, tgt[:, 1:]),
                "the decoder input keeps the last position (the end token): after the end there is nothing to "
                "predict. decoder_input = tgt[:, :-1], one position shorter than tgt."),
    ),
)


# --------------------------------------------------------------------------- make_batch


def make_batch_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, sources: list[list[int]], targets: list[list[int]], **ids: int) -> Case:
        return Case(label, (sources, targets), ids)

    n = 8
    return [
        case("8 pairs of random lengths", _id_lists(gen, _lengths(gen, n, 1, 9), 3, 20),
             _id_lists(gen, _lengths(gen, n, 1, 6), 3, 13)),
        case("a batch of one pair", _id_lists(gen, [5], 3, 20), _id_lists(gen, [3], 3, 13)),
        case("sources and targets of one token each", _id_lists(gen, [1, 1, 1], 3, 20),
             _id_lists(gen, [1, 1, 1], 3, 13)),
        case("an empty target among others (its decoder input is the start token, its label the end token)",
             _id_lists(gen, [4, 2, 3], 3, 20), [*_id_lists(gen, [3, 5], 3, 13), []]),
        case("an empty source among others (a row of padding only)", [[], *_id_lists(gen, [4, 2], 3, 20)],
             _id_lists(gen, [2, 4, 1], 3, 13)),
        case("every source and every target of the same length (no padding)", _id_lists(gen, [5, 5, 5, 5], 3, 20),
             _id_lists(gen, [3, 3, 3, 3], 3, 13)),
        case("other special ids (pad_id=12, start_id=10, end_id=11)", _id_lists(gen, [3, 6, 2], 0, 10),
             _id_lists(gen, [2, 1, 5], 0, 10), pad_id=12, start_id=10, end_id=11),
        case("targets longer than their sources", _id_lists(gen, [2, 1], 3, 20), _id_lists(gen, [6, 7], 3, 13)),
    ]


def _pad_rows(rows: Sequence[Sequence[int]], pad_id: int, left: bool = False, length: int | None = None
              ) -> torch.Tensor:
    longest = length or max(len(r) for r in rows)
    out = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(list(row), dtype=torch.long)
            if left:
                out[i, longest - len(row):] = values
            else:
                out[i, : len(row)] = values
    return out


def _batch(sources, targets, pad_id=PAD, start_id=START, end_id=END, *, left=False, start=True, end=True,
           length=None, causal=True, padding=True, inverted=False, from_labels=False):
    """make_batch with knobs that reproduce typical mistakes."""
    src = _pad_rows(sources, pad_id, left, length)
    tgt = _pad_rows([[*([start_id] if start else []), *t, *([end_id] if end else [])] for t in targets], pad_id,
                    left, length)
    decoder_input, labels = tgt[:, :-1], tgt[:, 1:]
    src_mask = padding_mask(src, pad_id)
    T = decoder_input.shape[1]
    keys = padding_mask(labels if from_labels else decoder_input, pad_id)  # (batch, 1, 1, T)
    if causal and padding:
        tgt_mask = keys & causal_mask(T)
    else:
        tgt_mask = keys if padding else causal_mask(T)
    if inverted:
        src_mask, tgt_mask = ~src_mask, ~tgt_mask
    return src, decoder_input, labels, src_mask, tgt_mask


def _batch_mistake(**knobs: Any) -> Callable[..., tuple]:
    def make_batch(sources, targets, pad_id=PAD, start_id=START, end_id=END):
        return _batch(sources, targets, pad_id, start_id, end_id, **knobs)

    return make_batch


MAKE_BATCH_HIDDEN = HiddenTests(
    function="make_batch",
    reference="transformer_course.training:make_batch",
    make_cases=make_batch_cases,
    mistakes=(
        Mistake(_batch_mistake(left=True),
                "pad on the right: the tokens first, then pad_id up to the longest (left padding moves every "
                "sequence's start, and the start token with it)."),
        Mistake(_batch_mistake(start=False, end=False),
                "wrap every target in its special tokens before padding: [start_id, *target, end_id]. The decoder "
                "starts from the start token, and must learn to say when it is done (the end token)."),
        Mistake(_batch_mistake(end=False),
                "each target ends with end_id: [start_id, *target, end_id]. Without it the model never learns to "
                "stop."),
        Mistake(_batch_mistake(length=16),
                "pad to the longest sequence of the batch (max(len(s) for s in sources)), not to a fixed length."),
        Mistake(_batch_mistake(causal=False),
                "tgt_mask must also hide the future: combine the padding mask of decoder_input with the causal "
                "mask, combine_masks(padding_mask(decoder_input, pad_id), causal_mask(T)), (batch, 1, T, T)."),
        Mistake(_batch_mistake(padding=False),
                "tgt_mask must also hide the decoder input's padding: combine the causal mask with "
                "padding_mask(decoder_input, pad_id) into (batch, 1, T, T)."),
        Mistake(_batch_mistake(inverted=True),
                "the masks are inverted: True means 'may attend', so it is True at real tokens (ids != pad_id) "
                "and False at padding."),
        Mistake(_batch_mistake(from_labels=True),
                "tgt_mask describes the keys the decoder attends to, the positions of decoder_input: build its "
                "padding part from decoder_input, not from labels."),
    ),
)


# --------------------------------------------------------------------------- label_smoothed_loss


def _log_probs(gen: torch.Generator, batch: int, T: int, vocab: int, scale: float = 2.0) -> torch.Tensor:
    return torch.log_softmax(randn(gen, batch, T, vocab, scale=scale), dim=-1)


def label_smoothed_loss_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, T: int, vocab: int, lengths: list[int], smoothing: float, pad_id: int = PAD,
             scale: float = 2.0) -> Case:
        return Case(label, (_log_probs(gen, batch, T, vocab, scale), _labels(gen, batch, T, vocab, lengths, pad_id),
                            pad_id, smoothing))

    cases = [
        case("log_probs (4, 6, 9), padded labels, smoothing 0.1", 4, 6, 9, [6, 4, 2, 5], 0.1),
        case("log_probs (3, 5, 12), padded labels, smoothing 0 (plain cross-entropy)", 3, 5, 12, [5, 3, 1], 0.0),
        case("smoothing 0.3, pad_id 3 (id 0 is a real token)", 3, 7, 8, [7, 2, 5], 0.3, pad_id=3),
        case("a batch of one, T = 1, smoothing 0.1", 1, 1, 6, [1], 0.1),
        case("a row whose labels are all padding, smoothing 0.2", 3, 4, 7, [4, 0, 2], 0.2),
        case("every label padding (the loss is 0), smoothing 0.1", 2, 3, 5, [0, 0], 0.1),
        case("no padding at all, vocab 3 (one other real token), smoothing 0.1", 2, 4, 3, [4, 4], 0.1),
        case("a confident model (log_softmax of large logits), smoothing 0.1", 2, 5, 10, [5, 3], 0.1, scale=10.0),
    ]
    return with_float32(cases, {"log_probs (4, 6, 9), padded labels, smoothing 0.1",
                                "log_probs (3, 5, 12), padded labels, smoothing 0 (plain cross-entropy)"})


def _per_token(log_probs, labels, pad_id, smoothing, *, onto_padding=False, torch_style=False):
    """The loss at every position (padding labels included), as the reference defines it or with
    the smoothing mass spread another way."""
    vocab = log_probs.shape[-1]
    on_label = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    everything = log_probs.sum(dim=-1)
    if torch_style:  # (1 - eps) on the label, then eps / V on every token, the label included
        return -(1 - smoothing) * on_label - smoothing / vocab * everything
    if onto_padding:  # eps / (V - 1) on every token but the label, padding included
        return -(1 - smoothing) * on_label - smoothing / (vocab - 1) * (everything - on_label)
    return -(1 - smoothing) * on_label - smoothing / (vocab - 2) * (everything - on_label - log_probs[..., pad_id])


def _loss(log_probs, labels, pad_id, smoothing, *, onto_padding=False, torch_style=False, mask=True,
          divide_by="real"):
    """label_smoothed_loss with knobs that reproduce typical mistakes."""
    per_token = _per_token(log_probs, labels, pad_id, smoothing, onto_padding=onto_padding, torch_style=torch_style)
    real = labels != pad_id
    total = torch.where(real, per_token, torch.zeros_like(per_token)).sum() if mask else per_token.sum()
    n_real = real.sum().clamp(min=1)
    if divide_by == "real":
        return total / n_real
    if divide_by == "positions":
        return total / labels.numel()
    if divide_by == "vocab":
        return total / (n_real * log_probs.shape[-1])
    return total  # "nothing": a sum


def _loss_mistake(**knobs: Any) -> Callable[..., torch.Tensor]:
    def loss(log_probs, labels, pad_id, smoothing):
        return _loss(log_probs, labels, pad_id, smoothing, **knobs)

    return loss


LABEL_SMOOTHED_LOSS_HIDDEN = HiddenTests(
    function="label_smoothed_loss",
    reference="transformer_course.training:label_smoothed_loss",
    make_cases=label_smoothed_loss_cases,
    mistakes=(
        Mistake(_loss_mistake(mask=False, divide_by="positions"),
                "positions whose label is padding must not count: take the loss only where labels != pad_id, "
                "and average over those positions."),
        Mistake(_loss_mistake(divide_by="positions"),
                "you average over every position, padding included: divide by the number of real labels, "
                "(labels != pad_id).sum(), not by labels.numel()."),
        Mistake(_loss_mistake(onto_padding=True),
                "no smoothing mass goes to padding (the model should never predict it): smoothing / (vocab - 2) "
                "on each token that is neither the label nor padding, not smoothing / (vocab - 1) on everything "
                "but the label."),
        Mistake(_loss_mistake(torch_style=True),
                "that is torch's convention (cross_entropy's label_smoothing: smoothing / vocab on every token, the "
                "label and padding included); here the label gets exactly 1 - smoothing, and each token that is "
                "neither the label nor padding smoothing / (vocab - 2)."),
        Mistake(_loss_mistake(divide_by="nothing"),
                "return the mean over the real tokens, not their sum: divide by (labels != pad_id).sum()."),
        Mistake(_loss_mistake(divide_by="vocab"),
                "sum over the vocabulary at each position (-sum(target * log_probs)), then average over the real "
                "positions only: a mean over the vocabulary entries divides by vocab once too often."),
        Mistake(lambda log_probs, labels, pad_id, smoothing: _loss(log_probs, labels, pad_id, 0.0),
                "you ignore `smoothing`: the target puts 1 - smoothing on the label and smoothing / (vocab - 2) on "
                "each other token except padding."),
    ),
)


# --------------------------------------------------------------------------- learning_rate


def learning_rate_cases(gen: torch.Generator) -> list[Case]:
    return [
        Case("steps 1..50, d_model 64, warmup 10", (torch.arange(1, 51), 64, 10)),
        Case("steps around the peak (3998..4002), d_model 512, warmup 4000", (torch.arange(3998, 4003), 512, 4000)),
        Case("large steps (10^4, 10^5, 10^6), d_model 256, warmup 400, factor 2",
             (torch.tensor([10_000, 100_000, 1_000_000]), 256, 400, 2.0)),
        Case("a 0-d step, tensor(1), d_model 32, warmup 8", (torch.tensor(1), 32, 8)),
        Case("int32 steps, d_model 128, warmup 100", (torch.tensor([1, 50, 100, 150, 5000], dtype=torch.int32), 128,
                                                      100)),
        Case("20 random steps in 1..5000, d_model 64, warmup 400, factor 0.5",
             (torch.randint(1, 5001, (20,), generator=gen), 64, 400, 0.5)),
        Case("warmup 1 (no warm-up to speak of), steps 1..6, d_model 16", (torch.arange(1, 7), 16, 1)),
        Case("a (2, 3) tensor of steps, d_model 64, warmup 4", (torch.tensor([[1, 2, 3], [4, 5, 6]]), 64, 4)),
    ]


def _schedule(step, d_model, warmup, factor=1.0, *, shift=0, with_d_model=True, warm_power=-1.5,
              combine=torch.minimum):
    """learning_rate with knobs that reproduce typical mistakes."""
    if bool((step < 1).any()):
        raise ValueError(f"steps count from 1; got {int(step.min())}")
    s = step.to(torch.float64) + shift
    scale = d_model ** -0.5 if with_d_model else 1.0
    return factor * scale * combine(s ** -0.5, s * warmup ** warm_power)


def _schedule_mistake(**knobs: Any) -> Callable[..., torch.Tensor]:
    def learning_rate(step, d_model, warmup, factor=1.0):
        return _schedule(step, d_model, warmup, factor, **knobs)

    return learning_rate


LEARNING_RATE_HIDDEN = HiddenTests(
    function="learning_rate",
    reference="transformer_course.training:learning_rate",
    make_cases=learning_rate_cases,
    mistakes=(
        Mistake(_schedule_mistake(shift=1),
                "the warm-up is one step off: steps already count from 1 (the first update is step 1), so use "
                "step as it is, not step + 1; the peak is at step == warmup."),
        Mistake(_schedule_mistake(shift=-1),
                "the warm-up is one step off: steps count from 1, not from 0, so use step as it is, not step - 1 "
                "(which makes the first rate 0); the peak is at step == warmup."),
        Mistake(_schedule_mistake(with_d_model=False),
                "you leave out the factor d_model ** -0.5: lr = factor * d_model ** -0.5 * min(step ** -0.5, "
                "step * warmup ** -1.5)."),
        Mistake(_schedule_mistake(warm_power=-0.5),
                "the warm-up term is step * warmup ** -1.5, not step * warmup ** -0.5: the two terms must meet at "
                "step == warmup (warmup ** -0.5 both)."),
        Mistake(_schedule_mistake(combine=torch.maximum),
                "take the smaller of the two terms, torch.minimum(step ** -0.5, step * warmup ** -1.5): the "
                "larger one grows without bound after the warm-up."),
    ),
)


# --------------------------------------------------------------------------- train_step


def _step_case(gen: torch.Generator, label: str, optimizer: str, batch: int, S: int, T: int, src_lengths: list[int],
               label_lengths: list[int], smoothing: float, src_vocab: int = 11, tgt_vocab: int = 7, d: int = 6,
               pad_id: int = PAD) -> StepCase:
    """A step of a TinyTranslator drawn from ``gen`` on a random batch, with stale gradients and a
    fresh optimizer: "sgd" (lr 0.3), "momentum" (SGD lr 0.1, momentum 0.9, weight decay 0.01) or
    "adam" (lr 0.02, eps 1e-3)."""
    model = TinyTranslator(gen, src_vocab, tgt_vocab, d, pad_id)
    stale = tuple(randn(gen, *p.shape) for p in model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
    elif optimizer == "momentum":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.02, betas=(0.9, 0.98), eps=1e-3, foreach=False)
    src = _labels(gen, batch, S, src_vocab, src_lengths, pad_id)
    labels = _labels(gen, batch, T, tgt_vocab, label_lengths, pad_id)
    decoder_input = torch.cat([torch.full((batch, 1), START, dtype=torch.long), labels[:, :-1]], dim=1)
    return StepCase(label, (model, opt, src, decoder_input, labels), {"smoothing": smoothing}, stale=stale)


def train_step_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        _step_case(gen, "SGD, a batch of 4 with padding, smoothing 0.1", "sgd", 4, 6, 5, [6, 3, 4, 1], [5, 2, 4, 3],
                   0.1),
        _step_case(gen, "SGD with momentum and weight decay, smoothing 0.2", "momentum", 3, 5, 6, [5, 5, 2], [6, 3, 1],
                   0.2),
        _step_case(gen, "Adam, a batch of 4, smoothing 0.1", "adam", 4, 7, 5, [7, 2, 5, 3], [5, 5, 2, 4], 0.1),
        _step_case(gen, "Adam, smoothing 0 (plain cross-entropy)", "adam", 3, 4, 4, [4, 1, 3], [4, 2, 3], 0.0),
        _step_case(gen, "a batch of one, T = 1", "sgd", 1, 3, 1, [3], [1], 0.1),
        _step_case(gen, "a row whose labels are all padding", "sgd", 3, 4, 4, [4, 2, 3], [4, 0, 2], 0.1),
        _step_case(gen, "a bigger model (d 12, vocabularies 20 and 13), Adam", "adam", 5, 8, 6, [8, 6, 3, 7, 2],
                   [6, 4, 5, 1, 3], 0.1, src_vocab=20, tgt_vocab=13, d=12),
    ]
    return with_float32(cases, {"SGD, a batch of 4 with padding, smoothing 0.1",
                                "SGD with momentum and weight decay, smoothing 0.2"})


def _train_step(model, optimizer, src, decoder_input, labels, smoothing=0.1, *, zero_grad=True, step=True,
                smoothed=True, loss_after=False):
    """train_step with knobs that reproduce typical mistakes."""
    model.train()
    if zero_grad:
        optimizer.zero_grad()
    loss = label_smoothed_loss(model(src, decoder_input), labels, model.pad_id, smoothing if smoothed else 0.0)
    loss.backward()
    if step:
        optimizer.step()
    if loss_after:
        with torch.no_grad():
            loss = label_smoothed_loss(model(src, decoder_input), labels, model.pad_id, smoothing)
    return loss.detach()


def _step_mistake(**knobs: Any) -> Callable[..., torch.Tensor]:
    def train_step(model, optimizer, src, decoder_input, labels, smoothing=0.1):
        return _train_step(model, optimizer, src, decoder_input, labels, smoothing, **knobs)

    return train_step


TRAIN_STEP_HIDDEN = HiddenTests(
    function="train_step",
    reference="transformer_course.training:train_step",
    make_cases=train_step_cases,
    mistakes=(
        Mistake(_step_mistake(zero_grad=False),
                "call optimizer.zero_grad() before loss.backward(): backward() adds to the gradients the "
                "parameters already hold (here, an earlier batch's), so without it the step follows their sum."),
        Mistake(_step_mistake(step=False),
                "call optimizer.step() after loss.backward(): backward only computes the gradients, the "
                "optimizer's step changes the parameters."),
        Mistake(_step_mistake(smoothed=False),
                "pass `smoothing` on: loss = label_smoothed_loss(log_probs, labels, model.pad_id, smoothing), and "
                "call backward() on that loss."),
        Mistake(_step_mistake(loss_after=True),
                "return the loss computed before the update (the one you called backward() on), not the loss of "
                "the updated model."),
    ),
)


# --------------------------------------------------------------------------- sequence_accuracy


def _predictions(gen: torch.Generator, labels: torch.Tensor, p_wrong: float, vocab: int = 13) -> torch.Tensor:
    """``labels`` with each position replaced by a random id with probability ``p_wrong``."""
    noise = torch.randint(0, vocab, labels.shape, generator=gen)
    wrong = torch.rand(labels.shape, generator=gen) < p_wrong
    return torch.where(wrong, noise, labels)


def sequence_accuracy_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, labels: torch.Tensor, p_wrong: float, pad_id: int = PAD) -> Case:
        return Case(label, (_predictions(gen, labels, p_wrong), labels, pad_id))

    labels = _labels(gen, 6, 8, 13, [8, 5, 3, 7, 1, 6])
    junk_after_end = labels.clone()
    junk_after_end[labels == PAD] = torch.randint(3, 13, (int((labels == PAD).sum()),), generator=gen)
    return [
        case("labels (6, 8) of lengths 8, 5, 3, 7, 1, 6, a fifth of the predictions wrong", labels, 0.2),
        case("every prediction right", _labels(gen, 4, 5, 13, [5, 3, 4, 2]), 0.0),
        case("hardly anything right", _labels(gen, 4, 5, 13, [5, 3, 4, 2]), 0.95),
        case("a batch of one", _labels(gen, 1, 6, 13, [4]), 0.3),
        case("labels of length 1", _labels(gen, 5, 1, 13, [1, 1, 1, 1, 1]), 0.4),
        case("a row of padding only", _labels(gen, 3, 4, 13, [4, 0, 2]), 0.3),
        case("pad_id 5 (id 0 is a real token)", _labels(gen, 4, 6, 13, [6, 2, 4, 5], pad_id=5), 0.25, pad_id=5),
        Case("predictions right but for junk where the label is padding", (junk_after_end, labels, PAD)),
    ]


def _accuracy(predicted, labels, pad_id, *, token_padding=False, exact_padding=False, exact_per_row=False,
              counts=False):
    """sequence_accuracy with knobs that reproduce typical mistakes."""
    real = labels != pad_id
    equal = predicted == labels
    right = equal & real
    if token_padding:
        token = equal.to(torch.float64).mean()
    else:
        token = right.sum().to(torch.float64) / real.sum().clamp(min=1)
    if exact_padding:
        rows = equal.all(dim=-1)
    else:
        rows = (right | ~real).all(dim=-1)
    exact = rows.to(torch.float64).mean()
    if exact_per_row:
        exact = (right.sum(-1).to(torch.float64) / real.sum(-1).clamp(min=1)).mean()
    if counts:
        return rows.sum().to(torch.float64), right.sum().to(torch.float64)
    return exact, token


def _accuracy_mistake(**knobs: Any) -> Callable[..., tuple]:
    def sequence_accuracy(predicted, labels, pad_id):
        return _accuracy(predicted, labels, pad_id, **knobs)

    return sequence_accuracy


SEQUENCE_ACCURACY_HIDDEN = HiddenTests(
    function="sequence_accuracy",
    reference="transformer_course.training:sequence_accuracy",
    make_cases=sequence_accuracy_cases,
    mistakes=(
        Mistake(_accuracy_mistake(token_padding=True),
                "token accuracy counts real labels only: positions whose label is padding are neither right nor "
                "wrong. Count (predicted == labels) & (labels != pad_id) and divide by (labels != pad_id).sum()."),
        Mistake(_accuracy_mistake(exact_padding=True),
                "a sequence is right when every *real* label is predicted: what the model says where the label is "
                "padding (after the end) does not count. ((predicted == labels) | (labels == pad_id)).all(dim=-1)."),
        Mistake(_accuracy_mistake(exact_per_row=True),
                "exact match is all or nothing per sequence: the fraction of rows whose real labels are *all* "
                "predicted, not the mean of each row's token accuracy."),
        Mistake(_accuracy_mistake(counts=True),
                "return fractions, not counts: divide the number of right rows by the number of rows, and the "
                "number of right tokens by the number of real labels."),
    ),
)

HIDDEN_TESTS = (
    TEACHER_FORCING_HIDDEN,
    MAKE_BATCH_HIDDEN,
    LABEL_SMOOTHED_LOSS_HIDDEN,
    LEARNING_RATE_HIDDEN,
    TRAIN_STEP_HIDDEN,
    SEQUENCE_ACCURACY_HIDDEN,
)
