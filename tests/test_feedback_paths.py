"""One feedback path: the notebook's check, `transformer-course check` and the feedback page say
the same thing for the same code (issue 12).

Per chapter, a few student notebooks (the release notebook with every answer filled in, some of
them wrong: the wrong answers of ``tests/wrong_answers``, the chapter's forbidden shortcut and
more of the registry's typical mistakes written as a student would) go three ways, for real:

* executed top to bottom with nbclient, as a student runs them: each check cell's error output;
* `transformer-course check <notebook>`, one run per notebook (sandboxed where bubblewrap works);
* `transformer-course grade` on all of the chapter's notebooks at once: each feedback page.

Each exercise must get the same verdict and, where it fails, the same message on all three (the
page adds a header and HTML escaping, nothing else). One difference is legitimate: a right answer
that calls a wrong one of the same notebook fails in the notebook, where it runs the student's own
earlier function, and passes in grading, where the reference takes that function's place; the
notebook then says so ("your `softmax`, which ... calls, fails its own check").
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_helpers import ROOT, answer_sources, release_path
from transformer_course import exercises
from transformer_course.grading.canonical import grade_id_of
from transformer_course.grading.sandbox import sandbox_problem
from wrong_answers import by_assignment

MODE = [] if sandbox_problem() is None else ["--unsandboxed"]
CHAPTERS = by_assignment()
FORBIDDEN = "forbidden"  # in a plan: the chapter's forbidden shortcut


def wrong(assignment: str, function: str) -> str:
    return CHAPTERS[assignment].WRONG[function][0]


# More typical mistakes of the registry, as a student would write them (and the faults of issue 12).
EXTRA = {
    "build_vocab": (  # no unknown token
        "def build_vocab(tokens, min_count=1):\n"
        "    counts = Counter(tokens)\n"
        "    kept = sorted((t for t in counts if counts[t] >= min_count), key=lambda t: (-counts[t], t))\n"
        "    return {t: i for i, t in enumerate(kept)}\n"),
    "tokens_to_ids": "def tokens_to_ids(tokens, vocab):\n    return [vocab.get(t, 0) for t in tokens]\n",
    "embed_tokens": "def embed_tokens(token_ids, table):\n    return table[token_ids] / math.sqrt(table.shape[-1])\n",
    # the global maximum: rows far below it underflow to 0 / 0 (fault 4)
    "softmax": "def softmax(x, dim=-1):\n    e = torch.exp(x - x.max())\n    return e / e.sum(dim=dim, keepdim=True)\n",
    # .T on a batched tensor: it raises, and the message quotes the line (fault 2)
    "attention_scores": "def attention_scores(q, k):\n    return q @ k.T / math.sqrt(q.shape[-1])\n",
}


def _replaced(assignment: str, function: str, old: str, new: str) -> str:
    source = answer_sources(assignment)[function]
    assert old in source, (function, old)
    return source.replace(old, new)


def extra(assignment: str, function: str) -> str:
    """A typical mistake written into the solution's own answer (a one-line change)."""
    if function == "QKVProjection":  # k and v swapped
        return _replaced(assignment, function, "return self.q_proj(x), self.k_proj(x), self.v_proj(x)",
                         "return self.q_proj(x), self.v_proj(x), self.k_proj(x)")
    if function == "FeedForward":  # the activation after the second layer passed its visible check (fault 7)
        return _replaced(assignment, function, "return self.linear2(hidden)",
                         "return self.activation(self.linear2(self.linear1(x)))")
    if function == "MultiHeadAttention":  # kdim and vdim ignored (fault 5)
        return _replaced(assignment, function, "kdim or d_model", "d_model").replace("vdim or d_model", "d_model")
    if function == "DecoderLayer":  # the cross-attention's keys from the decoder (fault 3)
        return _replaced(assignment, function, "self.cross_attn(h, memory, memory, memory_mask)",
                         "self.cross_attn(h, h, memory, memory_mask)")
    if function == "learning_rate":  # float32 arithmetic: the rates are float32
        return _replaced(assignment, function, "step = step.double()", "step = step.float()")
    return EXTRA[function]


# Per chapter, the notebooks: {function: "wrong" | "forbidden" | "extra"}; the other answers are right.
# In one notebook no wrong answer calls another wrong one (exercise.uses), but for forbidden
# shortcuts, which are refused before they run, and for calls whose difference the test allows.
PLANS: dict[str, list[dict[str, str]]] = {
    "01-tokens": [
        {"build_vocab": "wrong", "tokens_to_ids": "wrong", "merge_pair": "wrong", "embed_tokens": "wrong",
         "cosine_similarity_matrix": "wrong"},
        # nearest_neighbours' own mistake, next to a cosine similarity that is forbidden but right (fault 1)
        {"learn_bpe": "wrong", "nearest_neighbours": "wrong", "cosine_similarity_matrix": FORBIDDEN,
         "build_vocab": "extra", "tokens_to_ids": "extra", "embed_tokens": "extra"},
    ],
    "02-positions": [
        {"sinusoidal_encoding": "wrong", "add_positions": "wrong", "position_similarity": "wrong"},
        {"permutation_experiment": "wrong", "LearnedPositionalEmbedding": "wrong", "position_similarity": FORBIDDEN},
    ],
    "03-qkv": [
        {"QKVProjection": "wrong", "score_matrix": "wrong", "soft_lookup": FORBIDDEN},
        {"hard_lookup": "wrong", "soft_lookup": "wrong", "QKVProjection": "extra"},
    ],
    "04-attention": [
        {"softmax": "wrong", "attention_scores": "wrong"},
        # attention's own mistake next to a softmax that is forbidden but right (fault 1)
        {"scaled_dot_product_attention": "wrong", "softmax": FORBIDDEN},
        {"softmax": "extra", "attention_scores": "extra"},
    ],
    "05-multihead": [
        {"split_heads": "wrong", "merge_heads": "wrong", "MultiHeadAttention": FORBIDDEN},
        {"MultiHeadAttention": "wrong"},
    ],
    "06-masking": [
        {"causal_mask": "wrong", "padding_mask": "wrong", "combine_masks": "wrong"},
        {"masked_self_attention": "wrong", "causal_mask": FORBIDDEN},
    ],
    "07-encoder-decoder": [
        {"FeedForward": "wrong", "transformer_forward": "wrong", "greedy_decode": "wrong", "beam_search": "wrong"},
        {"EncoderLayer": "wrong", "DecoderLayer": "wrong"},
        # a FeedForward whose mistake now fails its own check, and the right EncoderLayer that calls
        # it: the notebook says so (fault 7); a forbidden DecoderLayer is refused before it runs
        {"FeedForward": "extra", "DecoderLayer": FORBIDDEN},
    ],
    "08-training": [
        # make_batch and train_step, right, call the wrong teacher_forcing and label_smoothed_loss
        {"teacher_forcing": "wrong", "label_smoothed_loss": "wrong", "learning_rate": "wrong",
         "sequence_accuracy": "wrong"},
        # a wrong train_step calling a label_smoothed_loss that is forbidden but right: its own message
        {"make_batch": "wrong", "train_step": "wrong", "label_smoothed_loss": FORBIDDEN, "learning_rate": "extra"},
    ],
}


def answer(assignment: str, function: str, kind: str) -> str:
    if kind == FORBIDDEN:
        name, source = CHAPTERS[assignment].FORBIDDEN
        assert name == function
        return source
    return wrong(assignment, function) if kind == "wrong" else extra(assignment, function)


def student_notebook(assignment: str, plan: dict[str, str]) -> nbformat.NotebookNode:
    """The release notebook, every answer cell filled in: the solution's, or the plan's."""
    nb = nbformat.read(release_path(assignment), as_version=4)
    sources = answer_sources(assignment)
    sources.update({f: answer(assignment, f, kind) for f, kind in plan.items()})
    for cell in nb.cells:
        grade_id = grade_id_of(cell)
        if grade_id in sources and cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell.source = sources[grade_id]
    return nb


# --------------------------------------------------------------------------- the three paths

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def in_the_notebook(path: Path) -> dict[str, tuple[str, str]]:
    """Execute the notebook; per exercise, ("passed", "") or ("failed", the check cell's message)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    found = {}
    for cell in nb.cells:
        exercise = exercises.by_grade_id(grade_id_of(cell) or "")
        if exercise is None:
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if not errors:
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert "visible checks passed" in text, (exercise.function, text)
            found[exercise.function] = ("passed", "")
            continue
        (error,) = errors
        assert error.ename == "ExerciseFailure", (exercise.function, error.ename, error.evalue)
        shown = [ANSI.sub("", line) for line in error.traceback]
        assert shown[0] == "✗ check failed" and "\n".join(shown[1:]) == error.evalue, shown  # the message alone
        found[exercise.function] = ("failed", error.evalue)
    return found


HEADER = re.compile(r"^([✓✗]) (\S+): [\d.]+ / [\d.]+$")


def from_check(path: Path) -> dict[str, tuple[str, str]]:
    """`transformer-course check <notebook>`: per exercise, its verdict and message."""
    run = subprocess.run([sys.executable, "-m", "transformer_course", "check", str(path), *MODE],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    found: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in run.stdout.splitlines():
        header = HEADER.match(line)
        if header:
            current = header[2]
            found[current] = ("passed" if header[1] == "✓" else "failed", [])
        elif current and line.startswith("    "):
            found[current][1].append(line[4:])
        else:
            current = None
    return {name: (verdict, "\n".join(lines)) for name, (verdict, lines) in found.items()}


PAGE = re.compile(r'<div class="exercise (\w+)">\s*<div class="head"><span>(.*?)</span><span>.*?</span></div>'
                  r'\s*(?:<pre>(.*?)</pre>)?', re.S)


def from_page(page: Path) -> dict[str, tuple[str, str]]:
    """A feedback page from `grade`: per exercise, its verdict and message (unescaped)."""
    found = {}
    for status, title, message in PAGE.findall(page.read_text(encoding="utf-8")):
        verdict = "passed" if status == "passed" else "failed"
        found[html.unescape(title)] = (verdict, html.unescape(message) if verdict == "failed" else "")
    return found


def graded(assignment: str, submissions: Path, out: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "transformer_course", "grade", assignment, str(submissions),
                          "--out", str(out), "--quiet", "--jobs", "1", *MODE], capture_output=True, text=True, cwd=ROOT,
                         timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]


TIMES: dict[str, float] = {}


@pytest.fixture(scope="module", params=[pytest.param(a, marks=pytest.mark.slow) for a in sorted(PLANS)])
def chapter(request, tmp_path_factory):
    """A chapter's notebooks through the three paths, two at a time: (assignment, plans, notebook
    verdicts, check's verdicts, the pages' verdicts), each a list with one dict per notebook."""
    assignment = request.param
    plans = PLANS[assignment]
    folder = tmp_path_factory.mktemp(assignment)
    submissions, out = folder / "submissions", folder / "grades"
    submissions.mkdir()
    paths = []
    for index, plan in enumerate(plans):
        path = submissions / f"nb{index}" / release_path(assignment).name
        path.parent.mkdir()
        nbformat.write(student_notebook(assignment, plan), path)
        paths.append(path)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        grading = pool.submit(graded, assignment, submissions, out)
        checks = [pool.submit(from_check, p) for p in paths]
        notebooks = [pool.submit(in_the_notebook, p) for p in paths]
        grading.result()
        checked = [c.result() for c in checks]
        executed = [n.result() for n in notebooks]
    TIMES[assignment] = time.perf_counter() - start
    pages = [from_page(out / "feedback" / f"nb{index}.html") for index in range(len(plans))]
    return assignment, plans, executed, checked, pages


def _wrong_ones_it_calls(function: str, plan: dict[str, str]) -> list[str]:
    """The wrong answers of ``plan`` that ``function`` builds on."""
    return [name for name in exercises.get(function).uses if plan.get(name) in ("wrong", "extra")]


def test_every_plan_is_a_real_submission(chapter):
    assignment, plans, *_ = chapter
    functions = {e.function for e in exercises.for_assignment(assignment)}
    for plan in plans:
        assert set(plan) <= functions
    covered = {f for plan in plans for f, kind in plan.items() if kind == "wrong"}
    assert covered == set(CHAPTERS[assignment].WRONG), "every wrong answer of tests/wrong_answers"
    assert any(plan.get(CHAPTERS[assignment].FORBIDDEN[0]) == FORBIDDEN for plan in plans)


def test_the_notebook_check_and_the_feedback_page_say_the_same(chapter):
    assignment, plans, executed, checked, pages = chapter
    for index, plan in enumerate(plans):
        for exercise in exercises.for_assignment(assignment):
            name = exercise.function
            where = f"{assignment} notebook {index}, {name}"
            notebook, cli, page = executed[index][name], checked[index][name], pages[index][name]
            assert cli == page, f"{where}: `check` and the feedback page differ:\n{cli}\n---\n{page}"
            if plan.get(name):  # a wrong or forbidden answer fails everywhere, with one message
                assert page[0] == "failed", f"{where}: the grader passed {plan[name]} code"
            earlier = _wrong_ones_it_calls(name, plan)
            if earlier and notebook != page:
                # The one legitimate difference: graded with correct ones in their place, it passes.
                assert page == ("passed", ""), f"{where}: {page}"
                assert any(notebook[1].startswith(f"your `{e}`, which `{name}` calls, fails its own check: fix it "
                                                  "first") for e in earlier), f"{where}: {notebook[1]}"
                continue
            assert notebook == page, (f"{where}: the notebook and the grader differ:\n"
                                      f"notebook: {notebook}\ngrader:   {page}")


EXPECTED = {  # what the faults of issue 12 now say, on all three paths
    ("01-tokens", 1, "cosine_similarity_matrix"): "earns no points",
    ("04-attention", 1, "softmax"): "`softmax` calls torch.softmax / Tensor.softmax / F.softmax",
    ("04-attention", 2, "softmax"): "Likely mistake: you subtract the maximum of the whole tensor (x.max())",
    ("04-attention", 2, "attention_scores"): "in your line: return q @ k.T / math.sqrt(q.shape[-1])\n"
                                             "  Likely mistake: on a batched tensor, .T reverses *every* dimension",
    ("07-encoder-decoder", 2, "FeedForward"): "Likely mistake: the activation goes between the two linear layers, "
                                              "not after linear2",
    ("07-encoder-decoder", 2, "EncoderLayer"): "your `FeedForward`, which `EncoderLayer` calls, fails its own check",
    ("08-training", 0, "make_batch"): "your `teacher_forcing`, which `make_batch` calls, fails its own check",
    ("08-training", 0, "train_step"): "your `label_smoothed_loss`, which `train_step` calls, fails its own check",
    ("08-training", 1, "learning_rate"): "has dtype torch.float32, expected torch.float64.\n  Hint: compute in "
                                         "float64: step.double()",
}


def test_the_faults_of_issue_12_are_named(chapter):
    assignment, plans, executed, checked, pages = chapter
    for (chapter_name, index, function), phrase in EXPECTED.items():
        if chapter_name == assignment:
            assert phrase in executed[index][function][1], (function, executed[index][function])
            if not phrase.startswith("your `"):  # (the grader checks it with the reference in place)
                assert phrase in pages[index][function][1], (function, pages[index][function])


def test_the_wrong_answers_fail_with_their_phrase(chapter):
    """The phrase tests/wrong_answers names for each wrong answer is in its message everywhere."""
    assignment, plans, executed, checked, pages = chapter
    for index, plan in enumerate(plans):
        for function, kind in plan.items():
            phrase = CHAPTERS[assignment].WRONG[function][1] if kind == "wrong" else (
                "earns no points" if kind == FORBIDDEN else None)
            if phrase:
                assert phrase in pages[index][function][1], (function, pages[index][function])


def test_timing(chapter):
    """Not a check: how long each chapter's three paths took (printed with -s)."""
    assignment = chapter[0]
    print(f"\n{assignment}: {len(chapter[1])} notebooks through the three paths in {TIMES[assignment]:.0f} s")


# --------------------------------------------------------------------------- fast: in this process

NOTEBOOK_CELL = """
import sys, types, linecache
{setup}
namespace = vars(sys.modules["__main__"])
for name, source in {cells!r}.items():  # as IPython runs cells: each one's lines in linecache, no file
    filename = f"<cell {{name}}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
try:
    check({function!r}, namespace[{function!r}])
except Exception as failure:
    print("FAILED:" + str(failure))
"""


def notebook_check(assignment: str, function: str, **replace: str) -> str:
    """check() on the cells' code in a fresh process, as a notebook runs it: its message, or ''."""
    from course_helpers import setup_source

    cells = {**answer_sources(assignment), **replace}
    code = NOTEBOOK_CELL.format(setup=setup_source(assignment), cells=cells, function=function)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.partition("FAILED:")[2].rstrip("\n")


@pytest.mark.parametrize("assignment, function, phrase", [
    ("05-multihead", "MultiHeadAttention", "`k_proj` takes 8 input features where 6 come in: build it as "
     "nn.Linear(6, 8).\n  Likely mistake: you ignore kdim and vdim"),  # fault 5
    ("07-encoder-decoder", "DecoderLayer", "in your line: output, _ = self.cross_attn(h, h, memory, memory_mask)"
     "  # (batch, T, d_model)\n  Likely mistake: the cross-attention takes its keys or its values from x"),  # fault 3
])
def test_a_mistake_that_raises_is_named_as_the_grader_names_it(tmp_path, assignment, function, phrase):
    """The notebook's check (a fresh process running the cells) and grading (--nbgrader's grade(),
    in this process) give one message, which names the typical mistake that raises the same way."""
    from course_helpers import solution_module
    from transformer_course.exercises import ExerciseFailure
    from transformer_course.grading.hidden import grade

    source = extra(assignment, function)
    message = notebook_check(assignment, function, **{function: source})
    assert phrase in message, message
    with pytest.raises(ExerciseFailure) as caught:
        grade(function, vars(solution_module(tmp_path, assignment, **{function: source})))
    assert str(caught.value) == message


@pytest.mark.parametrize("source, how", [
    ("def cosine_similarity_matrix(a, b):\n"
     "    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-2, -1)\n", "F.normalize"),
    ("def cosine_similarity_matrix(a, b):\n"
     "    n = torch.nn.functional.normalize\n    return n(a, dim=-1) @ n(b, dim=-1).transpose(-2, -1)\n", "aliased"),
    ("def cosine_similarity_matrix(a, b):\n"
     "    f = getattr(torch.nn.functional, 'norm' + 'alize')\n    return f(a, dim=-1) @ f(b, dim=-1).mT\n", "hidden"),
])
def test_the_notebook_check_refuses_a_library_call_with_the_graders_message(source, how):
    """Fault 1: F.normalize in cosine_similarity_matrix showed "all visible checks passed" and
    earned 0. Now the check looks as the grader does, at the cell and while it runs."""
    cell = "import torch.nn.functional as F\n" + source
    message = notebook_check("01-tokens", "cosine_similarity_matrix", cosine_similarity_matrix=cell)
    assert message.startswith("`cosine_similarity_matrix` calls torch.nn.functional.cosine_similarity / "
                              "F.normalize") and "earns no points" in message, message
    # nearest_neighbours, built on it, keeps passing where cosine_similarity_matrix writes the call
    # itself: it is that function's, not nearest_neighbours' (the grader puts a correct one in its
    # place). A call whose name is hidden in pieces is excused nowhere: from inside an earlier
    # function an answer could make any library call run for it (tests/test_hostile.py, "laundered").
    later = notebook_check("01-tokens", "nearest_neighbours", cosine_similarity_matrix=cell)
    if how == "hidden":
        assert later.startswith("`nearest_neighbours` calls torch.nn.functional.cosine_similarity"), later
    else:
        assert later == ""


def test_indices_are_named_not_measured():
    """Fault 6: a wrong neighbour is a different token, not a distance of 4."""
    import torch

    from transformer_course.exercises import Case, ExerciseFailure
    from transformer_course.grading.hidden import compare_with_reference

    case = Case("three queries (3, 4), k = 2", (torch.zeros(3, 4), torch.zeros(9, 4), 2))
    similarities = torch.zeros(3, 2, dtype=torch.float64)
    expected = (torch.tensor([[0, 1], [2, 3], [4, 3]]), similarities)
    with pytest.raises(ExerciseFailure) as caught:
        compare_with_reference(exercises.get("nearest_neighbours"), (torch.tensor([[0, 1], [2, 3], [4, 7]]),
                                                                     similarities), expected, case)
    assert str(caught.value).startswith("`indices` on three queries (3, 4), k = 2: row 2: neighbour 1 is token 7, "
                                        "expected token 3 (1 of 6 entries differ)")
    for function in ("greedy_decode", "beam_search"):
        exercise = exercises.get(function)
        assert exercise.index_words is not None and exercise.index_outputs
    assert all(e.index_words is not None for e in exercises.ALL if e.index_outputs)
