"""Shared fixtures: tiny synthetic scenes made in code, and paths to the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from refiner.synthetic import make_scene

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def coarse_probs_from_labels(labels: np.ndarray, k: int, *, sigma: float = 2.5, stride: int = 4) -> np.ndarray:
    """A stand-in for a coarse CNN's output: one-hot labels averaged on a 4x coarser grid,
    upsampled and blurred, so objects are found but their outlines are soft and blocky."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(k)])
    h, w = labels.shape
    small = (
        onehot[:, : h - h % stride, : w - w % stride].reshape(k, h // stride, stride, w // stride, stride).mean((2, 4))
    )
    up = np.repeat(np.repeat(small, stride, 1), stride, 2)
    up = np.pad(up, ((0, 0), (0, h - up.shape[1]), (0, w - up.shape[2])), mode="edge")
    blurred = ndimage.gaussian_filter(up, (0, sigma, sigma))
    p = 0.85 * blurred + 0.15 / k
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def scene():
    return make_scene(160, seed=11)


@pytest.fixture(scope="session")
def scene_b():
    return make_scene(160, seed=12)
