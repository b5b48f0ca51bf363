"""Token embeddings (chapter 1): from integer ids to vectors."""

from __future__ import annotations

import math

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """Looks up one learned vector per token id and scales it by √d_model.

    Why the scaling: Vaswani et al. (2017), section 3.4, say "In the embedding layers, we
    multiply those weights by √d_model" without giving a reason. The usual reading: the
    paper shares this matrix with the output projection, whose initialisation keeps its
    entries small, around 1/√d_model. Multiplying by √d_model brings each coordinate to a
    size of about 1, the scale of the positional encoding added next, so the position signal
    neither drowns the token nor is drowned by it.
    """

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        # padding_idx: that row starts at zero and receives no gradient, so padding
        # contributes nothing however long training runs.
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Embed a batch of token ids.

        Args:
            token_ids: ``(batch, seq)`` integer ids in ``[0, vocab_size)``.

        Returns:
            ``(batch, seq, d_model)``.
        """
        return self.embedding(token_ids) * math.sqrt(self.d_model)


def embed_tokens(token_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Look up each id's row of the embedding ``table`` and scale it by √d_model.

    The same as :class:`TokenEmbedding` with ``table`` as its weight, written as plain
    indexing: ``table[token_ids]`` picks one row per id, whatever the shape of ``token_ids``.

    Args:
        token_ids: ``(...)`` integer ids in ``[0, vocab)``, e.g. ``(batch, seq)``.
        table: ``(vocab, d_model)``, one vector per token.

    Returns:
        ``(..., d_model)``, e.g. ``(batch, seq, d_model)``.
    """
    d_model = table.shape[-1]
    return table[token_ids] * math.sqrt(d_model)


def one_hot_embed_tokens(token_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`embed_tokens` as a matrix product: one-hot rows times the table.

    A one-hot row for id ``i`` is all zeros except a 1 in column ``i``; multiplied by the table
    it picks out row ``i``. This is why an embedding is a linear layer without bias whose
    input is one-hot; looking the row up directly gives the same numbers without the
    ``vocab``-times-larger product, which is what every library does.

    Args:
        token_ids: ``(...)`` integer ids in ``[0, vocab)``.
        table: ``(vocab, d_model)``.

    Returns:
        ``(..., d_model)``, equal to ``embed_tokens(token_ids, table)``.
    """
    vocab, d_model = table.shape
    one_hot = torch.nn.functional.one_hot(token_ids.long(), vocab).to(table.dtype)  # (..., vocab)
    return one_hot @ table * math.sqrt(d_model)  # (..., vocab) @ (vocab, d_model)
