"""Tokens (chapter 1): from text to token ids, and back.

A model cannot read text; it reads integers, one per *token*. Two tokenizers, from simple to
realistic:

* **Word level.** Cut text into lowercase words and punctuation (:func:`word_tokenize`), give
  every word seen often enough an id (:func:`build_vocab`), and map every other word to one
  *unknown* token ``<unk>`` (:func:`tokens_to_ids`, :func:`ids_to_tokens`). Easy to read, but
  a word that was not in the training text comes back as ``<unk>``: it is lost.
  :class:`WordTokenizer` puts the steps together.
* **Byte-pair encoding (BPE).** Start from the 256 possible bytes of UTF-8 text, and learn
  *merges* from a corpus: again and again, replace the most frequent adjacent pair of tokens by
  a new token (:func:`learn_bpe`, :func:`merge_pair`). Frequent words become one token, rare
  words split into a few known pieces, and since every text is a sequence of bytes, every text
  round-trips: ``bpe_decode(bpe_encode(text, merges), merges) == text``, whatever the text.
  This is the subword BPE of Sennrich, Haddow and Birch (2016) on bytes instead of characters,
  as in GPT-2 (Radford et al. 2019). :class:`BPETokenizer` puts the steps together.

Ids are plain Python ``list[int]`` here; chapter 1's embedding lookup turns a tensor of them
into vectors (:func:`transformer_course.embeddings.embed_tokens`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

UNK = "<unk>"  # the unknown token: stands for every word the vocabulary does not know
N_BYTES = 256  # BPE's first 256 token ids are the bytes 0..255; merge i makes token 256 + i

# Word level: a run of letters, digits or underscores, or a single other non-space character.
_WORD = re.compile(r"\w+|[^\w\s]")
# BPE pre-tokenization: a word with the space before it, a run of punctuation with the space
# before it, or any other whitespace. Every character matches one of the three, so the pieces
# joined together give the text back exactly.
_PIECE = re.compile(r" ?\w+| ?[^\w\s]+|\s+")


# --------------------------------------------------------------------------------------------
# Word level: a vocabulary with an unknown token
# --------------------------------------------------------------------------------------------


def word_tokenize(text: str) -> list[str]:
    """Cut ``text`` into lowercase words and punctuation marks.

    ``"How are you?"`` -> ``["how", "are", "you", "?"]``. Spaces are dropped and case is
    folded, so this direction loses information: the tokens do not give the text back.
    """
    return _WORD.findall(text.lower())


def build_vocab(tokens: Sequence[str], min_count: int = 1) -> dict[str, int]:
    """A vocabulary: a dict from token to id, with the unknown token first.

    ``"<unk>"`` gets id 0. Then every token that occurs at least ``min_count`` times gets the
    next id, the most frequent first; tokens equally frequent are put in alphabetical order,
    so the same tokens always give the same vocabulary.

    Args:
        tokens: the training text as tokens, e.g. ``word_tokenize(text)``.
        min_count: rarer tokens get no id of their own (they will be read as ``"<unk>"``).

    Returns:
        ``{token: id}`` with ids ``0, 1, ..., len(vocab) - 1``.
    """
    counts = Counter(tokens)
    kept = [token for token, count in counts.items() if count >= min_count and token != UNK]
    kept.sort(key=lambda token: (-counts[token], token))  # most frequent first, ties A to Z
    vocab = {UNK: 0}
    for token in kept:
        vocab[token] = len(vocab)
    return vocab


def tokens_to_ids(tokens: Sequence[str], vocab: dict[str, int]) -> list[int]:
    """The id of each token; a token the vocabulary does not know gets the id of ``"<unk>"``.

    ``tokens_to_ids(["the", "dog"], {"<unk>": 0, "the": 1})`` -> ``[1, 0]``.
    """
    unknown = vocab[UNK]
    return [vocab.get(token, unknown) for token in tokens]


def ids_to_tokens(ids: Iterable[int], vocab: dict[str, int]) -> list[str]:
    """The token of each id: the inverse of :func:`tokens_to_ids` (unknown words stay ``<unk>``)."""
    token_of = {i: token for token, i in vocab.items()}
    return [token_of[int(i)] for i in ids]


@dataclass
class WordTokenizer:
    """A word-level tokenizer: :func:`word_tokenize`, then a vocabulary with ``<unk>``."""

    vocab: dict[str, int]

    @classmethod
    def train(cls, text: str, min_count: int = 1) -> WordTokenizer:
        """A tokenizer whose vocabulary holds the words of ``text`` seen ``min_count`` times."""
        return cls(build_vocab(word_tokenize(text), min_count))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """``text`` -> token ids, unknown words as the id of ``<unk>``."""
        return tokens_to_ids(word_tokenize(text), self.vocab)

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> the tokens joined by spaces (case, spacing and unknown words are lost)."""
        return " ".join(ids_to_tokens(ids, self.vocab))


# --------------------------------------------------------------------------------------------
# Byte-pair encoding
# --------------------------------------------------------------------------------------------


def pre_tokenize(text: str) -> list[str]:
    """Cut ``text`` into the pieces that BPE merges never cross.

    Each piece is a word with the space before it, a run of punctuation with the space before
    it, or other whitespace: ``"How are you?"`` -> ``["How", " are", " you", "?"]``. Merges
    stay inside a piece, so a token never glues the end of one word to the start of the next
    (GPT-2 splits text the same way, with a longer pattern). ``"".join(pieces) == text``.
    """
    return _PIECE.findall(text)


def merge_pair(ids: Sequence[int], pair: Sequence[int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Occurrences do not overlap: in ``[7, 7, 7]`` the pair ``(7, 7)`` occurs once, at the start,
    giving ``[new_id, 7]``. ``ids`` itself is left unchanged.

    Args:
        ids: a sequence of token ids.
        pair: the two ids ``(first, second)`` to merge.
        new_id: the id of the merged token.

    Returns:
        A new list, shorter by the number of merged occurrences.
    """
    first, second = pair
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == first and ids[i + 1] == second:
            merged.append(new_id)
            i += 2  # both ids are used up: occurrences never overlap
        else:
            merged.append(ids[i])
            i += 1
    return merged


def learn_bpe(words: Sequence[str], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` BPE merges from a corpus cut into words.

    Each word starts as its UTF-8 bytes (ids 0..255). Then, ``num_merges`` times: count every
    pair of adjacent ids inside a word (never across two words), over the whole corpus; take
    the most frequent pair, the one that appears first in the corpus if several are equally
    frequent; replace it everywhere by a new id (256 for the first merge, 257 for the next,
    ...). Stop early when no word has two ids left.

    Args:
        words: the training text cut into pieces, e.g. ``pre_tokenize(text)``.
        num_merges: how many merges to learn at most.

    Returns:
        The merges in the order learned: merge ``i`` is a pair ``(first, second)`` of ids that
        becomes id ``256 + i``.
    """
    # Each distinct word once, with how often it occurs: the same counts, far less work.
    # (Counter keeps the order of first appearance, which the tie rule below relies on.)
    word_counts = Counter(words)
    pieces = [list(word.encode("utf-8")) for word in word_counts]
    frequency = list(word_counts.values())
    merges: list[tuple[int, int]] = []
    for step in range(num_merges):
        pair_counts: dict[tuple[int, int], int] = {}  # in order of first appearance
        for ids, count in zip(pieces, frequency):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + count
        if not pair_counts:
            break  # every word is a single token: nothing left to merge
        best = max(pair_counts, key=pair_counts.get)  # max keeps the first of equal counts
        pieces = [merge_pair(ids, best, N_BYTES + step) for ids in pieces]
        merges.append(best)
    return merges


def apply_merges(ids: Sequence[int], merges: Sequence[Sequence[int]]) -> list[int]:
    """Apply the learned merges to one word's ids, in the order they were learned.

    Merge ``i`` can only use tokens made by earlier merges, so applying them in order gives
    the same tokens as learning did.
    """
    ids = list(ids)
    for rank, pair in enumerate(merges):
        if len(ids) < 2:
            break
        ids = merge_pair(ids, pair, N_BYTES + rank)
    return ids


def bpe_encode(text: str, merges: Sequence[Sequence[int]]) -> list[int]:
    """``text`` -> BPE token ids: each piece of :func:`pre_tokenize` as bytes, then the merges."""
    cache: dict[str, list[int]] = {}  # a word that comes back is encoded once
    ids: list[int] = []
    for piece in pre_tokenize(text):
        if piece not in cache:
            cache[piece] = apply_merges(piece.encode("utf-8"), merges)
        ids.extend(cache[piece])
    return ids


def token_bytes(merges: Sequence[Sequence[int]]) -> list[bytes]:
    """The bytes each token id stands for: ids 0..255 are single bytes, ``256 + i`` is merge i."""
    table = [bytes([b]) for b in range(N_BYTES)]
    for first, second in merges:
        table.append(table[first] + table[second])
    return table


def bpe_decode(ids: Iterable[int], merges: Sequence[Sequence[int]]) -> str:
    """BPE token ids -> text. ``bpe_decode(bpe_encode(text, merges), merges) == text``.

    Ids made by :func:`bpe_encode` always give valid UTF-8; any other sequence of ids may cut
    a character in half, and such bytes are shown as the replacement character ``�``.
    """
    table = token_bytes(merges)
    return b"".join(table[int(i)] for i in ids).decode("utf-8", errors="replace")


@dataclass
class BPETokenizer:
    """A byte-level BPE tokenizer: :func:`pre_tokenize`, bytes, then the learned merges."""

    merges: list[tuple[int, int]]
    _bytes: list[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._bytes = token_bytes(self.merges)

    @classmethod
    def train(cls, text: str, num_merges: int) -> BPETokenizer:
        """Learn ``num_merges`` merges (or fewer, see :func:`learn_bpe`) from ``text``."""
        return cls(learn_bpe(pre_tokenize(text), num_merges))

    @property
    def vocab_size(self) -> int:
        """256 byte tokens plus one token per merge."""
        return N_BYTES + len(self.merges)

    def encode(self, text: str) -> list[int]:
        return bpe_encode(text, self.merges)

    def decode(self, ids: Iterable[int]) -> str:
        return bpe_decode(ids, self.merges)

    def token_text(self, token_id: int) -> str:
        """What one token looks like as text.

        A token that holds only part of a character (``"ï"`` is the two bytes C3 AF in UTF-8)
        is not text on its own; it is shown by its bytes, ``"<0xC3>"``.
        """
        data = self._bytes[int(token_id)]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{b:02X}>" for b in data)

    def tokens(self, text: str) -> list[str]:
        """``text`` cut into its tokens, as strings: ``["How", " are", " you", "?"]``."""
        return [self.token_text(i) for i in self.encode(text)]
