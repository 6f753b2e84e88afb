"""The real-imagery demo in a real browser: open it from the start page and see its coarse map.

Needs the shared data (``$REFINER_DATA`` or ``../shared/data``) and a shipped coarse CNN in
``assets/pretrained``; skipped without them, as the app then does not offer the demo.
"""

from __future__ import annotations

import pytest

from refiner.app.demos import REAL_DEMOS, unavailable
from refiner.models.pretrained import pick_coarse
from tools.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    metrics,
    open_page,
    require_chromium,
    settle,
    streamlit_server,
)

require_chromium(demo_assets=False)
DEMO = REAL_DEMOS["real-roads"]
if unavailable(DEMO.name):
    pytest.skip(unavailable(DEMO.name), allow_module_level=True)
if pick_coarse(DEMO.classes, DEMO.pixel_size).model is None:
    pytest.skip("no shipped coarse CNN in assets/pretrained", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def test_the_real_roads_demo_opens_with_a_coarse_map(tmp_path):
    with streamlit_server(tmp_path) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(180_000)
        open_page(page, url)  # the synthetic demo first
        page.get_by_role("button", name=f"Open the real demo: {DEMO.title}").click()
        page.get_by_text(f"tile from {DEMO.title}").first.wait_for()  # the synthetic demo is 512² at 1 m too
        settle(page)
        m = metrics(page)
        assert m["Size (rows × cols)"] == "512 × 512" and m["Ground resolution"] == "1.00 m/px"
        assert m["CRS"] == "none"  # a JPEG: its 1 m is stated, not read from the file
        page.get_by_text("coarse probabilities: shipped coarse CNN").first.wait_for()
        page.get_by_text("Picked for this workspace:").first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
        # Compare before any fine-tune: coarse, CRF and the shipped RNN, not one red "no refinement RNN yet"
        open_page(page, url, "Compare", wait_for='[data-testid="stTable"]')
        page.get_by_text("Shipped RNN rnn_1m").first.wait_for()
        assert page.get_by_text("no refinement RNN yet").count() == 0
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()
    assert (tmp_path / "templates" / "real-roads" / "coarse_probs.tif").is_file()  # the template, built once
    assert len(list(tmp_path.glob("owners/*/real-roads/coarse_probs.tif"))) == 1  # and the session's copy
