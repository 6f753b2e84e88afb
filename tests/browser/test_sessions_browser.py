"""Two people on one server (two Chromium contexts): each paints in their own copy of the demo,
neither sees the other's stroke, a refresh keeps one's own, and a read-only link shows the
owner's labels without a canvas to paint on."""

from __future__ import annotations

import pytest

from tools.browser import (
    click_for_rerun,
    metrics,
    open_page,
    paint_stroke,
    require_chromium,
    session_query,
    settle,
)

require_chromium()

sync_api = pytest.importorskip("playwright.sync_api")


def _reload(page) -> None:
    page.reload()
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=180_000)
    settle(page)


def test_two_browser_sessions_keep_their_own_work(url, browser):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1100}) for _ in range(2)]
    try:
        alice, bob = (c.new_page() for c in contexts)
        for p in (alice, bob):
            p.set_default_timeout(180_000)
            open_page(p, url, "Label")
        assert session_query(alice) and session_query(bob) and session_query(alice) != session_query(bob)
        start = metrics(bob)["road"]
        assert metrics(alice)["road"] == start  # both copies of the same template
        paint_stroke(alice, "road")
        painted = metrics(alice)["road"]
        assert painted != start
        _reload(bob)
        assert metrics(bob)["road"] == start  # nothing of alice's stroke
        _reload(alice)
        assert metrics(alice)["road"] == painted  # hers is kept across a refresh
        paint_stroke(bob, "building", where=(0.3, 0.9))
        _reload(alice)
        assert metrics(alice)["road"] == painted and metrics(alice)["building"] != metrics(bob)["building"]

        # alice shares her workspace read-only: bob sees her labels, with no canvas to paint on
        alice.get_by_text("Share", exact=True).click()
        click_for_rerun(alice, alice.get_by_role("button", name="Link to look"))
        link = alice.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text().strip()
        assert "?share=" in link
        bob.goto(link if link.startswith("http") else f"{url}/Label{link}")
        bob.wait_for_selector('[data-testid="stMetricValue"]', timeout=180_000)
        settle(bob)
        assert metrics(bob)["road"] == painted
        assert bob.get_by_text("Read-only: it was shared with you to look at").count() >= 1
        assert bob.locator("canvas").count() == 0
        for p in (alice, bob):
            assert p.locator('[data-testid="stException"]').count() == 0
    finally:
        for c in contexts:
            c.close()
