"""Chapter 1 exercises: a vocabulary with an unknown token, byte-pair encoding, embedding lookup,
cosine similarity and nearest neighbours.

The tokenizer exercises return plain Python values (a dict, lists of ids, a list of merge pairs),
compared with ``==`` (``Exercise(plain_values=True)``); the others return tensors.

Visible checks use worked examples a student can verify by hand ("the cat sat on the mat"; the
BPE example "hug pug pun bun hugs", whose first merges are "ug", "un", "hug"; "How are you" with
d_model = 4) and properties (shapes, similarities of a vector with itself). Hidden checks
compare with the reference on seeded random inputs; the typical mistakes below are recognised
by running them on the same inputs.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable

import torch

from ..grading.hidden_spec import HiddenTests, Mistake
from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import fmt_index, fmt_number, mismatch, plain_mismatch
from .inputs import randn, with_float32

ASSIGNMENT = "01-tokens"
UNK = "<unk>"  # the same string as transformer_course.tokenizer.UNK (not imported: see base.py)
N_BYTES = 256

# --------------------------------------------------------------------------- forbidden calls

EMBEDDING_CALLS = Forbidden(
    label="torch.nn.functional.embedding / nn.Embedding (a library embedding lookup)",
    builtin_names=frozenset({"embedding", "embedding_bag"}),
    python_functions=frozenset(
        {("torch/nn/functional.py", "embedding"), ("torch/nn/modules/sparse.py", "*")}
    ),
    source_names=frozenset({"Embedding"}),
)
COSINE_CALLS = Forbidden(
    label="torch.nn.functional.cosine_similarity / F.normalize / nn.CosineSimilarity "
    "(a library cosine similarity)",
    builtin_names=frozenset({"cosine_similarity"}),
    python_functions=frozenset(
        {("torch/nn/functional.py", "normalize"), ("torch/nn/modules/distance.py", "*")}
    ),
    source_names=frozenset({"CosineSimilarity"}),
)


def _same(actual, other) -> bool:
    """Whether two outputs (plain values, tensors, or tuples of tensors) are equal."""
    if isinstance(actual, tuple) and isinstance(other, tuple):
        return len(actual) == len(other) and all(_same(a, o) for a, o in zip(actual, other))
    if isinstance(actual, torch.Tensor) or isinstance(other, torch.Tensor):
        return (isinstance(actual, torch.Tensor) and isinstance(other, torch.Tensor)
                and actual.shape == other.shape
                and torch.allclose(actual.to(torch.float64), other.to(torch.float64),
                                   rtol=1e-6, atol=1e-9, equal_nan=True))
    return plain_mismatch(actual, other, name="", what="") is None


def _matching_mistake(mistakes: tuple[Mistake, ...], args: tuple, actual) -> str | None:
    """The hint of the first typical mistake that returns ``actual`` on ``args``, if any.

    The visible checks use it on their worked examples, so a student gets the likely mistake
    in the notebook already, not only from the grader.
    """
    for mistake in mistakes:
        try:
            with torch.no_grad():
                wrong = mistake.fn(*copy.deepcopy(args))
        except Exception:  # noqa: BLE001 - a mistake that cannot run here says nothing
            continue
        if _same(actual, wrong):
            return mistake.hint
    return None


def _fail(problem: str, hint: str, mistakes: tuple[Mistake, ...], args: tuple, actual) -> None:
    __tracebackhide__ = True
    likely = _matching_mistake(mistakes, args, actual)
    if likely:
        raise ExerciseFailure(f"{problem}.\n  Likely mistake: {likely}")
    raise ExerciseFailure(problem + (f".\n  Hint: {hint}" if hint else "."))


def _expect_equal(actual, expected, *, name: str, what: str, hint: str = "",
                  mistakes: tuple[Mistake, ...] = (), args: tuple = ()) -> None:
    """Raise ExerciseFailure unless the plain value ``actual`` equals ``expected``.

    The message names the first difference, and the typical mistake among ``mistakes`` that
    gives ``actual`` on ``args`` (else ``hint``).
    """
    __tracebackhide__ = True
    problem = plain_mismatch(actual, expected, name=name, what=what)
    if problem:
        _fail(problem, hint, mistakes, args, actual)


def _expect_close(actual, expected, *, what: str, hint: str = "",
                  mistakes: tuple[Mistake, ...] = (), args: tuple = (), output: int | None = None
                  ) -> None:
    """Raise ExerciseFailure unless the tensor ``actual`` is close to ``expected``.

    Like :func:`_expect_equal` for tensors. ``output`` says which output of the mistakes to
    compare with (for functions that return several), ``None`` for a single output.
    """
    __tracebackhide__ = True
    problem = mismatch(actual, torch.as_tensor(expected, dtype=torch.float64), what=what,
                       rtol=1e-3, atol=1e-3)
    if problem:
        if output is not None:
            mistakes = tuple(Mistake(lambda *a, f=m.fn: f(*a)[output], m.hint) for m in mistakes)
        _fail(problem, hint, mistakes, args, actual)


def _words(gen: torch.Generator, vocabulary: list[str], n: int) -> list[str]:
    """``n`` tokens drawn from ``vocabulary``, the first ones far more often (like real text)."""
    weights = 1.0 / torch.arange(1, len(vocabulary) + 1, dtype=torch.float64)  # Zipf's law
    picks = torch.multinomial(weights, n, replacement=True, generator=gen)
    return [vocabulary[i] for i in picks.tolist()]


_ANIMALS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "to", "big", "red", "fox",
            "and", "hat", "The", ".", ","]

# --------------------------------------------------------------------------- build_vocab


def vocab_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    tokens = "the cat sat on the mat".split()
    mistakes = BUILD_VOCAB_HIDDEN.mistakes
    (vocab,) = call("the cat sat on the mat", tokens)
    if isinstance(vocab, dict) and UNK not in vocab:
        raise ExerciseFailure(
            f"the vocabulary has no entry {UNK!r}: start with {{'{UNK}': 0}} and give the "
            "tokens the ids after it."
        )
    _expect_equal(vocab, {UNK: 0, "the": 1, "cat": 2, "mat": 3, "on": 4, "sat": 5},
                  name="vocab", what='build_vocab("the cat sat on the mat".split())',
                  mistakes=mistakes, args=(tokens,),
                  hint="'<unk>' is 0; then the most frequent token ('the', twice); then the "
                       "others, all once, in alphabetical order.")
    tie = ["b", "a", "b", "a", "c"]
    (vocab,) = call("a tie: b a b a c", tie)
    _expect_equal(vocab, {UNK: 0, "a": 1, "b": 2, "c": 3}, name="vocab",
                  what="build_vocab(['b', 'a', 'b', 'a', 'c'])", mistakes=mistakes, args=(tie,),
                  hint="'a' and 'b' occur twice each: equally frequent tokens go in alphabetical "
                       "order, whichever came first (sort by (-count, token)).")
    (vocab,) = call("min_count=2", tokens, min_count=2)
    _expect_equal(vocab, {UNK: 0, "the": 1}, name="vocab",
                  what='build_vocab("the cat sat on the mat".split(), min_count=2)',
                  mistakes=mistakes, args=(tokens, 2),
                  hint="keep only tokens that occur at least min_count times (count >= min_count).")
    (vocab,) = call("no tokens", [])
    _expect_equal(vocab, {UNK: 0}, name="vocab", what="build_vocab([])",
                  hint="even an empty text has the unknown token.")
    return 4


def vocab_cases(gen: torch.Generator) -> list[Case]:
    return [
        Case("40 tokens of a small text", (_words(gen, _ANIMALS, 40),)),
        Case("200 tokens, min_count=3", (_words(gen, _ANIMALS, 200),), {"min_count": 3}),
        Case("12 tokens, min_count=2", (_words(gen, _ANIMALS, 12),), {"min_count": 2}),
        Case("one token", (["hello"],)),
        Case("every token once (all tied)", (["d", "b", "a", "c", "e"],)),
        Case("min_count larger than any count", (_words(gen, _ANIMALS, 10),), {"min_count": 50}),
    ]


def _vocab_from(order: list[str], unk_first: bool = True) -> dict[str, int]:
    tokens = ([UNK] if unk_first else []) + order + ([] if unk_first else [UNK])
    return {token: i for i, token in enumerate(tokens)}


def _by_count_then(tokens, min_count, tie_key) -> list[str]:
    counts = Counter(tokens)
    kept = [t for t in counts if counts[t] >= min_count]
    return sorted(kept, key=lambda t: (-counts[t], tie_key(t, tokens)))


BUILD_VOCAB = Exercise(
    function="build_vocab",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=vocab_visible,
    output_names=("vocab",),
    plain_values=True,
)
BUILD_VOCAB_HIDDEN = HiddenTests(
    function="build_vocab",
    reference="transformer_course.tokenizer:build_vocab",
    make_cases=vocab_cases,
    mistakes=(
        Mistake(lambda tokens, min_count=1: _vocab_from(
                    _by_count_then(tokens, min_count, lambda t, _: t), unk_first=False),
                "'<unk>' must come first, with id 0; the tokens get the ids after it."),
        Mistake(lambda tokens, min_count=1: {t: i for i, t in enumerate(
                    _by_count_then(tokens, min_count, lambda t, _: t))},
                "the vocabulary has no '<unk>': start with {'<unk>': 0}."),
        Mistake(lambda tokens, min_count=1: _vocab_from(
                    _by_count_then(tokens, min_count, lambda t, ts: ts.index(t))),
                "equally frequent tokens must go in alphabetical order, not in the order they "
                "first appear (Counter.most_common keeps that order): sort by (-count, token)."),
        Mistake(lambda tokens, min_count=1: _vocab_from(
                    [t for t in dict.fromkeys(tokens) if Counter(tokens)[t] >= min_count]),
                "the tokens are in the order they first appear: sort them, most frequent "
                "first (ties in alphabetical order)."),
        Mistake(lambda tokens, min_count=1: _vocab_from(
                    _by_count_then(tokens, min_count + 1, lambda t, _: t)),
                "tokens that occur exactly min_count times must be kept: use count >= min_count."),
        Mistake(lambda tokens, min_count=1: _vocab_from(
                    sorted(t for t, c in Counter(tokens).items() if c >= min_count)),
                "the tokens are only in alphabetical order: put the most frequent first, and "
                "use alphabetical order only between equally frequent tokens."),
    ),
)


# --------------------------------------------------------------------------- tokens_to_ids


def ids_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    vocab = {UNK: 0, "the": 1, "cat": 2, "mat": 3, "on": 4, "sat": 5}
    tokens = "the dog sat on the mat".split()
    mistakes = TOKENS_TO_IDS_HIDDEN.mistakes
    (ids,) = call("the dog sat on the mat", tokens, vocab)
    _expect_equal(ids, [1, 0, 5, 4, 1, 3], name="ids",
                  what='tokens_to_ids("the dog sat on the mat".split(), vocab) with the vocabulary '
                       'of "the cat sat on the mat"', mistakes=mistakes, args=(tokens, vocab),
                  hint="one id per token; 'dog' is not in the vocabulary, so it gets the id of "
                       "'<unk>' (vocab.get(token, ...)).")
    other = {"<pad>": 0, "a": 1, UNK: 2}
    (ids,) = call("a vocabulary whose <unk> is 2", ["a", "b"], other)
    _expect_equal(ids, [1, 2], name="ids",
                  what="tokens_to_ids(['a', 'b'], {'<pad>': 0, 'a': 1, '<unk>': 2})",
                  mistakes=mistakes, args=(["a", "b"], other),
                  hint="look the unknown id up, vocab['<unk>'], rather than assuming it is 0.")
    (ids,) = call("no tokens", [], vocab)
    _expect_equal(ids, [], name="ids", what="tokens_to_ids([], vocab)")
    return 3


def ids_cases(gen: torch.Generator) -> list[Case]:
    from_text = {t: i for i, t in enumerate([UNK, "the", "cat", "sat", "on", "mat", "a"])}
    shuffled = ["<pad>", "<s>", "</s>", "the", "dog", UNK, "ran", ".", "big"]
    unk_later = {t: i for i, t in enumerate(shuffled)}
    return [
        Case("20 tokens, some unknown", (_words(gen, _ANIMALS, 20), from_text)),
        Case("30 tokens, <unk> has id 5", (_words(gen, _ANIMALS, 30), unk_later)),
        Case("only unknown tokens", (["zebra", "gnu"], from_text)),
        Case("one known token", (["cat"], from_text)),
        Case("no unknown tokens", (["the", "cat", "sat"], from_text)),
    ]


TOKENS_TO_IDS = Exercise(
    function="tokens_to_ids",
    assignment=ASSIGNMENT,
    points=1,
    visible_checks=ids_visible,
    output_names=("ids",),
    plain_values=True,
)
TOKENS_TO_IDS_HIDDEN = HiddenTests(
    function="tokens_to_ids",
    reference="transformer_course.tokenizer:tokens_to_ids",
    make_cases=ids_cases,
    mistakes=(
        Mistake(lambda tokens, vocab: [vocab[t] for t in tokens if t in vocab],
                "unknown tokens are left out: each token, known or not, gives one id; an "
                "unknown one gives vocab['<unk>']."),
        Mistake(lambda tokens, vocab: [vocab.get(t, 0) for t in tokens],
                "unknown tokens get id 0, but here '<unk>' has another id: use vocab['<unk>']."),
        Mistake(lambda tokens, vocab: [vocab.get(t, -1) for t in tokens],
                "unknown tokens get -1, which is no id at all: use vocab['<unk>']."),
        Mistake(lambda tokens, vocab: [vocab.get(t, len(vocab)) for t in tokens],
                "unknown tokens get len(vocab), an id the vocabulary does not have: use "
                "vocab['<unk>']."),
        Mistake(lambda tokens, vocab: [vocab.get(t) for t in tokens],
                "vocab.get(token) gives None for an unknown token: give a default, "
                "vocab.get(token, vocab['<unk>'])."),
    ),
)


# --------------------------------------------------------------------------- merge_pair


def _merge(ids, pair, new_id, *, skip_both: bool = True, keep_last: bool = True,
           only_first: bool = False) -> list[int]:
    """merge_pair with knobs that reproduce typical mistakes."""
    out, i, merged = [], 0, False
    end = len(ids) if keep_last else len(ids) - 1
    while i < end:
        if (i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]
                and not (only_first and merged)):
            out.append(new_id)
            merged = True
            i += 2 if skip_both else 1
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    examples = [  # (ids, pair, new_id, expected, hint)
        ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9],
         "every occurrence of 1 followed by 2 becomes the one id 9."),
        ([3, 1, 2], (1, 2), 9, [3, 9], "a pair at the very end is merged too."),
        ([7, 7, 7], (7, 7), 256, [256, 7],
         "occurrences do not overlap: go left to right, and after a merge skip both ids, so "
         "[7, 7, 7] gives [256, 7]."),
        ([7, 7, 7, 7], (7, 7), 256, [256, 256], ""),
        ([5, 6], (6, 5), 9, [5, 6], "the order in a pair matters: (6, 5) is 6 followed by 5."),
        ([], (1, 2), 9, [], ""),
    ]
    for ids, pair, new_id, expected, hint in examples:
        label = f"merge_pair({ids}, {pair}, {new_id})"
        (merged,) = call(label, list(ids), pair, new_id)
        _expect_equal(merged, expected, name="ids", what=label, hint=hint,
                      mistakes=MERGE_PAIR_HIDDEN.mistakes, args=(ids, pair, new_id))
    return len(examples)


def merge_cases(gen: torch.Generator) -> list[Case]:
    def ids(n: int, high: int) -> list[int]:
        return torch.randint(0, high, (n,), generator=gen).tolist()

    many = ids(60, 4)
    return [
        Case("60 ids from 0..3, pair (1, 2)", (many, (1, 2), 256)),
        Case("60 ids from 0..3, pair (3, 3)", (ids(60, 4), (3, 3), 300)),
        Case("the pair at the very end", ([5, 4, 0, 1], (0, 1), 257)),
        Case("the pair at the very start", ([0, 1, 5, 4], (0, 1), 257)),
        Case("a run of 5 equal ids", ([2, 8, 8, 8, 8, 8, 3], (8, 8), 256)),
        Case("the pair does not occur", (ids(10, 3), (7, 7), 256)),
        Case("one id", ([4], (4, 4), 256)),
        Case("ids above 255 (tokens of earlier merges)", ([256, 257, 256, 257, 97], (256, 257), 258)),
    ]


MERGE_PAIR = Exercise(
    function="merge_pair",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=merge_visible,
    output_names=("ids",),
    plain_values=True,
)
MERGE_PAIR_HIDDEN = HiddenTests(
    function="merge_pair",
    reference="transformer_course.tokenizer:merge_pair",
    make_cases=merge_cases,
    mistakes=(
        Mistake(lambda ids, pair, new_id: _merge(ids, pair, new_id, skip_both=False),
                "after a merge, skip both ids of the pair (i += 2): you went on with the "
                "second one, which is then copied (or merged) again."),
        Mistake(lambda ids, pair, new_id: _merge(ids, pair, new_id, keep_last=False),
                "the last id is lost: when it is not part of a merge it still has to be "
                "copied (loop while i < len(ids), and test i + 1 < len(ids) before looking "
                "at the pair)."),
        Mistake(lambda ids, pair, new_id: _merge(ids, pair, new_id, only_first=True),
                "only the first occurrence is merged: replace every occurrence."),
        Mistake(lambda ids, pair, new_id: _merge(ids[::-1], pair[::-1], new_id)[::-1],
                "you went from right to left: go left to right, so [7, 7, 7] gives [256, 7]."),
    ),
)


# --------------------------------------------------------------------------- learn_bpe


def _learn(words, num_merges, *, pick=None, across_words: bool = False, first_id: int = N_BYTES,
           once_per_word: bool = False, merge: bool = True) -> list[tuple[int, int]]:
    """learn_bpe with knobs that reproduce typical mistakes (the reference's algorithm)."""
    pieces = [list(w.encode("utf-8")) for w in words]
    if across_words:
        pieces = [[b for piece in pieces for b in piece]]
    merges = []
    for step in range(num_merges):
        counts: dict = {}
        for ids in pieces:
            pairs = list(zip(ids, ids[1:]))
            for pair in dict.fromkeys(pairs) if once_per_word else pairs:
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = pick(counts) if pick else max(counts, key=counts.get)
        if merge:
            pieces = [_merge(ids, best, first_id + step) for ids in pieces]
        merges.append(best)
    return merges


HUGS = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5


def learn_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    u, g, n, h, a, b, c, d = (ord(ch) for ch in "ugnhabcd")
    examples = [  # (words, num_merges, what, expected, hint)
        (HUGS, 3, 'learn_bpe(words, 3) for "hug" x10, "pug" x5, "pun" x12, "bun" x4, "hugs" x5',
         [(u, g), (u, n), (h, N_BYTES)],
         "'u' 'g' occurs 20 times, so the first merge is (117, 103) -> 256; then 'u' 'n' (16 "
         "times) -> 257; then 'h' followed by the new token 256 (15 times) -> 258."),
        (["cd", "ab"], 1, "learn_bpe(['cd', 'ab'], 1)", [(c, d)],
         "both pairs occur once: the one that appears first in the corpus wins (max over a "
         "dict filled in order keeps the first of equal counts)."),
        (["a", "b", "a", "b", "ab"], 2, "learn_bpe(['a', 'b', 'a', 'b', 'ab'], 2)", [(a, b)],
         "count pairs inside each word only, never across two words: here only 'ab' has a "
         "pair, and after merging it nothing is left, so stop early."),
        (["hello"], 0, "learn_bpe(['hello'], 0)", [], ""),
    ]
    for words, num_merges, what, expected, hint in examples:
        (merges,) = call(what, list(words), num_merges)
        _expect_equal(merges, expected, name="merges", what=what, hint=hint,
                      mistakes=LEARN_BPE_HIDDEN.mistakes, args=(words, num_merges))
    return len(examples)


def learn_cases(gen: torch.Generator) -> list[Case]:
    def corpus(n: int, letters: str, longest: int) -> list[str]:
        words = []
        for _ in range(n):
            length = int(torch.randint(1, longest + 1, (1,), generator=gen))
            picks = torch.randint(0, len(letters), (length,), generator=gen).tolist()
            space = " " if torch.rand(1, generator=gen).item() < 0.7 else ""
            words.append(space + "".join(letters[i] for i in picks))
        return words

    return [
        Case("60 random words over 'abcd', 10 merges", (corpus(60, "abcd", 5), 10)),
        Case("40 random words over 'ab', 20 merges", (corpus(40, "ab", 6), 20)),
        Case("a text of repeated words, 12 merges",
             ("the cat and the hat and the bat".split() * 3, 12)),
        Case("non-ASCII words (é and ü take two bytes each)", (["café", "über", "café", "né"], 4)),
        Case("one long word, more merges than possible", (["abababab"], 10)),
        Case("single letters only: nothing to merge", (["a", "b", "c"], 3)),
        Case("no words", ([], 5)),
    ]


LEARN_BPE = Exercise(
    function="learn_bpe",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=learn_visible,
    output_names=("merges",),
    plain_values=True,
    uses=("merge_pair",),
)
LEARN_BPE_HIDDEN = HiddenTests(
    function="learn_bpe",
    reference="transformer_course.tokenizer:learn_bpe",
    make_cases=learn_cases,
    mistakes=(
        Mistake(lambda words, num_merges: _learn(words, num_merges, across_words=True),
                "you counted pairs across word boundaries (the last byte of one word with the "
                "first of the next): count and merge inside each word separately."),
        Mistake(lambda words, num_merges: _learn(
                    words, num_merges, pick=lambda c: min(c, key=lambda p: (-c[p], p))),
                "of equally frequent pairs you took the smallest; take the one that appears "
                "first in the corpus (max(counts, key=counts.get) on a dict filled in order)."),
        Mistake(lambda words, num_merges: _learn(
                    words, num_merges, pick=lambda c: max(c, key=lambda p: (c[p], p))),
                "of equally frequent pairs you took the largest; take the one that appears "
                "first in the corpus (max(counts, key=counts.get) on a dict filled in order)."),
        Mistake(lambda words, num_merges: _learn(words, num_merges, first_id=N_BYTES + 1),
                "merge i makes token 256 + i: the first merge makes 256."),
        Mistake(lambda words, num_merges: _learn(words, num_merges, first_id=0),
                "merge i makes token 256 + i; ids 0 to 255 are already taken by the bytes."),
        Mistake(lambda words, num_merges: _learn(words, num_merges, once_per_word=True),
                "you counted each pair once per word; count every occurrence (a word that "
                "contains a pair twice adds 2)."),
        Mistake(lambda words, num_merges: _learn(words, num_merges, merge=False),
                "after choosing a pair, merge it in every word (merge_pair) before counting "
                "again; otherwise the same pair wins every time."),
    ),
)


# --------------------------------------------------------------------------- embed_tokens

# "How are you" with d_model = 4: the token ids of the course's worked example and made-up
# rows of a (2000, 4) table, chosen to be easy to check by hand.
HOW_ARE_YOU_IDS = [1234, 456, 23]
HOW_ARE_YOU_ROWS = [[0.5, -0.2, 0.1, 0.9], [0.3, 0.8, -0.5, 0.0], [-0.7, 0.1, 0.4, 0.2]]


def _embed_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    ids, table = case.args
    vocab, d_model = table.shape
    if actual == tuple(ids.shape) + (vocab,):
        return ("the last dimension is the vocabulary size: a one-hot matrix still has to be "
                "multiplied by the table.")
    if len(actual) == 2 and actual[-1] == d_model and len(expected) > 2:
        return "keep the shape of token_ids: table[token_ids] works for ids of any shape."
    return None


def embed_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    table = torch.zeros(2000, 4, dtype=torch.float64)
    table[HOW_ARE_YOU_IDS] = torch.tensor(HOW_ARE_YOU_ROWS, dtype=torch.float64)
    ids = torch.tensor(HOW_ARE_YOU_IDS)
    (x,) = call('"How are you": ids [1234, 456, 23], d_model = 4', ids, table)
    if tuple(x.shape) != (3, 4):
        raise ExerciseFailure(
            f"for 3 ids and a (2000, 4) table the vectors have shape {tuple(x.shape)}, expected "
            "(3, 4): one row of d_model = 4 numbers per token."
        )
    rows = torch.tensor(HOW_ARE_YOU_ROWS, dtype=torch.float64)
    if torch.allclose(x, rows):
        raise ExerciseFailure(
            "you return the rows of the table as they are: multiply them by sqrt(d_model) = "
            "sqrt(4) = 2."
        )
    _expect_close(x, rows * 2, what='the vectors of "How are you" (ids [1234, 456, 23])',
                  hint="row i of the result is table[token_ids[i]] * sqrt(d_model), here * 2.",
                  mistakes=EMBED_TOKENS_HIDDEN.mistakes, args=(ids, table))
    batch = torch.tensor([[1234, 456, 23], [23, 23, 1234]])
    (x,) = call("a batch of ids (2, 3)", batch, table)
    if tuple(x.shape) != (2, 3, 4):
        raise ExerciseFailure(
            f"for ids of shape (2, 3) the vectors have shape {tuple(x.shape)}, expected "
            "(2, 3, 4) = (batch, seq, d_model): table[token_ids] keeps the ids' shape."
        )
    _expect_close(x[1], torch.stack([rows[2], rows[2], rows[0]]) * 2,
                  what="the second sequence of the batch, ids [23, 23, 1234]")
    return 3


def embed_cases(gen: torch.Generator) -> list[Case]:
    def ids(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=gen)

    how = torch.tensor(HOW_ARE_YOU_IDS)
    cases = [
        Case("ids (7,), table (10, 4)", (ids(10, 7), randn(gen, 10, 4))),
        Case("ids (2, 5), table (50, 8)", (ids(50, 2, 5), randn(gen, 50, 8))),
        Case('"How are you", table (2000, 4)', (how, randn(gen, 2000, 4))),
        Case("ids (3, 1), one token per sequence", (ids(6, 3, 1), randn(gen, 6, 16))),
        Case("ids (2, 3, 4), table (9, 6)", (ids(9, 2, 3, 4), randn(gen, 9, 6))),
        Case("d_model = 1", (ids(5, 4), randn(gen, 5, 1))),
        Case("the same id repeated", (torch.full((2, 4), 3), randn(gen, 5, 3))),
    ]
    return with_float32(cases, {"ids (2, 5), table (50, 8)", "ids (2, 3, 4), table (9, 6)"})


def _lookup(token_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return table[token_ids]


EMBED_TOKENS = Exercise(
    function="embed_tokens",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=embed_visible,
    forbidden=(EMBEDDING_CALLS,),
    shape_hint=_embed_shape_hint,
)
EMBED_TOKENS_HIDDEN = HiddenTests(
    function="embed_tokens",
    reference="transformer_course.embeddings:embed_tokens",
    make_cases=embed_cases,
    mistakes=(
        Mistake(_lookup, "you forgot the scaling: multiply the rows by sqrt(d_model)."),
        Mistake(lambda ids, table: _lookup(ids, table) / math.sqrt(table.shape[-1]),
                "you divided by sqrt(d_model); multiply instead."),
        Mistake(lambda ids, table: _lookup(ids, table) * table.shape[-1],
                "you multiplied by d_model; the scale is sqrt(d_model)."),
        Mistake(lambda ids, table: _lookup(ids, table) * math.sqrt(table.shape[0]),
                "you multiplied by sqrt of the vocabulary size, table.shape[0]; d_model is "
                "table.shape[-1]."),
    ),
)


# --------------------------------------------------------------------------- cosine_similarity_matrix


def _unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-8)


def _cosine_range_hint(outputs: tuple, case: Case) -> str | None:
    (s,) = outputs
    s = s.detach().to("cpu", torch.float64)
    outside = s.abs() > 1 + 1e-6
    if outside.any():
        index = tuple(outside.nonzero()[0].tolist())
        return (f"a cosine similarity lies between -1 and 1, but entry {fmt_index(index)} is "
                f"{fmt_number(s[index].item())}: divide by the lengths of both vectors.")
    return None


def _cosine_shape_hint(actual: tuple, expected: tuple, case: Case) -> str | None:
    a, b = case.args
    if actual[-2:] == (b.shape[-2], a.shape[-2]) and a.shape[-2] != b.shape[-2]:
        return "rows must be a's vectors and columns b's: compute a @ bᵀ, not b @ aᵀ."
    if actual[-1:] == (a.shape[-1],) and a.shape[-1] != b.shape[-2]:
        return "transpose b's last two dimensions: a_unit @ b_unit.transpose(-2, -1)."
    return None


def cosine_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    (s,) = call("a = [[1, 0], [1, 1]], b = [[2, 0], [0, 3], [-1, 0]]", a, b)
    if tuple(s.shape) != (2, 3):
        hint = _cosine_shape_hint(tuple(s.shape), (2, 3), Case("", (a, b)))
        raise ExerciseFailure(
            f"for a (2, 2) and b (3, 2) the similarities have shape {tuple(s.shape)}, expected "
            f"(2, 3): one row per vector of a, one column per vector of b"
            + (f"; {hint}" if hint else ".")
        )
    if torch.allclose(s, a @ b.T):
        raise ExerciseFailure(
            "you return the plain dot products a @ bᵀ: divide each by the lengths of the two "
            "vectors (or scale every vector to length 1 first)."
        )
    r = 1 / math.sqrt(2)
    _expect_close(s, [[1.0, 0.0, -1.0], [r, r, -r]],
                  what="cosine_similarity_matrix(a, b) for a = [[1, 0], [1, 1]], "
                       "b = [[2, 0], [0, 3], [-1, 0]]",
                  hint="[1, 0] and [2, 0] point the same way (1), [1, 0] and [0, 3] are "
                       "orthogonal (0), [1, 0] and [-1, 0] are opposite (-1), whatever their "
                       "lengths; [1, 1] is at 45 degrees to all three (±1/sqrt(2)).",
                  mistakes=COSINE_SIMILARITY_MATRIX_HIDDEN.mistakes, args=(a, b))
    zero = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    (s,) = call("a zero vector", zero, b[:1])
    if torch.isnan(s).any():
        raise ExerciseFailure(
            "a zero vector gives NaN (0 / 0): divide by the length clamped to at least 1e-8, "
            "norm.clamp_min(1e-8), so that a zero vector has similarity 0 with everything."
        )
    _expect_close(s, [[0.0], [0.6]], what="similarities of [0, 0] and [3, 4] with [2, 0]",
                  hint="a zero vector has similarity 0; [3, 4] has length 5, so cos = 6 / (5 * 2).",
                  mistakes=COSINE_SIMILARITY_MATRIX_HIDDEN.mistakes, args=(zero, b[:1]))
    gen = torch.Generator().manual_seed(1)
    x, y = randn(gen, 2, 3, 4), randn(gen, 2, 5, 4)
    (s,) = call("a (2, 3, 4) and b (2, 5, 4)", x, y)
    if tuple(s.shape) != (2, 3, 5):
        hint = _cosine_shape_hint(tuple(s.shape), (2, 3, 5), Case("", (x, y)))
        raise ExerciseFailure(
            f"with a batch dimension the similarities have shape {tuple(s.shape)}, expected "
            "(2, 3, 5): normalise along the last dimension and transpose only the last two "
            "dimensions of b" + (f"; {hint}" if hint else ".")
        )
    (s,) = call("a (2, 3, 4) with itself", x, x)
    diagonal = torch.diagonal(s, dim1=-2, dim2=-1)
    _expect_close(diagonal, torch.ones(2, 3), what="the similarity of each vector with itself",
                  hint="cos(x, x) = 1: normalise along the last dimension (dim=-1, keepdim=True).")
    return 5


def cosine_cases(gen: torch.Generator) -> list[Case]:
    with_zeros = randn(gen, 4, 3)
    with_zeros[1] = 0.0
    cases = [
        Case("a (5, 3), b (7, 3)", (randn(gen, 5, 3), randn(gen, 7, 3))),
        Case("a (2, 4, 6), b (2, 5, 6)", (randn(gen, 2, 4, 6), randn(gen, 2, 5, 6))),
        Case("a (2, 4, 6), b (5, 6) (b broadcast)", (randn(gen, 2, 4, 6), randn(gen, 5, 6))),
        Case("a (1, 8), b (1, 8)", (randn(gen, 1, 8), randn(gen, 1, 8))),
        Case("a with a zero row", (with_zeros, randn(gen, 6, 3))),
        Case("long vectors (entries about ±1000)", (randn(gen, 3, 5, scale=1000.0), randn(gen, 4, 5))),
        Case("a (6, 2) with itself", (lambda x: (x, x.clone()))(randn(gen, 6, 2))),
    ]
    return with_float32(cases, {"a (5, 3), b (7, 3)", "a (2, 4, 6), b (2, 5, 6)"})


COSINE_SIMILARITY_MATRIX = Exercise(
    function="cosine_similarity_matrix",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=cosine_visible,
    output_names=("similarity",),
    forbidden=(COSINE_CALLS,),
    shape_hint=_cosine_shape_hint,
)
COSINE_SIMILARITY_MATRIX_HIDDEN = HiddenTests(
    function="cosine_similarity_matrix",
    reference="transformer_course.similarity:cosine_similarity_matrix",
    make_cases=cosine_cases,
    mistakes=(
        Mistake(lambda a, b: a @ b.transpose(-2, -1),
                "these are the plain dot products a · b: divide by the lengths |a| |b|."),
        Mistake(lambda a, b: _unit(a) @ b.transpose(-2, -1),
                "you normalised a but not b: divide by the lengths of both."),
        Mistake(lambda a, b: a @ _unit(b).transpose(-2, -1),
                "you normalised b but not a: divide by the lengths of both."),
        Mistake(lambda a, b: _unit(a, -2) @ _unit(b, -2).transpose(-2, -1),
                "you normalised along the wrong dimension: each vector is a row, so take its "
                "length along the last dimension (dim=-1, keepdim=True)."),
        Mistake(lambda a, b: (a / a.norm(dim=-1, keepdim=True))
                @ (b / b.norm(dim=-1, keepdim=True)).transpose(-2, -1),
                "a zero vector has length 0, and 0 / 0 is NaN: divide by "
                "norm.clamp_min(1e-8), so that a zero vector has similarity 0."),
        Mistake(lambda a, b: (a / (a * a).sum(-1, keepdim=True).clamp_min(1e-16))
                @ (b / (b * b).sum(-1, keepdim=True).clamp_min(1e-16)).transpose(-2, -1),
                "you divided by the squared lengths: the length is the square root of the sum "
                "of squares."),
    ),
    diagnose=_cosine_range_hint,
)


# --------------------------------------------------------------------------- nearest_neighbours


def _neighbours(query, table, k, *, score=None, largest: bool = True):
    """nearest_neighbours with knobs that reproduce typical mistakes."""
    if score is None:
        score = lambda q, t: _unit(q) @ _unit(t).T  # noqa: E731 - cosine, the right score
    values = score(query.unsqueeze(-2), table).squeeze(-2)  # (..., vocab)
    order = torch.argsort(values, dim=-1, descending=largest)[..., :k]
    return order, torch.gather(values, -1, order)


def neighbours_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [10.0, 1.0]],
                         dtype=torch.float64)
    query = torch.tensor([1.0, 0.0], dtype=torch.float64)
    indices, sims = call("query [1, 0], k = 2", query, table, 2)
    if isinstance(indices, torch.Tensor) and tuple(indices.shape) != (2,):
        raise ExerciseFailure(
            f"for one query (d,) and k = 2, indices have shape {tuple(indices.shape)}, expected "
            "(2,): one index per neighbour."
        )
    if indices.tolist() == [4, 0]:
        raise ExerciseFailure(
            "for the query [1, 0] you return rows [4, 0]: row 4 = [10, 1] has the largest dot "
            "product only because it is long. Rank by cosine similarity, which ignores length: "
            "row 0 = [1, 0] points exactly the same way (similarity 1)."
        )
    if indices.tolist() == [3, 1]:
        raise ExerciseFailure(
            "for the query [1, 0] you return rows [3, 1], the least similar: the nearest "
            "neighbours have the largest similarities (sort in descending order)."
        )
    mistakes = NEAREST_NEIGHBOURS_HIDDEN.mistakes
    _expect_close(indices, [0, 4], what="indices of the 2 nearest rows to [1, 0]",
                  hint="row 0 = [1, 0] has similarity 1, row 4 = [10, 1] has 10/sqrt(101) ≈ 0.995.",
                  mistakes=mistakes, args=(query, table, 2), output=0)
    _expect_close(sims, [1.0, 10 / math.sqrt(101)], what="similarities of the 2 nearest rows",
                  hint="return the cosine similarities of the neighbours, largest first.",
                  mistakes=mistakes, args=(query, table, 2), output=1)
    queries = torch.tensor([[0.0, 2.0], [-3.0, 0.1], [1.0, 0.9]], dtype=torch.float64)
    indices, sims = call("three queries (3, 2), k = 1", queries, table, 1)
    if tuple(indices.shape) != (3, 1) or tuple(sims.shape) != (3, 1):
        raise ExerciseFailure(
            f"for queries (3, 2) and k = 1 you return indices {tuple(indices.shape)} and "
            f"similarities {tuple(sims.shape)}, expected (3, 1) each: one row of k neighbours "
            "per query (work along the last dimension)."
        )
    _expect_close(indices, [[1], [3], [2]],
                  what="the nearest row to each of [0, 2], [-3, 0.1], [1, 0.9]",
                  mistakes=mistakes, args=(queries, table, 1), output=0)
    indices, sims = call("all 5 rows, k = 5", query, table, 5)
    if bool((sims[1:] > sims[:-1] + 1e-12).any()):
        raise ExerciseFailure(
            f"with k = 5 the similarities are {sims.tolist()}: return them in decreasing order, "
            "the most similar first."
        )
    return 4


def neighbours_cases(gen: torch.Generator) -> list[Case]:
    table = randn(gen, 20, 6)
    return with_float32([
        Case("one query (6,), table (20, 6), k = 3", (randn(gen, 6), table, 3)),
        Case("queries (4, 6), k = 5", (randn(gen, 4, 6), table, 5)),
        Case("queries (2, 3, 6), k = 2", (randn(gen, 2, 3, 6), table, 2)),
        Case("k = 1", (randn(gen, 3, 6), table, 1)),
        Case("k = vocab: every row, sorted", (randn(gen, 6), table, 20)),
        Case("a query that is row 7 of the table, scaled by 5", (table[7] * 5, table, 4)),
        Case("rows of very different lengths", (randn(gen, 2, 6), table * torch.linspace(0.1, 50, 20,
                                                dtype=torch.float64)[:, None], 3)),
    ], {"queries (4, 6), k = 5", "queries (2, 3, 6), k = 2"})


NEAREST_NEIGHBOURS = Exercise(
    function="nearest_neighbours",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=neighbours_visible,
    output_names=("indices", "similarities"),
    index_outputs=("indices",),
    uses=("cosine_similarity_matrix",),
    forbidden=(COSINE_CALLS,),
)
NEAREST_NEIGHBOURS_HIDDEN = HiddenTests(
    function="nearest_neighbours",
    reference="transformer_course.similarity:nearest_neighbours",
    make_cases=neighbours_cases,
    mistakes=(
        Mistake(lambda q, t, k: _neighbours(q, t, k, score=lambda a, b: a @ b.T),
                "you ranked by the plain dot product, which favours long rows: rank by cosine "
                "similarity."),
        Mistake(lambda q, t, k: _neighbours(q, t, k, largest=False),
                "you returned the least similar rows: sort in descending order (largest first)."),
        Mistake(lambda q, t, k: _neighbours(
                    q, t, k, score=lambda a, b: -(a[..., :, None, :] - b).norm(dim=-1)),
                "you ranked by Euclidean distance, which depends on the lengths of the vectors: "
                "rank by cosine similarity."),
    ),
)


EXERCISES = (
    BUILD_VOCAB,
    TOKENS_TO_IDS,
    MERGE_PAIR,
    LEARN_BPE,
    EMBED_TOKENS,
    COSINE_SIMILARITY_MATRIX,
    NEAREST_NEIGHBOURS,
)

HIDDEN_TESTS = (
    BUILD_VOCAB_HIDDEN,
    TOKENS_TO_IDS_HIDDEN,
    MERGE_PAIR_HIDDEN,
    LEARN_BPE_HIDDEN,
    EMBED_TOKENS_HIDDEN,
    COSINE_SIMILARITY_MATRIX_HIDDEN,
    NEAREST_NEIGHBOURS_HIDDEN,
)
