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
    # (q / √d_k) Kᵀ equals Q Kᵀ / √d_k; dividing q (L·d_k numbers) rather than the scores
    # (L·S numbers) is the cheaper way round once sequences are longer than the head size.
    q = q / math.sqrt(d_k)
    return q @ k.transpose(-2, -1)  # (..., L, d_k) @ (..., d_k, S) -> (..., L, S)


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
    blocked = None
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
                "for a 0/1 tensor use mask.bool()"
            )
        blocked = ~mask  # True where query i must NOT look at key j
        # The additive form of the mask, in the mask's own (usually small, broadcast) shape:
        # 0 where allowed, and where blocked the most negative finite number, whose exp is
        # exactly 0 after softmax subtracts the row's maximum, just like exp(-inf).
        # - Adding rather than scores.masked_fill(blocked, -inf): an addition passes
        #   gradients through unchanged, so the backward pass skips a sweep over the
        #   (..., L, S) scores (torch's own attention adds its mask too).
        # - Finite rather than -inf: a row with nothing to attend to then stays finite
        #   instead of 0/0 = NaN, and a NaN there would flow back through the addition and
        #   poison every gradient. Such rows are set to 0 below.
        bias = torch.zeros(blocked.shape, dtype=scores.dtype, device=scores.device)
        scores = scores + bias.masked_fill(blocked, torch.finfo(scores.dtype).min)
    # torch.softmax computes exactly our softmax() above (it too subtracts the maximum), but
    # as one fused kernel: one pass over the (..., L, S) scores instead of five. Attention is
    # the hot loop of every model in this course, so here the library kernel earns its place.
    weights = torch.softmax(scores, dim=-1)  # (..., L, S)
    if blocked is not None and blocked.all(dim=-1).any():
        # A row with no allowed key has spread its weight over blocked keys; zero it.
        # masked_fill touches only blocked places, and in such a row that is every place.
        # (The test looks at the mask, usually far smaller than the weights, and saves a
        # full pass over them in the common case where every query can see something.)
        weights = weights.masked_fill(blocked, 0.0)
    output = weights @ v  # (..., L, S) @ (..., S, d_v) -> (..., L, d_v)
    return output, weights
