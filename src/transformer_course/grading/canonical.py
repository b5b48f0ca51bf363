"""Reading a submitted notebook strictly, and rebuilding it from the pristine assignment.

A submission is untrusted: its JSON may be damaged or enormous, its cell metadata edited, its
test cells deleted or rewritten, its answer cells duplicated. The hardened grader therefore never
runs the submitted notebook itself. It takes the student's **answer cells** (found by their
nbgrader grade_id) and the **cells the student added**, and puts them into a pristine copy of the
assignment: the setup, the answer stubs' places and the order all come from the course. What the
student changed elsewhere is ignored, with a note; an answer that cannot be found or is ambiguous
costs that exercise only, with a message saying why.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nbformat

DAMAGED = "damaged_cell"  # metadata flag of a placeholder for a cell that could not be read
MAX_NOTEBOOK_BYTES = 20 * 1024**2  # a chapter's notebook is ~50 kB; with outputs, a few MB
# The grader parses what runs (to look for forbidden calls), and parsing costs ~450 bytes of memory
# per byte of source; so what may run is capped well below what a notebook may weigh. An answer is
# a few kB; a student's own experiments rarely pass a few dozen cells.
MAX_CELLS = 2_000  # in the notebook (a chapter's has about 40)
# JSON objects and lists (a chapter's notebook has a few hundred; with outputs, thousands): 20 MB of
# "{}" would otherwise cost the grader 4 GB to read.
MAX_CONTAINERS = 200_000
MAX_CELL_BYTES = 128 * 1024  # of one code cell's source that runs
MAX_ADDED_CELLS = 200  # code cells of the student's own that run
MAX_ADDED_BYTES = 512 * 1024  # of all those cells together


class ReadNotebook(NamedTuple):
    """A submitted file read as a notebook: the notebook (None when it cannot be read at all),
    why not, and notes on what was repaired."""

    notebook: nbformat.NotebookNode | None
    problem: str | None
    notes: list[str]


def read_notebook(path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES) -> ReadNotebook:
    """The notebook at ``path``, or why it cannot be read as one (too big, not JSON, no cells).

    A notebook that is JSON with a list of cells but breaks the notebook schema somewhere (an
    edited cell, a hand-made output) is not rejected whole: its well-formed cells are kept, the
    damaged ones left out, with a note. An answer in a damaged cell is kept as a placeholder that
    says so, so the damage costs only that exercise.
    """
    try:  # never through a link, and never a pipe or a device, which could block the grader
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        why = "a link to another file" if os.path.islink(path) else error.strerror
        return _unreadable(f"the file cannot be read as a notebook ({why})")
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _unreadable("it is not a regular file, so it cannot be a notebook")
        if info.st_size > max_bytes:
            return _unreadable(
                f"the file is {info.st_size / 1024**2:.0f} MB, more than the {max_bytes / 1024**2:.0f} MB a "
                "notebook may have: clear its outputs (Edit → Clear Outputs of All Cells), save, and submit again"
            )
        raw = f.read(max_bytes + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _unreadable("the file is not text (UTF-8): is it really a notebook?")
    if not text.strip():
        return _unreadable("the file is empty")
    containers = raw.count(b"{") + raw.count(b"[")  # each becomes a Python object, of ~100 bytes or more
    if containers > MAX_CONTAINERS:
        return _unreadable(f"the notebook's JSON holds {containers} objects and lists, far more than a notebook "
                           "has: clear its outputs (Edit → Clear Outputs of All Cells), save, and submit again")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return _unreadable(f"the file is not valid JSON ({error.msg} at line {error.lineno}): it may be damaged")
    except RecursionError:
        return _unreadable("the file is not a notebook (its JSON is nested far too deeply)")
    if not isinstance(data, dict):
        return _unreadable("the file is JSON but not a notebook")
    version = data.get("nbformat", 0)
    if not isinstance(version, int) or version < 4:
        return _unreadable(f"an old notebook format (v{version}); save it in JupyterLab first")
    if not isinstance(data.get("cells"), list):
        return _unreadable("the file is JSON but not a notebook (it has no list of cells)")
    if len(data["cells"]) > MAX_CELLS:
        return _unreadable(f"the notebook has {len(data['cells'])} cells, more than the {MAX_CELLS} a notebook "
                           "may have: is it the right file?")
    try:
        nb = nbformat.reads(text, as_version=4)  # joins multi-line sources into strings
        nbformat.validate(nb)
        return ReadNotebook(nb, None, [])
    except Exception as error:  # noqa: BLE001 - any schema problem: keep what is readable
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return _salvage(data["cells"], first[:200])


def _unreadable(problem: str) -> ReadNotebook:
    return ReadNotebook(None, problem, [])


def _salvage(cells: list, first_problem: str) -> ReadNotebook:
    """The well-formed cells of a notebook that breaks the schema, and a note on the others."""
    kept, damaged = [], []
    for position, cell in enumerate(cells, start=1):
        source = cell.get("source") if isinstance(cell, dict) else None
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if isinstance(source, str) and cell.get("cell_type") in ("code", "markdown", "raw"):
            metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
            kept.append(_cell(cell["cell_type"], source, metadata))
        else:
            grade_id = grade_id_of(cell) if isinstance(cell, dict) else None
            damaged.append(f"`{grade_id}`" if grade_id else f"number {position}")
            if grade_id:  # a placeholder, so that its exercise says "damaged", not "missing"
                kept.append(_cell("raw", "", {"nbgrader": {"grade_id": grade_id}, DAMAGED: True}))
    note = f"the notebook does not follow the notebook format ({first_problem})"
    if damaged:
        note += f"; {len(damaged)} damaged cell(s) were left out (" + ", ".join(damaged) + ")"
    note += "; the rest was graded. Opening and saving it in JupyterLab usually repairs this."
    notebook = nbformat.from_dict({"cells": kept, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    return ReadNotebook(notebook, None, [note])


def _nbgrader_metadata(cell: dict) -> dict:
    """A cell's nbgrader metadata; {} where a student's edit made it something else."""
    metadata = cell.get("metadata")
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader if isinstance(nbgrader, dict) else {}


def _cell(cell_type: str, source: str, metadata: dict) -> nbformat.NotebookNode:
    """A new, schema-valid cell (its outputs are not kept: the grader runs the code afresh)."""
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
            "raw": nbformat.v4.new_raw_cell}[cell_type]
    return make(source, metadata=metadata)


def grade_id_of(cell: dict) -> str | None:
    grade_id = _nbgrader_metadata(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) else None


def is_answer(cell: dict) -> bool:
    return _nbgrader_metadata(cell).get("solution") is True


@dataclass
class CodeCell:
    """One code cell of the canonical notebook: where it came from, and its source."""

    kind: str  # "setup" (the course's), "answer" (the student's, by grade_id) or "added" (student's own)
    grade_id: str | None
    source: str


@dataclass
class Canonical:
    """What runs: the course's setup, the student's answers and added cells, in the course's order."""

    cells: list[CodeCell]
    problems: dict[str, str] = field(default_factory=dict)  # answer grade_id -> why it is not graded
    notes: list[str] = field(default_factory=list)

    def answer(self, grade_id: str) -> str | None:
        return next((c.source for c in self.cells if c.kind == "answer" and c.grade_id == grade_id), None)


def canonicalise(submitted: nbformat.NotebookNode, pristine: nbformat.NotebookNode) -> Canonical:
    """Rebuild ``submitted`` on ``pristine`` (the student notebook as released).

    * answer cells (``solution: true``) come from the submission, found by grade_id; missing,
      duplicated or turned-into-markdown answers become ``problems`` (the pristine stub runs);
    * the course's setup code cells come from ``pristine``, whatever the submission holds;
    * code cells the student added (no grade_id of the assignment) are kept, placed after the
      assignment cell they followed, as nbgrader would run them;
    * test cells and the course's demo cells are not run: the grader checks from outside.
    """
    pristine_ids = [grade_id_of(c) for c in pristine.cells]
    known = {g for g in pristine_ids if g}
    answer_ids = {grade_id_of(c) for c in pristine.cells if is_answer(c)}
    by_id: dict[str, list[nbformat.NotebookNode]] = {}
    added_after: dict[str | None, list[str]] = {}
    previous: str | None = None
    for cell in submitted.cells:
        grade_id = grade_id_of(cell)
        if grade_id in known:
            by_id.setdefault(grade_id, []).append(cell)
            previous = grade_id
        elif cell.cell_type == "code" and cell.source.strip():
            added_after.setdefault(previous, []).append(cell.source)
    left_out = _cap_added_cells(added_after)

    canonical = Canonical(cells=[])
    changed_locked = []
    for cell, grade_id in zip(pristine.cells, pristine_ids):
        found = by_id.get(grade_id, []) if grade_id else []
        if grade_id in answer_ids:
            canonical.cells.append(CodeCell("answer", grade_id, _answer_source(grade_id, cell, found, canonical)))
        elif cell.cell_type == "code" and grade_id == "setup":
            canonical.cells.append(CodeCell("setup", grade_id, cell.source))
        if grade_id and grade_id not in answer_ids and found and cell.cell_type == "code":
            if any(_without_hidden_tests(c.source) != cell.source for c in found):
                changed_locked.append(grade_id)
        for source in added_after.get(grade_id, []):
            canonical.cells.append(CodeCell("added", None, source))
    for source in added_after.get(None, []):  # added before any assignment cell: run first
        canonical.cells.insert(0, CodeCell("added", None, source))
    if changed_locked:
        canonical.notes.append(
            "you changed the course's cell(s) " + ", ".join(f"`{g}`" for g in changed_locked)
            + "; the original version was used (only answer cells are yours to edit)"
        )
    count = sum(len(v) for v in added_after.values())
    if count:
        canonical.notes.append(f"{count} code cell(s) you added were run too, before the checks")
    if left_out:
        canonical.notes.append(
            f"{left_out} code cell(s) you added were left out: a cell may hold {MAX_CELL_BYTES // 1024} kB of "
            f"code, and your own cells {MAX_ADDED_CELLS} cells or {MAX_ADDED_BYTES // 1024} kB in all")
    return canonical


def _cap_added_cells(added_after: dict[str | None, list[str]]) -> int:
    """Leave out (in place) the added cells beyond the caps; return how many."""
    kept, size, left_out = 0, 0, 0
    for place, sources in added_after.items():
        keep = []
        for source in sources:
            if len(source) <= MAX_CELL_BYTES and kept < MAX_ADDED_CELLS and size + len(source) <= MAX_ADDED_BYTES:
                keep.append(source)
                kept += 1
                size += len(source)
            else:
                left_out += 1
        added_after[place] = keep
    return left_out


def _without_hidden_tests(source: str) -> str:
    """A test cell as the released notebook has it (a submission made from the instructor's
    source notebook still holds the hidden block; that is not a change by the student). In one
    pass: a regular expression took quadratic time on a cell of repeated BEGIN lines."""
    begin, end = "### BEGIN HIDDEN TESTS\n", "### END HIDDEN TESTS"
    kept, position = [], 0
    while (start := source.find(begin, position)) != -1:
        stop = source.find(end, start + len(begin))
        if stop == -1:
            break
        kept.append(source[position:start])
        position = stop + len(end) + (1 if source.startswith("\n", stop + len(end)) else 0)
    kept.append(source[position:])
    return "".join(kept)


def _answer_source(grade_id: str, pristine_cell, found: list, canonical: Canonical) -> str:
    """The student's answer for ``grade_id``, or the pristine stub with a recorded problem."""
    if len(found) == 1 and found[0].cell_type == "code":
        if len(found[0].source) <= MAX_CELL_BYTES:
            return found[0].source
        canonical.problems[grade_id] = (
            f"the answer cell `{grade_id}` holds {len(found[0].source) // 1024} kB of code, more than the "
            f"{MAX_CELL_BYTES // 1024} kB an answer may have (answers are a few kB): keep only your answer in it."
        )
    elif len(found) == 1 and found[0].metadata.get(DAMAGED):
        canonical.problems[grade_id] = (
            f"the answer cell `{grade_id}` is damaged in the file (it does not follow the notebook "
            "format), so it could not be read. Paste your code into that cell of a fresh copy of the "
            "notebook."
        )
    elif not found:
        canonical.problems[grade_id] = (
            f"the answer cell `{grade_id}` is missing from the notebook (deleted, or its cell "
            "metadata was changed), so there was no answer to grade. Start from a fresh copy of "
            "the notebook and paste your code into that cell."
        )
    elif len(found) > 1:
        canonical.problems[grade_id] = (
            f"the notebook has {len(found)} cells with the id `{grade_id}` (a copied cell keeps "
            "the id), so it is not clear which one is your answer. Keep exactly one and delete "
            "the copies."
        )
    else:
        canonical.problems[grade_id] = (
            f"the answer cell `{grade_id}` was changed into a {found[0].cell_type} cell; change "
            "it back to a code cell."
        )
    return pristine_cell.source
