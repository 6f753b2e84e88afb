"""What the training loops share: progress reports, the learning-rate schedule and best-weights keeping."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from refiner.core.metrics import Scores
from refiner.models.store import ModelBundle


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


ProgressFn = Callable[[Progress], None]


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


def centre(scores: torch.Tensor, margin: int, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` centre of (..., H, W) maps: a patch's output without its context margin."""
    return scores[..., margin : margin + size, margin : margin + size]


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the weights, unaffected by later optimiser steps."""
    return {n: t.detach().clone() for n, t in net.state_dict().items()}


@dataclass
class BestWeights:
    """The best-scoring weights a loop has seen, to return those instead of the last ones.

    A score counts as better only above the best by more than ``min_delta`` (noise in a few
    held-out pixels should not reset early stopping); ``step`` is None until weights are kept.
    """

    min_delta: float = 0.0
    score: float = -math.inf
    step: int | None = None
    state: dict[str, torch.Tensor] | None = None

    def keep(self, net: torch.nn.Module, score: float, step: int) -> None:
        """Keep ``net``'s current weights as the best, whatever the previous best was."""
        self.score, self.step, self.state = score, step, snapshot(net)

    def offer(self, net: torch.nn.Module, score: float, step: int) -> bool:
        """Keep the weights if ``score`` beats the best; says whether it did."""
        if score > self.score + self.min_delta:
            self.keep(net, score, step)
            return True
        return False

    def restore(self, net: torch.nn.Module) -> bool:
        """Load the kept weights into ``net`` (False, and ``net`` unchanged, when none were kept)."""
        if self.state is None:
            return False
        net.load_state_dict(self.state)
        return True


def validation_due(step: int, steps: int, every: int) -> bool:
    """Whether a loop validating every ``every`` steps (0 = never) validates after ``step``: the last step always."""
    return bool(every) and (step % every == 0 or step == steps)


def validate_and_keep(
    net: torch.nn.Module,
    bundle: ModelBundle,
    validate: Callable[[ModelBundle], float],
    best: BestWeights,
    report: Progress,
) -> float:
    """Score the model (in eval mode, back to train mode after), keep its weights if best, note it in ``report``."""
    net.eval()
    score = float(validate(bundle))
    net.train()
    best.offer(net, score, report.step)
    report.best_val = best.score
    report.message = f"validation {score:.3f} (best {best.score:.3f})"
    return score


def stop_reason(patience: int, steps: int, stale: int, last: bool, step: int) -> str | None:
    """Why a loop ends after ``step``, or None when it goes on.

    "early_stopping": ``stale`` evaluations without gain reached a non-zero ``patience``;
    "time_budget": its last step (the wall-clock budget spent) came before ``steps``.
    """
    if patience and stale >= patience:
        return "early_stopping"
    if last and step != steps:
        return "time_budget"
    return None
