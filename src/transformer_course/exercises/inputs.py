"""Seeded inputs for the hidden checks: random tensors, and float32 copies of chosen cases.

Every chapter's ``make_cases(generator)`` draws from the one generator it is given, so the
inputs depend only on the seed (``TRANSFORMER_COURSE_SEED``), never on the time or on what ran
before.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .base import Case


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """Standard normal float64 numbers of ``shape``, times ``scale``, drawn from ``gen``."""
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def with_float32(cases: list[Case], float32_too: set[str]) -> list[Case]:
    """Every case in float64, and the ones labelled in ``float32_too`` again in float32.

    float32 is what students' models run in; float64 lets the comparison be tight. The
    float32 copies are also the cases the hidden checks repeat on a GPU.
    """
    unknown = float32_too - {case.label for case in cases}
    if unknown:
        raise ValueError(f"with_float32: no case labelled {sorted(unknown)}")
    out = list(cases)
    for case in cases:
        if case.label in float32_too:
            out.append(replace(case.to(torch.float32), label=case.label + " (float32)"))
    return out
