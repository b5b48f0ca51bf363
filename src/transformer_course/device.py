"""Choosing where tensors live.

Everything in this package runs on whatever device its inputs are on; the only place that
*chooses* a device is :func:`pick_device`, used by notebooks and benchmarks.
"""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[torch.device]:
    """Every device this machine can run on, the CPU first (tests loop over these).

    ``TRANSFORMER_COURSE_DEVICES=cpu`` keeps to the CPU: the hardened grader sets it, since its
    sandbox has no GPU, so that its visible checks ask for the same devices inside and outside.
    """
    if os.environ.get("TRANSFORMER_COURSE_DEVICES") == "cpu":
        return [torch.device("cpu")]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(torch.device("mps"))
    return devices
