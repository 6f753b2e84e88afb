"""Issue 22 item 9 in a real browser: a slider step on a 1200² tile shows the new iteration from
pictures of the view's size. The page sent the whole tile, twice, on every step (Streamlit
re-encoding 1200² JPEGs the browser then shrank to a 460 px column); how long a step takes is
``benchmarks/ui_latency.py``'s to measure, not a test's."""

from __future__ import annotations

import pytest

from refiner.app import sessions
from tests.helpers import make_workspace
from tools.browser import require_chromium, settle

require_chromium()

sync_api = pytest.importorskip("playwright.sync_api")

#: natural width and whether loaded, of every picture on the page
PICTURES = "() => [...document.querySelectorAll('[data-testid=stImage] img')].map(i => [i.naturalWidth, i.complete])"


def test_a_slider_step_shows_the_new_iteration_from_pictures_of_the_views_size(page, url, workspaces):
    token = sessions.issue_session(workspaces)
    make_workspace(workspaces, "big", size=1200, token=token)  # an RNN of T = 3
    page.goto(f"{url}/Iterations?session={token}&ws=big")
    page.get_by_text("class map at t = 3").wait_for(timeout=180_000)
    settle(page)
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").locator('input[type="range"]')
    thumb.focus()
    page.keyboard.press("ArrowLeft")
    page.get_by_text("class map at t = 2").wait_for()
    page.get_by_text("P(building) at t = 2", exact=False).wait_for()
    settle(page)
    page.wait_for_function(f"() => ({PICTURES})().every(([w, done]) => done && w > 0)")
    widths = [w for w, _ in page.evaluate(PICTURES)]
    # the view (zoom 1) is 480 screen px: sent at most twice that (sharp on dense screens), never the tile's 1200
    assert len(widths) == 2 and all(w <= 960 for w in widths), widths
    assert page.locator('[data-testid="stException"]').count() == 0
