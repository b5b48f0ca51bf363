"""Softmax, scaled scores and scaled dot-product attention (chapter 4).

The whole of attention is one formula from Vaswani et al. (2017), section 3.2.1:

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

Shapes, with ``...`` standing for any leading batch (and head) dimensions:

* queries ``q``: ``(..., L, d_k)``  — L positions that ask
* keys    ``k``: ``(..., S, d_k)``  — S positions that can be looked at
* values  ``v``: ``(..., S, d_v)``  — what each of those S positions hands over
* mask       : bool, broadcastable to ``(..., L, S)``; **True means "may attend"**,
  the convention of ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax along ``dim``.

    softmax(x)_i = exp(x_i) / Σ_j exp(x_j). Subtracting the maximum first changes nothing
    mathematically (the factor exp(-max) cancels) but keeps every exponent ≤ 0, so
    ``exp`` cannot overflow to ``inf`` even for inputs like 1000.

    Args:
        x: any shape ``(...)``.
        dim: the dimension that is normalised to sum to 1.

    Returns:
        Same shape as ``x``; non-negative, summing to 1 along ``dim``. A slice that is all
        ``-inf`` has no maximum to subtract and comes out as NaN, exactly as ``torch.softmax``
        does; :func:`scaled_dot_product_attention` deals with such rows.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)  # every entry ≤ 0 now
    exps = torch.exp(shifted)
    return exps / exps.sum(dim=dim, keepdim=True)


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The scaled score matrix Q Kᵀ / √d_k.

    Entry ``[..., i, j]`` says how well query ``i`` matches key ``j``. Dividing by √d_k keeps
    the scores' variance near 1 whatever the head size, so softmax does not saturate.

    Args:
        q: ``(..., L, d_k)``.
        k: ``(..., S, d_k)``.

    Returns:
        ``(..., L, S)``.
    """
    d_k = q.shape[-1]
    return q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., L, d_k) @ (..., d_k, S) -> (..., L, S)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q Kᵀ / √d_k) V, with an optional boolean mask.

    Args:
        q: ``(..., L, d_k)``.
        k: ``(..., S, d_k)``.
        v: ``(..., S, d_v)``.
        mask: bool, broadcastable to ``(..., L, S)``; True where query ``i`` may attend to
            key ``j``. ``None`` lets every query see every key.

    Returns:
        ``(output, weights)``: output ``(..., L, d_v)`` and the attention weights
        ``(..., L, S)``, each row summing to 1.

        A query whose mask row is all False (a fully padded sequence, say) has nothing to
        attend to. Its softmax would be 0/0 = NaN; we return weights of 0 and an output of
        0 for that row instead, so one empty row cannot poison a whole batch with NaN.
    """
    scores = attention_scores(q, k)  # (..., L, S)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
                "for a 0/1 tensor use mask.bool()"
            )
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)  # (..., L, S)
    if mask is not None:
        # Rows with no allowed key are NaN here (softmax of all -inf); zero them. masked_fill
        # touches only masked-out places, and in such a row that is every place.
        weights = weights.masked_fill(~mask, 0.0)
    output = weights @ v  # (..., L, S) @ (..., S, d_v) -> (..., L, d_v)
    return output, weights
