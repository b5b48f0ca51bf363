"""Small helpers shared by the figure modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes


def to_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A tensor (any device, with or without grad), an array or nested lists -> a NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def annotate_cells(ax: Axes, values: np.ndarray, fmt: str, light_text: Callable[[float], bool],
                   fontsize: float = 8, skip_zeros: bool = False) -> None:
    """Write each value of a heatmap drawn with ``imshow`` into its cell.

    ``light_text(value)`` says where the cell is dark enough for white text (that depends on the
    colour map: the dark end of viridis, the saturated ends of a diverging map); elsewhere the
    text is black. ``skip_zeros`` leaves exact zeros blank, so sparse matrices read at a glance.
    """
    for (i, j), value in np.ndenumerate(values):
        if skip_zeros and value == 0:
            continue
        ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=fontsize,
                color="white" if light_text(value) else "black")


# The book shows figures in a text column about 690 px wide on a laptop, and saves them at 100 dpi:
# a figure up to COLUMN_WIDTH inches wide is shown at (nearly) the size it was drawn at, so its
# text keeps its size. Wider figures are shrunk until their numbers cannot be read; the helpers
# therefore keep their figures this narrow, putting panels in rows of a grid rather than one long
# row. (On a phone every figure is shrunk; a click opens it full size.)
COLUMN_WIDTH = 7.0


def grid_shape(n_panels: int, panel_width: float, max_width: float = COLUMN_WIDTH) -> tuple[int, int]:
    """``(rows, columns)`` for ``n_panels`` panels about ``panel_width`` inches wide each: as many
    columns as fit in ``max_width`` (at least one), and as few rows as that allows."""
    columns = max(1, min(n_panels, int(max_width // panel_width)))
    return -(-n_panels // columns), columns
