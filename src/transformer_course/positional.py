"""Positional encodings (chapter 2): telling attention *where* each token is.

Attention by itself is blind to order: permute the keys and values together and every
output stays the same. The Transformer therefore adds a vector that depends on the position
to each token embedding. Two ways to get those vectors:

* :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding` — a fixed table of sines
  and cosines (Vaswani et al. 2017, section 3.5), nothing to learn;
* :class:`LearnedPositionalEmbedding` — one trained vector per position (BERT, GPT-2).

Both modules take and return ``(batch, seq, d_model)``.

The functions the chapter's exercises mirror: :func:`add_positions` (x_i = E(token_i) + P(i)),
:func:`permutation_experiment` (attention without positions does not notice a shuffle; with
them it does) and :func:`position_similarity` (the dot product of two position vectors as a
function of their distance).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import scaled_dot_product_attention


def sinusoidal_encoding(
    seq_len: int,
    d_model: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The sinusoidal position table of Vaswani et al. (2017), section 3.5.

    PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    Column pair (2i, 2i+1) is one sine/cosine wave; the wavelength grows geometrically from
    2π (i = 0) towards 10000·2π, so low columns tell near positions apart and high columns
    far ones. Because sin and cos of a shifted angle are a fixed rotation of the unshifted
    pair, PE[pos + k] is a linear function of PE[pos], which the paper hoped would let the
    model attend by relative position.

    An odd ``d_model`` is allowed: the last column (index d_model - 1, which is even) is a
    sine whose cosine partner would fall outside the table, so it is simply left out. Every
    column still follows the two formulas above.

    Args:
        seq_len: number of positions (rows).
        d_model: width of each position vector (columns).
        device: where the table is placed.
        dtype: the table's dtype.

    Returns:
        ``(seq_len, d_model)``.
    """
    # Computed in float64 on the CPU, then converted: the angle pos * frequency reaches
    # thousands of radians, and in float32 its rounding error would already be ~1e-4.
    # (Apple's MPS has no float64, hence the CPU detour.)
    position = torch.arange(seq_len, dtype=torch.float64)[:, None]  # (seq_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d_model / 2),)
    frequency = torch.exp(-math.log(10000.0) * two_i / d_model)  # 1 / 10000^(2i/d_model)
    angle = position * frequency  # (seq_len, 1) * (ceil(d_model/2),) -> (seq_len, ceil(d_model/2))

    table = torch.zeros(seq_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)  # even columns: ceil(d_model / 2) of them
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd columns: floor(d_model / 2)
    return table.to(dtype=dtype).to(device=device)


def _check_length(seq_len: int, max_len: int) -> None:
    """Raise ValueError if a sequence of ``seq_len`` tokens needs more rows than the table has."""
    if seq_len > max_len:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_len={max_len} of the positional table; "
            "build the table (or the module) with a larger max_len"
        )


def add_positions(embeddings: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Give every token its position: x_i = E(token_i) + P(i).

    Row ``i`` of ``table`` is added to the token at position ``i`` of every sequence; the
    first ``seq`` rows are used, whatever the table's length.

    Args:
        embeddings: ``(..., seq, d_model)`` token embeddings, e.g. ``(batch, seq, d_model)``.
        table: ``(max_len, d_model)`` position vectors, ``max_len >= seq``, with the
            embeddings' dtype and device.

    Returns:
        ``(..., seq, d_model)``.

    Raises:
        ValueError: if the sequence is longer than the table (there is no row for its last
            positions).
    """
    seq_len = embeddings.shape[-2]
    _check_length(seq_len, table.shape[0])
    return embeddings + table[:seq_len]  # (..., seq, d) + (seq, d) broadcasts


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a batch of embeddings, then applies dropout."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        # A buffer, not a parameter: it is not trained, but it should follow the module
        # through .to(device) and .double(). persistent=False keeps it out of state_dict:
        # it is recomputed from (max_len, d_model) in a microsecond, so storing it would only
        # bloat checkpoints and stop them loading into a model built with another max_len.
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add position ``t``'s vector to every token at position ``t``.

        Args:
            x: ``(batch, seq, d_model)`` token embeddings, ``seq <= max_len``.

        Returns:
            ``(batch, seq, d_model)``.
        """
        return self.dropout(add_positions(x, self.pe))  # raises if seq > max_len


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per position (as BERT and GPT-2 do), then applies dropout."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)  # row t = the vector for position t
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add position ``t``'s learned vector to every token at position ``t``.

        Args:
            x: ``(batch, seq, d_model)`` token embeddings, ``seq <= max_len``.

        Returns:
            ``(batch, seq, d_model)``.
        """
        seq_len = x.shape[1]
        _check_length(seq_len, self.max_len)
        positions = torch.arange(seq_len, device=x.device)  # (seq,): the ids 0, 1, ..., seq - 1
        return self.dropout(x + self.embedding(positions))  # (batch, seq, d) + (seq, d)


# --------------------------------------------------------------------------------------------
# Experiments of chapter 2
# --------------------------------------------------------------------------------------------


def permute_positions(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Shuffle the tokens of ``x``: position ``i`` of the result holds token ``perm[i]``.

    Args:
        x: ``(..., seq, d_model)``.
        perm: ``(seq,)`` integer tensor, a permutation of ``0, 1, ..., seq - 1``.

    Returns:
        ``(..., seq, d_model)``: the same rows in a new order, ``x[..., perm, :]``.
    """
    return x[..., perm, :]  # index the sequence axis (-2), not the batch or the features


def _self_attention(x: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """Attention of ``x`` ``(..., seq, d_model)`` with itself, q = k = v (no projections),
    after adding ``table``'s positions when given. Returns ``(..., seq, d_model)``."""
    if table is not None:
        x = add_positions(x, table)
    output, _ = scaled_dot_product_attention(x, x, x)
    return output


def permutation_experiment(
    x: torch.Tensor, perm: torch.Tensor, table: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the tokens before or after self-attention, and return both results.

    ``attend(y)`` is self-attention with the queries, keys and values all equal to ``y``
    (after adding ``table``'s position vectors, when a table is given). Then

    * ``attend_then_shuffle = permute_positions(attend(x), perm)``;
    * ``shuffle_then_attend = attend(permute_positions(x, perm))``.

    Without a table the two are equal: attention is *permutation equivariant*, it moves its
    outputs along with its inputs and cannot tell one order from another. With a table they
    differ, because the positions stay where they are while the tokens move: after the
    shuffle, token ``perm[i]`` is added to ``P(i)``, not to ``P(perm[i])``.

    Args:
        x: ``(..., seq, d_model)`` token embeddings.
        perm: ``(seq,)`` integer tensor, a permutation of ``0, ..., seq - 1``.
        table: ``None``, or ``(max_len, d_model)`` position vectors with ``max_len >= seq``.

    Returns:
        ``(attend_then_shuffle, shuffle_then_attend)``, each ``(..., seq, d_model)``.
    """
    attend_then_shuffle = permute_positions(_self_attention(x, table), perm)
    shuffle_then_attend = _self_attention(permute_positions(x, perm), table)
    return attend_then_shuffle, shuffle_then_attend


def position_similarity(table: torch.Tensor) -> torch.Tensor:
    """The dot product of two position vectors as a function of their distance.

    Entry ``k`` is the average of ``table[i] · table[i + k]`` over all ``seq_len - k`` pairs
    of positions ``k`` apart. For the sinusoidal table (even ``d_model``) every such pair has
    the same dot product, Σ_i cos(ω_i k), so the average is exact; for a learned table it
    summarises pairs that may differ.

    Args:
        table: ``(seq_len, d_model)`` position vectors.

    Returns:
        ``(seq_len,)``: entry ``k`` for distances ``k = 0, 1, ..., seq_len - 1``.
    """
    gram = table @ table.T  # (seq_len, seq_len): gram[i, j] = table[i] · table[j]
    # The pairs k apart lie on the k-th diagonal above the main one (offset=k).
    return torch.stack([gram.diagonal(offset=k).mean() for k in range(table.shape[0])])
