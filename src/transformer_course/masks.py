"""Attention masks (chapter 6): causal, padding, and their combination.

Convention used everywhere in this package: a mask is a **bool** tensor broadcastable to
``(batch, heads, L, S)`` in which **True means "query i may attend to key j"** — the
convention of ``torch.nn.functional.scaled_dot_product_attention``.

``torch.nn.MultiheadAttention`` and ``nn.Transformer*`` use the opposite for boolean masks
(True = *not* allowed). The ``to_*`` functions at the end are the one place that converts:
:func:`to_torch_module_mask` and :func:`to_key_padding_mask` for those modules, and
:func:`to_additive_mask` for code that adds a float mask to the scores.
"""

from __future__ import annotations

import torch

from transformer_course.attention import scaled_dot_product_attention


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular mask: position i may attend to positions 0..i, never the future.

    Returns:
        bool ``(seq_len, seq_len)``, True on and below the diagonal.
    """
    ones = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
    return torch.tril(ones)


def causal_mask_lower_right(
    query_len: int, key_len: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Causal mask when the ``query_len`` queries are the *last* positions of ``key_len`` keys.

    This is the situation of a decoder that generates one token at a time and keeps the keys
    of the earlier tokens (a key-value cache): the new query sits at position
    ``key_len - query_len + i`` and may see every key up to and including that position.
    PyTorch calls this alignment "lower right" (``torch.nn.attention.bias.causal_lower_right``);
    ``is_causal=True`` in ``F.scaled_dot_product_attention`` aligns "upper left" instead
    (``torch.ones(L, S).tril()``). Both agree when ``query_len == key_len``, where this is
    :func:`causal_mask`.

    Returns:
        bool ``(query_len, key_len)``: True where ``j <= key_len - query_len + i``.
    """
    if query_len > key_len:
        raise ValueError(
            f"query_len={query_len} > key_len={key_len}: with lower-right alignment the first "
            "queries would have no key at all"
        )
    ones = torch.ones(query_len, key_len, dtype=torch.bool, device=device)
    # tril's diagonal=k keeps j <= i + k: shifting by key_len - query_len moves the diagonal
    # so that the last query lines up with the last key.
    return torch.tril(ones, diagonal=key_len - query_len)


def padding_mask(token_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mask out padding tokens as keys.

    Args:
        token_ids: ``(batch, S)`` integer ids.
        pad_id: the id used for padding.

    Returns:
        bool ``(batch, 1, 1, S)``: True where the key is a real token. The two singleton
        dimensions broadcast over heads and over query positions.
    """
    return (token_ids != pad_id)[:, None, None, :]


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Allowed only where every mask allows: the logical AND, with broadcasting.

    ``None`` entries (no mask) are skipped; the result is ``None`` when all are.
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    combined = present[0]
    for m in present[1:]:
        combined = combined & m
    return combined


def masked_self_attention(
    x: torch.Tensor, token_ids: torch.Tensor, pad_id: int, causal: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention over a padded batch, with the padding (and causal) mask built for it.

    To keep the focus on the masks, the queries, keys and values are ``x`` itself: no
    projections and a single head (chapters 3 and 5 add those; the masks stay the same).

    Args:
        x: ``(batch, S, d)``, one vector per token.
        token_ids: ``(batch, S)`` integer ids of those tokens; ``pad_id`` marks padding.
        pad_id: the id used for padding.
        causal: also hide each position's future (a decoder); ``False`` for an encoder.

    Returns:
        ``(output, weights)``: output ``(batch, S, d)`` and weights ``(batch, S, S)``. No
        query attends to a padding key. A query with no key left at all (a sequence that is
        all padding) gets weights 0 and output 0, as in
        :func:`~transformer_course.attention.scaled_dot_product_attention`.
    """
    mask = padding_mask(token_ids, pad_id)  # (batch, 1, 1, S): True = real key
    if causal:
        future = causal_mask(token_ids.shape[-1], device=token_ids.device)  # (S, S)
        mask = combine_masks(mask, future)  # (batch, 1, S, S)
    # The masks carry a head dimension (batch, 1, ., S), but x has none: its scores are
    # (batch, S, S). Broadcasting a 4-D mask against them would line our batch up with a
    # head dimension and give (batch, batch, S, S). Drop the head dimension first.
    mask = mask[:, 0]  # (batch, 1 or S, S)
    return scaled_dot_product_attention(x, x, x, mask)


# --------------------------------------------------------------------------------------------
# Conversions: the one place where other conventions meet ours
# --------------------------------------------------------------------------------------------


def to_torch_module_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Convert our mask (True = may attend) to ``nn.MultiheadAttention``'s (True = blocked).

    Use it for the ``attn_mask`` (or ``mask``, ``tgt_mask``, ...) arguments of
    ``nn.MultiheadAttention`` and ``nn.Transformer*``; shapes stay as they are.
    """
    return None if mask is None else ~mask


def to_key_padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Convert our padding mask to the ``key_padding_mask`` of ``nn.MultiheadAttention``.

    Args:
        mask: bool ``(batch, 1, 1, S)`` from :func:`padding_mask`, True = real token.

    Returns:
        bool ``(batch, S)``, True = padding, to be *ignored* (torch's convention).
    """
    if mask is None:
        return None
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(
            f"expected a padding mask of shape (batch, 1, 1, S), got {tuple(mask.shape)}"
        )
    return ~mask[:, 0, 0, :]  # (batch, S)


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a boolean mask to an additive one: 0 where allowed, -inf where blocked.

    ``softmax(scores + additive)`` equals the boolean masking ``scores.masked_fill(~mask,
    -inf)`` followed by softmax, since ``s + 0 = s`` and ``s - inf = -inf``. Float masks are
    added in both ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``, so this
    form means the same to both. A row that is all ``-inf`` still has nothing to attend to:
    a plain softmax of it is NaN.

    Args:
        mask: bool, any shape, True = may attend.
        dtype: the floating dtype of the scores it will be added to.

    Returns:
        ``mask``'s shape, in ``dtype``.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, float("-inf"))
