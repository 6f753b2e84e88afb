"""Shared fixtures: tiny synthetic scenes made in code, and paths to the shared real data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from refiner.data.synthetic import coarse_like, make_scene


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it there; a later test that
    spawns processes (Dask's LocalCluster, the two-painter test) would then re-import that page
    in each child, and the Label page's canvas component fails outside a running app."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


coarse_probs_from_labels = coarse_like  # the tests' name for it


@pytest.fixture(scope="session")
def scene():
    return make_scene(160, seed=11)


@pytest.fixture(scope="session")
def scene_b():
    return make_scene(160, seed=12)
