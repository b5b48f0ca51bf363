"""Chapter 1: the tokenizer, embedding and similarity references; the plain-value exercises the
framework now supports; and the messages a student gets for typical mistakes."""

from __future__ import annotations

import math
import random

import matplotlib
import pytest
import torch

from course_helpers import solution_module, student_module
from transformer_course import exercises
from transformer_course.embeddings import TokenEmbedding, embed_tokens, one_hot_embed_tokens
from transformer_course.exercises import Case, Exercise, ExerciseFailure
from transformer_course.exercises.compare import call_student, plain_mismatch
from transformer_course.grading import hidden_tests
from transformer_course.grading.hidden import grade
from transformer_course.grading.hidden_spec import HiddenTests, Mistake
from transformer_course.similarity import analogy, cosine_similarity_matrix, nearest_neighbours
from transformer_course.tokenizer import (
    UNK,
    BPETokenizer,
    WordTokenizer,
    bpe_decode,
    bpe_encode,
    build_vocab,
    ids_to_tokens,
    learn_bpe,
    merge_pair,
    pre_tokenize,
    tokens_to_ids,
    word_tokenize,
)

matplotlib.use("Agg")

CH01 = "01-tokens"


def failure(fn_name: str, module) -> str:
    """The message grading ``module``'s function gives; fails the test if grading passes."""
    with pytest.raises(ExerciseFailure) as caught:
        grade(fn_name, vars(module))
    return str(caught.value)


def test_points_and_grade_ids():
    ids = [e.grade_id for e in exercises.for_assignment(CH01)]
    assert ids == ["test_build_vocab", "test_tokens_to_ids", "test_merge_pair", "test_learn_bpe",
                   "test_embed_tokens", "test_cosine_similarity_matrix", "test_nearest_neighbours"]
    assert sum(e.points for e in exercises.for_assignment(CH01)) == 14


# ================================================================ reference: word level


def test_word_tokenize_and_vocabulary_by_hand():
    assert word_tokenize("How are you?") == ["how", "are", "you", "?"]
    vocab = build_vocab("the cat sat on the mat".split())
    assert vocab == {UNK: 0, "the": 1, "cat": 2, "mat": 3, "on": 4, "sat": 5}
    assert build_vocab(["b", "a", "b", "a", "c", "c", "c"]) == {UNK: 0, "c": 1, "a": 2, "b": 3}
    assert build_vocab("the cat sat on the mat".split(), min_count=2) == {UNK: 0, "the": 1}
    assert build_vocab([]) == {UNK: 0}
    assert build_vocab([UNK, "a"]) == {UNK: 0, "a": 1}  # the unknown token never gets two ids


def test_unknown_words_and_the_lossy_round_trip():
    vocab = build_vocab("the cat sat on the mat".split())
    ids = tokens_to_ids("the dog sat".split(), vocab)
    assert ids == [1, 0, 5]
    assert ids_to_tokens(ids, vocab) == ["the", UNK, "sat"]
    assert tokens_to_ids(["a", "b"], {"<pad>": 0, "a": 1, UNK: 2}) == [1, 2]
    tokenizer = WordTokenizer.train("The cat sat. The dog sat.")
    assert tokenizer.decode(tokenizer.encode("The zebra sat!")) == f"the {UNK} sat {UNK}"
    assert tokenizer.vocab_size == len(tokenizer.vocab)


# ================================================================ reference: byte-pair encoding


def _naive_learn_bpe(words: list[str], num_merges: int) -> list[tuple[int, int]]:
    """BPE written independently and slowly: every word every time, ties by first position."""
    pieces = [list(w.encode("utf-8")) for w in words]
    merges = []
    for step in range(num_merges):
        counts, first_seen = {}, {}
        position = 0
        for ids in pieces:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
                first_seen.setdefault(pair, position)
                position += 1
        if not counts:
            break
        best = sorted(counts, key=lambda p: (-counts[p], first_seen[p]))[0]
        new = []
        for ids in pieces:
            out, i = [], 0
            while i < len(ids):
                if ids[i:i + 2] == list(best):
                    out.append(256 + step)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new.append(out)
        pieces = new
        merges.append(best)
    return merges


def test_merge_pair_by_hand():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([7, 7, 7], (7, 7), 256) == [256, 7]
    assert merge_pair([7, 7, 7, 7], (7, 7), 256) == [256, 256]
    assert merge_pair([5, 6], [6, 5], 9) == [5, 6]  # a pair given as a list works too
    assert merge_pair([], (1, 2), 9) == []
    ids = [1, 2]
    merge_pair(ids, (1, 2), 9)
    assert ids == [1, 2]  # the input is left as it was


def test_learn_bpe_on_the_hugging_face_example():
    words = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    merges = learn_bpe(words, 3)
    assert merges == [(ord("u"), ord("g")), (ord("u"), ord("n")), (ord("h"), 256)]
    tokenizer = BPETokenizer(merges)
    assert [tokenizer.token_text(i) for i in range(256, 259)] == ["ug", "un", "hug"]


def test_learn_bpe_ties_boundaries_and_early_stop():
    assert learn_bpe(["cd", "ab"], 1) == [(ord("c"), ord("d"))]
    assert learn_bpe(["a", "b", "a", "b", "ab"], 5) == [(ord("a"), ord("b"))]
    assert learn_bpe([], 3) == [] and learn_bpe(["abc"], 0) == []


@pytest.mark.parametrize("seed", range(5))
def test_learn_bpe_agrees_with_a_naive_implementation(seed):
    rng = random.Random(seed)
    words = ["".join(rng.choice(" abcé") for _ in range(rng.randint(1, 7))) for _ in range(80)]
    assert learn_bpe(words, 25) == _naive_learn_bpe(words, 25)


def test_pre_tokenize_keeps_every_character():
    text = "How are you?  Fine,\tthanks!\n\n naïve 🙂"
    pieces = pre_tokenize(text)
    assert "".join(pieces) == text
    assert pre_tokenize("How are you?") == ["How", " are", " you", "?"]


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = "abcde ABC .,!?\n\t" + "éüß" + "日本語" + "🙂👍"
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("seed", range(5))
def test_any_text_round_trips(seed):
    rng = random.Random(seed)
    tokenizer = BPETokenizer.train(_random_text(rng, 2000), 60)
    for _ in range(20):
        text = _random_text(rng, rng.randint(0, 80))
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_encoding_reproduces_what_learning_built():
    """Encoding the training words with the learned merges gives the pieces learning ended with,
    and frequent words become single tokens."""
    text = "low lower lowest newer wider " * 5 + "low low low"
    tokenizer = BPETokenizer.train(text, 40)
    assert tokenizer.tokens(" lowest") == [" lowest"]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 3


def test_partial_characters_are_shown_as_bytes():
    tokenizer = BPETokenizer([])
    assert tokenizer.tokens("ï") == ["<0xC3>", "<0xAF>"]
    assert bpe_decode(bpe_encode("naïve 🙂", []), []) == "naïve 🙂"


# ================================================================ reference: embeddings


def test_embed_tokens_equals_token_embedding_and_one_hot(device, precise):
    torch.manual_seed(0)
    module = TokenEmbedding(11, 6).to(device, precise.dtype)
    ids = torch.randint(0, 11, (3, 5), device=device)
    table = module.embedding.weight.detach()
    expected = module(ids)
    torch.testing.assert_close(embed_tokens(ids, table), expected, atol=precise.atol, rtol=precise.rtol)
    torch.testing.assert_close(one_hot_embed_tokens(ids, table), expected, atol=precise.atol,
                               rtol=precise.rtol)
    by_torch = torch.nn.functional.embedding(ids, table) * math.sqrt(6)
    torch.testing.assert_close(embed_tokens(ids, table), by_torch, atol=precise.atol, rtol=precise.rtol)


def test_how_are_you_by_hand():
    table = torch.zeros(2000, 4, dtype=torch.float64)
    table[[1234, 456, 23]] = torch.tensor([[0.5, -0.2, 0.1, 0.9], [0.3, 0.8, -0.5, 0.0],
                                           [-0.7, 0.1, 0.4, 0.2]], dtype=torch.float64)
    x = embed_tokens(torch.tensor([1234, 456, 23]), table)
    assert x.shape == (3, 4)
    assert x.tolist() == [[1.0, -0.4, 0.2, 1.8], [0.6, 1.6, -1.0, 0.0], [-1.4, 0.2, 0.8, 0.4]]


# ================================================================ reference: similarity


def test_cosine_similarity_matrix_equals_torch(device, precise):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64).to(device, precise.dtype)
    b = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64).to(device, precise.dtype)
    expected = torch.nn.functional.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1)
    torch.testing.assert_close(cosine_similarity_matrix(a, b), expected, atol=precise.atol,
                               rtol=precise.rtol)


def test_cosine_by_hand_and_zero_vectors():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1.0, 0.0, -1.0], [r, r, -r], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(cosine_similarity_matrix(a, b), expected)


def test_nearest_neighbours_against_a_full_sort():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(30, 7, generator=gen, dtype=torch.float64)
    queries = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64)
    indices, sims = nearest_neighbours(queries, table, 4)
    assert indices.shape == sims.shape == (2, 3, 4) and indices.dtype == torch.long
    full = torch.nn.functional.cosine_similarity(queries.unsqueeze(-2), table, dim=-1)  # (2, 3, 30)
    order = torch.argsort(full, dim=-1, descending=True)[..., :4]
    assert torch.equal(indices, order)
    torch.testing.assert_close(sims, torch.gather(full, -1, order))
    # a row finds itself first, whatever its length
    indices, sims = nearest_neighbours(table[5] * 7, table, 1)
    assert indices.tolist() == [5] and abs(sims.item() - 1) < 1e-12


def test_analogy_leaves_out_the_question_words():
    words = ["man", "woman", "king", "queen"]
    table = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]])
    indices, sims = analogy(table, 0, 2, 1, k=1)  # man : king = woman : ?
    assert [words[i] for i in indices] == ["queen"] and abs(sims.item() - 1) < 1e-6


# ================================================================ the chapter's experiments


def test_named_toy_embedding_analogy_is_exact():
    from transformer_course.plotting.embeddings import named_toy_embedding

    words, dims, vectors = named_toy_embedding()
    w = {word: vectors[i] for i, word in enumerate(words)}
    assert dims == ["person", "royal", "female", "plural", "fruit"]
    assert torch.equal(w["king"] - w["man"] + w["woman"], w["queen"])


def test_counted_word_vectors_find_the_analogies():
    """The book's claim, checked: the offsets do the work (the nearest word to "woman" alone
    is not "queen"), and the gender offsets are nearly parallel."""
    from transformer_course.plotting.embeddings import count_word_vectors, toy_corpus

    corpus = toy_corpus(2000, seed=0)
    assert corpus == toy_corpus(2000, seed=0)  # deterministic
    wv = count_word_vectors(corpus)
    questions = [("man", "king", "woman", "queen"), ("boy", "prince", "girl", "princess"),
                 ("man", "boy", "king", "prince"), ("woman", "queen", "man", "king")]
    for a, b, c, want in questions:
        (index,), _ = analogy(wv.vectors, wv.index(a), wv.index(b), wv.index(c))
        assert wv.words[index] == want, (a, b, c)
    nearest_to_woman = nearest_neighbours(wv["woman"], wv.vectors, 2)[0][1].item()
    assert wv.words[nearest_to_woman] != "queen"
    unit = wv.vectors / wv.vectors.norm(dim=-1, keepdim=True)
    offsets = torch.stack([unit[wv.index(f)] - unit[wv.index(m)]
                           for m, f in [("man", "woman"), ("king", "queen"), ("boy", "girl")]])
    assert cosine_similarity_matrix(offsets, offsets).min() > 0.8


def test_embedding_scale_matches_the_formulas():
    from transformer_course.plotting.embeddings import embedding_scale

    result = embedding_scale([16, 64, 256], vocab_size=2000)
    d = result.d_models.astype(float)
    # sin² + cos² = 1 per pair of columns: a position vector has length √(d/2) exactly
    assert result.position_norm == pytest.approx((d / 2) ** 0.5, rel=1e-12)
    assert result.token_norm_unscaled == pytest.approx([1.0] * 3, rel=0.03)
    assert result.token_norm_scaled == pytest.approx(result.token_norm_unscaled * d ** 0.5, rel=1e-12)


def test_bpe_compression_starts_at_the_bytes_and_never_grows():
    from transformer_course.plotting.embeddings import bpe_compression

    merges, n_tokens = bpe_compression("the cat sat on the mat " * 20, "the cat sat", 30)
    assert n_tokens[0] == len(b"the cat sat") and merges[0] == 0
    assert all(b <= a for a, b in zip(n_tokens, n_tokens[1:]))
    assert n_tokens[-1] == 3  # "the", " cat", " sat"


def test_plots_draw():
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from transformer_course.plotting import embeddings as plots

    words, _, vectors = plots.named_toy_embedding()
    similarity = cosine_similarity_matrix(vectors, vectors)
    assert isinstance(plots.plot_similarity_matrix(similarity, words), Axes)
    assert isinstance(plots.plot_embedding_2d(vectors, words, arrows=[("man", "woman")]), Axes)
    assert isinstance(plots.plot_one_hot_lookup([1, 2], torch.randn(5, 3), ["a", "b"]), Figure)
    assert isinstance(plots.plot_embedding_scale(plots.embedding_scale([8, 16])), Axes)
    assert isinstance(plots.plot_bpe_compression(*plots.bpe_compression("ab ab", "ab", 2)), Axes)
    with pytest.raises(ValueError, match="labels"):
        plots.plot_similarity_matrix(similarity, words[:3])
    import matplotlib.pyplot as plt

    plt.close("all")


# ================================================================ the framework: plain values


def test_plain_mismatch_names_the_first_difference():
    assert plain_mismatch([1, 2], [1, 2], name="ids", what="x") is None
    assert plain_mismatch([(1, 2)], [[1, 2]], name="merges", what="x") is None  # tuple == list
    message = plain_mismatch([9, 3, 9, 259], [9, 3, 9, 257], name="ids", what="on a case")
    assert message.startswith("on a case: ids[3] is 259, expected 257")
    message = plain_mismatch(["a", "b"], ["a"], name="tokens", what="w")
    assert "tokens has 2 items, expected 1: tokens[1] = 'b' should not be there" in message
    message = plain_mismatch([1], [1, 0], name="ids", what="w")
    assert "ids[1] (expected 0) is missing" in message
    message = plain_mismatch({"a": 1}, {"a": 1, "b": 2}, name="vocab", what="w")
    assert "vocab has no entry 'b' (expected vocab['b'] = 2)" in message
    message = plain_mismatch({"a": 1, "z": 3}, {"a": 1}, name="vocab", what="w")
    assert "vocab has an entry 'z' (= 3) that should not be there" in message
    message = plain_mismatch({"a": 2}, {"a": 1}, name="vocab", what="w")
    assert "vocab['a'] is 2, expected 1" in message
    message = plain_mismatch([(97, 257)], [(97, 256)], name="merges", what="w")
    assert "merges[0][1] is 257, expected 256" in message
    assert "is a str, expected a list" in plain_mismatch("ab", ["a", "b"], name="t", what="w")


def _toy_plain_exercise(**changes) -> Exercise:
    settings = dict(
        function="toy_ids",
        assignment="toy",
        points=1,
        visible_checks=lambda call: 0,
        output_names=("ids",),
        plain_values=True,
    )
    settings.update(changes)
    return Exercise(**settings)


TOY_PLAIN_HIDDEN = HiddenTests(
    function="toy_ids",
    reference="transformer_course.tokenizer:merge_pair",
    make_cases=lambda gen: [Case("ids [1, 2, 1, 2]", ([1, 2, 1, 2], (1, 2), 5))],
    mistakes=(Mistake(lambda ids, pair, new_id: ids, "you merged nothing."),),
)


@pytest.fixture
def toy_plain(monkeypatch):
    exercise = _toy_plain_exercise()
    monkeypatch.setitem(exercises._BY_NAME, exercise.function, exercise)
    monkeypatch.setitem(hidden_tests._BY_NAME, exercise.function, TOY_PLAIN_HIDDEN)
    return exercise


def test_plain_exercise_messages(toy_plain, tmp_path):
    case = Case("ids [1, 2]", ([1, 2], (1, 2), 5))
    with pytest.raises(ExerciseFailure, match="returned a tensor for `ids`.*tolist"):
        call_student(toy_plain, lambda ids, pair, new_id: torch.tensor(ids), case)
    with pytest.raises(ExerciseFailure, match="returned None"):
        call_student(toy_plain, lambda ids, pair, new_id: None, case)
    assert call_student(toy_plain, lambda ids, pair, new_id: [new_id], case) == ([5],)

    def in_place(ids, pair, new_id):
        ids[0:2] = [new_id]
        return ids

    with pytest.raises(ExerciseFailure, match=r"changed one of its inputs in place .*\[1, 2\].*\[5\]"):
        call_student(toy_plain, in_place, case)
    assert case.args[0] == [1, 2]  # our input is untouched: the student got a copy

    lazy = student_module(tmp_path, "def toy_ids(ids, pair, new_id):\n    return list(ids)\n")
    message = failure("toy_ids", lazy)
    assert "`ids` on ids [1, 2, 1, 2]: ids[0] is 1, expected 5" in message
    assert "Likely mistake: you merged nothing." in message
    good = student_module(tmp_path, "def toy_ids(ids, pair, new_id):\n    return [5, 5]\n")
    grade("toy_ids", vars(good))


def test_index_outputs_must_be_integer_and_are_exempt_from_the_dtype_rule(monkeypatch):
    exercise = exercises.get("nearest_neighbours")
    table = torch.randn(5, 3, dtype=torch.float32)
    case = Case("query (3,)", (table[0], table, 2))
    indices, sims = call_student(exercise, nearest_neighbours, case)
    assert indices.dtype == torch.long and sims.dtype == torch.float32

    def swapped(query, table, k):
        return torch.topk(cosine_similarity_matrix(query[None], table)[0], k)  # (values, indices)

    with pytest.raises(ExerciseFailure, match=r"`indices` has dtype torch.float32.*order indices, "
                                              r"similarities"):
        call_student(exercise, swapped, case)


# ================================================================ messages for student code


def test_ties_by_first_appearance_are_named(tmp_path):
    code = """
from collections import Counter
def build_vocab(tokens, min_count=1):
    vocab = {"<unk>": 0}
    for token, count in Counter(tokens).most_common():
        if count >= min_count:
            vocab[token] = len(vocab)
    return vocab
"""
    message = failure("build_vocab", student_module(tmp_path, code))
    assert "vocab['mat'] is 5, expected 3" in message and "alphabetical order" in message


def test_merging_in_place_is_reported(tmp_path):
    code = """
def merge_pair(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids
"""
    message = failure("merge_pair", student_module(tmp_path, code))
    assert "changed one of its inputs in place" in message and "build a new list" in message


def test_a_tensor_of_ids_is_told_to_be_a_list(tmp_path):
    code = """
import torch
def tokens_to_ids(tokens, vocab):
    return torch.tensor([vocab.get(t, vocab["<unk>"]) for t in tokens])
"""
    assert "return plain Python values" in failure("tokens_to_ids", student_module(tmp_path, code))


def test_merges_as_lists_are_fine(tmp_path):
    code = """
def learn_bpe(words, num_merges):
    pieces = [list(w.encode("utf-8")) for w in words]
    merges = []
    for step in range(num_merges):
        counts = {}
        for ids in pieces:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=counts.get)
        pieces = [merge_pair(ids, best, 256 + step) for ids in pieces]
        merges.append(list(best))
    return merges
"""
    module = solution_module(tmp_path, CH01, learn_bpe=code)
    grade("learn_bpe", vars(module))


def test_returning_topk_as_it_comes_names_the_order(tmp_path):
    code = """
import torch
def nearest_neighbours(query, table, k):
    return torch.topk(cosine_similarity_matrix(query.unsqueeze(-2), table).squeeze(-2), k)
"""
    message = failure("nearest_neighbours", solution_module(tmp_path, CH01, nearest_neighbours=code))
    assert "`indices` has dtype torch.float64" in message and "(indices, similarities)" not in message
    assert "order indices, similarities" in message


def test_ranking_by_euclidean_distance_is_named(tmp_path):
    code = """
import torch
def nearest_neighbours(query, table, k):
    distance = (query.unsqueeze(-2) - table).norm(dim=-1)
    order = torch.argsort(distance, dim=-1)[..., :k]
    similarity = cosine_similarity_matrix(query.unsqueeze(-2), table).squeeze(-2)
    return order, torch.gather(similarity, -1, order)
"""
    message = failure("nearest_neighbours", solution_module(tmp_path, CH01, nearest_neighbours=code))
    assert "rows [0, 2]" in message and "Euclidean distance" in message


@pytest.mark.parametrize(
    "name, code, phrases",
    [
        ("tokens_to_ids", "def tokens_to_ids(tokens, vocab):\n    return [vocab.get(t, 0) for t in tokens]\n",
         ["tokens_to_ids(['a', 'b'], {'<pad>': 0, 'a': 1, '<unk>': 2}): ids[1] is 0, expected 2",
          "Likely mistake: unknown tokens get id 0"]),
        ("embed_tokens", "import math\ndef embed_tokens(token_ids, table):\n"
                         "    return table[token_ids] / math.sqrt(table.shape[-1])\n",
         ['the vectors of "How are you"', "Likely mistake: you divided by sqrt(d_model)"]),
        ("cosine_similarity_matrix", "def cosine_similarity_matrix(a, b):\n"
                                     "    return a / a.norm(dim=-1, keepdim=True) @ b.transpose(-2, -1)\n",
         ["cosine_similarity_matrix(a, b) for a = [[1, 0], [1, 1]]", "Likely mistake: you normalised a but not b"]),
    ],
    ids=["unknown id 0", "embedding divided", "cosine of a only"],
)
def test_the_visible_checks_name_the_recorded_mistakes(tmp_path, name, code, phrases):
    """The visible checks name a typical mistake from its outputs on their own inputs, recorded by
    the grader side: the message is the visible check's (its worked example), with the mistake."""
    message = failure(name, student_module(tmp_path, code))
    for phrase in phrases:
        assert phrase in message, message


def test_one_hot_times_table_and_topk_are_allowed(tmp_path):
    embed = """
import math, torch
def embed_tokens(token_ids, table):
    one_hot = torch.nn.functional.one_hot(token_ids, table.shape[0]).to(table.dtype)
    return one_hot @ table * math.sqrt(table.shape[1])
"""
    grade("embed_tokens", vars(student_module(tmp_path, embed)))
    sort = """
import torch
def nearest_neighbours(query, table, k):
    s = cosine_similarity_matrix(query.unsqueeze(-2), table).squeeze(-2)
    values, indices = torch.sort(s, dim=-1, descending=True)
    return indices[..., :k], values[..., :k]
"""
    grade("nearest_neighbours", vars(solution_module(tmp_path, CH01, nearest_neighbours=sort)))


def test_each_exercise_is_graded_with_the_reference_in_place_of_earlier_ones(tmp_path):
    broken = {
        "merge_pair": "def merge_pair(ids, pair, new_id):\n    return list(ids)\n",
        "cosine_similarity_matrix": "def cosine_similarity_matrix(a, b):\n    return a @ b.transpose(-2, -1)\n",
    }
    module = solution_module(tmp_path, CH01, **broken)
    failure("merge_pair", module)
    failure("cosine_similarity_matrix", module)
    grade("learn_bpe", vars(module))
    grade("nearest_neighbours", vars(module))


FORBIDDEN = {
    ("embed_tokens", "F.embedding"): (
        "import math, torch.nn.functional as F\n"
        "def embed_tokens(token_ids, table):\n"
        "    return F.embedding(token_ids, table) * math.sqrt(table.shape[-1])\n"
    ),
    ("embed_tokens", "nn.Embedding"): (
        "import math, torch\n"
        "def embed_tokens(token_ids, table):\n"
        "    layer = torch.nn.Embedding.from_pretrained(table)\n"
        "    return layer(token_ids) * math.sqrt(table.shape[-1])\n"
    ),
    ("embed_tokens", "reference"): (
        "from transformer_course.embeddings import TokenEmbedding\n"
        "def embed_tokens(token_ids, table):\n    return TokenEmbedding(1, 1)(token_ids)\n"
    ),
    ("cosine_similarity_matrix", "F.cosine_similarity"): (
        "import torch.nn.functional as F\n"
        "def cosine_similarity_matrix(a, b):\n"
        "    return F.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1)\n"
    ),
    ("cosine_similarity_matrix", "F.normalize"): (
        "import torch.nn.functional as F\n"
        "def cosine_similarity_matrix(a, b):\n"
        "    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-2, -1)\n"
    ),
    ("cosine_similarity_matrix", "nn.CosineSimilarity"): (
        "import torch\n"
        "def cosine_similarity_matrix(a, b):\n"
        "    return torch.nn.CosineSimilarity(dim=-1)(a.unsqueeze(-2), b.unsqueeze(-3))\n"
    ),
    ("nearest_neighbours", "F.cosine_similarity"): (
        "import torch\n"
        "def nearest_neighbours(query, table, k):\n"
        "    s = torch.cosine_similarity(query.unsqueeze(-2), table, dim=-1)\n"
        "    values, indices = torch.topk(s, k)\n"
        "    return indices, values\n"
    ),
    ("learn_bpe", "reference"): (
        "import importlib\n"
        "def learn_bpe(words, num_merges):\n"
        "    return importlib.import_module('transformer_' + 'course.tokenizer').learn_bpe(words, num_merges)\n"
    ),
    ("build_vocab", "reference"): (
        "from transformer_course import tokenizer\n"
        "def build_vocab(tokens, min_count=1):\n    return tokenizer.build_vocab(tokens, min_count)\n"
    ),
}


@pytest.mark.parametrize("name, how", list(FORBIDDEN), ids=[f"{n}-{h}" for n, h in FORBIDDEN])
def test_forbidden_calls_earn_nothing(tmp_path, name, how):
    message = failure(name, student_module(tmp_path, FORBIDDEN[name, how]))
    assert "earns no points" in message


def test_what_the_book_says_about_the_toy_corpus():
    """The claims book/01-tokens.md makes in prose about outputs it prints, checked here so that
    a change in the corpus or the code cannot silently make the text wrong."""
    from transformer_course.plotting.embeddings import bpe_compression, count_word_vectors, toy_corpus

    sentences = toy_corpus(2000, seed=0)
    corpus = "\n".join(sentences)
    tokenizer = BPETokenizer.train(corpus, num_merges=150)
    assert [tokenizer.token_text(256 + i) for i in range(3)] == ["he", "the", " s"]
    assert {" oldest", " playing"} <= {tokenizer.token_text(256 + i) for i in range(140, 150)}
    pieces = tokenizer.tokens("the youngest queens played in their castles")
    assert [" queen", "s", " play", "ed"] == pieces[3:7]
    assert tokenizer.tokens("naïvely 🙂")[2:4] == ["<0xC3>", "<0xAF>"]

    test_text = " ".join(toy_corpus(100, seed=1))
    n_merges, n_tokens = bpe_compression(corpus, test_text, max_merges=250)
    assert n_merges[-1] < 250 and n_tokens[-1] == len(test_text.split())  # one token per word

    learned = count_word_vectors(sentences, dim=12)
    indices, sims = nearest_neighbours(learned["king"], learned.vectors, k=2)
    assert learned.words[indices[1]] == "queen"
    indices, sims = nearest_neighbours(learned["castle"], learned.vectors, k=2)
    assert learned.words[indices[1]] == "palace" and sims[1] > 0.995
    indices, _ = nearest_neighbours(learned["played"], learned.vectors, k=3)
    assert {learned.words[i] for i in indices[1:]} == {"plays", "playing"}
