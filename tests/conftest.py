"""Shared fixtures: tiny synthetic scenes made in code, and paths to the shared real data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from refiner.data.synthetic import make_scene
from tests.data_skips import (  # noqa: F401  (hooks: real-data skips named in the summary, fatal in CI with the data)
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it there; a later test that
    spawns processes (Dask's LocalCluster, the two-painter test) would then re-import that page
    in each child, and the Label page's canvas component fails outside a running app."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def scene():
    return make_scene(160, seed=11)


@pytest.fixture(scope="session")
def scene_b():
    return make_scene(160, seed=12)


def pytest_collection_modifyitems(config, items):
    """Everything under ``tests/browser`` is a browser test (``-m "not browser"`` skips them all)."""
    for item in items:
        if "browser" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.browser)
