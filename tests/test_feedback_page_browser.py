"""Feedback pages as students open them: in a real browser, on a phone and on a laptop.

A small class of chapter 4 is graded for real (the hardened grader, sandboxed where bubblewrap
works): the solution, a blank notebook, a wrong softmax, and an answer whose error message is one
long unbroken word (the kind of text a tensor's repr or a path puts in a message). Each student's
feedback page is opened in chromium at 375 and 1280 px: it must fit the screen, show the score
and, for every exercise, the same message results.json holds, and load nothing from the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser import LAPTOP, PHONE, chromium, offline_page
from course_helpers import write_submission
from transformer_course.grading.batch import grade_folder
from transformer_course.grading.course import find_course_root
from transformer_course.grading.sandbox import sandbox_problem

CH04 = "04-attention"
LONG_WORD = "x" * 600

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def feedback(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The feedback folder and results.json of a real grading run of four submissions."""
    subs = tmp_path_factory.mktemp("class")
    write_submission(subs / "solution" / "attention.ipynb", CH04)
    write_submission(subs / "blank" / "attention.ipynb", CH04,
                     softmax="def softmax(x, dim=-1):\n    raise NotImplementedError()\n",
                     attention_scores="def attention_scores(q, k):\n    raise NotImplementedError()\n",
                     scaled_dot_product_attention="def scaled_dot_product_attention(q, k, v, mask=None):\n"
                                                  "    raise NotImplementedError()\n")
    write_submission(subs / "wrong" / "attention.ipynb", CH04,
                     softmax="def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)\n")
    write_submission(subs / "long" / "attention.ipynb", CH04,
                     softmax=f"def softmax(x, dim=-1):\n    raise ValueError('{LONG_WORD}')\n")
    out = tmp_path_factory.mktemp("grades")
    mode = "sandbox" if sandbox_problem() is None else "unsandboxed"
    grade_folder(find_course_root(Path(__file__)), CH04, subs, out, progress=False, mode=mode)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return out / "feedback", {s["student"]: s for s in results["students"]}


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["375px", "1280px"])
def test_feedback_pages_read_well_in_a_browser(feedback, viewport, tmp_path):
    folder, students = feedback
    assert set(students) == {"solution", "blank", "wrong", "long"}
    leaks: list[str] = []
    with chromium() as browser:
        page = offline_page(browser, viewport, leaks)
        for student, result in students.items():
            page.goto((folder / f"{result['id']}.html").as_uri())
            page.screenshot(path=str(tmp_path / f"{student}-{viewport['width']}.png"), full_page=True)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= viewport["width"], (
                f"{student}'s feedback page is {wide} px wide on a {viewport['width']} px screen")
            total = page.locator(".total").inner_text()
            assert total == f"Score: {result['total']:g} / {result['max_total']:g}", total
            shown = page.locator(".exercise pre").all_inner_texts()
            # each exercise's message, as results.json has it, is what the student reads
            assert shown == [e["message"] for e in result["exercises"]], student
            for box in page.locator(".exercise").all():
                assert box.is_visible() and box.bounding_box()["width"] <= viewport["width"]
    assert not leaks, f"feedback pages asked the network for {leaks}"
    print(f"screenshots in {tmp_path}")
    assert students["solution"]["total"] == students["solution"]["max_total"]
    assert students["blank"]["total"] == 0
    assert LONG_WORD in next(e["message"] for e in students["long"]["exercises"] if e["grade_id"] == "test_softmax")
