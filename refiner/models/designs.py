"""Which coarse network a config names: the one place that knows every design."""

from __future__ import annotations

from refiner.models.coarse import CoarseCNN, CoarseConfig, CoarseNet
from refiner.models.coarse_skip import SkipContextCNN

#: ``CoarseConfig.arch`` -> the network class that builds it.
DESIGNS: dict[str, type[CoarseNet]] = {"mnih": CoarseCNN, "skip_context": SkipContextCNN}


def build_coarse(cfg: CoarseConfig) -> CoarseNet:
    """The coarse network ``cfg.arch`` names, freshly initialised."""
    return DESIGNS[cfg.arch](cfg)
