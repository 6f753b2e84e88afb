"""Fixtures for the page tests: every ``AppTest`` is the browser of session :data:`~tests.helpers.TOKEN`."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import REPO, TOKEN, make_workspace


@pytest.fixture(autouse=True)
def _one_browser(monkeypatch):
    """Every ``AppTest.from_file`` of these tests starts as the browser of session :data:`TOKEN`."""
    made = AppTest.from_file.__func__

    def from_file(cls, *args, **kwargs):
        at = made(cls, *args, **kwargs)
        at.query_params["session"] = TOKEN
        return at

    monkeypatch.setattr(AppTest, "from_file", classmethod(from_file))


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    """Each test starts with the pages' in-memory cache empty (:mod:`webapp.cache`), as a fresh server."""
    from webapp import cache

    cache.MEMO.clear()
    yield
    cache.MEMO.clear()


@pytest.fixture()
def app_ws(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    return make_workspace(tmp_path)
