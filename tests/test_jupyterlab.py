"""The student's path in JupyterLab, in a real browser.

JupyterLab is started as the README's environment has it (`jupyter lab notebooks/`), on 127.0.0.1
with a token, on a temporary copy of chapter 4's blank notebook, with its own configuration and
runtime folders (the user's are not touched), and driven through headless chromium
(tests/browser.py), every request that would leave the machine refused. The student:

1. opens the blank notebook and runs Run ▸ Run All Cells: every check cell says its exercise is not
   implemented yet, and the notebook runs to its last cell, which checks the whole (saved) notebook;
2. types a stable softmax into its cell and runs it and its check: "✓ softmax";
3. answers the other two exercises the same way, then swaps the softmax for `torch.softmax`: the
   check refuses it, and so do nbgrader's Validate button and the last cell's whole-notebook check.

Meanwhile no nbgrader instructor tool (its menu, Formgrader, Create Assignment, the Assignment and
Course Lists with their "Error fetching courses!") appears: the environment turns them off
(jupyter-config/, installed into the environment by `pip install -e .`), and Validate stays.

Screenshots of each step are saved under the test's temporary folder (printed at the end; `pytest -s`
shows it). Slow: about a minute (JupyterLab's start, kernels, and three whole-notebook gradings).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from browser import LAPTOP, chromium, offline_page

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "04-attention"
NOTEBOOK = "attention.ipynb"
PAGE_CONFIG = Path("labconfig", "page_config.d", "transformer_course.json")
START_TIMEOUT_S = 90
KERNEL_TIMEOUT_MS = 90_000
RUN_TIMEOUT_MS = 120_000  # Run All, or a whole-notebook check: kernel, torch, a sandboxed grading
INSTRUCTOR_ONLY = ("Nbgrader", "Formgrader", "Create Assignment", "Assignment List", "Course List",
                   "Error fetching courses", "exchange directory")

# What the student types, line by line, as at a keyboard: JupyterLab's editor indents the body
# after the `def` line itself, and closes brackets and quotes (typing the closing one steps over it).
SOFTMAX = """def softmax(x, dim=-1):
e = torch.exp(x - x.amax(dim=dim, keepdim=True))
return e / e.sum(dim=dim, keepdim=True)"""
LIBRARY_SOFTMAX = """def softmax(x, dim=-1):
return torch.softmax(x, dim=dim)"""
SCORES = """def attention_scores(q, k):
return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])"""
ATTENTION = """def scaled_dot_product_attention(q, k, v, mask=None):
scores = attention_scores(q, k) if mask is None else attention_scores(q, k).masked_fill(~mask, -math.inf)
weights = softmax(scores, dim=-1) if mask is None else softmax(scores, dim=-1).masked_fill(~mask, 0.0)
return weights @ v, weights"""


def _installed_page_config() -> Path:
    return Path(sys.prefix, "etc", "jupyter", PAGE_CONFIG)


def test_the_environment_hides_nbgrader_instructor_tools():
    """The README's environment carries jupyter-config/ (pip install -e . puts it into
    sys.prefix/etc/jupyter/), and every plugin it turns off exists in the installed nbgrader, so that a
    renamed one cannot slip back into the student's JupyterLab unnoticed."""
    shipped = REPO / "jupyter-config" / PAGE_CONFIG
    installed = _installed_page_config()
    assert installed.is_file() and installed.read_text() == shipped.read_text(), (
        f"{installed} is missing or differs from {shipped.relative_to(REPO)}: install the course again "
        f"({Path(sys.executable).parent / 'pip'} install -e {REPO})"
    )
    disabled = json.loads(shipped.read_text())["disabledExtensions"]
    from jupyter_core.paths import jupyter_path

    bundles = [p for folder in jupyter_path("labextensions")
               for p in Path(folder, "@jupyter", "nbgrader", "static").glob("*.js")]
    assert bundles, "nbgrader's JupyterLab extension is not installed"
    plugins = {f"@jupyter/nbgrader:{name}" for name in
               ("menu", "formgrader", "create-assignment", "assignment-list", "course-list",
                "validate-assignment")}
    code = "".join(p.read_text(encoding="utf-8", errors="replace") for p in bundles)
    present = {name for name in plugins if f'"{name}"' in code}
    assert set(disabled) <= present, f"not in the installed nbgrader: {sorted(set(disabled) - present)}"
    assert all(disabled.values()) and "@jupyter/nbgrader:validate-assignment" not in disabled


@dataclass
class Lab:
    url: str  # http://127.0.0.1:<port>
    token: str
    root: Path  # the folder JupyterLab serves: a copy of notebooks/04-attention/
    shots: Path  # where the screenshots go
    log: Path  # the server's log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, token: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks" / ASSIGNMENT, root)
    port, token = _free_port(), secrets.token_hex(16)
    # The server's own folders, so the user's configuration, workspaces and kernels' history stay
    # out of it; the environment's (sys.prefix) configuration is the student's and stays in.
    env = {key: value for key, value in os.environ.items() if key != "JPY_SESSION_NAME"}
    for name, folder in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
        env[name] = str(tmp / folder)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root; JupyterLab refuses that unless told
    log = tmp / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if _request(f"{url}/api/status", token) == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        shots = tmp / "screenshots"
        shots.mkdir()
        yield Lab(url, token, root, shots, log)
    finally:
        try:  # the clean way: the server stops its kernels, then itself
            _request(f"{url}/api/shutdown", token, method="POST")
        except (OSError, urllib.error.URLError):
            server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(f"\nJupyterLab screenshots: {tmp / 'screenshots'}; its log: {log}")


def _cells_by_id(path: Path) -> dict[str, int]:
    nb = nbformat.read(path, as_version=4)
    return {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}


@pytest.mark.slow
def test_a_student_runs_all_then_answers_and_checks(jupyterlab: Lab):
    from playwright.sync_api import expect

    index = _cells_by_id(jupyterlab.root / NOTEBOOK)
    functions = ["softmax", "attention_scores", "scaled_dot_product_attention"]
    leaks: list[str] = []
    with chromium() as browser:
        page = offline_page(browser, LAPTOP, leaks)
        shot = iter(range(1, 100))

        def screenshot(name: str) -> None:
            page.screenshot(path=str(jupyterlab.shots / f"{next(shot):02d}-{name}.png"))

        def output(grade_id: str):
            cell = page.locator(".jp-Notebook .jp-Cell").nth(index[grade_id])
            cell.scroll_into_view_if_needed()  # JupyterLab draws only the cells in view
            return cell.locator(".jp-OutputArea")

        def answer(grade_id: str, code: str) -> None:
            """Replace the answer cell's text as at a keyboard, then run it and its check cell."""
            editor = page.locator(".jp-Notebook .jp-Cell").nth(index[grade_id]).locator(".cm-content")
            editor.click()
            page.keyboard.press("ControlOrMeta+A")
            page.keyboard.type(code)
            first, *body = code.splitlines()
            typed = "\n".join([first, *("    " + line for line in body)])
            assert editor.inner_text() == typed, f"the editor holds {editor.inner_text()!r}, not {typed!r}"
            page.keyboard.press("Shift+Enter")  # runs the answer, selects its check cell
            page.keyboard.press("Shift+Enter")  # runs the check

        page.goto(f"{jupyterlab.url}/lab/tree/{NOTEBOOK}?token={jupyterlab.token}")
        toolbar = page.locator(".jp-NotebookPanel-toolbar")
        expect(toolbar.get_by_text("Python 3 (ipykernel)")).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
        expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
            "data-status", "idle", timeout=KERNEL_TIMEOUT_MS)
        expect(toolbar.get_by_text("Validate", exact=True)).to_be_visible()  # nbgrader's, kept for students
        screenshot("opened")

        # 1. Run All on the blank notebook reaches the last cell, the whole-notebook check.
        page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
        screenshot("run-menu")
        menu_bar = page.locator(".lm-MenuBar-content").inner_text()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
        expect(output("hand_in_check")).to_contain_text("0 / 7 points", timeout=RUN_TIMEOUT_MS)
        expect(output("hand_in_check")).to_contain_text(f"Checking {NOTEBOOK} as saved")
        screenshot("run-all-end")
        for function in functions:
            expect(output(f"test_{function}")).to_contain_text(f"`{function}` is not implemented yet")
        screenshot("run-all-check-message")

        # 2. A correct softmax, typed in and checked.
        answer("softmax", SOFTMAX)
        expect(output("test_softmax")).to_contain_text("✓ softmax", timeout=RUN_TIMEOUT_MS)
        screenshot("softmax-passes")

        # 3. The other two, then torch.softmax in place of the softmax: the check, Validate and the
        # whole-notebook check all refuse it, and only it.
        answer("attention_scores", SCORES)
        expect(output("test_attention_scores")).to_contain_text("✓ attention_scores", timeout=RUN_TIMEOUT_MS)
        answer("scaled_dot_product_attention", ATTENTION)
        expect(output("test_scaled_dot_product_attention")).to_contain_text(
            "✓ scaled_dot_product_attention", timeout=RUN_TIMEOUT_MS)
        answer("softmax", LIBRARY_SOFTMAX)
        expect(output("test_softmax")).to_contain_text("torch.softmax", timeout=RUN_TIMEOUT_MS)
        expect(output("test_softmax")).to_contain_text("check failed")
        screenshot("library-softmax-refused")

        toolbar.get_by_text("Validate", exact=True).click()  # saves the notebook, then validates it
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(dialog).to_contain_text("torch.softmax", timeout=RUN_TIMEOUT_MS)
        validated = dialog.inner_text()
        screenshot("validate")
        assert "Success" not in validated, f"nbgrader's Validate passes a library softmax:\n{validated}"
        page.keyboard.press("Escape")

        page.locator(".jp-Notebook .jp-Cell").nth(index["hand_in_check"]).click()
        page.keyboard.press("ControlOrMeta+Enter")  # runs the cell (the notebook was saved by Validate)
        expect(output("hand_in_check")).to_contain_text("5 / 7 points", timeout=RUN_TIMEOUT_MS)
        whole = output("hand_in_check").inner_text()
        screenshot("whole-notebook-check")
        assert "✗ softmax: 0 / 2" in whole and "✓ scaled_dot_product_attention: 3 / 3" in whole, whole

        shown = page.locator("body").inner_text() + menu_bar
        palette_hits = _palette(page, "nbgrader")
    instructor = [name for name in INSTRUCTOR_ONLY if name in shown or name in palette_hits]
    assert not instructor, f"nbgrader's instructor tools show in the student's JupyterLab: {instructor}"
    assert not leaks, f"JupyterLab asked the network for: {leaks}"


def _palette(page, query: str) -> str:
    """What JupyterLab's command palette lists for ``query``."""
    page.keyboard.press("Escape")
    page.keyboard.press("ControlOrMeta+Shift+C")
    search = page.locator(".lm-CommandPalette-input")
    search.fill(query)
    listed = page.locator(".lm-CommandPalette-content").inner_text()
    page.keyboard.press("Escape")
    return listed
