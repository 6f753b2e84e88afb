"""A too-large upload on the start page: the message says how to proceed, and window fields
under the upload read a window of it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

import refiner.app.uploads as wsmod
from refiner.app.workspace import Workspace
from tests.helpers import REPO


def _png(h: int, w: int) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(w, dtype=np.uint8)[None, :]  # column index, to check the window
    img[:, :, 1] = np.arange(h, dtype=np.uint8)[:, None]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_a_too_large_upload_offers_a_window_and_reads_it(app_ws, monkeypatch):
    monkeypatch.setattr(wsmod, "MAX_PIXELS", 1600)  # 40 x 40
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.file_uploader(key="tile_upload").set_value(("big.png", _png(60, 80), "image/png")).run()
    assert not at.exception
    said = " ".join(w.value for w in at.warning)
    assert "big.png is 60 × 80 pixels" in said and "Choose a window of it below (up to 40 × 40)" in said
    windowed = at.toggle(key="upload_windowed")
    assert windowed.value and windowed.disabled  # a window is the only way in
    at.number_input(key="upload_row").set_value(10)
    at.number_input(key="upload_col").set_value(20)
    at.number_input(key="upload_h").set_value(24)
    at.number_input(key="upload_w").set_value(32).run()
    at.button(key="create_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ws = Workspace.open(app_ws.path.parent, "my-tile")
    tile = ws.tile()
    assert tile.shape == (24, 32) and ws.settings["source"]["window"] == [10, 20, 24, 32]
    rgb = (tile.image[:2] * 255 + 0.5).astype(int)
    assert rgb[0, 0, 0] == 20 and rgb[1, 0, 0] == 10  # its first pixel is (row 10, column 20)


def test_a_small_upload_needs_no_window(app_ws):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.file_uploader(key="tile_upload").set_value(("small.png", _png(30, 40), "image/png")).run()
    assert not at.exception and not at.warning
    assert not at.toggle(key="upload_windowed").value and "upload_row" not in [n.key for n in at.number_input]
    at.button(key="create_upload").click().run()
    assert not at.exception and not at.error
    assert Workspace.open(app_ws.path.parent, "my-tile").tile().shape == (30, 40)
