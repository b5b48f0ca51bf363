"""The training task of chapter 8: English number words to digits, generated in code.

``"three hundred and forty-two thousand and five"`` -> ``"342005"``. A small model cannot copy its
way through it: it must learn what each word is worth *where it stands* ("two" is 2, 20 000 or
200 000), and fill in the zeros nobody says ("two thousand and five" has none of its three zeros). The
task needs no download (every example is made from a seeded random number) and comes with a split
whose test numbers never occur in training, so the accuracy it reports is on numbers the model has
not seen.

* :func:`number_to_words`: the English (British, with "and") words for 0 <= n < 1 000 000;
* :func:`make_task`: a seeded :class:`NumberTask`: train/validation/test numbers, disjoint, and
  the two vocabularies;
* :class:`NumberTask`: encodes a number's words as source ids with chapter 1's word tokenizer
  (:func:`~transformer_course.tokenizer.word_tokenize`,
  :func:`~transformer_course.tokenizer.tokens_to_ids`), its digits as target ids, and back.

Special ids, the same on both sides: ``PAD = 0`` (pads short sequences), ``START = 1`` (starts every
decoder input), ``END = 2`` (ends every target). Ids are plain ``list[int]``;
:func:`transformer_course.training.make_batch` pads them into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transformer_course.tokenizer import UNK, tokens_to_ids, word_tokenize

PAD, START, END = 0, 1, 2
SPECIALS = ("<pad>", "<start>", "<end>")
MAX_NUMBER = 1_000_000  # numbers 0 .. 999 999: up to 6 digits, up to 13 word tokens
SHORT_SHARE = 0.25  # of draws by length first (see draw_weights)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
DIGITS = tuple("0123456789")


def _below_hundred(n: int) -> str:
    """1 <= n < 100: "seven", "nineteen", "forty", "forty-two"."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_thousand(n: int) -> str:
    """1 <= n < 1000: "five", "three hundred", "three hundred and forty-two"."""
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_hundred(rest)
    words = f"{_ONES[hundreds]} hundred"
    return f"{words} and {_below_hundred(rest)}" if rest else words


def number_to_words(n: int) -> str:
    """The English words for ``n``, as a British speaker says them.

    ``342`` -> ``"three hundred and forty-two"``, ``342005`` -> ``"three hundred and forty-two
    thousand and five"``, ``1200`` -> ``"one thousand two hundred"``, ``0`` -> ``"zero"``.

    Raises:
        ValueError: ``n`` is not an integer in [0, 1 000 000).
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < MAX_NUMBER:
        raise ValueError(f"number_to_words takes an integer 0 <= n < {MAX_NUMBER:,}, not {n!r}")
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    parts = []
    if thousands:
        parts.append(f"{_below_thousand(thousands)} thousand")
    if rest:
        # "two thousand and five", but "two thousand three hundred": "and" only before a last part
        # without hundreds, as after "hundred".
        if thousands and rest < 100:
            parts.append("and")
        parts.append(_below_thousand(rest))
    return " ".join(parts)


def _source_vocab() -> dict[str, int]:
    """Every word token :func:`number_to_words` can produce, after the specials and ``<unk>``."""
    words = set()
    for n in (*range(1000), *range(1000, MAX_NUMBER, 1001)):  # every word and joint occurs here
        words.update(word_tokenize(number_to_words(n)))
    return {token: i for i, token in enumerate((*SPECIALS, UNK, *sorted(words)))}


@dataclass(frozen=True)
class NumberTask:
    """The numbers of each split and the two vocabularies (token -> id)."""

    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    src_vocab: dict[str, int]
    tgt_vocab: dict[str, int]

    def encode_source(self, n: int) -> list[int]:
        """``342`` -> the ids of ``["three", "hundred", "and", "forty", "-", "two"]``."""
        return tokens_to_ids(word_tokenize(number_to_words(n)), self.src_vocab)

    def encode_target(self, n: int) -> list[int]:
        """``342`` -> the ids of ``["3", "4", "2"]`` (no start or end token: make_batch adds them)."""
        return [self.tgt_vocab[d] for d in str(n)]

    def pairs(self, numbers: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """``(sources, targets)``: the encoded words and digits of ``numbers``."""
        return [self.encode_source(n) for n in numbers], [self.encode_target(n) for n in numbers]

    def decode_target(self, ids: Sequence[int]) -> str:
        """Target ids -> the digits they spell, stopping at the first ``END``; the start token and
        padding are skipped: ``[1, 6, 7, 2, 0]`` -> ``"34"`` (with "3" = 6, "4" = 7)."""
        words = {i: token for token, i in self.tgt_vocab.items()}
        out = []
        for i in ids:
            if i == END:
                break
            if i not in (PAD, START):
                out.append(words.get(int(i), "?"))
        return "".join(out)

    def source_words(self, n: int) -> list[str]:
        """The source tokens of ``n``, as the model reads them."""
        return word_tokenize(number_to_words(n))


def draw_weights(short_share: float = SHORT_SHARE) -> np.ndarray:
    """``(1 000 000,)`` float64, summing to 1: how likely :func:`make_task` draws each number.

    A mixture: with probability ``1 - short_share`` a number uniformly below one million, with
    ``short_share`` a number of 1 to 6 digits, the length first (uniformly), then the number. Drawn
    uniformly alone, nine numbers in ten have six digits and one in a thousand has three or fewer:
    a model trained on such draws never learns to stop early, and writes "seven" as 7777777.
    """
    lengths = np.array([len(str(n)) for n in range(MAX_NUMBER)])  # 1..6 digits
    per_length = np.bincount(lengths)[lengths]  # how many numbers share each number's length
    weights = (1 - short_share) / MAX_NUMBER + short_share / (6 * per_length)
    return weights / weights.sum()


def make_task(seed: int = 0, n_train: int = 50_000, n_validation: int = 1_000, n_test: int = 2_000) -> NumberTask:
    """Draw ``n_train + n_validation + n_test`` different numbers below 1 000 000 with ``seed``.

    Numbers are drawn as :func:`draw_weights` says (every length well represented), without
    repetition, then dealt at random into the three splits: they share no number, so a test source
    never occurs in training.
    """
    total = n_train + n_validation + n_test
    if min(n_train, n_validation, n_test) < 1 or total > MAX_NUMBER // 2:
        raise ValueError(f"split sizes must be >= 1 and add up to at most {MAX_NUMBER // 2:,}; got "
                         f"{n_train}, {n_validation}, {n_test}")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(MAX_NUMBER, size=total, replace=False, p=draw_weights())
    # Shuffled before dealing: the draw takes the likeliest numbers (the short ones) first.
    numbers = [int(n) for n in rng.permutation(drawn)]
    train = tuple(numbers[:n_train])
    validation = tuple(numbers[n_train:n_train + n_validation])
    test = tuple(numbers[n_train + n_validation:])
    tgt_vocab = {token: i for i, token in enumerate((*SPECIALS, *DIGITS))}
    return NumberTask(train, validation, test, _source_vocab(), tgt_vocab)
