"""Fixtures of the browser tests: one ``streamlit run`` server and one Chromium page per test module
(``browser`` for tests that open several contexts: several people on that server)."""

from __future__ import annotations

import pytest

from tools.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server, watch_reruns


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """The server's workspace root, for tests that check what reached the disk."""
    return tmp_path_factory.mktemp("workspaces")


@pytest.fixture(scope="module")
def url(workspaces):
    with streamlit_server(workspaces) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(url, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1100})
    pg.set_default_timeout(120_000)
    watch_reruns(pg)  # settle() knows which run a click asked for
    yield pg
    pg.close()
