"""Fixtures of the browser tests: one ``streamlit run`` server and one Chromium page per test module."""

from __future__ import annotations

import pytest

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, streamlit_server


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """The server's workspace root, for tests that check what reached the disk."""
    return tmp_path_factory.mktemp("workspaces")


@pytest.fixture(scope="module")
def url(workspaces):
    with streamlit_server(workspaces) as u:
        yield u


@pytest.fixture(scope="module")
def page(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.set_default_timeout(120_000)
        yield pg
        browser.close()
