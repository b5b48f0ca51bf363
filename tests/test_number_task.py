"""Chapter 8's task: number words, the draw that gives every length its share, the disjoint splits,
and the batches that pick short numbers as often as long ones."""

from __future__ import annotations

import pytest
import torch

from transformer_course.number_task import (
    MAX_NUMBER,
    SHORT_SHARE,
    draw_weights,
    make_task,
    number_to_words,
)
from transformer_course.training import example_weights


@pytest.mark.parametrize(("n", "words"), [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty-two"), (100, "one hundred"),
    (305, "three hundred and five"), (1200, "one thousand two hundred"), (2005, "two thousand and five"),
    (19000, "nineteen thousand"), (342005, "three hundred and forty-two thousand and five"),
    (999999, "nine hundred and ninety-nine thousand nine hundred and ninety-nine"),
])
def test_number_words_as_a_british_speaker_says_them(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("bad", [-1, MAX_NUMBER, 3.0, True, "7"])
def test_number_words_refuse_what_they_cannot_say(bad):
    with pytest.raises(ValueError, match="0 <= n < 1,000,000"):
        number_to_words(bad)


def test_every_length_gets_its_share_of_the_draw():
    weights = draw_weights()
    assert weights.shape == (MAX_NUMBER,) and abs(weights.sum() - 1) < 1e-12
    for digits in range(1, 7):
        low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits
        assert weights[low:high].sum() >= SHORT_SHARE / 6  # drawn uniformly, 3 digits would get 0.09 %


def test_the_splits_are_disjoint_seeded_and_hold_short_numbers():
    task = make_task(seed=0)
    assert (len(task.train), len(task.validation), len(task.test)) == (50_000, 1_000, 2_000)
    assert not set(task.train) & set(task.test) and not set(task.train) & set(task.validation)
    assert not set(task.validation) & set(task.test)
    assert make_task(seed=0) == task and make_task(seed=1).test != task.test
    short = [n for n in task.test if n < 1000]
    assert len(short) >= 10, short  # the test asks for short numbers too (uniformly: 2 expected)
    assert sum(n < 1000 for n in task.train) >= 500


def test_batches_pick_each_length_as_often_as_asked():
    numbers = [7, 8, 42, 305, *range(100_000, 100_096)]  # 2 one-digit, 1 two-digit, 1 three, 96 six
    weights = example_weights(numbers, even_share=0.5)
    assert abs(float(weights.sum()) - 1) < 1e-12
    # each of the four lengths present gets 0.5 / 4 of the picks, plus its share of the uniform half
    assert float(weights[:2].sum()) == pytest.approx(0.5 / 4 + 0.5 * 2 / 100)
    assert float(weights[4:].sum()) == pytest.approx(0.5 / 4 + 0.5 * 96 / 100)
    picks = torch.multinomial(weights, 20_000, replacement=True, generator=torch.Generator().manual_seed(0))
    # the four short ones: three lengths of 0.5 / 4 each, plus 0.5 * 4 / 100 = 0.395 (uniformly: 0.04)
    assert 0.37 < float((picks < 4).double().mean()) < 0.42
