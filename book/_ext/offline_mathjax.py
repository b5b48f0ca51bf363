"""Serve MathJax from the built book itself, so the maths renders with no network.

Sphinx loads MathJax from a CDN by default: a reader who is offline (or behind a strict proxy)
then sees raw TeX. The MathJax files themselves come from a pip package listed in
requirements.txt, ``sphinx-mathjax-offline``, which vendors MathJax 3.2.2 under
``sphinx-mathjax-offline/static/mathjax`` (we use only its files, not its Sphinx extension,
which would copy all 24 MB of MathJax builds where 7 MB suffice).

This extension

1. points ``mathjax_path`` at ``_static/mathjax/tex-chtml.js`` (unless the book sets its own),
2. after a successful HTML build, copies into ``_build/html/_static/mathjax/`` the one combined
   build we load and the files it fetches lazily: the CommonHTML fonts, the TeX extensions that
   ``autoload`` pulls in (``\\boldsymbol``, ``\\cancel``, ...), and the menu and accessibility
   parts (``ui``, ``a11y``, ``sre``).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.ext.mathjax import MATHJAX_URL
from sphinx.util import logging

logger = logging.getLogger(__name__)

# The pip package that ships MathJax; its import name is the same, hyphens and all.
MATHJAX_PACKAGE = "sphinx-mathjax-offline"
ENTRY_POINT = "tex-chtml.js"  # TeX in, CommonHTML out; includes the menu and assistive MathML
# What tex-chtml.js loads on demand, relative to the MathJax root.
LAZY_PARTS = ["output/chtml", "input/tex", "ui", "a11y", "sre"]
TARGET = "mathjax"  # under _static/


def mathjax_source() -> Path:
    """The folder of the installed package's MathJax files (the one holding tex-chtml.js)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError(
            f"offline_mathjax: the package {MATHJAX_PACKAGE!r} is not installed; it ships the "
            "MathJax files the book serves itself. Install the course requirements: "
            "pip install -r requirements.txt"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    if not (root / ENTRY_POINT).is_file():
        raise ExtensionError(f"offline_mathjax: {root / ENTRY_POINT} is missing")
    return root


def use_local_mathjax(app: Sphinx, config: Config) -> None:
    """Point mathjax_path at the local copy, unless the book chose a MathJax of its own."""
    mathjax_source()  # fail early, with a clear message, when the package is missing
    if config.mathjax_path in (MATHJAX_URL, "", None):
        config.mathjax_path = f"{TARGET}/{ENTRY_POINT}"


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy the MathJax files into the HTML output's _static folder."""
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / TARGET
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ENTRY_POINT, target / ENTRY_POINT)
    for part in LAZY_PARTS:
        shutil.copytree(source / part, target / part, dirs_exist_ok=True)
    logger.info("offline_mathjax: copied MathJax from %s to %s", source, target)


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
