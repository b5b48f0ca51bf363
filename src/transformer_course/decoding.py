"""Generating output sequences with a trained encoder-decoder (chapter 7)."""

from __future__ import annotations

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
