"""Chapter 6, grader side: references, hidden inputs and typical mistakes.

The typical mistakes are written as code (a causal mask with the diagonal off by one, a padding
mask compared with 0 instead of ``pad_id``, masks combined with OR, attention with the padding
mask on the queries, ...) so that a message can name the one a student made. Most of them are one
argument away from the right answer, and attention with a mask is written out here for the
mistakes of ``masked_self_attention``. That is why this module lives on the grader's side: it is
never imported by the student side or inside the grading sandbox. The visible checks name these
mistakes from their recorded outputs (``exercises/recorded/06-masking.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...exercises.base import Case
from ...exercises.ch06_masking import (
    _ALWAYS_CAUSAL,
    _FIRST_TWO,
    _INVERTED_ATTENTION,
    _NO_CAUSAL,
    _NO_PADDING,
    _OR,
    _QUERIES_MASKED,
    _padding_shape_hint,
)
from ...exercises.compare import fmt_number
from ...exercises.inputs import randn, with_float32
from ..hidden_spec import HiddenTests, Mistake

# --------------------------------------------------------------------------- causal_mask

OFF_BY_ONE_BELOW = (
    "off by one: the diagonal is False, so position i cannot see itself (and position 0 sees "
    "nothing at all). Query i may attend to keys 0..i, itself included: torch.tril(..., "
    "diagonal=0)."
)
OFF_BY_ONE_ABOVE = (
    "off by one: position i also sees position i + 1, one step into the future, which is "
    "exactly the token it must predict. Use torch.tril(..., diagonal=0): keys 0..i only."
)
TRIU = (
    "this is torch.triu (the upper triangle): each position sees its future and not its past. "
    "The allowed keys of query i are 0..i, below the diagonal: torch.tril."
)
INVERTED_CAUSAL = (
    "the mask is the wrong way round: you marked the future (the blocked keys) True. True "
    "means 'may attend', so the allowed past, on and below the diagonal, must be True."
)
NO_MASK = "every entry is True: that is no mask at all."
DIAGONAL_ONLY = (
    "only the diagonal is True: each position would see itself only; it may see all earlier "
    "positions too."
)


def _causal(diagonal: int = 0, upper: bool = False, invert: bool = False):
    """causal_mask with knobs that reproduce typical mistakes (defaults: no mistake)."""

    def causal_mask(seq_len, device=None):
        ones = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
        mask = ones.triu(diagonal) if upper else ones.tril(diagonal)
        return ~mask if invert else mask

    return causal_mask


def causal_cases(gen: torch.Generator) -> list[Case]:
    del gen  # a causal mask has no random part
    cases = [Case(f"a mask for {n} positions, causal_mask({n})", (n,)) for n in (1, 2, 3, 6, 7, 16)]
    cases.append(Case("causal_mask(4, device='cpu')", (4,), {"device": "cpu"}))
    cases.append(Case("causal_mask(5, device=torch.device('cpu'))", (5,), {"device": torch.device("cpu")}))
    return cases


CAUSAL_HIDDEN = HiddenTests(
    function="causal_mask",
    reference="transformer_course.masks:causal_mask",
    make_cases=causal_cases,
    mistakes=(
        Mistake(_causal(diagonal=-1), OFF_BY_ONE_BELOW),
        Mistake(_causal(diagonal=1), OFF_BY_ONE_ABOVE),
        Mistake(_causal(upper=True), TRIU),
        Mistake(_causal(invert=True), INVERTED_CAUSAL),
        Mistake(lambda seq_len, device=None: torch.ones(seq_len, seq_len, dtype=torch.bool, device=device),
                NO_MASK),
        Mistake(lambda seq_len, device=None: torch.eye(seq_len, dtype=torch.bool, device=device),
                DIAGONAL_ONLY),
    ),
)


# --------------------------------------------------------------------------- padding_mask

INVERTED_PADDING = (
    "the mask is the wrong way round: True must mean 'a real token, may be attended to', so "
    "padding is False: token_ids != pad_id."
)
PAD_ZERO = "you compared with 0: padding is marked by the `pad_id` argument, whatever its value."
PAD_AT_END = (
    "you assumed the padding comes after the real tokens. Look at each id itself "
    "(token_ids != pad_id): padding may also come first (left padding, common in decoders)."
)


def _mask_of_lengths(token_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The first (number of real tokens) positions of each sequence: right padding assumed."""
    positions = torch.arange(token_ids.shape[-1], device=token_ids.device)
    return (positions < (token_ids != pad_id).sum(-1, keepdim=True))[:, None, None, :]


def padding_cases(gen: torch.Generator) -> list[Case]:
    def right_padded(lengths: list[int], S: int, pad_id: int = 0, vocab: int = 50) -> torch.Tensor:
        ids = torch.randint(0, vocab, (len(lengths), S), generator=gen)
        ids[ids == pad_id] = pad_id + 1  # real tokens never carry the pad id
        for b, n in enumerate(lengths):
            ids[b, n:] = pad_id
        return ids

    left = right_padded([4, 2, 6], 6).flip(-1)
    return [
        Case("a batch of lengths 4, 7, 1, 5 padded to 7 (pad_id=0)", (right_padded([4, 7, 1, 5], 7), 0)),
        Case("a batch with a sequence that is all padding", (right_padded([3, 0, 5], 5), 0)),
        Case("no padding at all", (right_padded([6, 6], 6), 0)),
        Case("pad_id=1, with token id 0 in the text", (right_padded([5, 2, 3], 5, pad_id=1), 1)),
        Case("a large pad_id (50256)", (right_padded([2, 4], 4, pad_id=50256, vocab=50257), 50256)),
        Case("left padding (lengths 4, 2, 6 of 6)", (left, 0)),
        Case("one sequence of one token", (torch.tensor([[9]]), 0)),
        Case("one sequence of one padding token", (torch.tensor([[0]]), 0)),
        Case("int32 token ids", (right_padded([3, 1], 4).to(torch.int32), 0)),
    ]


PADDING_HIDDEN = HiddenTests(
    function="padding_mask",
    reference="transformer_course.masks:padding_mask",
    make_cases=padding_cases,
    mistakes=(
        # Before the inverted mask: where half a left-padded sequence is padding ([[0, 0, 12, 7]]),
        # both give the same mask, and there the likelier cause is padding assumed at the end.
        Mistake(_mask_of_lengths, PAD_AT_END),
        Mistake(lambda token_ids, pad_id: (token_ids == pad_id)[:, None, None, :], INVERTED_PADDING),
        Mistake(lambda token_ids, pad_id: (token_ids != 0)[:, None, None, :], PAD_ZERO),
        Mistake(lambda token_ids, pad_id: token_ids != pad_id,
                _padding_shape_hint((2, 5), (2, 1, 1, 5))),
        Mistake(lambda token_ids, pad_id: (token_ids != pad_id)[:, None, :, None],
                _padding_shape_hint((2, 1, 5, 1), (2, 1, 1, 5))),
    ),
)


# --------------------------------------------------------------------------- combine_masks

FIRST_ONLY = "you returned the first mask only: combine all of them with &."
LAST_ONLY = "you returned the last mask only: combine all of them with &."


def _combine(op: Callable, which: slice = slice(None)):
    """combine_masks with knobs that reproduce typical mistakes: ``op`` joins the masks that are
    not None, of which only ``which`` are used."""

    def combine_masks(*masks):
        present = [m for m in masks if m is not None][which]
        if not present:
            return None
        combined = present[0]
        for m in present[1:]:
            combined = op(combined, m)
        return combined

    return combine_masks


def combine_cases(gen: torch.Generator) -> list[Case]:
    def pad(lengths: list[int], S: int) -> torch.Tensor:
        return (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]

    def causal(L: int, S: int | None = None) -> torch.Tensor:
        return torch.ones(L, S or L, dtype=torch.bool).tril()

    def random(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) > 0.4

    return [
        Case("padding (3, 1, 1, 6) and causal (6, 6)", (pad([6, 3, 1], 6), causal(6))),
        Case("causal (5, 5) then padding (2, 1, 1, 5)", (causal(5), pad([2, 5], 5))),
        Case("padding, None, causal", (pad([4, 0], 4), None, causal(4))),
        Case("per-head (1, 2, 5, 5), padding (3, 1, 1, 5), causal (5, 5)",
             (random(1, 2, 5, 5), pad([5, 2, 0], 5), causal(5))),
        Case("an (L, S) = (3, 6) mask and padding (2, 1, 1, 6) (L != S)", (random(3, 6), pad([6, 4], 6))),
        Case("two random (2, 3, 4, 4) masks", (random(2, 3, 4, 4), random(2, 3, 4, 4))),
        Case("four masks", (random(2, 1, 1, 5), random(5, 5), random(1, 3, 1, 5), causal(5))),
        Case("a single mask (2, 1, 1, 4)", (pad([1, 4], 4),)),
        Case("a mask with a row that allows nothing", (random(4, 4).index_fill(0, torch.tensor([2]), False),
                                                       causal(4))),
    ]


COMBINE_HIDDEN = HiddenTests(
    function="combine_masks",
    reference="transformer_course.masks:combine_masks",
    make_cases=combine_cases,
    mistakes=(
        Mistake(_combine(torch.logical_or), _OR),
        Mistake(_combine(torch.logical_and, slice(0, 1)), FIRST_ONLY),
        Mistake(_combine(torch.logical_and, slice(-1, None)), LAST_ONLY),
        Mistake(_combine(torch.logical_and, slice(0, 2)), _FIRST_TWO),
    ),
)


# --------------------------------------------------------------------------- masked_self_attention


def attention_diagnosis(outputs: tuple, case: Case) -> str | None:
    """Name a weight that should be 0: on a padding key, or on a future key."""
    _, weights = outputs
    ids, pad_id = case.args[1], case.args[2]
    causal = case.kwargs.get("causal", case.args[3] if len(case.args) > 3 else True)
    w = weights.detach().to("cpu", torch.float64)
    if w.dim() != 3:
        return None
    on_padding = (w > 1e-6) & (ids.cpu() == pad_id)[:, None, :]
    if on_padding.any():
        b, i, j = on_padding.nonzero()[0].tolist()
        return (f"sequence {b}, query {i} gives weight {fmt_number(w[b, i, j].item())} to key {j}, "
                "which is padding: padding keys must get weight 0.")
    if causal:
        S = w.shape[-1]
        future = (w > 1e-6) & ~torch.ones(S, S, dtype=torch.bool).tril()
        if future.any():
            b, i, j = future.nonzero()[0].tolist()
            return (f"sequence {b}, query {i} gives weight {fmt_number(w[b, i, j].item())} to key "
                    f"{j} in its future (j > i): with causal=True that is not allowed.")
    return None


def attention_cases(gen: torch.Generator) -> list[Case]:
    def ids(lengths: list[int], S: int, pad_id: int = 0, left: bool = False) -> torch.Tensor:
        tokens = torch.randint(2, 40, (len(lengths), S), generator=gen)
        for b, n in enumerate(lengths):
            tokens[b, n:] = pad_id
        return tokens.flip(-1) if left else tokens

    cases = [
        Case("batch of lengths 6, 3, 1 (S = 6), causal", (randn(gen, 3, 6, 8), ids([6, 3, 1], 6), 0)),
        Case("batch of lengths 6, 3, 1 (S = 6), causal=False",
             (randn(gen, 3, 6, 8), ids([6, 3, 1], 6), 0), {"causal": False}),
        Case("a sequence that is all padding, causal", (randn(gen, 2, 5, 4), ids([5, 0], 5), 0)),
        Case("a sequence that is all padding, causal=False",
             (randn(gen, 2, 5, 4), ids([0, 2], 5), 0), {"causal": False}),
        Case("left padding with a causal mask (queries that see nothing)",
             (randn(gen, 3, 6, 8), ids([4, 2, 6], 6, left=True), 0)),
        Case("pad_id=1", (randn(gen, 2, 4, 8), ids([3, 4], 4, pad_id=1), 1)),
        Case("causal given by position (x, ids, 0, False)", (randn(gen, 2, 4, 8), ids([2, 4], 4), 0, False)),
        Case("one sequence of one token", (randn(gen, 1, 1, 8), torch.tensor([[5]]), 0)),
        Case("batch of 4, S = 4 (batch = S)", (randn(gen, 4, 4, 8), ids([4, 3, 2, 1], 4), 0)),
        Case("large values (scores in the hundreds)", (randn(gen, 2, 5, 16, scale=6.0), ids([5, 3], 5), 0)),
    ]
    return with_float32(cases, {"batch of lengths 6, 3, 1 (S = 6), causal",
                                "left padding with a causal mask (queries that see nothing)",
                                "batch of lengths 6, 3, 1 (S = 6), causal=False"})


def _attend(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 4's attention with q = k = v = x, written out (mistakes cannot use the reference)."""
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(mask, weights, torch.zeros_like(weights))  # nothing to attend to: 0
    return weights @ x, weights


def _attention_mistake(*, padding: str = "keys", future: str = "flag", combine: str = "and",
                       invert: bool = False):
    """masked_self_attention with one knob turned the wrong way.

    padding: "keys" (right), "queries" (masks rows) or "none"; future: "flag" (right),
    "never" or "always"; combine: "and" (right) or "or"; invert: hand attention ~mask.
    """

    def masked_self_attention(x, token_ids, pad_id, causal=True):
        S = token_ids.shape[-1]
        real = token_ids != pad_id  # (batch, S)
        everything = torch.ones(x.shape[0], S, S, dtype=torch.bool, device=x.device)
        pad = {"keys": real[:, None, :], "queries": real[:, :, None], "none": everything}[padding]
        tril = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
        if future == "always" or (future == "flag" and causal):
            mask = (pad & tril) if combine == "and" else (pad | tril)
        else:
            mask = pad & everything  # (batch, S, S)
        return _attend(x, ~mask if invert else mask)

    return masked_self_attention


MASKED_ATTENTION_HIDDEN = HiddenTests(
    function="masked_self_attention",
    reference="transformer_course.masks:masked_self_attention",
    make_cases=attention_cases,
    mistakes=(
        Mistake(_attention_mistake(future="never"), _NO_CAUSAL),
        Mistake(_attention_mistake(future="always"), _ALWAYS_CAUSAL),
        Mistake(_attention_mistake(padding="none"), _NO_PADDING),
        Mistake(_attention_mistake(padding="queries"), _QUERIES_MASKED),
        Mistake(_attention_mistake(combine="or"), _OR),
        Mistake(_attention_mistake(invert=True), _INVERTED_ATTENTION),
    ),
    diagnose=attention_diagnosis,
)


HIDDEN_TESTS = (CAUSAL_HIDDEN, PADDING_HIDDEN, COMBINE_HIDDEN, MASKED_ATTENTION_HIDDEN)
