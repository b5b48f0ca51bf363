"""Positional encodings (chapter 2): telling attention *where* each token is.

Attention by itself is blind to order: permute the keys and values together and every
output stays the same. The Transformer therefore adds a vector that depends on the position
to each token embedding. Two ways to get those vectors:

* :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding` — a fixed table of sines
  and cosines (Vaswani et al. 2017, section 3.5), nothing to learn;
* :class:`LearnedPositionalEmbedding` — one trained vector per position (BERT, GPT-2).

Both modules take and return ``(batch, seq, d_model)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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


def _check_length(x: torch.Tensor, max_len: int) -> int:
    """The sequence length of ``x`` ``(batch, seq, d_model)``, if the table is long enough."""
    seq_len = x.shape[1]
    if seq_len > max_len:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_len={max_len} of the positional table; "
            "build the module with a larger max_len"
        )
    return seq_len


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
        seq_len = _check_length(x, self.max_len)
        return self.dropout(x + self.pe[:seq_len])  # (batch, seq, d) + (seq, d) broadcasts


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
        seq_len = _check_length(x, self.max_len)
        positions = torch.arange(seq_len, device=x.device)  # (seq,)
        return self.dropout(x + self.embedding(positions))  # (batch, seq, d) + (seq, d)
