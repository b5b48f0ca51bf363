"""Similar tokens, nearby vectors (chapter 1): cosine similarity and nearest neighbours.

The cosine similarity of two vectors is the cosine of the angle between them,

    cos(a, b) = a · b / (|a| |b|),

1 when they point the same way, 0 when they are orthogonal, -1 when they point in opposite
directions. Unlike the plain dot product it ignores the vectors' lengths, so a token whose
vector happens to be long does not look similar to everything.
"""

from __future__ import annotations

import torch

# A vector shorter than this counts as having this length: a zero vector then has similarity
# 0 with everything instead of 0 / 0 = nan (the same guard as torch's cosine_similarity).
EPS = 1e-8


def unit_vectors(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(..., d)`` with every vector scaled to length 1 (zero vectors stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of every row of ``a`` with every row of ``b``.

    Args:
        a: ``(..., n, d)``, ``n`` vectors.
        b: ``(..., m, d)``, ``m`` vectors (leading dimensions broadcast against ``a``'s).

    Returns:
        ``(..., n, m)``: entry ``[i, j]`` is cos(a[i], b[j]), in [-1, 1]; 0 when either
        vector is zero.
    """
    # Scale every vector to length 1; then one matrix product gives all the cosines.
    return unit_vectors(a) @ unit_vectors(b).transpose(-2, -1)  # (..., n, d) @ (..., d, m)


def nearest_neighbours(
    query: torch.Tensor, table: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``table`` most similar (by cosine) to each query, most similar first.

    Args:
        query: ``(..., d)``, one vector or a batch of them.
        table: ``(vocab, d)``, e.g. an embedding table.
        k: how many neighbours, ``1 <= k <= vocab``.

    Returns:
        ``(indices, similarities)``: ``indices`` ``(..., k)`` (``torch.long``), the rows of
        ``table``; ``similarities`` ``(..., k)``, their cosine similarities, decreasing.
        A query that is itself a row of the table finds itself first, with similarity 1.
    """
    similarity = cosine_similarity_matrix(query.unsqueeze(-2), table)  # (..., 1, vocab)
    similarity = similarity.squeeze(-2)  # (..., vocab)
    values, indices = torch.topk(similarity, k, dim=-1)  # largest first
    return indices, values


def analogy(
    table: torch.Tensor, a: int, b: int, c: int, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """"a is to b as c is to ?": the rows nearest to ``table[b] - table[a] + table[c]``.

    The three given rows are left out of the answer, as is usual (Mikolov et al. 2013):
    otherwise ``c`` itself is often the nearest.

    Args:
        table: ``(vocab, d)``.
        a, b, c: row indices; for "man is to king as woman is to ?", a = man, b = king,
            c = woman.
        k: how many answers.

    Returns:
        ``(indices, similarities)``, each ``(k,)``, most similar first.
    """
    target = table[b] - table[a] + table[c]  # (d,)
    indices, values = nearest_neighbours(target, table, min(k + 3, table.shape[0]))
    keep = [i for i, index in enumerate(indices.tolist()) if index not in (a, b, c)][:k]
    return indices[keep], values[keep]
