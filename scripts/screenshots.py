"""Take the README's screenshots from the real app (demo workspace) in Chromium.

    .venv/bin/python scripts/screenshots.py      # or: make screenshots
    .venv/bin/python scripts/screenshots.py 1_start 2_label    # only these (stops after the last)

Starts ``streamlit run`` on a fresh workspace root, paints a stroke, attaches the demo's truth as
the reference mask, trains a few steps, runs the CRF grid search, and saves one PNG per page to
``docs/screenshots`` (two for the Learn page: the equation and its filters, then the preset's
iterations beside the learned RNN's).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from tools.browser import CHROMIUM, CHROMIUM_ARGS, REPO, open_page, settle, streamlit_server  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def largest_building() -> tuple[slice, slice]:
    """Where to paint 'building' for the picture: the demo's largest building outside the
    labelled corner (from its shipped truth), so the stroke is a correct label."""
    import numpy as np
    import rasterio
    from scipy import ndimage

    with rasterio.open(REPO / "assets" / "demo" / "truth.tif") as ds:
        truth = ds.read(1)
    truth[:200, :200] = 0
    comps, _ = ndimage.label(truth == 1)
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    return ndimage.find_objects(comps)[int(sizes.argmax()) - 1]


class Done(Exception):
    """Every screenshot asked for is taken."""


def main(wanted: set[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    with tempfile.TemporaryDirectory() as root, streamlit_server(Path(root)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)

        def shot(name: str, full: bool = False) -> None:
            if not wanted or name in wanted:
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
                print("wrote", OUT / f"{name}.png")
                taken.add(name)
            if wanted and wanted <= taken:
                raise Done

        open_page(page, url)
        page.frame_locator("iframe").first.locator("img.leaflet-image-layer").first.wait_for()
        page.mouse.wheel(0, 330)
        page.wait_for_timeout(800)
        shot("1_start")

        open_page(page, url, "Label")
        page.get_by_text("building (#").click()
        settle(page)
        page.locator('[data-testid="stRadio"]').filter(has_text="Under the labels").get_by_text("coarse map").click()
        settle(page)
        canvas = page.locator("canvas").last
        box = canvas.bounding_box()
        rows, cols = largest_building()
        scale = box["width"] / 512
        y = box["y"] + (rows.start + rows.stop) / 2 * scale
        x0, x1 = box["x"] + (cols.start + 5) * scale, box["x"] + (cols.stop - 5) * scale
        page.mouse.move(x0, y)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(x0 + (x1 - x0) * k / 10, y)
        page.mouse.up()
        page.wait_for_timeout(1500)
        settle(page)
        page.mouse.wheel(0, 180)
        page.wait_for_timeout(500)
        shot("2_label")

        open_page(page, url, "Train", wait_for="text=Start training")
        # the demo's exact truth as the independent reference, so the pages score on it too
        page.get_by_text("Reference for scoring (none attached)").click()
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Mask (GeoTIFF or PNG")
        uploader.locator("input[type=file]").set_input_files(str(REPO / "assets" / "demo" / "truth.tif"))
        page.get_by_role("button", name="Attach as the reference").click()
        page.get_by_text("Reference for scoring: the mask truth.tif").wait_for()
        settle(page)
        for label, value in (("Steps", "60"),):
            field = page.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Tab")
        page.get_by_role("button", name="Start training").click()
        # 60 steps: a minute on an idle 2-core machine, several on a busy one
        page.locator('[data-testid="stProgress"]').filter(has_text="Finished").wait_for(timeout=1_200_000)
        page.get_by_text("The current RNN's scores").wait_for()
        page.locator('[data-testid="stTable"]').last.wait_for()
        settle(page)
        page.set_viewport_size({"width": 1400, "height": 1500})
        page.mouse.wheel(0, 420)
        page.wait_for_timeout(800)
        page.get_by_text("Model history").scroll_into_view_if_needed()
        page.mouse.wheel(0, -250)
        page.wait_for_timeout(800)
        shot("3_train")

        open_page(page, url, "Iterations")
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").get_by_role("slider")
        slider.focus()
        slider.press("ArrowLeft")
        slider.press("ArrowLeft")
        settle(page)
        page.mouse.wheel(0, 520)
        page.wait_for_timeout(800)
        shot("4_iterations", full=True)

        page.set_viewport_size({"width": 1400, "height": 1900})
        open_page(page, url, "Compare", wait_for='[data-testid="stTable"]')
        page.get_by_role("button", name="Grid search on the painted labels").click()
        page.locator('[data-testid="stProgress"]').filter(has_text="Finished").wait_for(timeout=1_200_000)
        page.locator('[data-testid="stTable"]').last.wait_for()
        settle(page)
        shot("5_compare", full=True)

        page.set_viewport_size({"width": 1400, "height": 1000})
        open_page(page, url, "Filters", wait_for='[data-testid="stImage"]')
        shot("6_filters", full=True)

        # Learn: Perona-Malik's equation and its terms as filters, then its iterations beside the
        # learned RNN's (the page scrolls inside Streamlit's container, so one viewport per view).
        open_page(page, url, "Learn", wait_for='[data-testid="stTable"]')
        page.get_by_text("Perona–Malik", exact=True).click()
        page.get_by_text("Perona–Malik, t = 10", exact=True).wait_for()
        settle(page)

        def scroll_to(heading: str) -> None:
            page.get_by_role("heading", name=heading).evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(800)

        scroll_to("1 · Pick an equation")
        shot("8_learn_equations")
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").get_by_role("slider")
        slider.focus()
        for _ in range(6):
            slider.press("ArrowLeft")
        page.get_by_text("Perona–Malik at t = 4", exact=True).wait_for()
        settle(page)
        scroll_to("3 · Run it on this tile, beside the learned RNN")
        shot("9_learn_iterations")

        open_page(page, url, "Export", wait_for='[data-testid="stDownloadButton"]')
        shot("7_export", full=True)
        browser.close()


if __name__ == "__main__":
    with contextlib.suppress(Done):
        main(set(sys.argv[1:]))
