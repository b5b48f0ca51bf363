"""The reference softmax, scaled dot-product attention and masks against PyTorch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transformer_course.attention import attention_scores, scaled_dot_product_attention, softmax
from transformer_course.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    to_torch_module_mask,
)

# (leading batch/head dims, L, S, d_k, d_v): heads as extra dims, L != S, d_k != d_v, length 1.
SHAPES = [
    ((2, 3), 5, 5, 8, 8),
    ((4,), 3, 7, 16, 5),
    ((2, 4), 1, 6, 4, 12),
    ((3, 2), 6, 1, 8, 3),
    ((1, 1), 1, 1, 2, 2),
    ((), 9, 4, 5, 7),
]


def _random_qkv(lead, L, S, d_k, d_v, dtype, device):
    q = torch.randn(*lead, L, d_k, dtype=dtype, device=device)
    k = torch.randn(*lead, S, d_k, dtype=dtype, device=device)
    v = torch.randn(*lead, S, d_v, dtype=dtype, device=device)
    return q, k, v


def _reference_weights(q, k, mask):
    """softmax(QKᵀ/√d_k) written with torch's own softmax, for comparing weights."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _right_padding_mask(lead, S, device):
    """A padding mask for random lengths in [1, S]: bool (batch, 1, ..., 1, S), no empty rows."""
    batch = lead[0] if lead else 1
    lengths = torch.randint(1, S + 1, (batch,))
    ids = torch.ones(batch, S, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, n:] = 0  # pad id 0 after each sequence's length
    mask = padding_mask(ids, pad_id=0).to(device)  # (batch, 1, 1, S)
    # Reshape to broadcast against the leading dims: (batch, 1, ..., 1, 1, S).
    return mask.reshape(batch, *([1] * (len(lead) - 1)), 1, S) if lead else mask[0, 0]


# --- softmax -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, dim", [((7,), -1), ((3, 5), -1), ((2, 3, 4), 1), ((4, 1), 0)])
def test_softmax_matches_torch(shape, dim, device, precise):
    x = torch.randn(*shape, dtype=precise.dtype, device=device) * 5
    ours = softmax(x, dim=dim)
    torch.testing.assert_close(ours, torch.softmax(x, dim=dim), atol=precise.atol, rtol=precise.rtol)


def test_softmax_worked_example():
    """The book's example: softmax([2, 1, 0]) ≈ [0.665, 0.245, 0.090]."""
    p = softmax(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(p, torch.tensor([0.665, 0.245, 0.090], dtype=torch.float64), atol=5e-4, rtol=0)


@pytest.mark.parametrize(
    "values",
    [[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1002.0], [1000.0, -1000.0, 0.0], [1000.0, 1000.0]],
)
def test_softmax_does_not_overflow(values, device):
    # exp(1000) is inf even in float64; only the max-subtraction trick keeps this finite.
    x = torch.tensor(values, dtype=torch.float32, device=device)
    ours = softmax(x)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, torch.softmax(x, dim=-1), atol=1e-7, rtol=1e-6)
    assert ours.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_softmax_of_causal_row():
    """softmax([0, 0, -inf, -inf, -inf]) = [0.5, 0.5, 0, 0, 0]: masked keys get exactly 0."""
    inf = float("inf")
    p = softmax(torch.tensor([0.0, 0.0, -inf, -inf, -inf]))
    assert p.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


# --- scaled dot-product attention ----------------------------------------------------------


def test_attention_scores_are_scaled_dot_products(device, precise):
    q, k, _ = _random_qkv((2,), 3, 4, 6, 1, precise.dtype, device)
    expected = torch.einsum("bld,bsd->bls", q, k) / math.sqrt(6)
    torch.testing.assert_close(attention_scores(q, k), expected, atol=precise.atol, rtol=precise.rtol)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "causal+padding"])
def test_sdpa_matches_torch(shape, mask_kind, device, precise):
    lead, L, S, d_k, d_v = shape
    q, k, v = _random_qkv(lead, L, S, d_k, d_v, precise.dtype, device)
    # Causal for L != S in torch's (top-left) sense: query i sees keys 0..i. Key 0 is never
    # padding, so no row is fully masked here (those are tested separately below).
    causal = torch.ones(L, S, dtype=torch.bool, device=device).tril()
    padding = _right_padding_mask(lead, S, device)
    mask = {
        "none": None,
        "causal": causal,
        "padding": padding,
        "causal+padding": combine_masks(causal, padding),
    }[mask_kind]

    output, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    assert output.shape == (*lead, L, d_v)
    assert weights.shape == (*lead, L, S)
    torch.testing.assert_close(output, expected, atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(weights, _reference_weights(q, k, mask), atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_sdpa_fully_masked_rows(device, precise):
    """A query with no allowed key: ours gives exactly 0 weights and output, no NaN.

    What torch gives for such a row depends on the function and version. In torch 2.13 on
    the CPU, F.scaled_dot_product_attention returns 0 as well (older versions and some GPU
    kernels gave NaN); nn.MultiheadAttention gives NaN (checked in test_reference_layers).
    """
    q, k, v = _random_qkv((2, 3), 4, 5, 8, 6, precise.dtype, device)
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool, device=device)
    mask[0, :, 1] = False  # batch 0, query 1: nothing to attend to
    mask[1, :, 3] = False  # batch 1, query 3: the same
    mask[1, :, 0, 2:] = False  # an ordinary partly masked row as well
    empty = ~mask.any(-1).expand(2, 3, 4)  # (2, 3, 4) True where the row is fully masked

    output, weights = scaled_dot_product_attention(q, k, v, mask)
    assert not output.isnan().any() and not weights.isnan().any()
    assert (output[empty] == 0).all()
    assert (weights[empty] == 0).all()

    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(output[~empty], expected[~empty], atol=precise.atol, rtol=precise.rtol)
    theirs = expected[empty]
    assert theirs.isnan().all() or (theirs == 0).all()  # torch: all NaN or all 0, see above


def test_sdpa_gradients_are_finite_with_fully_masked_row(device):
    q, k, v = _random_qkv((2,), 3, 4, 5, 5, torch.float64, device)
    for t in (q, k, v):
        t.requires_grad_(True)
    mask = torch.ones(3, 4, dtype=torch.bool, device=device)
    mask[1] = False  # query 1 sees nothing
    output, _ = scaled_dot_product_attention(q, k, v, mask)
    (output**2).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[:, 1] == 0).all()  # the empty row's query influences nothing
    assert q.grad[:, 0].abs().sum() > 0  # but the others do get gradient


def test_sdpa_mask_must_be_bool():
    q = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 3))


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_causal_mask_properties(n, device):
    mask = causal_mask(n, device=device)
    assert mask.dtype == torch.bool and mask.shape == (n, n) and mask.device.type == device.type
    for i in range(n):
        # query i may see keys 0..i and nothing after
        assert mask[i, : i + 1].all() and not mask[i, i + 1 :].any()


def test_causal_mask_row_is_the_book_example():
    """Row 1 of a 5-token causal mask gives softmax([s0, s1, -inf, -inf, -inf])."""
    scores = torch.zeros(5, 5).masked_fill(~causal_mask(5), float("-inf"))
    assert softmax(scores)[1].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


def test_padding_mask_properties(device):
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 0, 0, 0, 0], [1, 2, 3, 4, 9]], device=device)
    mask = padding_mask(ids, pad_id=0)
    assert mask.dtype == torch.bool and mask.shape == (3, 1, 1, 5)
    assert mask[:, 0, 0].tolist() == [
        [True, True, True, False, False],
        [True, False, False, False, False],
        [True, True, True, True, True],
    ]
    # It broadcasts over heads and query positions, and combines with a causal mask:
    combined = combine_masks(mask, causal_mask(5, device=device))
    assert combined.shape == (3, 1, 5, 5)
    assert combined[0, 0, 4].tolist() == [True, True, True, False, False]  # no padding
    assert combined[2, 0, 1].tolist() == [True, True, False, False, False]  # no future


def test_combine_masks_is_logical_and():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert combine_masks(a, b).tolist() == [True, False, False, False]
    assert combine_masks(None, a, None) is a
    assert combine_masks(None, None) is None


def test_to_torch_module_mask_inverts():
    mask = causal_mask(3)
    assert torch.equal(to_torch_module_mask(mask), ~mask)
    assert to_torch_module_mask(None) is None
