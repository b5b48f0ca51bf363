"""Training the encoder-decoder (chapter 8): batches, the loss, the schedule, a step, accuracy.

The recipe is the paper's (Vaswani et al. 2017, section 5), scaled down to a CPU:

* **teacher forcing** (:func:`teacher_forcing`): the decoder reads the target shifted right by one
  (start token first) and predicts it unshifted, every position at once;
* **batches** (:func:`make_batch`): sequences of different lengths padded to the longest, with the
  masks that keep padding (and, in the decoder, the future) out of attention;
* **label smoothing** (:func:`label_smoothed_loss`): the cross-entropy against a target that puts
  ``1 - smoothing`` on the right token and spreads ``smoothing`` over the others, padding excluded;
  padding positions do not count;
* **warm-up then inverse square root** (:func:`learning_rate`), with Adam (β = (0.9, 0.98),
  ε = 1e-9);
* **one training step** (:func:`train_step`) and **accuracy** (:func:`sequence_accuracy`).

:func:`train` puts them together on chapter 8's task (:mod:`transformer_course.number_task`) with a
progress bar; :func:`evaluate` decodes greedily and scores.

Shapes: ids ``(batch, seq)`` long, log-probabilities ``(batch, T, vocab)``, masks bool with True =
may attend: ``(batch, 1, 1, S)`` for the source, ``(batch, 1, T, T)`` for the decoder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from transformer_course.decoding import greedy_decode
from transformer_course.masks import causal_mask, combine_masks, padding_mask
from transformer_course.model import EncoderDecoder, TransformerConfig, make_model
from transformer_course.number_task import END, PAD, START, NumberTask, make_task

# --------------------------------------------------------------------------------------------
# Graded pieces
# --------------------------------------------------------------------------------------------


def teacher_forcing(tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split full target sequences into the decoder's input and the labels it must predict.

    Args:
        tgt: ``(batch, T)`` ids, each row ``[start, y_1, ..., y_n, end]`` then padding.

    Returns:
        ``(decoder_input, labels)``, both ``(batch, T - 1)``: ``decoder_input`` drops the last
        position (``[start, y_1, ..., y_n]``), ``labels`` the first (``[y_1, ..., y_n, end]``), so
        position t of the input is asked for token t + 1: what comes next, never what it sees.
    """
    return tgt[:, :-1], tgt[:, 1:]


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Lists of ids -> ``(batch, longest)`` long, each row padded on the right with ``pad_id``."""
    longest = max(len(ids) for ids in sequences)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def make_batch(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int = PAD,
    start_id: int = START,
    end_id: int = END,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch of (source, target) id lists and make everything the model trains on.

    Args:
        sources: ``batch`` lists of source ids (no special tokens).
        targets: ``batch`` lists of target ids (no special tokens).

    Returns:
        ``(src, decoder_input, labels, src_mask, tgt_mask)``:
        ``src`` ``(batch, S)`` long, padded on the right to the longest source;
        ``decoder_input`` and ``labels`` ``(batch, T)`` long: each target becomes
        ``[start_id, *target, end_id]``, padded to the longest, then split by
        :func:`teacher_forcing` (so ``T`` is the longest target plus one);
        ``src_mask`` bool ``(batch, 1, 1, S)``: True at real source tokens;
        ``tgt_mask`` bool ``(batch, 1, T, T)``: True where a decoder position may attend, to a
        real (not padding) input position that is not in its future.
    """
    if len(sources) != len(targets) or not sources:
        raise ValueError(f"make_batch needs as many targets as sources, at least one; got {len(sources)} "
                         f"sources and {len(targets)} targets")
    src = _pad(sources, pad_id)  # (batch, S)
    tgt = _pad([[start_id, *ids, end_id] for ids in targets], pad_id)  # (batch, T + 1)
    decoder_input, labels = teacher_forcing(tgt)  # (batch, T) each
    src_mask = padding_mask(src, pad_id)  # (batch, 1, 1, S)
    T = decoder_input.shape[1]
    tgt_mask = combine_masks(padding_mask(decoder_input, pad_id), causal_mask(T))  # (batch, 1, T, T)
    return src, decoder_input, labels, src_mask, tgt_mask


def label_smoothed_loss(
    log_probs: torch.Tensor, labels: torch.Tensor, pad_id: int, smoothing: float
) -> torch.Tensor:
    """Cross-entropy against label-smoothed targets, averaged over the real (non-padding) tokens.

    The target distribution at a position whose label is ``y``: ``1 - smoothing`` on ``y``,
    ``smoothing / (vocab - 2)`` on every other token except padding, 0 on padding (the model
    should never predict it). The loss there is ``-sum_v target_v * log_probs_v``; positions
    whose label is ``pad_id`` do not count. With ``smoothing = 0`` this is the plain
    cross-entropy (negative log-likelihood) of the labels.

    Args:
        log_probs: ``(batch, T, vocab)`` log-probabilities (a generator's log_softmax).
        labels: ``(batch, T)`` long, the token each position should predict, ``pad_id`` where none.
        pad_id: the padding id. smoothing: in [0, 1).

    Returns:
        A 0-d tensor in ``log_probs``' dtype: the mean loss per real token (0 if there is none).
    """
    vocab = log_probs.shape[-1]
    real = labels != pad_id  # (batch, T)
    on_label = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (batch, T): log p(y)
    # The other vocab - 2 tokens: everything but padding, less the label. (Padding is left out by
    # index, not subtracted: a model may give it log-probability -inf, and -inf - -inf is NaN.)
    not_pad = torch.arange(vocab, device=log_probs.device) != pad_id  # (vocab,)
    on_others = log_probs[..., not_pad].sum(dim=-1) - on_label  # (batch, T)
    per_token = -(1 - smoothing) * on_label - smoothing / (vocab - 2) * on_others  # (batch, T)
    # where(), not per_token * real: at a padding label the sum above can be -inf, and -inf * 0 is NaN.
    total = torch.where(real, per_token, torch.zeros_like(per_token)).sum()
    return total / real.sum().clamp(min=1)


def learning_rate(step: torch.Tensor, d_model: int, warmup: int, factor: float = 1.0) -> torch.Tensor:
    """The paper's schedule: a linear warm-up for ``warmup`` steps, then 1 / sqrt(step).

    lr(step) = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5). Both terms are equal at
    ``step == warmup``, where the rate peaks at ``factor / sqrt(d_model * warmup)``.

    Args:
        step: ``(n,)`` (or 0-d) integer tensor of step numbers, counted from 1 (the first update
            is step 1).
        d_model, warmup: the model's width and the warm-up length, in steps.

    Returns:
        ``(n,)`` (or 0-d) float64: the learning rate at each step.

    Raises:
        ValueError: a step below 1 (step 0 would divide by zero: steps count from 1).
    """
    if bool((step < 1).any()):
        raise ValueError(f"steps count from 1 (the first update is step 1); got {int(step.min())}")
    step = step.to(torch.float64)
    return factor * d_model**-0.5 * torch.minimum(step**-0.5, step * warmup**-1.5)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    src: torch.Tensor,
    decoder_input: torch.Tensor,
    labels: torch.Tensor,
    smoothing: float = 0.1,
) -> torch.Tensor:
    """One update of ``model`` on one batch: forward, label-smoothed loss, backward, step.

    Args:
        model: an encoder-decoder: ``model(src, decoder_input)`` gives ``(batch, T, vocab)``
            log-probabilities; ``model.pad_id`` is its padding id.
        optimizer: an optimizer over ``model``'s parameters. Whatever gradients the parameters
            hold when the step starts (from an earlier batch) must not count.
        src: ``(batch, S)``, decoder_input and labels ``(batch, T)`` (see :func:`make_batch`).

    Returns:
        The batch's loss, a 0-d tensor detached from the graph (before the update).
    """
    model.train()  # dropout on
    optimizer.zero_grad()  # forget the last batch's gradients: backward() adds to .grad
    log_probs = model(src, decoder_input)  # (batch, T, vocab)
    loss = label_smoothed_loss(log_probs, labels, model.pad_id, smoothing)
    loss.backward()
    optimizer.step()
    return loss.detach()


def sequence_accuracy(
    predicted: torch.Tensor, labels: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """How many sequences are right as a whole, and how many of their tokens.

    Args:
        predicted: ``(batch, T)`` predicted ids, aligned with ``labels`` (position t predicts label t).
        labels: ``(batch, T)`` the right ids (the end token included), ``pad_id`` after the end.

    Returns:
        ``(exact_match, token_accuracy)``, 0-d float64: the fraction of rows whose every real
        (non-padding) label is predicted, and the fraction of real labels predicted. Positions
        whose label is padding count in neither.
    """
    real = labels != pad_id  # (batch, T)
    right = (predicted == labels) & real
    token_accuracy = right.sum().to(torch.float64) / real.sum().clamp(min=1)
    exact_match = (right | ~real).all(dim=-1).to(torch.float64).mean()
    return exact_match, token_accuracy


# --------------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: the task, the model, the recipe. The defaults are the book's full run."""

    seed: int = 0
    steps: int = 1200
    batch_size: int = 128
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    warmup: int = 400  # the paper's 4000, for a run 100 times shorter
    factor: float = 1.0
    smoothing: float = 0.1  # the paper's epsilon_ls
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    eval_every: int = 200
    n_train: int = 50_000
    n_validation: int = 1_000
    n_test: int = 2_000
    positions: bool = True  # False: the ablation without positional encoding


@dataclass
class History:
    """What :func:`train` measured: per step the loss and learning rate, per evaluation the
    validation loss and accuracies (at ``eval_steps``), and the wall-clock time."""

    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_exact: list[float] = field(default_factory=list)
    val_token: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # since the start, at each evaluation


def build_model(config: TrainConfig, task: NumberTask) -> EncoderDecoder:
    """The chapter 7 reference encoder-decoder sized by ``config``, Xavier-initialised."""
    model = make_model(TransformerConfig(
        src_vocab=len(task.src_vocab), tgt_vocab=len(task.tgt_vocab), d_model=config.d_model,
        n_heads=config.n_heads, n_layers=config.n_layers, d_ff=config.d_ff, dropout=config.dropout,
        max_len=32, pad_id=PAD))
    if not config.positions:
        # The ablation: a position table of zeros, so neither stack knows where a token stands.
        model.positions.pe.zero_()
    return model


def _batches_of(task: NumberTask, numbers: Sequence[int], batch_size: int):
    """``make_batch`` over ``numbers`` in order, ``batch_size`` at a time."""
    for i in range(0, len(numbers), batch_size):
        yield make_batch(*task.pairs(numbers[i:i + batch_size]))


def example_weights(numbers: Sequence[int], even_share: float = 0.5) -> torch.Tensor:
    """``(len(numbers),)`` float64: how often to pick each training number for a batch.

    Half the picks (``even_share``) go to each number length (1 to 6 digits) equally, the rest to
    every number equally. Picked uniformly, a batch of 128 holds a number below 1 000 about once in
    ten batches, and the model never learns to stop early ("seven" comes out as 7777).
    """
    lengths = torch.tensor([len(str(n)) for n in numbers])
    per_length = torch.bincount(lengths)[lengths].to(torch.float64)  # numbers of the same length
    n_lengths = int((torch.bincount(lengths) > 0).sum())
    return (1 - even_share) / len(numbers) + even_share / (n_lengths * per_length)


@torch.no_grad()
def evaluate(model: EncoderDecoder, task: NumberTask, numbers: Sequence[int], batch_size: int = 500,
             smoothing: float = 0.0) -> dict[str, float]:
    """Greedy-decode ``numbers`` and score: ``{"exact": ..., "token": ..., "loss": ...}``.

    ``loss`` is the teacher-forced :func:`label_smoothed_loss` (with ``smoothing``); the
    accuracies compare greedy outputs with the labels, as :func:`sequence_accuracy` defines them.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    exact = token = loss = 0.0
    n_tokens = 0
    for src, decoder_input, labels, _, _ in _batches_of(task, numbers, batch_size):
        src, decoder_input, labels = src.to(device), decoder_input.to(device), labels.to(device)
        real = int((labels != PAD).sum())
        loss += float(label_smoothed_loss(model(src, decoder_input), labels, PAD, smoothing)) * real
        out = greedy_decode(model, src, max_len=labels.shape[1] + 1, start_id=START, end_id=END)
        predicted = torch.full_like(labels, PAD)
        generated = out[:, 1:]  # (batch, <= T): without the start token
        predicted[:, : generated.shape[1]] = generated
        e, t = sequence_accuracy(predicted, labels, PAD)
        exact += float(e) * len(src)
        token += float(t) * real
        n_tokens += real
    model.train(was_training)
    return {"exact": exact / len(numbers), "token": token / n_tokens, "loss": loss / n_tokens}


def train(config: TrainConfig = TrainConfig(), task: NumberTask | None = None,
          device: torch.device | str = "cpu", progress: bool = True) -> tuple[EncoderDecoder, History]:
    """Train the reference encoder-decoder on the number task; return the model and its history.

    Seeded by ``config.seed`` (the task's numbers, the initial weights, the batches, dropout):
    the same config on the same machine gives the same run. Shows a progress bar unless
    ``progress`` is False.
    """
    from tqdm.auto import tqdm  # (a widget in Jupyter, text elsewhere)

    task = task or make_task(config.seed, config.n_train, config.n_validation, config.n_test)
    torch.manual_seed(config.seed)  # initial weights and dropout
    batch_order = torch.Generator().manual_seed(config.seed)
    model = build_model(config, task).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=config.betas, eps=config.eps)
    # LambdaLR multiplies the base lr (1.0) by the lambda of its own step count, which starts at 0.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: float(learning_rate(torch.tensor(s + 1), config.d_model, config.warmup, config.factor)))
    sources, targets = task.pairs(task.train)
    weights = example_weights(task.train)
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc="training", disable=not progress, unit="step")
    for step in bar:
        rows = torch.multinomial(weights, config.batch_size, replacement=True, generator=batch_order).tolist()
        src, decoder_input, labels, _, _ = make_batch([sources[i] for i in rows], [targets[i] for i in rows])
        history.lr.append(optimizer.param_groups[0]["lr"])
        loss = train_step(model, optimizer, src.to(device), decoder_input.to(device), labels.to(device),
                          config.smoothing)
        schedule.step()
        history.train_loss.append(float(loss))
        if step % config.eval_every == 0 or step == config.steps:
            scores = evaluate(model, task, task.validation, smoothing=config.smoothing)
            history.eval_steps.append(step)
            history.val_loss.append(scores["loss"])
            history.val_exact.append(scores["exact"])
            history.val_token.append(scores["token"])
            history.seconds.append(time.perf_counter() - start)
            bar.set_postfix(loss=f"{float(loss):.3f}", val_exact=f"{scores['exact']:.1%}")
    model.eval()
    return model, history


def smoothing_floor(vocab: int, smoothing: float) -> float:
    """The smallest label-smoothed loss any model can reach: the entropy of the smoothed target
    (``1 - smoothing`` on the label, ``smoothing / (vocab - 2)`` on each of the others)."""
    if smoothing == 0:
        return 0.0
    rest = smoothing / (vocab - 2)
    return -(1 - smoothing) * math.log(1 - smoothing) - smoothing * math.log(rest)
