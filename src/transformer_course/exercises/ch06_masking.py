"""Chapter 6 exercises: the causal mask, the padding mask, combining masks, masked attention.

Masks are bool tensors in which True means "may attend" (the convention of
``F.scaled_dot_product_attention``), broadcastable to the scores ``(batch, heads, L, S)``.
Visible checks use the chapter's worked examples (row 1 of a 5-token causal mask is
``[T, T, F, F, F]``, so equal scores give softmax([0, 0, -inf, -inf, -inf]) = [0.5, 0.5, 0, 0, 0])
and name the classic mistakes by comparing with them: an off-by-one diagonal, ``triu`` for
``tril``, an inverted mask, a padding mask of the wrong shape, OR instead of AND. Hidden checks
compare with the reference on seeded inputs: sequences of different lengths, sequences that are
all padding, left padding, other pad ids, L != S, batch and head dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import expect_close, fmt_index, fmt_number
from .inputs import randn, with_float32
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS

ASSIGNMENT = "06-masking"

# torch.nn.attention.bias builds causal masks for you (causal_upper_left / causal_lower_right).
CAUSAL_BIAS_CALLS = Forbidden(
    label="torch.nn.attention.bias (causal_upper_left / causal_lower_right / CausalBias)",
    python_functions=frozenset({("torch/nn/attention/bias.py", "*")}),
    source_names=frozenset({"causal_upper_left", "causal_lower_right", "CausalBias"}),
)

# --------------------------------------------------------------------------- helpers


def _flags(row: torch.Tensor) -> str:
    """A row of a mask as the student would print it: [True, True, False]."""
    return "[" + ", ".join(str(bool(v)) for v in row.tolist()) + "]"


def _expect_bool(mask: torch.Tensor, what: str) -> None:
    """Masks must be bool: the course's attention refuses anything else."""
    __tracebackhide__ = True
    if mask.dtype != torch.bool:
        raise ExerciseFailure(
            f"{what} has dtype {mask.dtype}, expected torch.bool: a mask is True/False, and "
            "attention refuses other dtypes (a 0/1 float mask would be *added* to the scores). "
            "Create it with dtype=torch.bool, build it from a comparison (!=, >=), or call "
            ".bool() at the end."
        )


def _expect_shape(mask: torch.Tensor, shape: tuple, what: str, hint: str | None = None) -> None:
    __tracebackhide__ = True
    if tuple(mask.shape) != shape:
        raise ExerciseFailure(
            f"{what} has shape {tuple(mask.shape)}, expected {shape}" + (f": {hint}" if hint else ".")
        )


def _expect_equal_mask(got: torch.Tensor, expected: torch.Tensor, what: str, hint: str) -> None:
    """Raise naming the first row that differs, with both rows written out."""
    __tracebackhide__ = True
    got = got.detach().to("cpu")
    if torch.equal(got, expected):
        return
    index = tuple((got != expected).nonzero()[0].tolist())
    row = index[:-1]
    count = int((got != expected).sum())
    raise ExerciseFailure(
        f"{what}: row {fmt_index(row)} is {_flags(got[row])}, expected {_flags(expected[row])} "
        f"({count} of {got.numel()} entries differ).\n  Hint: {hint}"
    )


def _with_hints(call: Callable[..., tuple], label: str, *args, **kwargs) -> tuple:
    """``call`` with a hint added to the error messages of the usual broadcasting slips."""
    __tracebackhide__ = True
    try:
        return call(label, *args, **kwargs)
    except ExerciseFailure as failure:
        text = str(failure)
        hints = {
            "match the broadcast shape": "an in-place `a &= b` cannot grow `a` to the broadcast "
            "shape (and would change the caller's mask): write `combined = combined & m`.",
            "stack expects each tensor": "torch.stack needs masks of equal shapes; `&` broadcasts "
            "masks of different shapes for you.",
            "NoneType": "skip the masks that are None (no mask) before combining the others.",
            "in place": "`combined &= m` changes the caller's first mask; write "
            "`combined = combined & m`, which makes a new tensor (and can grow to the broadcast shape).",
        }
        for marker, hint in hints.items():
            if marker in text and "Hint:" not in text:
                raise ExerciseFailure(f"{text}\n  Hint: {hint}") from None
        raise


# --------------------------------------------------------------------------- causal_mask


def _tril(n: int, diagonal: int = 0) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal)


_OFF_BY_ONE_BELOW = (
    "off by one: the diagonal is False, so position i cannot see itself (and position 0 sees "
    "nothing at all). Query i may attend to keys 0..i, itself included: torch.tril(..., "
    "diagonal=0)."
)
_OFF_BY_ONE_ABOVE = (
    "off by one: position i also sees position i + 1, one step into the future, which is "
    "exactly the token it must predict. Use torch.tril(..., diagonal=0): keys 0..i only."
)
_TRIU = (
    "this is torch.triu (the upper triangle): each position sees its future and not its past. "
    "The allowed keys of query i are 0..i, below the diagonal: torch.tril."
)
_INVERTED_CAUSAL = (
    "the mask is the wrong way round: you marked the future (the blocked keys) True. True "
    "means 'may attend', so the allowed past, on and below the diagonal, must be True."
)


def _causal_hint(mask: torch.Tensor) -> str | None:
    """The name of the classic mistake a square bool mask shows, or None."""
    n = mask.shape[-1]
    got = mask.detach().to("cpu").bool()
    for wrong, hint in (
        (_tril(n, -1), _OFF_BY_ONE_BELOW),
        (_tril(n, 1), _OFF_BY_ONE_ABOVE),
        (~_tril(n), _INVERTED_CAUSAL),
        (_tril(n).T, _TRIU),
        (torch.ones(n, n, dtype=torch.bool), "every entry is True: that is no mask at all."),
        (torch.eye(n, dtype=torch.bool), "only the diagonal is True: each position would see "
         "itself only; it may see all earlier positions too."),
    ):
        if torch.equal(got, wrong):
            return hint
    return None


def causal_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    (m,) = call("causal_mask(5)", 5)
    _expect_shape(m, (5, 5), "causal_mask(5)", "one row per query and one column per key.")
    _expect_bool(m, "causal_mask(5)")
    _expect_equal_mask(
        m, _tril(5), "causal_mask(5)",
        _causal_hint(m) or "query i may attend to key j exactly when j <= i. Row 1 must be "
        "[True, True, False, False, False]: equal scores then give softmax([0, 0, -inf, -inf, "
        "-inf]) = [0.5, 0.5, 0, 0, 0].",
    )

    (m,) = call("causal_mask(1)", 1)
    _expect_shape(m, (1, 1), "causal_mask(1)")
    _expect_equal_mask(m, _tril(1), "causal_mask(1)", "a single position may attend to itself.")

    (m,) = call("causal_mask(8)", 8)
    _expect_shape(m, (8, 8), "causal_mask(8)", "use seq_len, not a fixed size.")
    _expect_equal_mask(m, _tril(8), "causal_mask(8)", _causal_hint(m) or "j <= i, for any seq_len.")

    # The device argument, given as a string. (Where the mask lands on a GPU cannot be checked
    # here: the hardened grader replays every output from the CPU.)
    (m,) = call("causal_mask(3, device='cpu')", 3, device="cpu")
    _expect_equal_mask(m, _tril(3), "causal_mask(3, device='cpu')", "pass `device` on to torch.ones.")
    return 4


def causal_cases(gen: torch.Generator) -> list[Case]:
    del gen  # a causal mask has no random part
    cases = [Case(f"causal_mask({n})", (n,)) for n in (1, 2, 3, 6, 7, 16)]
    cases.append(Case("causal_mask(4, device='cpu')", (4,), {"device": "cpu"}))
    cases.append(Case("causal_mask(5, device=torch.device('cpu'))", (5,), {"device": torch.device("cpu")}))
    return cases


def _causal(diagonal: int = 0, upper: bool = False, invert: bool = False):
    def causal_mask(seq_len, device=None):
        ones = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
        mask = ones.triu(diagonal) if upper else ones.tril(diagonal)
        return ~mask if invert else mask

    return causal_mask


CAUSAL = Exercise(
    function="causal_mask",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=causal_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, CAUSAL_BIAS_CALLS),
)
CAUSAL_HIDDEN = HiddenTests(
    function="causal_mask",
    reference="transformer_course.masks:causal_mask",
    make_cases=causal_cases,
    mistakes=(
        Mistake(_causal(diagonal=-1), _OFF_BY_ONE_BELOW),
        Mistake(_causal(diagonal=1), _OFF_BY_ONE_ABOVE),
        Mistake(_causal(upper=True), _TRIU),
        Mistake(_causal(invert=True), _INVERTED_CAUSAL),
    ),
    diagnose=lambda outputs, case: _causal_hint(outputs[0]) if outputs[0].dim() == 2 else None,
)


# --------------------------------------------------------------------------- padding_mask

_PADDING_SHAPE = (
    "Scores have shape (batch, heads, L, S), and broadcasting lines shapes up from the "
    "RIGHT. A padding mask must reach sequence b (dim 0) and the keys (dim -1), and broadcast "
    "over heads and queries: shape (batch, 1, 1, S), e.g. (token_ids != pad_id)[:, None, None, :]."
)


def _padding_shape_hint(actual: tuple, expected: tuple, case: Case | None = None) -> str | None:
    """Name the usual wrong shapes of a padding mask; ``expected`` is (batch, 1, 1, S)."""
    batch, S = expected[0], expected[-1]
    if actual == (batch, S):
        return (
            "a (batch, S) mask is read as (L, S) against scores (batch, heads, L, S): sequence "
            "b's mask would land on query b of every sequence (or fail when batch != L). "
            + _PADDING_SHAPE
        )
    if actual == (batch, 1, S):
        return (
            "a 3-D (batch, 1, S) mask is read as (heads, L, S): sequence b's mask would land on "
            "head b. " + _PADDING_SHAPE
        )
    if len(actual) == 4 and actual[-1] != S and S in actual:
        return (
            "S must be the LAST dimension: the keys are the columns of the scores. With S "
            "elsewhere you mask queries (rows) or heads instead. " + _PADDING_SHAPE
        )
    return _PADDING_SHAPE


_INVERTED_PADDING = (
    "the mask is the wrong way round: True must mean 'a real token, may be attended to', so "
    "padding is False: token_ids != pad_id."
)
_PAD_ZERO = "you compared with 0: padding is marked by the `pad_id` argument, whatever its value."
_PAD_AT_END = (
    "you assumed the padding comes after the real tokens. Look at each id itself "
    "(token_ids != pad_id): padding may also come first (left padding, common in decoders)."
)


def padding_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 4, 3, 2], [0, 0, 0, 0, 0]])
    (m,) = call("token_ids (3, 5) with pad_id=0", ids, 0)
    _expect_shape(m, (3, 1, 1, 5), "padding_mask of token_ids (3, 5)",
                  _padding_shape_hint(tuple(m.shape), (3, 1, 1, 5)))
    _expect_bool(m, "padding_mask")
    expected = torch.tensor([[True, True, True, False, False], [True] * 5, [False] * 5])
    got = m[:, 0, 0, :]
    hint = "True for real tokens, False for padding: token_ids != pad_id."
    if torch.equal(got.cpu(), ~expected):
        hint = _INVERTED_PADDING
    _expect_equal_mask(got, expected, "padding_mask([[5, 6, 7, 0, 0], [8, 9, 4, 3, 2], [0, 0, 0, 0, 0]], "
                       "pad_id=0)[:, 0, 0, :]", hint)

    # RoBERTa's vocabulary: <s> = 0 starts every sequence, <pad> = 1.
    ids = torch.tensor([[0, 31414, 232, 2, 1, 1]])
    (m,) = call("token_ids [[0, 31414, 232, 2, 1, 1]] with pad_id=1", ids, 1)
    _expect_shape(m, (1, 1, 1, 6), "padding_mask of token_ids (1, 6)",
                  _padding_shape_hint(tuple(m.shape), (1, 1, 1, 6)))
    expected = torch.tensor([[True, True, True, True, False, False]])
    got = m[:, 0, 0, :]
    hint = _PAD_ZERO if torch.equal(got.cpu(), ids != 0) else "token_ids != pad_id, with pad_id = 1 here."
    _expect_equal_mask(got, expected, "with pad_id=1 (RoBERTa's <pad>; id 0 is its start token <s>)", hint)

    ids = torch.tensor([[0, 0, 12, 7]])
    (m,) = call("left-padded token_ids [[0, 0, 12, 7]] with pad_id=0", ids, 0)
    _expect_shape(m, (1, 1, 1, 4), "padding_mask of token_ids (1, 4)",
                  _padding_shape_hint(tuple(m.shape), (1, 1, 1, 4)))
    got = m[:, 0, 0, :]
    expected = torch.tensor([[False, False, True, True]])
    hint = _PAD_AT_END if torch.equal(got.cpu(), ~expected) else "token_ids != pad_id, position by position."
    _expect_equal_mask(got, expected, "padding_mask([[0, 0, 12, 7]], pad_id=0)[:, 0, 0, :]", hint)
    return 3


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


PADDING = Exercise(
    function="padding_mask",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=padding_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS),
    shape_hint=_padding_shape_hint,
)
PADDING_HIDDEN = HiddenTests(
    function="padding_mask",
    reference="transformer_course.masks:padding_mask",
    make_cases=padding_cases,
    mistakes=(
        Mistake(lambda token_ids, pad_id: (token_ids == pad_id)[:, None, None, :], _INVERTED_PADDING),
        Mistake(lambda token_ids, pad_id: (token_ids != 0)[:, None, None, :], _PAD_ZERO),
        Mistake(
            lambda token_ids, pad_id: (
                torch.arange(token_ids.shape[-1], device=token_ids.device)
                < (token_ids != pad_id).sum(-1, keepdim=True)
            )[:, None, None, :],
            _PAD_AT_END,
        ),
        Mistake(lambda token_ids, pad_id: token_ids != pad_id,
                _padding_shape_hint((2, 5), (2, 1, 1, 5))),
        Mistake(lambda token_ids, pad_id: (token_ids != pad_id)[:, None, :, None],
                _padding_shape_hint((2, 1, 5, 1), (2, 1, 1, 5))),
    ),
)


# --------------------------------------------------------------------------- combine_masks

_OR = (
    "that is OR: a pair (query, key) is allowed only where EVERY mask allows it, so combine "
    "with AND (`a & b`); with OR a padding key would be visible wherever the causal mask allows it."
)
_FIRST_ONLY = "you returned the first mask only: combine all of them with &."
_LAST_ONLY = "you returned the last mask only: combine all of them with &."
_FIRST_TWO = "you combined the first two masks only: loop over all of them."


def combine_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    (m,) = _with_hints(call, "combine_masks(a, b), a = [T, T, F, F], b = [T, F, T, F]", a, b)
    _expect_shape(m, (4,), "combine_masks of two (4,) masks")
    _expect_bool(m, "combine_masks(a, b)")
    expected = torch.tensor([True, False, False, False])
    got = m.detach().cpu()
    if torch.equal(got, a | b):
        hint = _OR
    elif torch.equal(got, a):
        hint = _FIRST_ONLY
    elif torch.equal(got, b):
        hint = _LAST_ONLY
    else:
        hint = "allowed only where both allow: a & b."
    if not torch.equal(got, expected):
        raise ExerciseFailure(
            f"combine_masks([T, T, F, F], [T, F, T, F]) is {_flags(got)}, expected "
            f"{_flags(expected)}.\n  Hint: {hint}"
        )

    pad = torch.tensor([[True, True, True, False], [True, True, False, False]])[:, None, None, :]
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    (m,) = _with_hints(call, "a padding mask (2, 1, 1, 4) and a causal mask (4, 4)", pad, causal)
    _expect_shape(m, (2, 1, 4, 4), "combine_masks(padding (2, 1, 1, 4), causal (4, 4))",
                  "broadcasting (2, 1, 1, 4) with (4, 4) gives (2, 1, 4, 4): let `&` broadcast, "
                  "without reshaping the masks yourself.")
    _expect_bool(m, "combine_masks(padding, causal)")
    hint = _OR if torch.equal(m.cpu(), pad | causal) else (
        "sequence b, query i may attend to key j when j <= i AND key j is a real token."
    )
    _expect_equal_mask(m, pad & causal, "combine_masks(padding, causal)", hint)

    heads = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    heads[0, 1, :, 0] = False  # head 1 may not look at key 0
    (m,) = _with_hints(call, "three masks: per-head (1, 3, 4, 4), padding (2, 1, 1, 4), causal (4, 4)",
                       heads, pad, causal)
    _expect_shape(m, (2, 3, 4, 4), "combine_masks of (1, 3, 4, 4), (2, 1, 1, 4) and (4, 4) masks",
                  "all three broadcast together to (batch, heads, L, S) = (2, 3, 4, 4).")
    if torch.equal(m.cpu(), heads & pad):
        raise ExerciseFailure(f"combine_masks of three masks ignores the third (the causal mask): {_FIRST_TWO}")
    _expect_equal_mask(m, heads & pad & causal, "combine_masks of three masks",
                       _OR if torch.equal(m.cpu(), heads | pad | causal) else "AND of all three.")

    (m,) = _with_hints(call, "combine_masks(None, causal, None)", None, causal, None)
    _expect_equal_mask(m, causal, "combine_masks(None, causal, None)",
                       "None means 'no mask': skip it, so the result is the causal mask itself.")

    (m,) = _with_hints(call, "combine_masks(padding) (a single mask)", pad)
    _expect_equal_mask(m, pad, "combine_masks(padding) with one mask", "one mask combines to itself.")
    return 5


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


def _combine(op: Callable, which: slice = slice(None)):
    def combine_masks(*masks):
        present = [m for m in masks if m is not None][which]
        if not present:
            return None
        combined = present[0]
        for m in present[1:]:
            combined = op(combined, m)
        return combined

    return combine_masks


COMBINE = Exercise(
    function="combine_masks",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=combine_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS),
)
COMBINE_HIDDEN = HiddenTests(
    function="combine_masks",
    reference="transformer_course.masks:combine_masks",
    make_cases=combine_cases,
    mistakes=(
        Mistake(_combine(torch.logical_or), _OR),
        Mistake(_combine(torch.logical_and, slice(0, 1)), _FIRST_ONLY),
        Mistake(_combine(torch.logical_and, slice(-1, None)), _LAST_ONLY),
        Mistake(_combine(torch.logical_and, slice(0, 2)), _FIRST_TWO),
    ),
)


# --------------------------------------------------------------------------- masked_self_attention

_HEAD_DIMENSION = (
    "your mask has a head dimension, (batch, 1, 1 or S, S), but x (batch, S, d) has none, so its "
    "scores are (batch, S, S). Broadcasting lines shapes up from the right and reads the mask's "
    "batch as a head dimension: (batch, 1, S, S) with (batch, S, S) gives (batch, batch, S, S). "
    "Drop the mask's head dimension (mask[:, 0]) before calling attention."
)


def _attention_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    batch = case.args[0].shape[0]
    if len(actual) == len(expected) + 1 and actual[:2] == (batch, batch):
        return _HEAD_DIMENSION
    return None


def _attention_diagnosis(outputs: tuple, case: Case) -> str | None:
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


_NO_CAUSAL = "there is no causal mask: with causal=True, query i may not see keys after i."
_ALWAYS_CAUSAL = "the causal mask is there even with causal=False: apply it only when `causal` is True."
_NO_PADDING = "padding keys get weight: combine padding_mask(token_ids, pad_id) into the mask."
_QUERIES_MASKED = (
    "you masked padded queries (rows) instead of padded keys (columns): the padding mask is "
    "(batch, 1, 1, S)."
)
_INVERTED_ATTENTION = "the mask is the wrong way round: True means 'may attend'."


def _rows_are(w: torch.Tensor, rows: dict[int, list[float]]) -> bool:
    """Whether the given rows of a weight matrix ``(S, S)`` hold these values."""
    w = w.detach().to("cpu", torch.float64)
    return all(torch.allclose(w[i], torch.tensor(v, dtype=torch.float64), atol=1e-4) for i, v in rows.items())


def attention_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(0)
    x = randn(gen, 2, 5, 4)
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 1]])
    out, w = call("x (2, 5, 4), token_ids (2, 5), pad_id=0", x, ids, 0)
    for got, want, name in ((w, (2, 5, 5), "weights"), (out, (2, 5, 4), "output")):
        if tuple(got.shape) != want:
            hint = _HEAD_DIMENSION if got.dim() == 4 and tuple(got.shape[:2]) == (2, 2) else (
                "weights are (batch, S, S) and output (batch, S, d), like chapter 4's attention "
                "with q = k = v = x."
            )
            raise ExerciseFailure(f"{name} has shape {tuple(got.shape)}, expected {want}: {hint}")

    # x = 0 makes every score equal, so the allowed keys of a query share its weight equally.
    z = torch.zeros(1, 5, 4, dtype=torch.float64)
    padded = torch.tensor([[7, 8, 9, 0, 0]])
    third, fifth = 1 / 3, 1 / 5
    _, w = call("x = 0, token_ids [[7, 8, 9, 0, 0]], causal=False", z, padded, 0, causal=False)
    if _rows_are(w[0], {0: [1, 0, 0, 0, 0]}):
        hint = _ALWAYS_CAUSAL
    elif _rows_are(w[0], {0: [fifth] * 5, 4: [0] * 5}):
        hint = _QUERIES_MASKED
    elif _rows_are(w[0], {0: [fifth] * 5}):
        hint = _NO_PADDING
    elif _rows_are(w[0], {0: [0, 0, 0, 0.5, 0.5]}):
        hint = _INVERTED_ATTENTION
    else:
        hint = "every query attends equally to the three real tokens and never to padding."
    expect_close(w[0], [[third, third, third, 0, 0]] * 5,
                 what="weights for x = 0, token_ids [[7, 8, 9, 0, 0]], causal=False", hint=hint)

    _, w = call("x = 0, token_ids [[7, 8, 9, 0, 0]], causal=True", z, padded, 0, causal=True)
    if _rows_are(w[0], {4: [fifth] * 5}):
        hint = _OR + " (Row 4 gives weight to the padding keys 3 and 4.)"
    elif _rows_are(w[0], {0: [third, third, third, 0, 0]}):
        hint = _NO_CAUSAL
    else:
        hint = "query i may see keys 0..i (causal) that are real tokens (keys 0, 1, 2)."
    expect_close(w[0], [[1, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0]] + [[third, third, third, 0, 0]] * 3,
                 what="weights for x = 0, token_ids [[7, 8, 9, 0, 0]], causal=True", hint=hint)

    _, w = call("x = 0, no padding, causal=True", z, torch.tensor([[1, 2, 3, 4, 5]]), 0)
    expect_close(w[0, 1], [0.5, 0.5, 0, 0, 0], what="row 1 of the weights (x = 0, no padding, causal)",
                 hint="query 1 may attend to keys 0 and 1: softmax([0, 0, -inf, -inf, -inf]) = "
                      "[0.5, 0.5, 0, 0, 0]. causal defaults to True.")

    # A query that may attend to nothing: left padding with a causal mask, and a sequence that
    # is all padding.
    left = torch.tensor([[0, 0, 5, 6], [0, 0, 0, 0]])
    x = torch.ones(2, 4, 3, dtype=torch.float64)
    out, w = call("left-padded token_ids [[0, 0, 5, 6], [0, 0, 0, 0]], causal=True", x, left, 0)
    if torch.isnan(w).any() or torch.isnan(out).any():
        raise ExerciseFailure(
            "a query with nothing to attend to gives NaN: in [[0, 0, 5, 6]] with a causal mask, "
            "queries 0 and 1 may only see padding, and [0, 0, 0, 0] is all padding. Chapter 4's "
            "scaled_dot_product_attention returns weights 0 for such rows: use it, or zero those "
            "rows yourself (weights.masked_fill(~mask, 0.0))."
        )
    expect_close(w[0, :2], torch.zeros(2, 4), what="weights of queries 0 and 1 of [[0, 0, 5, 6]]",
                 hint="they may see only keys 0..i, which are padding: nothing left, weights 0.")
    expect_close(w[0, 3], [0, 0, 0.5, 0.5], what="row 3 of the weights of [[0, 0, 5, 6]]",
                 hint="query 3 sees the real keys 2 and 3 equally (x is all ones).")
    expect_close(out[1], torch.zeros(4, 3), what="output for a sequence that is all padding",
                 hint="no query has a key to attend to: output 0.")
    return 7


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


MASKED_ATTENTION = Exercise(
    function="masked_self_attention",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=attention_visible,
    output_names=("output", "weights"),
    uses=("scaled_dot_product_attention", "causal_mask", "padding_mask", "combine_masks"),
    forbidden=(SDPA_CALLS, MHA_CALLS, TRANSFORMER_CALLS, CAUSAL_BIAS_CALLS),
    shape_hint=_attention_shape_hint,
)
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
    diagnose=_attention_diagnosis,
)

EXERCISES = (CAUSAL, PADDING, COMBINE, MASKED_ATTENTION)

HIDDEN_TESTS = (CAUSAL_HIDDEN, PADDING_HIDDEN, COMBINE_HIDDEN, MASKED_ATTENTION_HIDDEN)
