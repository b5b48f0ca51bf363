"""The book builds offline, with warnings as errors, and serves everything it needs itself.

One Jupyter Book build of the repository into a temporary output folder (the session fixture
`built_html` in conftest.py, shared with tests/test_book_browser.py), then checks on the HTML
it wrote. The build reads the real _config.yml and _toc.yml from the repository root, so it also
proves that the exclude patterns keep the blank student notebooks (notebooks/), the
instructor notebooks (solutions/) and any grading data out of the build.

Slow: a build from scratch executes every chapter's code cells in a fresh kernel (about 15 s
on a laptop CPU for chapter 4; expect roughly 10 s more per chapter as the book grows). Each
cell may run for at most `execute.timeout` seconds (_config.yml); keep build-time experiments
small. Skip with `pytest -m "not slow"`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "book/04-attention.html"
# Every chapter page in the table of contents (entries like "  - file: book/04-attention").
CHAPTERS = [
    line.split("file:", 1)[1].strip() + ".html"
    for line in (REPO / "_toc.yml").read_text(encoding="utf-8").splitlines()
    if line.strip().startswith("- file:")
]

SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)
LINK_HREF = re.compile(r"<link\b[^>]*\bhref=\"([^\"]+)\"", re.IGNORECASE)
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


def _local_target(page: Path, url: str) -> Path:
    """The file a relative URL on `page` points to (query string and fragment dropped)."""
    return (page.parent / urlsplit(url).path).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_has_its_generated_figures(built_html: Path, chapter: str) -> None:
    page = built_html / chapter
    assert page.is_file(), f"{chapter} was not written"
    images = IMG_SRC.findall(page.read_text(encoding="utf-8"))
    pngs = [src for src in images if src.endswith(".png")]
    # figures are drawn by code cells at build time and written as PNG files
    assert pngs, f"{chapter}: expected figures drawn at build time, found {images}"
    for src in pngs:
        target = _local_target(page, src)
        assert target.is_file(), f"{src} is referenced but was not written"
        assert target.stat().st_size > 10_000, f"{src} is suspiciously small for a figure"


@pytest.mark.slow
def test_chapter_4_has_its_three_figures(built_html: Path) -> None:
    images = IMG_SRC.findall((built_html / CHAPTER).read_text(encoding="utf-8"))
    # variance, saturation, toy heatmap
    assert len([src for src in images if src.endswith(".png")]) >= 3


@pytest.mark.slow
def test_mathjax_is_served_locally(built_html: Path) -> None:
    page = built_html / CHAPTER
    text = page.read_text(encoding="utf-8")
    assert 'class="math' in text, "the chapter should contain maths"
    mathjax = [src for src in SCRIPT_SRC.findall(text) if "mathjax" in src.lower()]
    assert mathjax, "no MathJax script on the chapter page: the maths would show as raw TeX"
    for src in mathjax:
        assert not urlsplit(src).scheme and not src.startswith("//"), (
            f"MathJax is loaded from the network: {src}"
        )
        assert _local_target(page, src).is_file(), f"{src} is referenced but was not copied"
    # the lazily loaded parts MathJax needs to draw anything: its fonts
    fonts = built_html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert any(fonts.glob("*.woff")), f"MathJax fonts missing under {fonts}"
    assert "cdn" not in text.lower(), "a CDN is mentioned on the chapter page"


@pytest.mark.slow
@pytest.mark.parametrize("page_name", ["book/intro.html", *CHAPTERS])
def test_pages_load_nothing_from_the_network(built_html: Path, page_name: str) -> None:
    text = (built_html / page_name).read_text(encoding="utf-8")
    # A stylesheet or script reached over the network would break the offline book. (Plain
    # <a href> links to other sites are allowed: they are only followed when clicked.)
    assets = SCRIPT_SRC.findall(text) + LINK_HREF.findall(text)
    remote = [url for url in assets if urlsplit(url).scheme in {"http", "https"}
              or url.startswith("//")]
    assert not remote, f"{page_name} loads assets from the network: {remote}"
