"""Generating output sequences with a trained encoder-decoder (chapter 7)."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def greedy_decode(
    model: nn.Module, src: torch.Tensor, max_len: int, start_id: int, end_id: int
) -> torch.Tensor:
    """Translate a batch by picking the most likely next token, one step at a time.

    Training uses *teacher forcing*: the decoder is fed the reference target (shifted right)
    and predicts all positions in one pass, the causal mask hiding each position's future.
    At inference there is no reference: the model must be *autoregressive*, feeding its own
    previous outputs back in, so generation takes one decoder pass per token. Greedy
    decoding takes the argmax at each step ("start → I → am → fine → end").

    The whole batch is decoded together. A sequence that has produced ``end_id`` is
    finished: its later positions are filled with ``model.pad_id``. The loop stops when
    every sequence has finished or the output is ``max_len`` long. Each step re-runs the
    decoder on the whole prefix: simple, and fast enough for short sequences (real systems
    cache the keys and values of earlier steps).

    The model is put in eval mode (no dropout) while decoding and restored afterwards.

    Args:
        model: an :class:`~transformer_course.model.EncoderDecoder` (or anything with its
            ``encode``, ``decode``, ``generator``, ``make_src_mask``, ``make_tgt_mask`` and
            ``pad_id``).
        src: ``(batch, S)`` source ids, padded with ``model.pad_id``.
        max_len: the longest output, start token included.
        start_id: the token every output begins with.
        end_id: the token that ends a sequence.

    Returns:
        ``(batch, n)`` token ids with ``n <= max_len``: ``start_id``, the generated tokens up
        to and including ``end_id``, then ``model.pad_id``.
    """
    was_training = model.training
    model.eval()
    try:
        src_mask = model.make_src_mask(src)  # (batch, 1, 1, S)
        memory = model.encode(src, src_mask)  # (batch, S, d_model), computed once
        batch = src.shape[0]
        out = torch.full((batch, 1), start_id, dtype=torch.long, device=src.device)  # (batch, 1)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)  # (batch,)
        for _ in range(max_len - 1):
            hidden = model.decode(out, memory, model.make_tgt_mask(out), src_mask)  # (batch, t, d)
            log_probs = model.generator(hidden[:, -1])  # only the last position: (batch, vocab)
            next_token = log_probs.argmax(dim=-1)  # (batch,)
            next_token = next_token.masked_fill(finished, model.pad_id)  # finished: pad
            out = torch.cat([out, next_token[:, None]], dim=1)  # (batch, t + 1)
            finished |= next_token == end_id
            if finished.all():
                break
        return out
    finally:
        model.train(was_training)


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """The length normalisation of Wu et al. (2016), section 7: ``((5 + length) / 6) ** alpha``.

    A hypothesis's score is its log-probability divided by this. Log-probabilities only go
    down as a sequence grows, so raw scores favour short outputs; dividing by a penalty that
    grows with the length undoes part of that. ``alpha = 0`` gives 1 (no normalisation);
    the larger ``alpha``, the more long outputs are favoured. Vaswani et al. (2017) decoded
    with ``alpha = 0.6`` and a beam of width 4, this module's defaults.

    Args:
        length: number of generated tokens, the end token included, the start token not.
        alpha: strength of the normalisation, ``>= 0``.
    """
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: torch.Tensor,
    max_len: int,
    start_id: int,
    end_id: int,
    width: int = 4,
    alpha: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate a batch by keeping the ``width`` most likely partial outputs at every step.

    Greedy decoding commits to the single best token at each step, and a good first word can
    lead to a poor sentence. Beam search keeps ``width`` hypotheses (a "beam") per source
    sentence instead:

    1. Start with one hypothesis, ``[start_id]``, of log-probability 0.
    2. Each step, extend every live hypothesis by every token of the vocabulary; a
       candidate's log-probability is its parent's plus ``log p(token | parent, source)``.
    3. Keep the ``width`` candidates with the highest log-probability, over all hypotheses
       of that source together. (They all have the same length, so this is also the ranking
       by normalised score.)
    4. A kept candidate that ends in ``end_id`` is finished: it leaves the beam, and the next
       step refills the beam from the extensions of the others.
    5. Stop when no hypothesis is live, or when hypotheses are ``max_len`` tokens long (start
       token included): those still live are then finished as they are, without an end.

    The answer for each source is its finished hypothesis with the best **normalised score**
    ``log p(Y | X) / length_penalty(len(Y), alpha)`` (Wu et al. 2016), where ``len(Y)``
    counts the generated tokens (end included, start not). There is no other early stop, so
    with ``width`` at least the number of candidates of every step, the search is
    exhaustive and finds the best-scoring output of all; with ``width = 1`` it is greedy
    decoding.

    Every hypothesis of the batch goes through the decoder together, as one batch of
    ``batch * width`` prefixes; the encoder runs once. The model is put in eval mode while
    decoding and restored afterwards.

    Args:
        model: an :class:`~transformer_course.model.EncoderDecoder`, or anything with its
            ``encode``, ``decode``, ``generator``, ``make_src_mask``, ``make_tgt_mask`` and
            ``pad_id`` (as for :func:`greedy_decode`).
        src: ``(batch, S)`` source ids, padded with ``model.pad_id``.
        max_len: the longest output, start token included (``>= 1``).
        start_id: the token every output begins with.
        end_id: the token that ends a hypothesis.
        width: the beam width, hypotheses kept per source sentence (``>= 1``).
        alpha: the length normalisation's strength (0 = rank by log-probability alone).

    Returns:
        ``(sequences, scores)``: ``sequences`` ``(batch, n)`` long, each row the best output
        (``start_id``, its tokens, ``end_id`` if it has one) padded with ``model.pad_id``,
        ``n`` the length of the longest of them; ``scores`` ``(batch,)``, their normalised
        scores, in the model's dtype (that of the memory ``encode`` returns).
    """
    if max_len < 1 or width < 1:
        raise ValueError(f"need max_len >= 1 and width >= 1, got max_len={max_len}, width={width}")
    was_training = model.training
    model.eval()
    try:
        batch, device = src.shape[0], src.device
        src_mask = model.make_src_mask(src)  # (batch, 1, 1, S)
        memory = model.encode(src, src_mask)  # (batch, S, d_model), computed once
        # Hypothesis k of source b is row b * width + k: each needs its source's memory.
        memory = memory.repeat_interleave(width, dim=0)  # (batch * width, S, d_model)
        src_mask = src_mask.repeat_interleave(width, dim=0)  # (batch * width, 1, 1, S)

        # Scores in the model's dtype (the memory's, known before any log-probability is).
        dtype = memory.dtype if memory.is_floating_point() else torch.get_default_dtype()
        tokens = torch.full((batch, width, 1), start_id, dtype=torch.long, device=device)
        # One live hypothesis to begin with; the other rows are empty (-inf) until step 1
        # fills them, so the same start is not counted `width` times.
        log_prob = torch.full((batch, width), -math.inf, dtype=dtype, device=device)  # (batch, width)
        log_prob[:, 0] = 0.0

        # The best finished hypothesis so far, per source.
        best_score = torch.full((batch,), -math.inf, dtype=dtype, device=device)  # (batch,)
        best_tokens = torch.full((batch, max_len), model.pad_id, dtype=torch.long, device=device)
        best_tokens[:, 0] = start_id
        best_length = torch.ones(batch, dtype=torch.long, device=device)  # start token only
        if max_len == 1:  # no room for any token: the answer is the start token, log p = 0
            return best_tokens, best_score.zero_()

        for t in range(1, max_len):  # hypotheses have t tokens; this step adds token t
            prefix = tokens.reshape(batch * width, t)  # (batch * width, t)
            hidden = model.decode(prefix, memory, model.make_tgt_mask(prefix), src_mask)
            step = model.generator(hidden[:, -1])  # (batch * width, vocab) log-probabilities
            vocab = step.shape[-1]
            step = step.reshape(batch, width, vocab)
            # Every candidate's log-probability; the empty rows' stay -inf.
            candidates = log_prob[:, :, None] + step  # (batch, width, vocab)
            top, index = candidates.reshape(batch, width * vocab).topk(width, dim=-1)  # (batch, width)
            parent = torch.div(index, vocab, rounding_mode="floor")  # which hypothesis it extends
            token = index % vocab  # and by which token
            history = tokens.gather(1, parent[:, :, None].expand(-1, -1, t))  # (batch, width, t)
            tokens = torch.cat([history, token[:, :, None]], dim=-1)  # (batch, width, t + 1)

            alive = torch.isfinite(top)  # fewer than `width` candidates exist at first
            finished = alive & (token == end_id)
            if t == max_len - 1:
                finished = alive  # out of room: every hypothesis ends here
            # All candidates now have t generated tokens, so they share one length penalty.
            score = (top / length_penalty(t, alpha)).masked_fill(~finished, -math.inf)
            step_best, which = score.max(dim=-1)  # (batch,): the best one finishing now
            better = step_best > best_score
            best_score = torch.where(better, step_best, best_score)
            chosen = tokens[torch.arange(batch, device=device), which]  # (batch, t + 1)
            best_tokens[better, : t + 1] = chosen[better]
            best_length = torch.where(better, t + 1, best_length)

            log_prob = top.masked_fill(finished, -math.inf)  # finished ones leave the beam
            if not torch.isfinite(log_prob).any():  # nothing live anywhere: done
                break
        return best_tokens[:, : int(best_length.max())], best_score
    finally:
        model.train(was_training)
