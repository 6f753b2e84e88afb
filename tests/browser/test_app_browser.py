"""The app in a real browser: Chromium (Debian's) driven by Playwright against ``streamlit run``.

Runs in file order on one server, as one user (one session: its own copy of the demo), the way a
user would go through it:
open the demo, paint, train a few steps, slide through the iterations, compare.
"""

from __future__ import annotations

import re

import pytest

from tools.browser import (
    click_for_rerun,
    expect_rerun,
    metrics,
    open_page,
    paint_stroke,
    require_chromium,
    settle,
    watch_reruns,
)

require_chromium()

sync_api = pytest.importorskip("playwright.sync_api")


def test_the_demo_opens_without_an_upload(page, url):
    open_page(page, url)
    m = metrics(page)
    assert m["Size (rows × cols)"] == "512 × 512"
    assert m["CRS"] == "EPSG:32614" and m["Ground resolution"] == "1.00 m/px"
    # the leafmap map draws offline: Leaflet runs and shows the tile and class map layers
    frame = page.frame_locator("iframe").first
    frame.locator(".leaflet-container").wait_for()
    assert frame.locator("img.leaflet-image-layer").count() == 2
    # the sidebar names each page after its step, in the user's order (not the script "app")
    links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    assert [t.strip() for t in links] == [
        "Tile and workspace",
        "Label",
        "Train",
        "Iterations",
        "Compare",
        "Filters",
        "Export",
        "Learn",
    ]


def test_painting_a_stroke_changes_the_class_pixel_count(page, url):
    open_page(page, url, "Label")
    before = metrics(page)
    paint_stroke(page, "road")
    after = metrics(page)
    num = lambda s: int(s.replace(",", ""))  # noqa: E731
    assert num(after["road"]) > num(before["road"]) + 100
    assert num(after["unlabelled"]) < num(before["unlabelled"])
    # a refresh is a new session: the labels were saved in the workspace
    page.reload()
    page.wait_for_selector('[data-testid="stMetricValue"]')
    settle(page)
    assert metrics(page)["road"] == after["road"]


def test_training_a_few_steps_shows_progress(page, url):
    open_page(page, url, "Train", wait_for="text=Start training")
    assert "on CPU (no GPU found" in page.get_by_text("Fine-tunes the RNN on your painted pixels").inner_text()
    for label, value in (("Steps", "6"), ("Batch size", "2"), ("Patch size (px)", "24")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    click_for_rerun(page, page.get_by_role("button", name="Start training"))
    progress = page.locator('[data-testid="stProgress"]')
    progress.filter(has_text=re.compile("Training on cpu|Starting")).wait_for(timeout=60_000)
    progress.filter(has_text="Finished").wait_for(timeout=240_000)
    page.locator('[data-testid="stMetricValue"]').filter(has_text="6 / 6").wait_for()
    settle(page)
    m = metrics(page)
    assert m["Step"] == "6 / 6" and m["Device"] == "cpu"
    # the loss curve: Plotly draws after the page settles (its bundle loads lazily), so wait for it
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)


def test_the_iteration_slider_moves_through_t(page, url):
    open_page(page, url, "Iterations")
    assert "Accuracy at t = 5" in metrics(page)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").get_by_role("slider")
    slider.focus()
    slider.press("Home")
    # the script reruns and redraws top to bottom: wait for the last part to show t = 0
    page.get_by_text("class map at t = 0 (coarse CNN)").wait_for()
    page.locator('[data-testid="stMetricLabel"]').filter(has_text="Accuracy at t = 0").wait_for()
    settle(page)
    assert "Accuracy at t = 5" not in metrics(page)
    slider.press("ArrowRight")
    settle(page)
    page.locator('[data-testid="stMetricLabel"]').filter(has_text="Accuracy at t = 1").wait_for()
    page.get_by_text("class map at t = 1").wait_for()
    # scores per iteration: Plotly draws after the run ends (its bundle loads lazily), so wait for it
    sync_api.expect(page.locator(".js-plotly-plot")).to_have_count(1)


#: A busy server, made on purpose: every message from the page reaches the server 1.5 s late (in
#: order), so for 1.5 s after a click nothing on the page says a run is coming.
HOLD_SENDS = """
(() => { const send = WebSocket.prototype.send;
         WebSocket.prototype.send = function (d) { setTimeout(() => send.call(this, d), 1500); }; })();
"""


def test_expect_rerun_waits_for_a_run_the_server_has_not_started_yet(url, browser):
    """expect_rerun() around a key press returns only once that press's run has ended, however late it starts.

    With fixed sleeps (300 ms, then "no status widget", then 300 ms) it returned before the run began;
    a bare settle() after the press did too, once in CI, when the slider sent its value after settle's
    first look (the run before had ended, and nothing had been asked for yet).
    """
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(120_000)
    page.add_init_script(HOLD_SENDS)  # before settle's own watch: it sees the click's request when made
    watch_reruns(page)
    try:
        open_page(page, url, "Iterations")
        assert "Accuracy at t = 5" in metrics(page)
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").get_by_role("slider")
        slider.focus()
        with expect_rerun(page):
            slider.press("Home")
        assert "Accuracy at t = 0" in metrics(page)  # read at once: expect_rerun waited for the run
        assert page.get_by_text("class map at t = 0 (coarse CNN)").count() == 1
    finally:
        page.close()


def test_the_compare_table_lists_every_method(page, url):
    open_page(page, url, "Compare", wait_for='[data-testid="stTable"]')
    table = page.locator('[data-testid="stTable"]').inner_text()
    for method in ("Coarse CNN", "Dense CRF", "RNN"):
        assert method in table
    assert "IoU building" in table and "mean IoU" in table


def _png(height: int, width: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_uploads_show_what_is_wrong_not_a_traceback(page, url):
    open_page(page, url)
    page.get_by_role("tab", name="Upload an image").click()
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="GeoTIFF, PNG or JPEG")
    uploader.locator("input[type=file]").set_input_files(
        files=[{"name": "notes.tif", "mimeType": "image/tiff", "buffer": b"just some text, not a picture"}]
    )
    page.get_by_text("is not an image Refiner can read").wait_for()  # said on upload, before any button
    assert page.get_by_role("button", name="Create workspace").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0

    open_page(page, url, "Label")
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="GeoTIFF/PNG mask")
    uploader.locator("input[type=file]").set_input_files(
        files=[{"name": "small.png", "mimeType": "image/png", "buffer": _png(100, 80)}]
    )
    page.get_by_text("they must cover the same grid").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
