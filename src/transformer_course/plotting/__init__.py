"""Figures for the book and the notebooks, drawn from the reference implementation.

Every figure in the book comes from a code cell that calls one of these helpers at build time,
so a figure can never drift away from the code it illustrates. One module per concept
(``plotting.attention``, ...); the attention helpers, used in every chapter from 4 on, are
also available here directly (``from transformer_course.plotting import plot_attention``).

Nothing here calls ``plt.show()``: in a notebook the figure appears by itself at the end of the
cell; in a script, call ``fig.savefig(...)`` or ``plt.show()`` yourself. Pass ``ax=`` (or
``axes=``) to draw into a figure of your own.
"""

from .attention import (
    dot_product_variance,
    plot_attention,
    plot_dot_product_variance,
    plot_softmax_saturation,
    softmax_saturation,
)

__all__ = [
    "dot_product_variance",
    "plot_attention",
    "plot_dot_product_variance",
    "plot_softmax_saturation",
    "softmax_saturation",
]
