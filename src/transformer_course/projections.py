"""Queries, keys and values (chapter 3): three projections of the same tokens, and lookups.

Every token plays three parts in attention (Vaswani et al., 2017, section 3.2):

* its **query** says what it is looking for,
* its **key** says what it offers to be found by,
* its **value** is what it hands over when it is chosen.

All three are learned linear maps of the same token vectors ``x`` ``(batch, seq, d_model)``:

    Q = X W_Q,   K = X W_K,   V = X W_V

The score matrix ``Q Kᵀ`` ``(batch, seq, seq)`` compares every query with every key. Used to
pick values, it turns attention into a dictionary lookup: a *hard* lookup returns the value of
the best-matching key; a *soft* lookup returns an average of all values, weighted by how well
each key matches. Only the soft one is differentiable, which is why attention uses it.

This chapter leaves the scores unscaled; chapter 4 divides them by √d_k and explains why.
"""

from __future__ import annotations

import torch
from torch import nn


class QKVProjection(nn.Module):
    """The three learned projections that turn tokens into queries, keys and values.

    ``q_proj``, ``k_proj`` and ``v_proj`` are separate ``nn.Linear`` layers, so a token can
    look for one thing, advertise another and hand over a third. An ``nn.Linear(d_model, d_k)``
    stores its weight as ``(d_k, d_model)`` and computes ``x @ weight.T + bias``: the paper's
    ``W_Q`` ``(d_model, d_k)`` is ``q_proj.weight.T``.

    Args:
        d_model: width of the token vectors.
        d_k: width of queries and keys (they must match: scores are their dot products).
        d_v: width of values; ``None`` means ``d_k``.
        bias: whether each projection adds a learned bias. The paper's formulas have none;
            ``nn.Linear`` and ``nn.MultiheadAttention`` have one by default, and so do we.
    """

    def __init__(self, d_model: int, d_k: int, d_v: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_k = d_k
        self.d_v = d_k if d_v is None else d_v
        self.q_proj = nn.Linear(d_model, d_k, bias=bias)  # W_Q: what each token looks for
        self.k_proj = nn.Linear(d_model, d_k, bias=bias)  # W_K: what each token offers
        self.v_proj = nn.Linear(d_model, self.d_v, bias=bias)  # W_V: what each token hands over

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project the same tokens three ways.

        Args:
            x: ``(batch, seq, d_model)``.

        Returns:
            ``(q, k, v)``: ``(batch, seq, d_k)``, ``(batch, seq, d_k)``, ``(batch, seq, d_v)``.
        """
        q = self.q_proj(x)  # (batch, seq, d_model) -> (batch, seq, d_k)
        k = self.k_proj(x)  # (batch, seq, d_model) -> (batch, seq, d_k)
        v = self.v_proj(x)  # (batch, seq, d_model) -> (batch, seq, d_v)
        return q, k, v

    @classmethod
    def from_matrices(cls, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> QKVProjection:
        """A projection without biases whose weights are the paper's matrices, as written.

        The paper multiplies on the right, ``Q = X W_Q`` with ``W_Q`` of shape
        ``(d_model, d_k)``; ``nn.Linear`` keeps the transpose. This does the transposing once,
        so hand-made matrices can be written the way the formulas read.

        Args:
            w_q: ``(d_model, d_k)``.
            w_k: ``(d_model, d_k)``.
            w_v: ``(d_model, d_v)``.

        Returns:
            A ``QKVProjection(d_model, d_k, d_v, bias=False)`` with ``q_proj(x) == x @ w_q`` and
            so on, in the dtype and on the device of ``w_q``.
        """
        d_model, d_k = w_q.shape
        if w_k.shape != w_q.shape:
            raise ValueError(f"w_q and w_k must have the same shape (d_model, d_k), got "
                             f"{tuple(w_q.shape)} and {tuple(w_k.shape)}")
        if w_v.shape[0] != d_model:
            raise ValueError(f"w_v must have shape (d_model, d_v) with d_model = {d_model}, "
                             f"got {tuple(w_v.shape)}")
        module = cls(d_model, d_k, w_v.shape[1], bias=False).to(device=w_q.device, dtype=w_q.dtype)
        with torch.no_grad():
            for proj, matrix in ((module.q_proj, w_q), (module.k_proj, w_k), (module.v_proj, w_v)):
                proj.weight.copy_(matrix.T)  # nn.Linear stores (out, in) = (d_k, d_model)
        return module


def score_matrix(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The raw (unscaled) scores Q Kᵀ: how well each query matches each key.

    Entry ``[..., i, j]`` is the dot product of query ``i`` with key ``j``. Chapter 4 divides
    these by √d_k (``attention.attention_scores``); this chapter looks at them as they are.

    Args:
        q: ``(..., L, d_k)``.
        k: ``(..., S, d_k)``.

    Returns:
        ``(..., L, S)``: one row per query, one column per key.
    """
    # Transpose only the last two dimensions: k.T would also reverse the batch dimensions.
    return q @ k.transpose(-2, -1)  # (..., L, d_k) @ (..., d_k, S) -> (..., L, S)


def hard_lookup(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query takes the value of its best-matching key, and nothing else.

    The vector version of a dictionary lookup: no key equals the query exactly, so the key
    with the largest score ``q · k`` wins (on a tie, the first such key). The weights are
    one-hot, and the output changes in jumps as the query moves: it has no useful gradient.

    Args:
        q: ``(..., L, d_k)``.
        k: ``(..., S, d_k)``.
        v: ``(..., S, d_v)``.

    Returns:
        ``(output, weights)``: output ``(..., L, d_v)``, each row exactly one row of ``v``,
        and one-hot weights ``(..., L, S)`` in the dtype of ``q``.
    """
    scores = score_matrix(q, k)  # (..., L, S)
    best = scores.argmax(dim=-1)  # (..., L): the index of each query's best key
    weights = nn.functional.one_hot(best, num_classes=k.shape[-2]).to(q.dtype)  # (..., L, S)
    # A one-hot row times v picks one row of v: the same as indexing, written the way the soft
    # lookup below is, so the two differ only in their weights.
    output = weights @ v  # (..., L, S) @ (..., S, d_v) -> (..., L, d_v)
    return output, weights


def soft_lookup(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query takes an average of all values, weighted by the softmax of its scores.

    softmax(Q Kᵀ) V: attention without chapter 4's 1/√d_k. Every key gets some weight, the
    best-matching ones the most; the output moves smoothly with the query, so gradients flow
    back into all of ``q``, ``k`` and ``v``. As the scores grow, the weights approach the
    one-hot weights of :func:`hard_lookup`.

    Args:
        q: ``(..., L, d_k)``.
        k: ``(..., S, d_k)``.
        v: ``(..., S, d_v)``.

    Returns:
        ``(output, weights)``: output ``(..., L, d_v)`` and weights ``(..., L, S)``, each row
        positive and summing to 1.
    """
    scores = score_matrix(q, k)  # (..., L, S)
    # torch.softmax is the same stable softmax that chapter 4 builds by hand, fused.
    weights = torch.softmax(scores, dim=-1)  # normalise over the keys
    output = weights @ v  # (..., L, S) @ (..., S, d_v) -> (..., L, d_v)
    return output, weights
