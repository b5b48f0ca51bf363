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

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

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


# --------------------------------------------------------------------------------------------
# The way from a chapter to its exercises (book/_ext/exercise_box.py)
# --------------------------------------------------------------------------------------------


def _extension(name: str):
    """A local Sphinx extension of the book, imported from book/_ext by path."""
    spec = importlib.util.spec_from_file_location(f"book_ext_{name}", REPO / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(chapter: str) -> str:
    """book/04-attention.html -> 04-attention, the chapter's folder under notebooks/."""
    return Path(chapter).stem


def test_launch_links_are_off_by_default() -> None:
    """The committed _config.yml configures no launch service: the default book stays offline."""
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    box = _extension("exercise_box")
    links = box.launch_links(config.get("launch_buttons") or {}, (config.get("repository") or {}).get("url", ""),
                             "main", "notebooks/04-attention/attention.ipynb")
    assert links == [], f"launch links in the default build: {links}"


def test_launch_links_open_the_student_notebook() -> None:
    box = _extension("exercise_box")
    launch = {"jupyterhub_url": "https://hub.example.edu/", "binderhub_url": "https://mybinder.org",
              "colab_url": "https://colab.research.google.com"}
    links = dict(box.launch_links(launch, "https://github.com/org/course.git", "main",
                                  "notebooks/04-attention/attention.ipynb"))
    assert links["JupyterHub"] == (
        "https://hub.example.edu/hub/user-redirect/git-pull?repo=https%3A//github.com/org/course"
        "&branch=main&urlpath=lab/tree/course/notebooks/04-attention/attention.ipynb")
    assert links["Binder"] == ("https://mybinder.org/v2/gh/org/course/main"
                               "?urlpath=lab/tree/notebooks/04-attention/attention.ipynb")
    assert links["Colab"] == ("https://colab.research.google.com/github/org/course/blob/main/"
                              "notebooks/04-attention/attention.ipynb")


def test_a_launch_link_needs_the_repository() -> None:
    box = _extension("exercise_box")
    with pytest.raises(Exception, match="repository.url"):
        box.launch_links({"binderhub_url": "https://mybinder.org"}, "", "main", "notebooks/x/x.ipynb")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_its_exercise_box(chapter: str) -> None:
    """Each chapter page places the box of its own notebook, and the notebook describes every
    exercise the registry lists for it (the box reads names and points from the registry, and
    signatures and summaries from the notebook's answer cells)."""
    from transformer_course.exercises import for_assignment

    folder = _folder(chapter)
    source = (REPO / chapter).with_suffix(".md").read_text(encoding="utf-8")
    assert f"```{{exercises}} {folder}\n" in source, f"{chapter}: no exercises box for {folder}"
    box = _extension("exercise_box")
    notebook = box.find_notebook(REPO, "notebooks", folder)
    answers = box.describe_answers(notebook)
    for exercise in for_assignment(folder):
        signature, summary = answers.get(exercise.function, ("", ""))
        assert signature.startswith(f"{exercise.function}("), (
            f"{notebook.name}: no answer cell defines {exercise.function}")
        assert summary, f"{notebook.name}: {exercise.function} has no docstring to show in the box"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_pages_serve_their_notebook(built_html: Path, chapter: str) -> None:
    """The box links to the notebook copied into the build, byte for byte the committed one."""
    from transformer_course.exercises import for_assignment

    folder = _folder(chapter)
    page = built_html / chapter
    text = page.read_text(encoding="utf-8")
    links = [href for href in re.findall(r'<a\b[^>]*\bhref="([^"]+\.ipynb)"', text)]
    ours = [href for href in links if f"notebooks/{folder}/" in href]
    assert ours, f"{chapter} links no notebook of notebooks/{folder}/ (found {links})"
    for href in ours:
        served = _local_target(page, href)
        committed = REPO / "notebooks" / folder / served.name
        assert served.is_file(), f"{href} is linked from {chapter} but not in the build"
        assert served.read_bytes() == committed.read_bytes(), f"{served} differs from {committed}"
    for exercise in for_assignment(folder):
        assert f"{exercise.function}(" in text, f"{chapter}: the exercises box does not name {exercise.function}"
    assert "_sources/" not in text, f"{chapter} still offers its MyST source for download"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_figures_have_captions_and_descriptions(built_html: Path, chapter: str) -> None:
    text = (built_html / chapter).read_text(encoding="utf-8")
    figures = re.findall(r"<figure\b.*?</figure>", text, re.DOTALL)
    images = IMG_SRC.findall(text)
    assert len(figures) == len([src for src in images if src.endswith(".png")]), (
        f"{chapter}: every figure drawn at build time should be a captioned <figure>")
    for figure in figures:
        assert "<figcaption>" in figure, f"{chapter}: a figure without a caption"
        alt = re.search(r'<img\b[^>]*\balt="([^"]*)"', figure).group(1)
        assert len(alt.split()) >= 5 and not alt.endswith(".png"), f"{chapter}: alt text {alt!r}"
        assert 'class="figure-full-size' in figure, f"{chapter}: a figure without its full-size link"


@pytest.mark.slow
def test_chapter_8_trains_a_model_that_passes_its_test(built_html: Path) -> None:
    """Chapter 8 trains the default run while the book is built and prints its test-set scores:
    the page shows a model that has learned the task (>= 97 % of unseen numbers exactly right)."""
    text = (built_html / "book/08-training.html").read_text(encoding="utf-8")
    exact = re.search(r"test exact match: ([\d.]+) %", text)
    token = re.search(r"test token accuracy: ([\d.]+) %", text)
    assert exact and token, "chapter 8 does not print its test exact match and token accuracy"
    assert float(exact.group(1)) >= 97.0, f"the book's run reached only {exact.group(1)} % test exact match"
    assert float(token.group(1)) >= float(exact.group(1))
