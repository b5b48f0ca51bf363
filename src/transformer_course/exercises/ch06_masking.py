"""Chapter 6 exercises: the causal mask, the padding mask, combining masks, masked attention.

Masks are bool tensors in which True means "may attend" (the convention of
``F.scaled_dot_product_attention``), broadcastable to the scores ``(batch, heads, L, S)``.
Visible checks use the chapter's worked examples, with the expected masks drawn row by row
(row 1 of a 5-token causal mask is ``T T . . .``, so equal scores give softmax([0, 0, -inf, -inf,
-inf]) = [0.5, 0.5, 0, 0, 0]), and name the classic mistakes (an off-by-one diagonal, ``triu``
for ``tril``, an inverted mask, a padding mask of the wrong shape, OR instead of AND) from the
outputs those mistakes give on the same inputs, recorded in ``recorded/06-masking.json`` (see
:mod:`.recorded`). The hidden inputs, the reference and the typical mistakes (as code) are the
grader's side, ``grading.hidden_tests.ch06_masking``: sequences of different lengths, sequences
that are all padding, left padding, other pad ids, L != S, batch and head dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import expect_close, fmt_index
from .inputs import randn
from .library_calls import MHA_CALLS, SDPA_CALLS, TRANSFORMER_CALLS
from .recorded import recorded_mistake, recorded_outputs

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


def _picture(*rows: str) -> torch.Tensor:
    """A bool mask drawn row by row, one row per query: "T" may attend to that key, "." may not."""
    return torch.tensor([[c == "T" for c in row] for row in rows])


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


def causal_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    (m,) = call("causal_mask(5)", 5)
    _expect_shape(m, (5, 5), "causal_mask(5)", "one row per query and one column per key.")
    _expect_bool(m, "causal_mask(5)")
    causal_5 = _picture(
        "T....",
        "TT...",
        "TTT..",
        "TTTT.",
        "TTTTT",
    )
    _expect_equal_mask(
        m, causal_5, "causal_mask(5)",
        recorded_mistake("causal_mask", "causal_mask(5)", (m,))
        or "query i may attend to key j exactly when j <= i. Row 1 must be "
        "[True, True, False, False, False]: equal scores then give softmax([0, 0, -inf, -inf, "
        "-inf]) = [0.5, 0.5, 0, 0, 0].",
    )

    (m,) = call("causal_mask(1)", 1)
    _expect_shape(m, (1, 1), "causal_mask(1)")
    _expect_equal_mask(m, _picture("T"), "causal_mask(1)", "a single position may attend to itself.")

    (m,) = call("causal_mask(8)", 8)
    _expect_shape(m, (8, 8), "causal_mask(8)", "use seq_len, not a fixed size.")
    causal_8 = _picture(
        "T.......",
        "TT......",
        "TTT.....",
        "TTTT....",
        "TTTTT...",
        "TTTTTT..",
        "TTTTTTT.",
        "TTTTTTTT",
    )
    _expect_equal_mask(m, causal_8, "causal_mask(8)",
                       recorded_mistake("causal_mask", "causal_mask(8)", (m,)) or "j <= i, for any seq_len.")

    # The device argument, given as a string. (Where the mask lands on a GPU cannot be checked
    # here: the hardened grader replays every output from the CPU.)
    (m,) = call("causal_mask(3, device='cpu')", 3, device="cpu")
    _expect_equal_mask(m, _picture("T..", "TT.", "TTT"), "causal_mask(3, device='cpu')",
                       "pass `device` on to torch.ones.")
    return 4


CAUSAL = Exercise(
    function="causal_mask",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=causal_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, CAUSAL_BIAS_CALLS),
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


def padding_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 4, 3, 2], [0, 0, 0, 0, 0]])
    label = "token_ids (3, 5) with pad_id=0"
    (m,) = call(label, ids, 0)
    _expect_shape(m, (3, 1, 1, 5), "padding_mask of token_ids (3, 5)",
                  _padding_shape_hint(tuple(m.shape), (3, 1, 1, 5)))
    _expect_bool(m, "padding_mask")
    expected = _picture(
        "TTT..",
        "TTTTT",
        ".....",
    )
    _expect_equal_mask(m[:, 0, 0, :], expected, "padding_mask([[5, 6, 7, 0, 0], [8, 9, 4, 3, 2], [0, 0, 0, 0, 0]], "
                       "pad_id=0)[:, 0, 0, :]",
                       recorded_mistake("padding_mask", label, (m,))
                       or "True for real tokens, False for padding: token_ids != pad_id.")

    # RoBERTa's vocabulary: <s> = 0 starts every sequence, <pad> = 1.
    ids = torch.tensor([[0, 31414, 232, 2, 1, 1]])
    label = "token_ids [[0, 31414, 232, 2, 1, 1]] with pad_id=1"
    (m,) = call(label, ids, 1)
    _expect_shape(m, (1, 1, 1, 6), "padding_mask of token_ids (1, 6)",
                  _padding_shape_hint(tuple(m.shape), (1, 1, 1, 6)))
    _expect_equal_mask(m[:, 0, 0, :], _picture("TTTT.."), "with pad_id=1 (RoBERTa's <pad>; id 0 is its start "
                       "token <s>)", recorded_mistake("padding_mask", label, (m,))
                       or "token_ids != pad_id, with pad_id = 1 here.")

    ids = torch.tensor([[0, 0, 12, 7]])
    label = "left-padded token_ids [[0, 0, 12, 7]] with pad_id=0"
    (m,) = call(label, ids, 0)
    _expect_shape(m, (1, 1, 1, 4), "padding_mask of token_ids (1, 4)",
                  _padding_shape_hint(tuple(m.shape), (1, 1, 1, 4)))
    _expect_equal_mask(m[:, 0, 0, :], _picture("..TT"), "padding_mask([[0, 0, 12, 7]], pad_id=0)[:, 0, 0, :]",
                       recorded_mistake("padding_mask", label, (m,))
                       or "token_ids != pad_id, position by position.")
    return 3


PADDING = Exercise(
    function="padding_mask",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=padding_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS),
    shape_hint=_padding_shape_hint,
)


# --------------------------------------------------------------------------- combine_masks

_OR = (
    "that is OR: a pair (query, key) is allowed only where EVERY mask allows it, so combine "
    "with AND (`a & b`); with OR a padding key would be visible wherever the causal mask allows it."
)
_FIRST_TWO = "you combined the first two masks only: loop over all of them."


def combine_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    label = "combine_masks(a, b), a = [T, T, F, F], b = [T, F, T, F]"
    (m,) = _with_hints(call, label, a, b)
    _expect_shape(m, (4,), "combine_masks of two (4,) masks")
    _expect_bool(m, "combine_masks(a, b)")
    expected = torch.tensor([True, False, False, False])
    got = m.detach().cpu()
    if not torch.equal(got, expected):
        hint = recorded_mistake("combine_masks", label, (m,)) or "allowed only where both allow: a & b."
        raise ExerciseFailure(
            f"combine_masks([T, T, F, F], [T, F, T, F]) is {_flags(got)}, expected "
            f"{_flags(expected)}.\n  Hint: {hint}"
        )

    pad = _picture("TTT.", "TT..")[:, None, None, :]  # (2, 1, 1, 4): 3 and 2 real tokens
    causal = _picture(
        "T...",
        "TT..",
        "TTT.",
        "TTTT",
    )
    label = "a padding mask (2, 1, 1, 4) and a causal mask (4, 4)"
    (m,) = _with_hints(call, label, pad, causal)
    _expect_shape(m, (2, 1, 4, 4), "combine_masks(padding (2, 1, 1, 4), causal (4, 4))",
                  "broadcasting (2, 1, 1, 4) with (4, 4) gives (2, 1, 4, 4): let `&` broadcast, "
                  "without reshaping the masks yourself.")
    _expect_bool(m, "combine_masks(padding, causal)")
    # Sequence b, query i: the keys 0..i (causal) that are real tokens (padding).
    sequence_0 = _picture(
        "T...",
        "TT..",
        "TTT.",
        "TTT.",
    )
    sequence_1 = _picture(
        "T...",
        "TT..",
        "TT..",
        "TT..",
    )
    _expect_equal_mask(m, torch.stack([sequence_0, sequence_1])[:, None], "combine_masks(padding, causal)",
                       recorded_mistake("combine_masks", label, (m,))
                       or "sequence b, query i may attend to key j when j <= i AND key j is a real token.")

    heads = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    heads[0, 1, :, 0] = False  # head 1 may not look at key 0
    label = "three masks: per-head (1, 3, 4, 4), padding (2, 1, 1, 4), causal (4, 4)"
    (m,) = _with_hints(call, label, heads, pad, causal)
    _expect_shape(m, (2, 3, 4, 4), "combine_masks of (1, 3, 4, 4), (2, 1, 1, 4) and (4, 4) masks",
                  "all three broadcast together to (batch, heads, L, S) = (2, 3, 4, 4).")
    likely = recorded_mistake("combine_masks", label, (m,))
    if likely == _FIRST_TWO:
        raise ExerciseFailure(f"combine_masks of three masks ignores the third (the causal mask): {_FIRST_TWO}")
    (expected,) = recorded_outputs("combine_masks", label)
    _expect_equal_mask(m, expected, "combine_masks of three masks", likely or "AND of all three.")

    (m,) = _with_hints(call, "combine_masks(None, causal, None)", None, causal, None)
    _expect_equal_mask(m, causal, "combine_masks(None, causal, None)",
                       "None means 'no mask': skip it, so the result is the causal mask itself.")

    (m,) = _with_hints(call, "combine_masks(padding) (a single mask)", pad)
    _expect_equal_mask(m, pad, "combine_masks(padding) with one mask", "one mask combines to itself.")
    return 5


COMBINE = Exercise(
    function="combine_masks",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=combine_visible,
    output_names=("mask",),
    forbidden=(TRANSFORMER_CALLS, MHA_CALLS),
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

EXERCISES = (CAUSAL, PADDING, COMBINE, MASKED_ATTENTION)
