"""The Label page through AppTest: strokes the canvas reports, mask import with a value mapping,
undo, the map layer under the labels, and the view kept across sessions."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from refiner.app.painting import brush_colors, hex_color
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES
from tests.helpers import REPO

PAGE = str(REPO / "pages" / "1_Label.py")


def run() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _stroke(y: float, color: str, width: int = 6) -> dict:
    return {"type": "Path", "stroke": color, "strokeWidth": width, "path": [["M", 5, y], ["Q", 100, y, 300, y]]}


def _report(objects: list[dict]) -> dict:
    """What the canvas puts in the session state after a stroke."""
    return {"drawing": {"raw": {"objects": objects}, "data": None}, "backgroundFit": None}


def test_every_reported_stroke_is_merged_once_in_order_and_undone_one_by_one(app_ws):
    at = run()
    (key,) = at.session_state["label_canvases"]
    road, building = (hex_color(c) for c in brush_colors(DEMO_CLASSES)[2:0:-1])
    before = app_ws.labels()
    # three strokes arrive in one report (painted while a run was in flight), then a fourth;
    # the building stroke goes over the second road stroke (canvas y 540 = tile row 80)
    strokes = [_stroke(500, road), _stroke(540, road), _stroke(540, building)]
    at.session_state[key] = _report(strokes)
    at.run()
    after3 = app_ws.labels()
    at.session_state[key] = _report([*strokes, _stroke(600, road)])
    at.run()
    after4 = app_ws.labels()
    at.run()  # a rerun with the same report merges nothing again
    assert np.array_equal(app_ws.labels(), after4)
    rows = lambda lab, cls: set(np.nonzero((lab == cls).any(1) & (before != cls).all(1))[0].tolist())  # noqa: E731
    assert rows(after3, 2) == {74} and rows(after3, 1) == {80}  # in order: the later stroke on top
    assert rows(after4, 2) == {74, 89} and (after4[89, :40] == 2).all()
    # one Undo per stroke: the fourth, then the third (row 80 is road again)
    at.button(key="undo").click().run()
    assert np.array_equal(app_ws.labels(), after3)
    at.button(key="undo").click().run()
    assert rows(app_ws.labels(), 1) == set() and rows(app_ws.labels(), 2) == {74, 80}


def test_a_0_255_mask_is_imported_with_a_mapping_merged_and_undoable(app_ws):
    h, w = app_ws.shape
    painted = app_ws.labels()
    mask = np.zeros((h, w), np.uint8)
    mask[60:80, 60:90] = 255  # Inria style: 0 = not building, 255 = building
    mask[0:10, 0:10] = 255  # under painted labels
    at = run()
    at.file_uploader(key="mask_upload").set_value(("austin_mask.png", _png(mask), "image/png")).run()
    assert not at.exception
    boxes = {s.label: s for s in at.selectbox}
    assert boxes[f"value 0 ({(mask == 0).sum():,} px)"].value == 0  # background
    assert boxes[f"value 255 ({(mask == 255).sum():,} px)"].value == 1  # building, not unlabelled
    at.radio(key="import_mode").set_value("keep").run()
    at.button(key="import_mask").click().run()
    assert not at.exception and "Imported austin_mask.png" in at.success[0].value
    labels = app_ws.labels()
    assert (labels[60:80, 60:90] == 1).all() and (labels[mask == 0][painted[mask == 0] == IGNORE] == 0).all()
    assert np.array_equal(labels[painted != IGNORE], painted[painted != IGNORE])  # painted labels kept
    assert (labels != IGNORE).all()
    at.button(key="undo").click().run()
    assert np.array_equal(app_ws.labels(), painted)
    # replace: the mask's labels only, with the value chosen as unlabelled left out
    at.file_uploader(key="mask_upload").set_value(("austin_mask.png", _png(mask), "image/png")).run()
    next(s for s in at.selectbox if s.label.startswith("value 0 ")).set_value(IGNORE)
    at.radio(key="import_mode").set_value("replace").run()
    at.button(key="import_mask").click().run()
    labels = app_ws.labels()
    assert ((labels == 1) == (mask == 255)).all() and ((labels == IGNORE) == (mask == 0)).all()


def test_a_mask_of_another_size_is_a_message(app_ws):
    at = run()
    at.file_uploader(key="mask_upload").set_value(("small.png", _png(np.zeros((10, 8), np.uint8)), "image/png"))
    at.run()
    assert not at.exception and "must cover the same grid" in at.error[0].value


def test_the_view_and_layer_choice_survive_a_new_session(app_ws):
    at = run()
    assert at.radio(key="label_layer").options == ["imagery only", "coarse map", "refined map"]
    at.select_slider(key="label_zoom").set_value(4).run()
    at.slider(key="label_cy").set_value(0.8).run()
    at.radio(key="brush").set_value("road").run()
    at.radio(key="label_layer").set_value("refined map").run()
    assert not at.exception
    assert any("over the refined map" in c.value for c in at.caption)
    again = run()  # a reload: a new session
    assert again.select_slider(key="label_zoom").value == 4 and again.slider(key="label_cy").value == 0.8
    assert again.radio(key="brush").value == "road" and again.radio(key="label_layer").value == "refined map"
    assert any("over the refined map" in c.value for c in again.caption)


def test_long_work_shows_a_busy_box_whose_stop_turns_it_off(app_ws, monkeypatch):
    import time

    from refiner.app import results

    real = results.label_need

    def slow(ws, labels=None):
        time.sleep(1.5)
        return real(ws, labels)

    monkeypatch.setattr(results, "label_need", slow)
    at = run()
    at.toggle(key="show_hints").set_value(True).run()
    assert not at.exception
    assert any("Finding where labels would help most: done in" in s.label for s in at.status)
    assert any("Where to label next" in c.value for c in at.caption)
    at.button(key="stop_hints").click().run()  # what a click during the wait does
    assert at.toggle(key="show_hints").value is False
    assert not any("Where to label next" in c.value for c in at.caption)


def test_other_pages_keep_their_zoom_and_pan_too(app_ws):
    page = str(REPO / "pages" / "5_Filters.py")
    at = AppTest.from_file(page, default_timeout=180).run()
    at.select_slider(key="filters_zoom").set_value(2).run()
    at.slider(key="filters_cx").set_value(0.25).run()
    assert not at.exception
    again = AppTest.from_file(page, default_timeout=180).run()
    assert again.select_slider(key="filters_zoom").value == 2 and again.slider(key="filters_cx").value == 0.25


def test_a_tile_uploaded_with_road_valued_255_starts_unlabelled_on_the_label_page(app_ws):
    """Upload with classes background,road and values 0,255: Label showed 2,250,000 px road, 0 unlabelled."""
    from tests.helpers import run as run_page

    img = np.zeros((40, 48, 3), np.uint8)
    img[:, 20:26] = 200  # a bright vertical road
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.file_uploader(key="tile_upload").set_value(("roads.png", _png(img), "image/png")).run()
    at.text_input(key="upload_name").set_value("roads")
    at.text_input(key="upload_classes").set_value("background,road")
    at.text_input(key="upload_values").set_value("0,255").run()
    at.button(key="create_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    label = run_page("pages/1_Label.py", ws="roads")
    m = {x.label: x.value for x in label.metric}
    assert m["road"] == "0" and m["unlabelled"] == f"{40 * 48:,}", m
