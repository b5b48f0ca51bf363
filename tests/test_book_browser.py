"""The built book, read in a real browser on a phone (375 px) and on a laptop (1280 px).

Every page of the book (the session fixture `built_html`, built once, shared with test_book.py)
is served from a local HTTP server on 127.0.0.1 and opened in one headless chromium
(tests/browser.py), once per width, with every request that would leave the machine refused.
One pass collects what each page looks like; each test below then checks one rule over all pages
and names every page and width that breaks it:

* nothing is requested from the network;
* all maths is typeset: MathJax ran and no raw TeX is left on the page;
* the page is never wider than the screen (what is too wide scrolls in its own box), and nothing
  in the text is cut off without a way to scroll to it;
* every image loaded and has an alt text that describes it (not empty, not a file name);
* every link to a page of the book leads to a file that exists, and its #fragment to an anchor
  on that page;
* every chapter links its exercise notebook, and the notebook is in the build;
* the book's search finds "softmax".

A screenshot of each page at each width is saved under a temporary folder, printed at the end
(`pytest -s` shows it; the path is also in the report of a failing test): the tests prove the
rules, a reader's eyes prove that the pages read well.

Slow: the book build (minutes, once per session) plus about two seconds per page and width.
"""

from __future__ import annotations

import functools
import html.parser
import re
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from browser import LAPTOP, PHONE, chromium, offline_page

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WIDTHS = {"phone": PHONE, "laptop": LAPTOP}
# Every chapter page in the table of contents (entries like "  - file: book/04-attention").
CHAPTERS = [
    line.split("file:", 1)[1].strip() + ".html"
    for line in (REPO / "_toc.yml").read_text(encoding="utf-8").splitlines()
    if line.strip().startswith("- file:")
]
MATHJAX_TIMEOUT_MS = 30_000
SEARCH_TIMEOUT_MS = 20_000

# ---------------------------------------------------------------------------------------------
# What the browser measures on each page (JavaScript, run after the page and MathJax are done)
# ---------------------------------------------------------------------------------------------

# Resolves once every image has loaded or failed, and MathJax (on pages with maths) has typeset.
SETTLE = """async (timeout) => {
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  if (document.querySelector('.math')) {
    const start = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (Date.now() - start > timeout) return 'MathJax never started';
      await new Promise(r => setTimeout(r, 50));
    }
    await MathJax.startup.promise;
  }
  return 'ok';
}"""

# TeX that MathJax would have typeset: delimiters, environments and the book's common commands.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(frac|mathrm|text|sqrt|begin|cdot|top|infty)\b")

MEASURE = r"""(rawTex) => {
  const RAW_TEX = new RegExp(rawTex);
  const describe = (e) => {
    let name = e.tagName.toLowerCase();
    if (e.id) name += '#' + e.id;
    if (typeof e.className === 'string' && e.className.trim())
      name += '.' + e.className.trim().split(/\s+/).slice(0, 3).join('.');
    const text = (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 70);
    return text ? `${name} ("${text}")` : name;
  };
  const width = document.documentElement.clientWidth;
  const fixed = (e) => { for (let a = e; a; a = a.parentElement)
      if (getComputedStyle(a).position === 'fixed') return true; return false; };
  const insideScroller = (e) => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return true; return false; };

  // Elements that stick out of the screen on the right, and are not inside a box of their own
  // that scrolls or clips: the ones that make the page wider than the screen.
  const sticking = [];
  for (const e of document.querySelectorAll('body *')) {
    const box = e.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1 || insideScroller(e) || fixed(e)) continue;
    sticking.push([Math.round(box.right), describe(e)]);
  }
  sticking.sort((a, b) => b[0] - a[0]);

  // Content of the article that is cut off: a box that hides what sticks out of it and does not
  // scroll. (Inside MathJax's own output, and in its hidden copy for screen readers, clipping is
  // part of how formulas are drawn.)
  const clipped = [];
  for (const e of document.querySelectorAll('article *')) {
    const style = getComputedStyle(e);
    if (!['hidden', 'clip'].includes(style.overflowX) || style.textOverflow === 'ellipsis') continue;
    if (e.closest('mjx-container') || e.clientWidth === 0 || e.scrollWidth <= e.clientWidth + 2) continue;
    const edge = e.getBoundingClientRect().right;
    let reach = edge;
    for (const inner of e.querySelectorAll('*')) {
      if (inner.closest('mjx-assistive-mml')) continue;
      const box = inner.getBoundingClientRect();
      if (box.width > 0) reach = Math.max(reach, box.right);
    }
    if (reach > edge + 2) clipped.push(`${describe(e)} by ${Math.round(reach - edge)} px`);
  }

  // Raw TeX: maths MathJax did not typeset, or TeX delimiters left in the text (code excluded).
  const untypeset = [...document.querySelectorAll('.math')]
      .filter(e => !e.querySelector('mjx-container')).map(describe);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const tex = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight')) continue;
    if (RAW_TEX.test(node.textContent)) tex.push(node.textContent.trim().slice(0, 80));
  }

  const images = [...document.images].map(img => ({
    src: img.getAttribute('src'), alt: img.getAttribute('alt'), loaded: img.naturalWidth > 0,
  }));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const downloads = [...document.querySelectorAll('a[href$=".ipynb"]')].map(a => a.href);
  return {
    scrollWidth: document.documentElement.scrollWidth, width, sticking: sticking.slice(0, 5),
    clipped: clipped.slice(0, 5), untypeset: untypeset.slice(0, 5), tex: tex.slice(0, 5),
    images, links, downloads,
  };
}"""


@dataclass
class Report:
    """What one page looked like at one width."""

    page: str
    width: int
    leaks: list[str] = field(default_factory=list)
    settled: str = ""
    measured: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page} at {self.width} px"


@dataclass
class Survey:
    reports: list[Report]
    search_results: list[str]
    search_summaries: list[str]
    screenshots: Path
    root: Path
    base_url: str


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def _pages(html_root: Path) -> list[str]:
    """Every HTML page of the build, as a path relative to its root, minus redirect stubs."""
    pages = []
    for path in sorted(html_root.rglob("*.html")):
        relative = path.relative_to(html_root).as_posix()
        if relative.startswith(("_static/", "_sources/", "_images/")):
            continue
        if 'http-equiv="Refresh"' in path.read_text(encoding="utf-8")[:500]:
            continue  # index.html: a one-line redirect to the first page
        pages.append(relative)
    return pages


@pytest.fixture(scope="module")
def survey(built_html: Path, tmp_path_factory: pytest.TempPathFactory) -> Survey:
    """Open every page at both widths in one browser, measure it and take its screenshot."""
    screenshots = tmp_path_factory.mktemp("book-screenshots")
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_QuietHandler, directory=str(built_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    reports = []
    try:
        with chromium() as browser:
            for label, viewport in WIDTHS.items():
                leaks: list[str] = []
                page = offline_page(browser, viewport, leaks)
                for name in _pages(built_html):
                    report = Report(name, viewport["width"])
                    before = len(leaks)
                    page.goto(base_url + name, wait_until="load")
                    report.settled = page.evaluate(SETTLE, MATHJAX_TIMEOUT_MS)
                    report.measured = page.evaluate(MEASURE, RAW_TEX.pattern)
                    report.leaks = leaks[before:]
                    shot = screenshots / f"{name.replace('/', '_').removesuffix('.html')}-{label}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    reports.append(report)
                page.context.close()
            # The search, as a reader would use it: the search page with a query in its URL.
            leaks = []
            page = offline_page(browser, LAPTOP, leaks)
            page.goto(base_url + "search.html?q=softmax", wait_until="load")
            try:
                page.wait_for_function(
                    "() => document.querySelectorAll('#search-results li').length > 0 || "
                    "/Search finished/.test(document.body.innerText)", timeout=SEARCH_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 (timing out means: nothing found; reported below)
                pass
            found = page.eval_on_selector_all("#search-results li > a", "links => links.map(a => a.href)")
            try:  # each page's snippet comes in on its own, after the list of pages
                page.wait_for_function(
                    "() => document.querySelectorAll('#search-results li p.context').length >= "
                    "document.querySelectorAll('#search-results li').length", timeout=SEARCH_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 (missing snippets are reported below)
                pass
            summaries = page.eval_on_selector_all("#search-results li p.context",
                                                  "snippets => snippets.map(p => p.textContent)")
            page.screenshot(path=str(screenshots / "search-softmax-laptop.png"), full_page=True)
            page.context.close()
            assert not leaks, f"the search page requested {leaks}"
    finally:
        server.shutdown()
        server.server_close()
    print(f"\nscreenshots of the book: {screenshots}")
    return Survey(reports, found, summaries, screenshots, built_html, base_url)


def _fail_if(problems: list[str], rule: str, survey: Survey) -> None:
    assert not problems, f"{rule}:\n  " + "\n  ".join(problems) + f"\n(screenshots: {survey.screenshots})"


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def test_every_page_was_visited(survey: Survey) -> None:
    visited = {r.page for r in survey.reports}
    missing = [page for page in ["book/intro.html", *CHAPTERS, "search.html"] if page not in visited]
    assert not missing, f"pages of the book the browser never saw: {missing}"


def test_nothing_is_requested_from_the_network(survey: Survey) -> None:
    problems = [f"{r.where}: {url}" for r in survey.reports for url in r.leaks]
    _fail_if(problems, "requests that would leave the machine", survey)


def test_all_maths_is_typeset(survey: Survey) -> None:
    problems = []
    for r in survey.reports:
        if r.settled != "ok":
            problems.append(f"{r.where}: {r.settled}")
        problems += [f"{r.where}: maths left untypeset: {e}" for e in r.measured["untypeset"]]
        problems += [f"{r.where}: raw TeX in the text: {text!r}" for text in r.measured["tex"]]
    _fail_if(problems, "maths that MathJax did not typeset", survey)


def test_no_page_is_wider_than_the_screen(survey: Survey) -> None:
    problems = []
    for r in survey.reports:
        m = r.measured
        if m["scrollWidth"] > m["width"]:
            widest = "; ".join(f"{what} reaches {right} px" for right, what in m["sticking"][:3])
            problems.append(f"{r.where}: the page is {m['scrollWidth']} px wide; widest: "
                            f"{widest or 'no single element (margins?)'}")
    _fail_if(problems, "pages wider than the screen (scroll sideways)", survey)


def test_no_text_is_cut_off(survey: Survey) -> None:
    problems = [f"{r.where}: {what} hides part of its content and cannot scroll"
                for r in survey.reports for what in r.measured["clipped"]]
    _fail_if(problems, "content cut off without a way to scroll to it", survey)


FILE_NAME = re.compile(r"^\S*\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


def _meaningful(alt: str | None) -> bool:
    """An alt text a reader can use: words, not a file name or a path."""
    alt = (alt or "").strip()
    return len(alt.split()) >= 2 and not FILE_NAME.match(alt)


def test_images_load_and_say_what_they_show(survey: Survey) -> None:
    problems = []
    for r in survey.reports:
        for image in r.measured["images"]:
            if not image["loaded"]:
                problems.append(f"{r.where}: {image['src']} did not load")
            if not _meaningful(image["alt"]):
                problems.append(f"{r.where}: {image['src']} has no alt text that describes it "
                                f"(alt={image['alt']!r})")
    _fail_if(problems, "images", survey)


class _Anchors(html.parser.HTMLParser):
    """The ids and names an HTML page defines: the #fragments a link may point to."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.anchors.add(value or "")


@functools.cache
def _anchors_of(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.anchors)


def test_internal_links_lead_somewhere(survey: Survey) -> None:
    problems = set()
    for r in survey.reports:
        if r.width != PHONE["width"]:
            continue  # the same HTML at both widths: check each link once
        for url in r.measured["links"]:
            if not url.startswith(survey.base_url):
                continue  # another site, mailto:, javascript: ... (only followed when clicked)
            parts = urlsplit(url)
            relative = unquote(parts.path)[len(urlsplit(survey.base_url).path):]
            target = survey.root / relative
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.add(f"{r.page}: link to {relative} (no such file in the build)")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _anchors_of(target):
                    problems.add(f"{r.page}: link to {relative}#{parts.fragment} (no such anchor)")
    _fail_if(sorted(problems), "broken links inside the book", survey)


def test_every_chapter_offers_its_notebook(survey: Survey) -> None:
    problems = []
    for r in survey.reports:
        if r.page not in CHAPTERS:
            continue
        folder = Path(r.page).stem  # book/04-attention.html -> 04-attention
        ours = [url for url in r.measured["downloads"] if f"/notebooks/{folder}/" in url]
        if not ours:
            problems.append(f"{r.where}: no link to a notebook of notebooks/{folder}/ "
                            f"(links to notebooks: {r.measured['downloads']})")
        for url in ours:
            relative = unquote(urlsplit(url).path)[len(urlsplit(survey.base_url).path):]
            if not (survey.root / relative).is_file():
                problems.append(f"{r.where}: {relative} is linked but not in the build")
    _fail_if(problems, "chapters without their exercise notebook", survey)


def test_search_finds_softmax(survey: Survey) -> None:
    assert survey.search_results, (
        f"the book's search found nothing for 'softmax' (screenshot: "
        f"{survey.screenshots / 'search-softmax-laptop.png'})"
    )
    assert any("04-attention" in url for url in survey.search_results), (
        f"the search for 'softmax' did not find chapter 4: {survey.search_results}"
    )
    assert survey.search_summaries, "the search results have no snippets of the pages they found"
    raw = [summary for summary in survey.search_summaries if RAW_TEX.search(summary)]
    assert not raw, f"raw TeX in the search results' snippets: {raw}"
