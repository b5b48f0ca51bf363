"""Chapter 1 exercises: a vocabulary with an unknown token, byte-pair encoding, embedding lookup,
cosine similarity and nearest neighbours.

The tokenizer exercises return plain Python values (a dict, lists of ids, a list of merge pairs),
compared with ``==`` (``Exercise(plain_values=True)``); the others return tensors.

Visible checks use worked examples a student can verify by hand ("the cat sat on the mat"; the
BPE example "hug pug pun bun hugs", whose first merges are "ug", "un", "hug"; "How are you" with
d_model = 4) and properties (shapes, similarities of a vector with itself). They name a
student's typical mistake from the outputs the grader side recorded for it on their own inputs
(``recorded/01-tokens.json``). The hidden inputs, the reference and the typical mistakes are the
grader's side, ``grading.hidden_tests.ch01_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .base import Case, Exercise, ExerciseFailure, Forbidden
from .compare import expect_close, expect_equal, fail, fmt_index, index_mismatch
from .inputs import randn

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
    torch_name_parts=frozenset({"embedding"}),  # torch._decomp's copy, torch.nn.functional's...
)
COSINE_CALLS = Forbidden(
    label="torch.nn.functional.cosine_similarity / F.normalize / nn.CosineSimilarity / "
    "F.cosine_embedding_loss (a library cosine similarity)",
    builtin_names=frozenset({"cosine_similarity", "cosine_embedding_loss"}),
    python_functions=frozenset(
        {("torch/nn/functional.py", "normalize"), ("torch/masked/_ops.py", "normalize"),
         ("torch/nn/modules/distance.py", "*")}
    ),
    source_names=frozenset({"CosineSimilarity", "CosineEmbeddingLoss"}),
    torch_name_parts=frozenset({"cosine"}),  # F.cosine_embedding_loss is 1 - cos (round 5 of the attack)
)


# --------------------------------------------------------------------------- build_vocab


def vocab_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    tokens = "the cat sat on the mat".split()
    label = "the cat sat on the mat"
    (vocab,) = call(label, tokens)
    if isinstance(vocab, dict) and UNK not in vocab:
        fail(f"the vocabulary has no entry {UNK!r}",
             f"start with {{'{UNK}': 0}} and give the tokens the ids after it.")
    expect_equal(vocab, {UNK: 0, "the": 1, "cat": 2, "mat": 3, "on": 4, "sat": 5},
                  name="vocab", what='build_vocab("the cat sat on the mat".split())',
                  seen=("build_vocab", label, (vocab,)),
                  hint="'<unk>' is 0; then the most frequent token ('the', twice); then the "
                       "others, all once, in alphabetical order.")
    label = "a tie: b a b a c"
    (vocab,) = call(label, ["b", "a", "b", "a", "c"])
    expect_equal(vocab, {UNK: 0, "a": 1, "b": 2, "c": 3}, name="vocab",
                  what="build_vocab(['b', 'a', 'b', 'a', 'c'])", seen=("build_vocab", label, (vocab,)),
                  hint="'a' and 'b' occur twice each: equally frequent tokens go in alphabetical "
                       "order, whichever came first (sort by (-count, token)).")
    label = "min_count=2"
    (vocab,) = call(label, tokens, min_count=2)
    expect_equal(vocab, {UNK: 0, "the": 1}, name="vocab",
                  what='build_vocab("the cat sat on the mat".split(), min_count=2)',
                  seen=("build_vocab", label, (vocab,)),
                  hint="keep only tokens that occur at least min_count times (count >= min_count).")
    (vocab,) = call("no tokens", [])
    expect_equal(vocab, {UNK: 0}, name="vocab", what="build_vocab([])",
                  hint="even an empty text has the unknown token.")
    return 4


BUILD_VOCAB = Exercise(
    function="build_vocab",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=vocab_visible,
    output_names=("vocab",),
    plain_values=True,
)


# --------------------------------------------------------------------------- tokens_to_ids


def ids_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    vocab = {UNK: 0, "the": 1, "cat": 2, "mat": 3, "on": 4, "sat": 5}
    label = "the dog sat on the mat"
    (ids,) = call(label, "the dog sat on the mat".split(), vocab)
    expect_equal(ids, [1, 0, 5, 4, 1, 3], name="ids",
                  what='tokens_to_ids("the dog sat on the mat".split(), vocab) with the vocabulary '
                       'of "the cat sat on the mat"', seen=("tokens_to_ids", label, (ids,)),
                  hint="one id per token; 'dog' is not in the vocabulary, so it gets the id of "
                       "'<unk>' (vocab.get(token, ...)).")
    label = "a vocabulary whose <unk> is 2"
    (ids,) = call(label, ["a", "b"], {"<pad>": 0, "a": 1, UNK: 2})
    expect_equal(ids, [1, 2], name="ids",
                  what="tokens_to_ids(['a', 'b'], {'<pad>': 0, 'a': 1, '<unk>': 2})",
                  seen=("tokens_to_ids", label, (ids,)),
                  hint="look the unknown id up, vocab['<unk>'], rather than assuming it is 0.")
    (ids,) = call("no tokens", [], vocab)
    expect_equal(ids, [], name="ids", what="tokens_to_ids([], vocab)")
    return 3


TOKENS_TO_IDS = Exercise(
    function="tokens_to_ids",
    assignment=ASSIGNMENT,
    points=1,
    visible_checks=ids_visible,
    output_names=("ids",),
    plain_values=True,
)


# --------------------------------------------------------------------------- merge_pair


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
        expect_equal(merged, expected, name="ids", what=label, hint=hint,
                      seen=("merge_pair", label, (merged,)))
    return len(examples)


MERGE_PAIR = Exercise(
    function="merge_pair",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=merge_visible,
    output_names=("ids",),
    plain_values=True,
)


# --------------------------------------------------------------------------- learn_bpe


HUGS = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5


def learn_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    u, g, n, h, a, b, c, d = (ord(ch) for ch in "ugnhabcd")
    examples = [  # (words, num_merges, what, expected, hint)
        (HUGS, 3, 'learn_bpe(words, 3) for "hug" x10, "pug" x5, "pun" x12, "bun" x4, "hugs" x5',
         [(u, g), (u, n), (h, N_BYTES)],
         "'u' 'g' occurs 20 times, so the first merge is (117, 103) -> 256; then 'u' 'n' (16 "
         "times) -> 257; then 'h' followed by the new token 256 (15 times) -> 258."),
        (["bc", "ab", "cd"], 1, "learn_bpe(['bc', 'ab', 'cd'], 1)", [(b, c)],
         "the three pairs occur once each: the one that appears first in the corpus wins (max "
         "over a dict filled in order keeps the first of equal counts), not the smallest (a, b) "
         "nor the largest (c, d)."),
        (["ababab", "cd", "cd"], 1, "learn_bpe(['ababab', 'cd', 'cd'], 1)", [(a, b)],
         "'a' 'b' occurs 3 times (all inside 'ababab'), 'c' 'd' twice: count every occurrence, "
         "not each pair once per word."),
        (["a", "b", "a", "b", "ab"], 2, "learn_bpe(['a', 'b', 'a', 'b', 'ab'], 2)", [(a, b)],
         "count pairs inside each word only, never across two words: here only 'ab' has a "
         "pair, and after merging it nothing is left, so stop early."),
        (["hello"], 0, "learn_bpe(['hello'], 0)", [], ""),
    ]
    for words, num_merges, what, expected, hint in examples:
        (merges,) = call(what, list(words), num_merges)
        expect_equal(merges, expected, name="merges", what=what, hint=hint,
                      seen=("learn_bpe", what, (merges,)))
    return len(examples)


LEARN_BPE = Exercise(
    function="learn_bpe",
    assignment=ASSIGNMENT,
    points=3,
    visible_checks=learn_visible,
    output_names=("merges",),
    plain_values=True,
    uses=("merge_pair",),
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
    label = '"How are you": ids [1234, 456, 23], d_model = 4'
    (x,) = call(label, torch.tensor(HOW_ARE_YOU_IDS), table)
    if tuple(x.shape) != (3, 4):
        raise ExerciseFailure(
            f"for 3 ids and a (2000, 4) table the vectors have shape {tuple(x.shape)}, expected "
            "(3, 4): one row of d_model = 4 numbers per token."
        )
    rows = torch.tensor(HOW_ARE_YOU_ROWS, dtype=torch.float64)
    if torch.allclose(x, rows):
        fail("you return the rows of the table as they are", "multiply them by sqrt(d_model) = sqrt(4) = 2.")
    expect_close(x, rows * 2, what='the vectors of "How are you" (ids [1234, 456, 23])',
                  hint="row i of the result is table[token_ids[i]] * sqrt(d_model), here * 2.",
                  seen=("embed_tokens", label, (x,)))
    batch = torch.tensor([[1234, 456, 23], [23, 23, 1234]])
    (x,) = call("a batch of ids (2, 3)", batch, table)
    if tuple(x.shape) != (2, 3, 4):
        raise ExerciseFailure(
            f"for ids of shape (2, 3) the vectors have shape {tuple(x.shape)}, expected "
            "(2, 3, 4) = (batch, seq, d_model): table[token_ids] keeps the ids' shape."
        )
    expect_close(x[1], torch.stack([rows[2], rows[2], rows[0]]) * 2,
                  what="the second sequence of the batch, ids [23, 23, 1234]")
    return 3


EMBED_TOKENS = Exercise(
    function="embed_tokens",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=embed_visible,
    forbidden=(EMBEDDING_CALLS,),
    shape_hint=_embed_shape_hint,
)


# --------------------------------------------------------------------------- cosine_similarity_matrix


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
    label = "a = [[1, 0], [1, 1]], b = [[2, 0], [0, 3], [-1, 0]]"
    (s,) = call(label, a, b)
    if tuple(s.shape) != (2, 3):
        hint = _cosine_shape_hint(tuple(s.shape), (2, 3), Case("", (a, b)))
        raise ExerciseFailure(
            f"for a (2, 2) and b (3, 2) the similarities have shape {tuple(s.shape)}, expected "
            f"(2, 3): one row per vector of a, one column per vector of b"
            + (f"; {hint}" if hint else ".")
        )
    if torch.allclose(s, torch.tensor([[2.0, 0.0, -1.0], [2.0, 3.0, -1.0]], dtype=torch.float64)):  # a @ bᵀ
        fail("you return the plain dot products a @ bᵀ = [[2, 0, -1], [2, 3, -1]]",
             "divide each by the lengths of the two vectors (or scale every vector to length 1 first).")
    r = 1 / math.sqrt(2)
    expect_close(s, [[1.0, 0.0, -1.0], [r, r, -r]],
                  what="cosine_similarity_matrix(a, b) for a = [[1, 0], [1, 1]], "
                       "b = [[2, 0], [0, 3], [-1, 0]]",
                  hint="[1, 0] and [2, 0] point the same way (1), [1, 0] and [0, 3] are "
                       "orthogonal (0), [1, 0] and [-1, 0] are opposite (-1), whatever their "
                       "lengths; [1, 1] is at 45 degrees to all three (±1/sqrt(2)).",
                  seen=("cosine_similarity_matrix", label, (s,)))
    zero = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    label = "a zero vector"
    (s,) = call(label, zero, b[:1])
    if torch.isnan(s).any():
        fail("a zero vector gives NaN (0 / 0)", "divide by the length clamped to at least 1e-8, "
             "norm.clamp_min(1e-8), so that a zero vector has similarity 0 with everything.")
    expect_close(s, [[0.0], [0.6]], what="similarities of [0, 0] and [3, 4] with [2, 0]",
                  hint="a zero vector has similarity 0; [3, 4] has length 5, so cos = 6 / (5 * 2).",
                  seen=("cosine_similarity_matrix", label, (s,)))
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
    expect_close(diagonal, torch.ones(2, 3), what="the similarity of each vector with itself",
                  hint="cos(x, x) = 1: normalise along the last dimension (dim=-1, keepdim=True).")
    return 5


COSINE_SIMILARITY_MATRIX = Exercise(
    function="cosine_similarity_matrix",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=cosine_visible,
    output_names=("similarity",),
    forbidden=(COSINE_CALLS,),
    shape_hint=_cosine_shape_hint,
)


# --------------------------------------------------------------------------- nearest_neighbours


def neighbours_visible(call: Callable[..., tuple]) -> int:
    __tracebackhide__ = True
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [10.0, 1.0]],
                         dtype=torch.float64)
    query = torch.tensor([1.0, 0.0], dtype=torch.float64)
    label = "query [1, 0], k = 2"
    indices, sims = call(label, query, table, 2)
    if isinstance(indices, torch.Tensor) and tuple(indices.shape) != (2,):
        raise ExerciseFailure(
            f"for one query (d,) and k = 2, indices have shape {tuple(indices.shape)}, expected "
            "(2,): one index per neighbour."
        )
    if indices.tolist() == [4, 0]:
        fail("for the query [1, 0] you return rows [4, 0]: row 4 = [10, 1] has the largest dot "
             "product only because it is long",
             "rank by cosine similarity, which ignores length: row 0 = [1, 0] points exactly the same "
             "way (similarity 1).")
    if indices.tolist() == [3, 1]:
        fail("for the query [1, 0] you return rows [3, 1], the least similar",
             "the nearest neighbours have the largest similarities (sort in descending order).")
    if indices.tolist() == [0, 2]:
        fail("for the query [1, 0] you return rows [0, 2]: row 2 = [1, 1] is the nearest by Euclidean "
             "distance, but row 4 = [10, 1] points almost the same way as [1, 0] (similarity 0.995) and "
             "row 2 is 45 degrees away (0.707)",
             "rank by cosine similarity, which ignores the lengths of the vectors.")
    seen = ("nearest_neighbours", label, (indices, sims))
    _expect_neighbours(indices, [0, 4], what="the 2 nearest rows to [1, 0]",
                       hint="row 0 = [1, 0] has similarity 1, row 4 = [10, 1] has 10/sqrt(101) ≈ 0.995.",
                       seen=seen)
    expect_close(sims, [1.0, 10 / math.sqrt(101)], what="similarities of the 2 nearest rows",
                  hint="return the cosine similarities of the neighbours, largest first.", seen=seen)
    queries = torch.tensor([[0.0, 2.0], [-3.0, 0.1], [1.0, 0.9]], dtype=torch.float64)
    label = "three queries (3, 2), k = 1"
    indices, sims = call(label, queries, table, 1)
    if tuple(indices.shape) != (3, 1) or tuple(sims.shape) != (3, 1):
        raise ExerciseFailure(
            f"for queries (3, 2) and k = 1 you return indices {tuple(indices.shape)} and "
            f"similarities {tuple(sims.shape)}, expected (3, 1) each: one row of k neighbours "
            "per query (work along the last dimension)."
        )
    _expect_neighbours(indices, [[1], [3], [2]], what="the nearest row to each of [0, 2], [-3, 0.1], [1, 0.9]",
                       hint="rank the rows by cosine similarity with each query, along the last dimension.",
                       seen=("nearest_neighbours", label, (indices, sims)))
    indices, sims = call("all 5 rows, k = 5", query, table, 5)
    if bool((sims[1:] > sims[:-1] + 1e-12).any()):
        raise ExerciseFailure(
            f"with k = 5 the similarities are {sims.tolist()}: return them in decreasing order, "
            "the most similar first."
        )
    return 4


def neighbour_words(index: tuple[int, ...], got: int, want: int) -> str:
    """"row 2: neighbour 1 is token 7, expected token 3": an index of nearest_neighbours' output."""
    row = "" if len(index) == 1 else f"row {index[0]}: " if len(index) == 2 else f"row {fmt_index(index[:-1])}: "
    return f"{row}neighbour {index[-1]} is token {got}, expected token {want}"


def _expect_neighbours(indices: torch.Tensor, expected: list, *, what: str, hint: str, seen: tuple) -> None:
    """The neighbours' indices equal ``expected``, else which one differs and the likely mistake."""
    __tracebackhide__ = True
    problem = index_mismatch(indices, torch.tensor(expected), what=what, words=neighbour_words)
    if problem:
        fail(problem, hint, seen)


NEAREST_NEIGHBOURS = Exercise(
    function="nearest_neighbours",
    assignment=ASSIGNMENT,
    points=2,
    visible_checks=neighbours_visible,
    output_names=("indices", "similarities"),
    index_outputs=("indices",),
    index_words=neighbour_words,
    uses=("cosine_similarity_matrix",),
    forbidden=(COSINE_CALLS,),
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

