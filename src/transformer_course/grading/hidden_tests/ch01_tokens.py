"""Chapter 1, grader side: references, hidden inputs and typical mistakes.

The typical mistakes are written as code (a vocabulary without '<unk>', a merge that does not skip
the second id of a pair, BPE counted across word boundaries, neighbours ranked by the plain dot
product, ...) so that a message can name the one a student made; several of them are one argument
away from the right answer (``_merge``, ``_learn`` and ``_neighbours`` with their default knobs are
the right algorithms). That is why this module lives on the grader's side: it is never imported by
the student side or inside the grading sandbox. The visible checks name these mistakes from their
outputs recorded on the visible inputs (``exercises/recorded/01-tokens.json``).
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from ...exercises.base import Case
from ...exercises.ch01_tokens import HOW_ARE_YOU_IDS, N_BYTES, UNK
from ...exercises.compare import fmt_index, fmt_number
from ...exercises.inputs import randn, with_float32
from ..hidden_spec import HiddenTests, Mistake


def _words(gen: torch.Generator, vocabulary: list[str], n: int) -> list[str]:
    """``n`` tokens drawn from ``vocabulary``, the first ones far more often (like real text)."""
    weights = 1.0 / torch.arange(1, len(vocabulary) + 1, dtype=torch.float64)  # Zipf's law
    picks = torch.multinomial(weights, n, replacement=True, generator=gen)
    return [vocabulary[i] for i in picks.tolist()]


_ANIMALS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "to", "big", "red", "fox",
            "and", "hat", "The", ".", ","]


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
                "you left out the unknown token: start the vocabulary with {'<unk>': 0} and give the "
                "tokens the ids after it, so that a token not in the vocabulary has an id too."),
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


COSINE_SIMILARITY_MATRIX_HIDDEN = HiddenTests(
    function="cosine_similarity_matrix",
    reference="transformer_course.similarity:cosine_similarity_matrix",
    make_cases=cosine_cases,
    mistakes=(
        Mistake(lambda a, b: a @ b.transpose(-2, -1),
                "these are the plain dot products a · b: divide each by the lengths of the two vectors, "
                "|a| |b| (or scale every vector to length 1 first)."),
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


def _neighbours(query, table, k, *, score=None, largest: bool = True):
    """nearest_neighbours with knobs that reproduce typical mistakes."""
    if score is None:
        score = lambda q, t: _unit(q) @ _unit(t).T  # noqa: E731 - cosine, the right score
    values = score(query.unsqueeze(-2), table).squeeze(-2)  # (..., vocab)
    order = torch.argsort(values, dim=-1, descending=largest)[..., :k]
    return order, torch.gather(values, -1, order)


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


HIDDEN_TESTS = (
    BUILD_VOCAB_HIDDEN,
    TOKENS_TO_IDS_HIDDEN,
    MERGE_PAIR_HIDDEN,
    LEARN_BPE_HIDDEN,
    EMBED_TOKENS_HIDDEN,
    COSINE_SIMILARITY_MATRIX_HIDDEN,
    NEAREST_NEIGHBOURS_HIDDEN,
)
