"""Shared fixtures: tiny synthetic scenes made in code, and paths to the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from refiner.synthetic import coarse_like, make_scene

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


coarse_probs_from_labels = coarse_like  # the tests' name for it


@pytest.fixture(scope="session")
def scene():
    return make_scene(160, seed=11)


@pytest.fixture(scope="session")
def scene_b():
    return make_scene(160, seed=12)
