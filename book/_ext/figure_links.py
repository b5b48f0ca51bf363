"""Every figure opens full size on a click, and no figure goes without a description.

The figures are drawn by code cells at build time and shown at the width of the text column,
which on a phone shrinks a multi-panel figure a good deal. This extension

1. wraps each image of the HTML pages in a link to the image file itself, so a click (or a tap)
   shows it at full size, where a phone can zoom into it. (Sphinx does the same for images given
   an explicit size; ours have none, so that CSS can fit them to the column.)
2. warns, and so fails a build run with ``-W``, on an image without a meaningful ``alt`` text:
   none at all, or a file name (myst-nb's default is the image's path). A figure cell sets it in
   its metadata, next to the caption::

       mystnb:
         image:
           alt: "A heatmap of ..."
         figure:
           caption: "..."
           name: fig-...
"""

from __future__ import annotations

import posixpath
import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.osutil import relative_uri

logger = logging.getLogger(__name__)

# An alt text that is only a file name or a path says nothing to a reader who cannot see the image.
FILE_NAME = re.compile(r"^\S*\.(png|jpe?g|gif|svg|webp|pdf)$", re.IGNORECASE)


def meaningful_alt(alt: str | None) -> bool:
    """Whether ``alt`` describes an image (not empty, not a file name or a path)."""
    alt = (alt or "").strip()
    return len(alt.split()) >= 2 and not FILE_NAME.match(alt)


def link_images(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Wrap each image in a link to its file in the output's image folder; check its alt text."""
    for image in list(doctree.findall(nodes.image)):
        if not meaningful_alt(image.get("alt")):
            located = image  # an output image has no line of its own; its code cell has
            while located.parent is not None and not located.line:
                located = located.parent
            logger.warning(
                "figure_links: an image without a meaningful alt text (got %r); describe the figure "
                "in the cell's metadata, mystnb: image: alt: ...", image.get("alt"),
                location=located, type="figure_links", subtype="alt",
            )
        if app.builder.format != "html" or isinstance(image.parent, nodes.reference):
            continue
        candidates = image.get("candidates", {})
        source = candidates.get("*") or image["uri"]
        if source not in app.env.images:  # a remote image, or one Sphinx did not collect
            continue
        folder = relative_uri(app.builder.get_target_uri(docname), app.builder.imagedir)
        link = nodes.reference("", "", internal=True, classes=["figure-full-size"],
                               refuri=posixpath.join(folder, app.env.images[source][1]),
                               reftitle="Open the figure full size")
        image.replace_self(link)
        link.append(image)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", link_images)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
