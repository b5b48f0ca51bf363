"""Small helpers shared by the figure modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A tensor (any device, with or without grad), an array or nested lists -> a NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)
