"""Chapter 8's notebook trains a model with the student's own pieces, as a student runs it in JupyterLab.

When a program runs the notebook (nbgrader, the other notebook tests) its training cell takes a few
steps only; JupyterLab names the notebook in ``JPY_SESSION_NAME`` and then the cell trains for real.
Here the solution notebook is run that way, and the model it trains must get most held-out numbers
right. (How long that takes is printed, and measured against its target by bench/bench_train.py.)
"""

from __future__ import annotations

import re
import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient

from course_helpers import solution_path


def _outputs(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


@pytest.mark.slow
def test_the_notebook_run_trains_a_model_that_gets_most_test_numbers_right(tmp_path, monkeypatch):
    source = solution_path("08-training")
    notebook = tmp_path / source.name
    shutil.copy(source, notebook)
    nb = nbformat.read(notebook, as_version=4)
    # The hand-in cell would grade the notebook in a sandbox: another test's business.
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "hand_in_check"]
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # as JupyterLab starts the kernel
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"the notebook, 400 training steps included, ran in {time.perf_counter() - start:.0f} s")
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "train_demo"]
    said = _outputs(cell)
    found = re.search(r"after (\d+) steps: exact match on 2000 test numbers ([\d.]+)%, token accuracy ([\d.]+)%", said)
    assert found, f"the training cell did not report its accuracy:\n{said}"
    steps, exact, token = int(found[1]), float(found[2]), float(found[3])
    assert steps == 400
    assert exact >= 90 and token >= 95, f"after 400 steps: exact match {exact}%, token accuracy {token}%"
    assert "(right: " in said  # examples shown next to the right answers


@pytest.mark.slow
def test_a_program_running_the_notebook_trains_a_few_steps_only(monkeypatch):
    """nbgrader's autograde runs every cell of every submission: the run must not cost it minutes."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = nbformat.read(solution_path("08-training"), as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "markdown" or not c.metadata.get("nbgrader", {}).get("grade")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(solution_path("08-training").parent)}}).execute()
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "train_demo"]
    assert "after 10 steps:" in _outputs(cell)
