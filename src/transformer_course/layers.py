"""Encoder and decoder layers (chapter 7): attention and feed-forward, each wrapped in
"add & norm".

Every sublayer (self-attention, cross-attention, feed-forward) sits on a residual connection
with dropout on its output and a LayerNorm. Where the LayerNorm goes is the one design choice:

* **post-LN** (Vaswani et al. 2017, the default): ``x = LayerNorm(x + Dropout(Sublayer(x)))``;
* **pre-LN** (``norm_first=True``, Xiong et al. 2020, used by GPT-2 and most models since):
  ``x = x + Dropout(Sublayer(LayerNorm(x)))``. The residual stream is never normalised, so
  gradients reach early layers undamped and training is stable without learning-rate warm-up.

Sublayer order, dropout placement and module names follow ``nn.TransformerEncoderLayer`` and
``nn.TransformerDecoderLayer``, and :meth:`EncoderLayer.from_torch` /
:meth:`DecoderLayer.from_torch` copy their weights so the outputs can be compared exactly.
All tensors are ``(batch, seq, d_model)``; masks are bool, True = may attend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transformer_course.feedforward import FeedForward
from transformer_course.multihead import MultiHeadAttention


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with add & norm (the paper's Figure 1, left).

    Args:
        d_model: width of the residual stream.
        n_heads: attention heads.
        d_ff: hidden width of the feed-forward network.
        dropout: dropout on attention weights, hidden activations and sublayer outputs.
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-LN when True, post-LN (the paper's) when False.
        layer_norm_eps: the LayerNorms' epsilon.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)  # on the self-attention output
        self.dropout2 = nn.Dropout(dropout)  # on the feed-forward output

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run one encoder layer.

        Args:
            x: ``(batch, seq, d_model)``.
            mask: bool, broadcastable to ``(batch, heads, seq, seq)``; usually the source
                padding mask ``(batch, 1, 1, seq)``.

        Returns:
            ``(batch, seq, d_model)``.
        """
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), mask)
            x = x + self._feed_forward(self.norm2(x))
        else:
            x = self.norm1(x + self._self_attention(x, mask))
            x = self.norm2(x + self._feed_forward(x))
        return x

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        output, _ = self.self_attn(x, x, x, mask)  # every position looks at every position
        return self.dropout1(output)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.feed_forward(x))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """A copy of a ``batch_first=True`` ``nn.TransformerEncoderLayer``, same outputs."""
        _check_torch_layer(layer, layer.self_attn)
        ours = cls(
            d_model=layer.self_attn.embed_dim,
            n_heads=layer.self_attn.num_heads,
            d_ff=layer.linear1.out_features,
            dropout=layer.dropout.p,
            activation=_activation_name(layer.activation),
            norm_first=layer.norm_first,
            layer_norm_eps=layer.norm1.eps,
        )
        ours.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        _copy_feed_forward(ours.feed_forward, layer)
        _copy_norms((ours.norm1, ours.norm2), (layer.norm1, layer.norm2))
        return ours


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder's memory, then feed-forward,
    each with add & norm (the paper's Figure 1, right).

    Args: as for :class:`EncoderLayer`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)  # on the self-attention output
        self.dropout2 = nn.Dropout(dropout)  # on the cross-attention output
        self.dropout3 = nn.Dropout(dropout)  # on the feed-forward output

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run one decoder layer.

        Args:
            x: ``(batch, T, d_model)``, the target sequence so far.
            memory: ``(batch, S, d_model)``, the encoder's output.
            self_mask: bool, broadcastable to ``(batch, heads, T, T)``; causal (and target
                padding), so position t cannot peek at the tokens it must predict.
            memory_mask: bool, broadcastable to ``(batch, heads, T, S)``; usually the source
                padding mask ``(batch, 1, 1, S)``.

        Returns:
            ``(batch, T, d_model)``.
        """
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), self_mask)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask)
            x = x + self._feed_forward(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention(x, self_mask))
            x = self.norm2(x + self._cross_attention(x, memory, memory_mask))
            x = self.norm3(x + self._feed_forward(x))
        return x

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        output, _ = self.self_attn(x, x, x, mask)
        return self.dropout1(output)

    def _cross_attention(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        # Queries come from the target, keys and values from the source: each target
        # position looks up which source positions matter for it.
        output, _ = self.cross_attn(x, memory, memory, mask)  # (batch, T, d_model)
        return self.dropout2(output)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.feed_forward(x))

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        """A copy of a ``batch_first=True`` ``nn.TransformerDecoderLayer``, same outputs.

        torch calls the cross-attention ``multihead_attn``; here it is ``cross_attn``.
        """
        _check_torch_layer(layer, layer.self_attn)
        ours = cls(
            d_model=layer.self_attn.embed_dim,
            n_heads=layer.self_attn.num_heads,
            d_ff=layer.linear1.out_features,
            dropout=layer.dropout.p,
            activation=_activation_name(layer.activation),
            norm_first=layer.norm_first,
            layer_norm_eps=layer.norm1.eps,
        )
        ours.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        ours.cross_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
        _copy_feed_forward(ours.feed_forward, layer)
        _copy_norms(
            (ours.norm1, ours.norm2, ours.norm3), (layer.norm1, layer.norm2, layer.norm3)
        )
        return ours


# ---------------------------------------------------------------------------------------
# Copying from torch's layers


def _check_torch_layer(layer: nn.Module, self_attn: nn.MultiheadAttention) -> None:
    if not self_attn.batch_first:
        raise ValueError(
            f"from_torch needs a batch_first=True {type(layer).__name__}: this package's "
            "tensors are (batch, seq, d_model)"
        )
    if layer.linear1.bias is None or layer.norm1.bias is None:
        raise ValueError(f"{type(layer).__name__}(bias=False) is not supported")


def _activation_name(activation: object) -> str:
    """``"relu"`` or ``"gelu"`` for a torch layer's ``activation``, a function or a module."""
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu or (isinstance(activation, nn.GELU) and activation.approximate == "none"):
        return "gelu"
    raise ValueError(f"unsupported activation {activation!r}: only relu and (exact) gelu")


def _copy_feed_forward(ours: FeedForward, layer: nn.Module) -> None:
    with torch.no_grad():
        for mine, theirs in ((ours.linear1, layer.linear1), (ours.linear2, layer.linear2)):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)


def _copy_norms(ours: tuple[nn.LayerNorm, ...], theirs: tuple[nn.LayerNorm, ...]) -> None:
    with torch.no_grad():
        for mine, other in zip(ours, theirs, strict=True):
            mine.weight.copy_(other.weight)
            mine.bias.copy_(other.bias)
