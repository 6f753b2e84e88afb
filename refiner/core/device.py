"""Which torch device to compute on: CUDA when present, else Apple's MPS, else the CPU."""

from __future__ import annotations

import torch


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """``cuda`` when available, else ``mps``, else ``cpu`` (or what ``prefer`` names)."""
    if prefer and prefer != "auto":
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
