"""Reading submissions strictly and rebuilding them on the pristine assignment (chapter 4's
real notebooks, edited the way students and hostile submissions edit them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest

from course_helpers import answer_sources, release_path
from transformer_course.grading.canonical import (
    MAX_ADDED_CELLS,
    MAX_CELL_BYTES,
    MAX_CELLS,
    MAX_CONTAINERS,
    canonicalise,
    grade_id_of,
    read_notebook,
)

CH04 = "04-attention"
MAX = 1024**2


@pytest.fixture
def pristine():
    return nbformat.read(release_path(CH04), as_version=4)


@pytest.fixture
def solved(pristine):
    """What a student hands in: the released notebook with every answer cell filled in."""
    nb = copy.deepcopy(pristine)
    answers = answer_sources(CH04)
    for c in nb.cells:
        if grade_id_of(c) in answers:
            c.source = answers[grade_id_of(c)]
    return nb


def cell(nb, grade_id):
    (found,) = [c for c in nb.cells if grade_id_of(c) == grade_id]
    return found


def test_an_honest_submission_keeps_its_answers_and_the_course_setup(pristine, solved):
    canonical = canonicalise(solved, pristine)
    assert canonical.problems == {} and canonical.notes == []
    assert [c.kind for c in canonical.cells] == ["setup", "answer", "answer", "answer"]
    assert canonical.answer("softmax") == cell(solved, "softmax").source


def test_edits_to_course_cells_are_undone_with_a_note(pristine, solved):
    cell(solved, "setup").source = "import os\nos.system('rm -rf /')\n"
    cell(solved, "test_softmax").source = "pass  # tests deleted"
    canonical = canonicalise(solved, pristine)
    assert canonical.cells[0].source == cell(pristine, "setup").source
    assert "`setup`" in canonical.notes[0] and "`test_softmax`" in canonical.notes[0]
    assert canonical.problems == {}


def test_a_deleted_answer_cell_costs_only_its_exercise(pristine, solved):
    solved.cells = [c for c in solved.cells if grade_id_of(c) != "attention_scores"]
    canonical = canonicalise(solved, pristine)
    assert set(canonical.problems) == {"attention_scores"}
    assert "missing" in canonical.problems["attention_scores"]
    assert "NotImplementedError" in canonical.answer("attention_scores")  # the stub runs instead
    assert canonical.answer("softmax") == cell(solved, "softmax").source


def test_a_duplicated_answer_cell_is_ambiguous(pristine, solved):
    index = solved.cells.index(cell(solved, "softmax"))
    solved.cells.insert(index + 1, copy.deepcopy(solved.cells[index]))
    canonical = canonicalise(solved, pristine)
    assert set(canonical.problems) == {"softmax"} and "2 cells with the id `softmax`" in canonical.problems["softmax"]


def test_an_answer_turned_into_markdown_is_named(pristine, solved):
    cell(solved, "softmax").cell_type = "markdown"
    del cell(solved, "softmax")["outputs"], cell(solved, "softmax")["execution_count"]
    assert "changed into a markdown cell" in canonicalise(solved, pristine).problems["softmax"]


def test_cells_the_student_added_run_after_the_cell_they_followed(pristine, solved):
    index = solved.cells.index(cell(solved, "softmax"))
    solved.cells.insert(index + 1, nbformat.v4.new_code_cell("def helper(x):\n    return x\n"))
    solved.cells.insert(0, nbformat.v4.new_code_cell("import numpy as np"))
    solved.cells.append(nbformat.v4.new_markdown_cell("my notes"))
    canonical = canonicalise(solved, pristine)
    kinds = [(c.kind, c.grade_id) for c in canonical.cells]
    assert kinds[:4] == [("added", None), ("setup", "setup"), ("answer", "softmax"), ("added", None)]
    assert "2 code cell(s) you added" in canonical.notes[0]


def test_the_wrong_assignment_has_every_answer_missing(pristine):
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    canonical = canonicalise(other, pristine)
    assert set(canonical.problems) == {"softmax", "attention_scores", "scaled_dot_product_attention"}


@pytest.mark.parametrize("content, phrase", [
    (b"", "the file is empty"),
    (b'{"cells": [', "not valid JSON"),
    (b"[1, 2, 3]", "JSON but not a notebook"),
    (b"\xff\xfe\x00binary", "not text"),
    (b'{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}', "old notebook format"),
])
def test_unreadable_files_get_a_clear_reason(tmp_path, content, phrase):
    path = tmp_path / "s.ipynb"
    path.write_bytes(content)
    nb, problem, _ = read_notebook(path, MAX)
    assert nb is None and phrase in problem


def test_an_oversized_notebook_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.ipynb"
    data = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="y" * (2 * MAX))])])
    path.write_text(json.dumps(data))
    read, problem, _ = read_notebook(path, MAX)
    assert read is None and "Clear Outputs" in problem


def _write_json(tmp_path, nb) -> Path:
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_a_schema_error_in_one_cell_costs_only_that_exercise(tmp_path, pristine, solved):
    """nbgrader aborts a whole batch on such a notebook; here the damaged cell is left out."""
    data = json.loads(nbformat.writes(solved))
    for c in data["cells"]:
        if grade_id_of(c) == "softmax":
            c["execution_count"] = "seven"  # not an integer: breaks the schema
            c["source"] = 42  # and no source to read
        if grade_id_of(c) == "attention_scores":
            c["outputs"] = [{"output_type": "made-up"}]  # breaks the schema, source still readable
    nb, problem, notes = read_notebook(_write_json(tmp_path, data), MAX)
    nbformat.validate(nb)  # what is kept is a valid notebook (plain nbgrader can run it)
    assert problem is None and len(notes) == 1
    assert "does not follow the notebook format" in notes[0] and "`softmax`" in notes[0]
    canonical = canonicalise(nb, pristine)
    assert set(canonical.problems) == {"softmax"} and "is damaged in the file" in canonical.problems["softmax"]
    assert canonical.answer("attention_scores") == cell(solved, "attention_scores").source


@pytest.mark.parametrize("nbgrader", ["garbage", None, ["list"], {"grade_id": 7, "solution": "yes"}])
def test_edited_nbgrader_metadata_costs_only_that_answer(pristine, solved, nbgrader):
    cell(solved, "attention_scores").metadata["nbgrader"] = nbgrader
    canonical = canonicalise(solved, pristine)
    assert set(canonical.problems) == {"attention_scores"}
    assert canonical.answer("softmax") == cell(solved, "softmax").source


def test_json_that_is_not_a_notebook_is_refused(tmp_path):
    nb, problem, _ = read_notebook(_write_json(tmp_path, {"nbformat": 4, "cells": "none"}), MAX)
    assert nb is None and "no list of cells" in problem


def test_a_notebook_breaking_the_schema_outside_its_cells_is_read_with_a_note(tmp_path, solved):
    data = json.loads(nbformat.writes(solved))
    data["extra"] = 1
    nb, problem, notes = read_notebook(_write_json(tmp_path, data), MAX)
    assert problem is None and len(nb.cells) == len(solved.cells)
    assert "does not follow the notebook format" in notes[0] and "damaged" not in notes[0]


def test_an_answer_cell_too_big_to_be_an_answer_costs_its_exercise(pristine, solved):
    """The grader parses what runs, at ~450 bytes of memory per byte: a 6 MB cell (a list of three
    million zeros) would cost gigabytes. An answer over the cap is not run, with a message."""
    cell(solved, "softmax").source = "_big = [" + "0," * (MAX_CELL_BYTES // 2 + 1) + "]\n"
    canonical = canonicalise(solved, pristine)
    assert "kB of code, more than" in canonical.problems["softmax"]
    assert set(canonical.problems) == {"softmax"}


def test_the_students_own_cells_are_capped_with_a_note(pristine, solved):
    many = [nbformat.v4.new_code_cell(f"x{i} = {i}") for i in range(MAX_ADDED_CELLS + 5)]
    big = nbformat.v4.new_code_cell("_big = [" + "0," * (MAX_CELL_BYTES // 2 + 1) + "]")
    solved.cells = solved.cells + many + [big]
    canonical = canonicalise(solved, pristine)
    added = [c for c in canonical.cells if c.kind == "added"]
    assert len(added) == MAX_ADDED_CELLS and not canonical.problems
    assert any("6 code cell(s) you added were left out" in n for n in canonical.notes), canonical.notes


def test_a_notebook_of_too_many_cells_is_refused_before_it_is_validated(tmp_path, solved):
    solved.cells = solved.cells + [nbformat.v4.new_code_cell("pass") for _ in range(MAX_CELLS)]
    nbformat.write(solved, tmp_path / "many.ipynb")
    nb, problem, _ = read_notebook(tmp_path / "many.ipynb")
    assert nb is None and "cells, more than" in problem


def test_a_notebook_of_millions_of_empty_objects_is_refused_before_it_is_parsed(tmp_path, solved):
    """20 MB of "{}" under the size cap would cost the grader 4 GB to parse (third round of the
    attack): the objects are counted first."""
    data = json.loads(nbformat.writes(solved))
    data["metadata"]["junk"] = [{}] * (MAX_CONTAINERS + 1)
    (tmp_path / "junk.ipynb").write_text(json.dumps(data), encoding="utf-8")
    nb, problem, _ = read_notebook(tmp_path / "junk.ipynb")
    assert nb is None and "objects and lists" in problem


def test_a_course_cell_of_repeated_markers_is_compared_in_linear_time(pristine, solved):
    """A regular expression took quadratic time on a locked cell of repeated BEGIN lines (third
    round of the attack: minutes of the grader's time, holding every other student's)."""
    import time

    cell(solved, "test_softmax").source = "### BEGIN HIDDEN TESTS\n" * 200_000
    start = time.perf_counter()
    canonical = canonicalise(solved, pristine)
    assert time.perf_counter() - start < 2
    assert any("test_softmax" in note for note in canonical.notes)
