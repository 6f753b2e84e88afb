"""What the training loops share: progress reports and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from refiner.core.metrics import Scores


@dataclass
class Progress:
    """One report from a training loop."""

    step: int
    steps: int
    loss: float
    seconds: float
    val: Scores | None = None
    best_val: float | None = None
    message: str = ""


def lr_at(step: int, steps: int, base: float, schedule: str = "constant", warmup: int = 0) -> float:
    """Learning rate at ``step`` (1-based): constant, or linear warm-up then cosine decay to 1 %."""
    if warmup and step <= warmup:
        return base * step / warmup
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (constant or cosine)")
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _as_float(x: np.ndarray) -> torch.Tensor:
    """Patches to float [0, 1]: uint8 imagery (kept as uint8 to save memory) is scaled."""
    t = torch.from_numpy(x)
    return t.float() / 255.0 if t.dtype == torch.uint8 else t


ProgressFn = Callable[[Progress], None]
