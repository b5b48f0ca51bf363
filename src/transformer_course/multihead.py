"""Multi-head attention (chapter 5).

Vaswani et al. (2017), section 3.2.2: instead of one attention over d_model-wide vectors,
project queries, keys and values into ``n_heads`` smaller spaces of width
``d_head = d_model / n_heads``, attend in each independently, and concatenate the results:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Each head can learn its own notion of "relevant" (one follows syntax, another the previous
token, ...) at the cost of a single head of full width: the heads' W_i^Q side by side make one
``(d_model, d_model)`` matrix, so the module holds one ``nn.Linear(d_model, d_model)`` per role
(head ``h`` owns rows ``h * d_head : (h + 1) * d_head`` of its weight), and has
``4 * d_model**2 + 4 * d_model`` parameters whatever the number of heads.

Shapes: ``(batch, seq, d_model)`` outside, ``(batch, heads, seq, d_head)`` inside.
"""

from __future__ import annotations

import torch
from torch import nn

from transformer_course.attention import scaled_dot_product_attention


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Cut the last dimension into ``n_heads`` slices and make heads a batch dimension.

    Args:
        x: ``(batch, seq, d_model)`` with ``d_model`` divisible by ``n_heads``.
        n_heads: number of heads.

    Returns:
        ``(batch, heads, seq, d_head)`` with ``d_head = d_model // n_heads``; head ``h``
        holds columns ``h * d_head : (h + 1) * d_head`` of ``x``.

    Raises:
        ValueError: ``d_model`` is not divisible by ``n_heads``.
    """
    batch, seq, d_model = x.shape
    if d_model % n_heads != 0:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    d_head = d_model // n_heads
    x = x.view(batch, seq, n_heads, d_head)  # (batch, seq, heads, d_head)
    # The view keeps memory order, so heads come out *inside* seq. Attention multiplies the
    # last two dimensions, which must be (seq, d_head); viewing straight to
    # (batch, heads, seq, d_head) would instead deal each head a jumble of positions.
    return x.transpose(1, 2)  # (batch, heads, seq, d_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_heads`: concatenate the heads side by side again.

    Args:
        x: ``(batch, heads, seq, d_head)``.

    Returns:
        ``(batch, seq, heads * d_head)``.
    """
    batch, heads, seq, d_head = x.shape
    # After the transpose the tensor is no longer laid out row by row in memory, and view()
    # needs that layout; reshape() copies when it must.
    return x.transpose(1, 2).reshape(batch, seq, heads * d_head)  # (batch, seq, d_model)


def _check_mask(mask: torch.Tensor | None) -> None:
    """Refuse 3-D masks, whose meaning depends on how you read them.

    Masks broadcast against ``(batch, heads, L, S)`` from the right, so a ``(batch, L, S)``
    mask would be read as ``(heads, L, S)``: silently wrong whenever batch == heads.
    """
    if mask is not None and mask.dim() == 3:
        raise ValueError(
            f"3-D mask of shape {tuple(mask.shape)} is ambiguous: pass a per-example mask as "
            "mask[:, None] (batch, 1, L, S) or a per-head one as mask[None] (1, heads, L, S)"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention with its weights returned, numerically equal to
    ``nn.MultiheadAttention(batch_first=True)`` (see :meth:`from_torch`).

    Args:
        d_model: width of queries and of the output.
        n_heads: number of heads; must divide ``d_model``.
        dropout: probability of dropping attention weights in training mode.
        bias: whether the four projections have biases.
        kdim, vdim: widths of keys and values when they differ from ``d_model`` (a memory of
            another width in cross-attention); ``None`` means ``d_model``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model={d_model} must be divisible by n_heads={n_heads} "
                f"(each head gets d_model / n_heads = {d_model / n_heads:g} columns)"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        # Each projection computes all heads at once: its output columns are the heads'
        # W_i side by side, which split_heads then cuts apart.
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` positions to ``key``/``value`` positions, in every head.

        Args:
            query: ``(batch, L, d_model)``.
            key: ``(batch, S, kdim)``.
            value: ``(batch, S, vdim)``.
            mask: bool, broadcastable to ``(batch, heads, L, S)``, True = may attend: a
                causal ``(L, S)`` mask, a padding ``(batch, 1, 1, S)`` mask or their
                combination. ``None`` = attend everywhere.

        Returns:
            ``(output, weights)``: output ``(batch, L, d_model)`` and the per-head attention
            weights ``(batch, heads, L, S)``. The weights are returned as computed by softmax
            (before dropout; torch returns them after), so they always show the attention
            pattern; rows with no allowed key are all zero.
        """
        _check_mask(mask)
        q = split_heads(self.q_proj(query), self.n_heads)  # (batch, heads, L, d_head)
        k = split_heads(self.k_proj(key), self.n_heads)  # (batch, heads, S, d_head)
        v = split_heads(self.v_proj(value), self.n_heads)  # (batch, heads, S, d_head)

        heads, weights = scaled_dot_product_attention(q, k, v, mask)  # (b, h, L, d_head), (b, h, L, S)
        if self.training and self.dropout.p > 0:
            # Dropout acts on the weights before they mix the values, as in torch: each query
            # randomly ignores some keys. The attention function has no dropout, so redo its
            # last product with dropped weights (a training-only cost).
            heads = self.dropout(weights) @ v  # (b, h, L, S) @ (b, h, S, d_head)

        output = self.out_proj(merge_heads(heads))  # (batch, L, d_model)
        return output, weights

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of a ``batch_first=True`` ``nn.MultiheadAttention``, giving the same outputs.

        torch keeps W^Q, W^K, W^V stacked in one ``in_proj_weight`` of shape
        ``(3 * d_model, d_model)`` (rows: queries, then keys, then values) when keys and
        values have width d_model, and in separate ``q/k/v_proj_weight`` when ``kdim`` or
        ``vdim`` differ; the biases are always one stacked ``in_proj_bias``.

        Raises:
            ValueError: ``m`` is not batch_first, or uses ``add_bias_kv``/``add_zero_attn``
                (extra learned keys, which this module does not have).
        """
        if not m.batch_first:
            raise ValueError(
                "from_torch needs nn.MultiheadAttention(batch_first=True): this package's "
                "tensors are (batch, seq, d_model), the module's default is (seq, batch, d_model)"
            )
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported by MultiHeadAttention")

        bias = m.in_proj_bias is not None
        ours = cls(m.embed_dim, m.num_heads, dropout=m.dropout, bias=bias, kdim=m.kdim, vdim=m.vdim)
        ours.to(device=m.out_proj.weight.device, dtype=m.out_proj.weight.dtype)

        if m._qkv_same_embed_dim:
            w_q, w_k, w_v = m.in_proj_weight.chunk(3, dim=0)  # each (d_model, d_model)
        else:
            w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
        projections = (ours.q_proj, ours.k_proj, ours.v_proj)
        with torch.no_grad():
            for proj, weight in zip(projections, (w_q, w_k, w_v), strict=True):
                proj.weight.copy_(weight)
            ours.out_proj.weight.copy_(m.out_proj.weight)
            if bias:
                b_q, b_k, b_v = m.in_proj_bias.chunk(3)  # each (d_model,)
                for proj, b in zip(projections, (b_q, b_k, b_v), strict=True):
                    proj.bias.copy_(b)
                ours.out_proj.bias.copy_(m.out_proj.bias)
        return ours
