"""The way from a chapter to its exercises: an "Exercises" box, the notebook served by the book.

A chapter page writes, where its exercises begin,

.. code-block:: md

    ```{exercises} 04-attention
    ```

and this extension

1. renders a box naming the chapter's student notebook (``notebooks/04-attention/*.ipynb``,
   the committed release copy: the one source) with a button that downloads it, and the list of
   its graded exercises. The list comes from the exercise registry,
   ``transformer_course.exercises.for_assignment(...)``: names and points, in order. The
   signature and the one-line summary of each exercise are read from the notebook's answer cell
   (the ``def``/``class`` whose name is the cell's nbgrader grade_id), so nothing is typed twice;
2. copies every ``notebooks/<NN-topic>/*.ipynb`` into the HTML output, as
   ``notebooks/<NN-topic>/<name>.ipynb``, once the build has succeeded;
3. makes the page's header download menu offer that notebook instead of the page's MyST source;
4. adds launch links (JupyterHub, Binder, Colab) for the *notebook*, in the box and in the header's
   launch menu, where the instructor configured them with Jupyter Book's own keys in _config.yml::

       launch_buttons:
         jupyterhub_url: "https://hub.example.edu"      # nbgitpuller link
         binderhub_url: "https://mybinder.org"
         colab_url: "https://colab.research.google.com"
       repository:
         url: "https://github.com/ORG/REPO"            # where the notebooks are committed
         branch: main

   All empty by default: then there are no launch links and the book stays fully offline.
   (sphinx-book-theme's own launch menu would open the *page's* source, a MyST file, not the
   exercise notebook; its links are replaced by ours.)
"""

from __future__ import annotations

import ast
import html
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.osutil import relative_uri

logger = logging.getLogger(__name__)

OUTPUT_FOLDER = "notebooks"  # under the HTML output: <outdir>/notebooks/<NN-topic>/<name>.ipynb
LAUNCH_KEYS = ("jupyterhub_url", "binderhub_url", "colab_url")
UNSUPPORTED_LAUNCH_KEYS = ("deepnote_url", "jupyterlite_url")
INTERFACES = {"jupyterlab": "lab/tree", "classic": "tree"}


# --------------------------------------------------------------------------------------------
# The notebook: where it is, and what its answer cells say
# --------------------------------------------------------------------------------------------


def find_notebook(source_root: Path, folder: str, assignment: str) -> Path:
    """The one student notebook of ``assignment`` (``notebooks/04-attention/*.ipynb``)."""
    found = sorted((source_root / folder / assignment).glob("*.ipynb"))
    if len(found) != 1:
        raise ExtensionError(
            f"exercise_box: expected one notebook in {folder}/{assignment}/, found "
            f"{[p.name for p in found]}; the exercises directive names a chapter folder of {folder}/"
        )
    return found[0]


def _without_annotations(arguments: ast.arguments, drop_self: bool) -> str:
    """``x: Tensor, dim: int = -1`` -> ``x, dim=-1``: a signature a reader takes in at a glance."""
    arguments = ast.arguments(
        posonlyargs=[ast.arg(a.arg) for a in arguments.posonlyargs],
        args=[ast.arg(a.arg) for a in arguments.args],
        vararg=arguments.vararg and ast.arg(arguments.vararg.arg),
        kwonlyargs=[ast.arg(a.arg) for a in arguments.kwonlyargs],
        kw_defaults=arguments.kw_defaults,
        kwarg=arguments.kwarg and ast.arg(arguments.kwarg.arg),
        defaults=arguments.defaults,
    )
    if drop_self and (arguments.posonlyargs or arguments.args):
        (arguments.posonlyargs or arguments.args).pop(0)
    return ast.unparse(arguments)


def _summary(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line, without a pointer into the notebook."""
    first = (docstring or "").strip().split("\n\n")[0]
    first = " ".join(first.split())
    # "(the rules: see above)" means something in the notebook, nothing in the book
    return re.sub(r"\s*\([^()]*\b(above|below)\b[^()]*\)", "", first)


def describe_answers(notebook: Path) -> dict[str, tuple[str, str]]:
    """``{function: (signature, summary)}`` for each answer cell of a student notebook.

    An answer cell is a code cell whose nbgrader metadata marks it a solution; its grade_id is the
    name of the function (or class) it defines. Cells that do not parse are skipped: the box then
    shows the bare name.
    """
    answers: dict[str, tuple[str, str]] = {}
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        grading = cell.get("metadata", {}).get("nbgrader", {})
        name = grading.get("grade_id")
        if cell.get("cell_type") != "code" or not grading.get("solution") or not name:
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                answers[name] = (f"{name}({_without_annotations(node.args, False)})",
                                 _summary(ast.get_docstring(node)))
            elif isinstance(node, ast.ClassDef) and node.name == name:
                init = next((n for n in node.body
                             if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                arguments = _without_annotations(init.args, True) if init else ""
                answers[name] = (f"{name}({arguments})", _summary(ast.get_docstring(node)))
    return answers


# --------------------------------------------------------------------------------------------
# Launch links
# --------------------------------------------------------------------------------------------


def launch_settings(config: Any) -> tuple[dict, str, str]:
    """``(launch_buttons, repository_url, branch)`` from Jupyter Book's keys in _config.yml.

    Jupyter Book passes ``launch_buttons:`` and ``repository:`` on as sphinx-book-theme's theme
    options, which is where they are read here.
    """
    options = config.html_theme_options or {}
    launch = options.get("launch_buttons") or {}
    repository = (options.get("repository_url") or "").strip()
    branch = (options.get("repository_branch") or "").strip() or "main"
    return launch, repository, branch


def launch_links(launch: dict, repository_url: str, branch: str,
                 notebook: str) -> list[tuple[str, str]]:
    """``[(service, url)]``: where to open ``notebook`` (a path inside the repository).

    Only the services whose URL is set in ``launch`` get a link; with none set, there are none.

    * JupyterHub: an nbgitpuller link, which clones (or updates) the repository into the
      student's home on the hub and opens the notebook;
    * Binder: builds the repository (its requirements.txt) and opens the notebook;
    * Colab: opens the notebook straight from GitHub (GitHub repositories only).

    Raises ExtensionError when a service is set but ``repository_url`` is not: every link opens
    the notebook from the repository.
    """
    wanted = [key for key in LAUNCH_KEYS if (launch.get(key) or "").strip()]
    if not wanted:
        return []
    if not repository_url:
        raise ExtensionError(
            f"exercise_box: launch_buttons.{wanted[0]} is set in _config.yml, but repository.url "
            "is empty. Launch links open the exercise notebook from the course repository: set "
            "repository.url (https://github.com/ORG/REPO) and repository.branch as well."
        )
    interface = launch.get("notebook_interface") or "jupyterlab"
    if interface not in INTERFACES:
        raise ExtensionError(f"exercise_box: launch_buttons.notebook_interface must be one of "
                             f"{sorted(INTERFACES)}, not {interface!r}")
    tree = INTERFACES[interface]
    repo_url = repository_url.rstrip("/").removesuffix(".git")
    parts = urlsplit(repo_url)
    host = (parts.hostname or "").lower()
    org, _, repo = parts.path.strip("/").rpartition("/")

    links = []
    hub = (launch.get("jupyterhub_url") or "").strip().rstrip("/")
    if hub:
        query = urlencode({"repo": repo_url, "branch": branch, "urlpath": f"{tree}/{repo}/{notebook}"},
                          safe="/")
        links.append(("JupyterHub", f"{hub}/hub/user-redirect/git-pull?{query}"))
    binder = (launch.get("binderhub_url") or "").strip().rstrip("/")
    if binder:
        if host == "github.com":
            spec = f"gh/{org}/{repo}/{branch}"
        elif host == "gitlab.com":
            spec = f"gl/{quote(f'{org}/{repo}', safe='')}/{branch}"
        else:
            spec = f"git/{quote(repo_url, safe='')}/{branch}"
        links.append(("Binder", f"{binder}/v2/{spec}?urlpath={quote(f'{tree}/{notebook}')}"))
    colab = (launch.get("colab_url") or "").strip().rstrip("/")
    if colab:
        if host != "github.com":
            raise ExtensionError(f"exercise_box: Colab opens notebooks from GitHub only; "
                                 f"repository.url is {repository_url}")
        links.append(("Colab", f"{colab}/github/{org}/{repo}/blob/{branch}/{notebook}"))
    return links


def check_launch_settings(app: Sphinx) -> None:
    """Fail early, with a message that says what to set, on launch settings that cannot work."""
    launch, repository, branch = launch_settings(app.config)
    for key in UNSUPPORTED_LAUNCH_KEYS:
        if (launch.get(key) or "").strip():
            logger.warning(f"exercise_box: launch_buttons.{key} is not supported for the exercise "
                           "notebooks and is ignored; use jupyterhub_url, binderhub_url or colab_url")
    launch_links(launch, repository, branch, "notebooks/check.ipynb")


# --------------------------------------------------------------------------------------------
# The box
# --------------------------------------------------------------------------------------------


class notebook_download(nodes.Inline, nodes.TextElement):
    """A link that downloads a file copied into the output (``target``, relative to its root)."""


def visit_notebook_download_html(self, node: notebook_download) -> None:
    here = self.builder.get_target_uri(self.builder.current_docname)
    href = relative_uri(here, node["target"])
    filename = node["target"].rsplit("/", 1)[-1]
    self.body.append(f'<a class="reference download exercise-download" href="{html.escape(href)}" '
                     f'download="{html.escape(filename)}">')


def depart_notebook_download_html(self, node: notebook_download) -> None:
    self.body.append("</a>")


def _skip(self, node: nodes.Node) -> None:
    """Other builders (LaTeX, text) show the link's text only."""


def _inline_text(text: str) -> list[nodes.Node]:
    """Text in which `backticks` mark code, as docutils nodes."""
    pieces = text.split("`")
    return [nodes.literal(piece, piece) if i % 2 else nodes.Text(piece)
            for i, piece in enumerate(pieces) if piece]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class ExercisesDirective(SphinxDirective):
    """``{exercises} <NN-topic>``: the box of one chapter's exercise notebook."""

    required_arguments = 1
    option_spec = {"class": directives.class_option}

    def run(self) -> list[nodes.Node]:
        from transformer_course.exercises import for_assignment  # the package is installed

        assignment = self.arguments[0]
        config = self.env.config
        source_root = Path(self.env.srcdir)
        try:
            notebook = find_notebook(source_root, config.exercise_notebooks_folder, assignment)
        except ExtensionError as error:  # reported at the directive, with its page and line
            raise self.error(str(error)) from None
        exercises = for_assignment(assignment)
        if not exercises:
            raise self.error(f"no exercises registered for the assignment {assignment!r}")
        # Rebuild the page when the notebook or the chapter's registry module changes.
        self.env.note_dependency(str(notebook))
        module = sys.modules[exercises[0].visible_checks.__module__].__file__
        if module:
            self.env.note_dependency(module)

        in_repository = notebook.relative_to(source_root).as_posix()
        target = f"{OUTPUT_FOLDER}/{assignment}/{notebook.name}"
        if not hasattr(self.env, "exercise_notebooks"):
            self.env.exercise_notebooks = {}
        self.env.exercise_notebooks[self.env.docname] = (target, in_repository)

        box = nodes.admonition(classes=["exercises", *self.options.get("class", [])])
        box += nodes.title("", f"Exercises: {notebook.name}")
        points = sum(e.points for e in exercises)
        intro = nodes.paragraph()
        intro += nodes.Text(f"{_plural(len(exercises), 'exercise')}, {_plural(points, 'point')}, "
                            "each with a check cell to run as often as you like. The notebook is ")
        intro += nodes.literal(in_repository, in_repository)
        intro += nodes.Text(" in the course folder (")
        intro += nodes.literal("jupyter lab notebooks/", "jupyter lab notebooks/")
        intro += nodes.Text(" opens it).")
        box += intro

        actions = nodes.paragraph(classes=["exercise-actions"])
        download = notebook_download("", "", target=target)
        download += nodes.Text(f"Download {notebook.name}")
        actions += download
        launch, repository, branch = launch_settings(config)
        for service, url in launch_links(launch, repository, branch, in_repository):
            actions += nodes.Text(" ")
            actions += nodes.reference("", f"Open in {service}", refuri=url,
                                       classes=["exercise-launch"])
        box += actions

        answers = describe_answers(notebook)
        listing = nodes.enumerated_list(classes=["exercise-list"])
        for exercise in exercises:
            signature, summary = answers.get(exercise.function, (exercise.function, ""))
            item = nodes.paragraph()
            item += nodes.literal(signature, signature)
            item += nodes.Text(f" ({_plural(exercise.points, 'point')})")
            if summary:
                item += nodes.Text(": ")
                item += _inline_text(summary)
            listing += nodes.list_item("", item)
        box += listing
        return [box]


# --------------------------------------------------------------------------------------------
# Sphinx events
# --------------------------------------------------------------------------------------------


def purge(app: Sphinx, env: Any, docname: str) -> None:
    getattr(env, "exercise_notebooks", {}).pop(docname, None)


def merge(app: Sphinx, env: Any, docnames: set[str], other: Any) -> None:
    if not hasattr(env, "exercise_notebooks"):
        env.exercise_notebooks = {}
    env.exercise_notebooks.update(getattr(other, "exercise_notebooks", {}))


def header_buttons(app: Sphinx, pagename: str, templatename: str, context: dict,
                   doctree: Any) -> None:
    """The header's download menu offers the exercise notebook (never the page's MyST source);
    its launch menu opens the notebook, and only on pages that have one."""
    notebook = getattr(app.env, "exercise_notebooks", {}).get(pagename)
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    kept = []
    for group in buttons:
        label = group.get("label")
        if label == "download-buttons":
            items = [b for b in group["buttons"]
                     if b.get("label") not in {"download-source-button", "download-notebook-button"}]
            if notebook:
                items.insert(0, {
                    "type": "link", "url": context["pathto"](notebook[0], 1), "text": ".ipynb",
                    "tooltip": "Download the exercise notebook", "icon": "fas fa-code",
                    "label": "download-exercise-notebook-button",
                })
            group["buttons"] = items
            group["tooltip"] = "Download the exercise notebook" if notebook else "Download"
        elif label == "launch-buttons":
            others = [b for b in group["buttons"] if b.get("type") != "link"]
            links = []
            if notebook:
                launch, repository, branch = launch_settings(app.config)
                links = [{"type": "link", "text": service, "url": url,
                          "tooltip": f"Open the exercise notebook in {service}",
                          "icon": f"_static/images/logo_{service.lower()}"
                                  + (".png" if service == "Colab" else ".svg")}
                         for service, url in launch_links(launch, repository, branch, notebook[1])]
            group["buttons"] = links + others
            if not group["buttons"]:
                continue
        kept.append(group)
    buttons[:] = kept


def copy_notebooks(app: Sphinx, exception: Exception | None) -> None:
    """Copy every student notebook into the HTML output, after a successful build."""
    if exception is not None or app.builder.format != "html":
        return
    source = Path(app.srcdir) / app.config.exercise_notebooks_folder
    copied = 0
    for notebook in sorted(source.glob("*/*.ipynb")):
        target = Path(app.outdir) / OUTPUT_FOLDER / notebook.parent.name / notebook.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, target)
        copied += 1
    logger.info("exercise_box: copied %d notebooks from %s into %s/", copied, source, OUTPUT_FOLDER)


def setup(app: Sphinx) -> dict:
    # Where the student notebooks are, relative to the book's source root (the repository).
    app.add_config_value("exercise_notebooks_folder", "notebooks", "env", [str])
    app.add_node(notebook_download,
                 html=(visit_notebook_download_html, depart_notebook_download_html),
                 latex=(_skip, _skip), text=(_skip, _skip))
    app.add_directive("exercises", ExercisesDirective)
    app.connect("builder-inited", check_launch_settings)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    # after sphinx-book-theme has made its header buttons (priority 501)
    app.connect("html-page-context", header_buttons, priority=600)
    app.connect("build-finished", copy_notebooks)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
