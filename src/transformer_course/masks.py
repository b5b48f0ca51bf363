"""Attention masks (chapter 6): causal, padding, and their combination.

Convention used everywhere in this package: a mask is a **bool** tensor broadcastable to
``(batch, heads, L, S)`` in which **True means "query i may attend to key j"** — the
convention of ``torch.nn.functional.scaled_dot_product_attention``.

``torch.nn.MultiheadAttention`` and ``nn.Transformer*`` use the opposite for boolean masks
(True = *not* allowed). :func:`to_torch_module_mask` is the one place that converts.
"""

from __future__ import annotations

import torch


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular mask: position i may attend to positions 0..i, never the future.

    Returns:
        bool ``(seq_len, seq_len)``, True on and below the diagonal.
    """
    ones = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
    return torch.tril(ones)


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


def to_torch_module_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Convert our mask (True = may attend) to ``nn.MultiheadAttention``'s (True = blocked)."""
    return None if mask is None else ~mask
