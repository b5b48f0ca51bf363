"""The position-wise feed-forward network (chapter 7).

Vaswani et al. (2017), section 3.3: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same two-layer
network applied to every position separately. Attention mixes information *between*
positions; this is where each position then processes what it gathered.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class FeedForward(nn.Module):
    """linear1 -> activation -> dropout -> linear2, the order of torch's Transformer layers.

    Args:
        d_model: width of the input and output.
        d_ff: width of the hidden layer (the paper uses 4 * d_model = 2048).
        dropout: dropout probability on the hidden activations.
        activation: ``"relu"`` (the paper) or ``"gelu"`` (BERT, GPT).
    """

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to each position.

        Args:
            x: ``(batch, seq, d_model)``.

        Returns:
            ``(batch, seq, d_model)``.
        """
        hidden = self.dropout(self.activation(self.linear1(x)))  # (batch, seq, d_ff)
        return self.linear2(hidden)  # (batch, seq, d_model)
