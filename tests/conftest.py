"""Shared fixtures: the devices to test on, seeding, exact float settings on GPUs, and the book
built once per session (for tests/test_book.py and the browser tests)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from transformer_course.device import available_devices

_PRESENT = {d.type for d in available_devices()}


def _device_param(kind: str):
    """A pytest param for one device kind, marked ``gpu`` and skipped (visibly, with the
    reason) where this machine lacks it, so a CPU-only report shows what did not run."""
    marks = [] if kind == "cpu" else [pytest.mark.gpu]
    if kind not in _PRESENT:
        marks.append(pytest.mark.skip(reason=f"no {kind} device on this machine"))
    return pytest.param(torch.device(kind), marks=marks, id=kind)


# MPS exists only on macOS; elsewhere listing it would only add skips.
_KINDS = ("cpu", "cuda", "mps") if sys.platform == "darwin" else ("cpu", "cuda")


@pytest.fixture(params=[_device_param(kind) for kind in _KINDS])
def device(request) -> torch.device:
    """Every device kind: the CPU always runs, GPU cases skip (visibly) where absent."""
    return request.param


@pytest.fixture(autouse=True)
def seed_everything() -> None:
    """Each test starts from the same random state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # seeds the CPU and every CUDA/MPS generator


@pytest.fixture(autouse=True)
def no_tf32():
    """On Ampere+ GPUs float32 matmuls may use TF32 (10-bit mantissa); turn it off so a
    float32 comparison on CUDA means what it means on the CPU."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Precision(NamedTuple):
    dtype: torch.dtype
    atol: float
    rtol: float


@pytest.fixture
def precise(device: torch.device) -> Precision:
    """The most precise dtype the device supports and tolerances that fit it: float64 and
    1e-10 everywhere but Apple's MPS, which has no float64."""
    if device.type == "mps":
        return Precision(torch.float32, atol=1e-5, rtol=1e-4)
    return Precision(torch.float64, atol=1e-10, rtol=1e-10)


REPO = Path(__file__).resolve().parents[1]
BOOK_BUILD_TIMEOUT_S = 900  # generous: a cold kernel plus `import torch` per page, on a slow CI box


@pytest.fixture(scope="session")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the book once per session into a temporary folder and return its HTML folder.

    Slow (every chapter's code cells run in a fresh kernel): only tests marked ``slow`` use it.
    """
    out = tmp_path_factory.mktemp("book")
    # Jupyter Book's console script lives next to sys.executable in a venv, but not always
    # (user installs, conda); calling its entry point through this interpreter always works.
    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(REPO), "--path-output", str(out),
        "-W", "-n", "--keep-going",  # warnings are errors; nitpicky about references
    ]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=BOOK_BUILD_TIMEOUT_S,
        check=False,  # a failed build is reported below, with its log
    )
    log = result.stdout[-8000:] + "\n" + result.stderr[-8000:]
    assert result.returncode == 0, f"jupyter-book build failed:\n{log}"
    html = out / "_build" / "html"
    assert (html / "index.html").is_file(), f"index.html was not written:\n{log}"
    return html
