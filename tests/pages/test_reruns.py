"""What a stroke's or a slider step's rerun no longer does again (issue 22, item 9: slow interaction).

Every rerun of the Iterations page loaded all the refinement's iterations from disk and scored
them all again; every rerun of the Label page read the tile again and handed the canvas a PNG it
encoded anew (150 ms for 640²). Counted here, never timed: ``benchmarks/ui_latency.py`` times them.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from refiner.app import results
from refiner.app.painting import brush_colors, hex_color
from refiner.app.workspace import Workspace
from refiner.data.synthetic import DEMO_CLASSES
from tests.helpers import REPO
from webapp import cache

ITERATIONS = str(REPO / "pages" / "3_Iterations.py")
LABEL = str(REPO / "pages" / "1_Label.py")


def _count(monkeypatch, owner, name: str) -> list:
    """Record every call of ``owner.name`` (still calling it): (args, kwargs) each."""
    calls: list = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _run(page: str) -> AppTest:
    at = AppTest.from_file(page, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_slider_steps_neither_reload_nor_rescore_the_iterations(app_ws, monkeypatch):
    refinements = _count(monkeypatch, results, "model_refinement")
    scored = _count(monkeypatch, results, "map_scores")
    tiles = _count(monkeypatch, Workspace, "tile")
    at = _run(ITERATIONS)
    first = len(tiles)  # the first run reads the tile (and refines it)
    for t in (0, 1, 2, 3, 1):
        at.slider(key="iteration").set_value(t).run()
        assert not at.exception
    assert len(refinements) == 1 and len(scored) == 1 and len(tiles) == first
    # a new RNN (training rewrote its file): the page shows its refinement, not the one in memory
    model = app_ws.model_dir("rnn") / "model.safetensors"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    at.run()
    assert len(refinements) == 2 and len(scored) == 2
    # new labels: the scores follow them, the refinement stays
    app_ws.edit_labels(lambda now: np.where(np.arange(now.shape[1]) < 4, 2, now).astype(np.uint8))
    at.run()
    assert len(refinements) == 2 and len(scored) == 3


def test_a_stroke_reruns_the_label_page_without_reading_the_tile_and_sends_a_jpeg(app_ws, monkeypatch):
    import sys

    tiles = _count(monkeypatch, Workspace, "tile")
    at = _run(LABEL)
    first = len(tiles)
    (key,) = at.session_state["label_canvases"]
    sdc = sys.modules["streamlit_drawable_canvas"]  # imported by the page's run (it needs Streamlit's runtime)
    backgrounds = _count(monkeypatch, sdc, "st_canvas")
    road = hex_color(brush_colors(DEMO_CLASSES)[2])
    stroke = {"type": "Path", "stroke": road, "strokeWidth": 6, "path": [["M", 5, 500], ["Q", 100, 500, 300, 500]]}
    at.session_state[key] = {"drawing": {"raw": {"objects": [stroke]}, "data": None}, "backgroundFit": None}
    at.run()
    assert not at.exception and at.session_state["label_canvases"][key]["applied"] == 1
    assert len(tiles) == first  # read for the first run only
    # the canvas gets JPEG bytes of its own size (it PNG-encoded a PIL image as RGBA on every rerun)
    (call,) = backgrounds
    _, kwargs = call
    jpeg = kwargs.get("background_image")
    assert isinstance(jpeg, bytes) and jpeg[:3] == b"\xff\xd8\xff", type(jpeg)
    picture = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert picture.shape[:2] == (kwargs["height"], kwargs["width"])


def test_the_memory_cache_never_serves_another_workspace_even_with_the_same_file_stamps(app_ws, tmp_path):
    import shutil

    other = Workspace(tmp_path / "copy")
    shutil.copytree(app_ws.path, other.path)  # copy2: the same modification times, so the same stamps
    shutil.rmtree(other.results_dir())
    probs = other.coarse_probs()
    stamp = (other.path / "coarse_probs.tif").stat().st_mtime_ns
    other.write_coarse_probs(probs[::-1].copy(), {"source": "test"})  # other classes everywhere
    os.utime(other.path / "coarse_probs.tif", ns=(stamp, stamp))
    assert results.refinement_stamp(other) == results.refinement_stamp(app_ws)
    mine, theirs = cache.iterations(app_ws), cache.iterations(other)
    assert not np.array_equal(mine.maps[0], theirs.maps[0])
    assert np.array_equal(theirs.maps[0], probs[::-1].argmax(0))
    assert not np.array_equal(cache.coarse_map(app_ws), cache.coarse_map(other))


def test_the_memory_cache_follows_rewritten_files(app_ws):
    before = cache.tile_rgb(app_ws)
    assert cache.tile_rgb(app_ws) is before and not before.flags.writeable  # shared, so nobody may change it
    tile = app_ws.tile()
    tile.image = 1 - tile.image
    fresh = Workspace.create(app_ws.path.parent, app_ws.name, tile, app_ws.classes, overwrite=True)
    assert np.array_equal(cache.tile_rgb(fresh), 255 - before)
    fresh.write_coarse_probs(np.full((3, *fresh.shape), 1 / 3, np.float32), {"source": "test"})
    first = cache.coarse_map(fresh)
    probs = np.zeros((3, *fresh.shape), np.float32)
    probs[2] = 1
    fresh.write_coarse_probs(probs, {"source": "test"})
    assert (cache.coarse_map(fresh) == 2).all() and (first == 0).all()


def test_the_memory_cache_keeps_to_its_budget_least_recently_used_out():
    memo = cache.Memo(budget=3000)
    for k in "abc":
        memo.get(k, lambda: np.zeros(1000, np.uint8))
    memo.get("a", lambda: None)  # used: "b" is now the oldest
    memo.get("d", lambda: np.zeros(1000, np.uint8))
    made = []
    memo.get("b", lambda: made.append("b") or np.zeros(1, np.uint8))
    assert made == ["b"] and len(memo) == 3
    assert isinstance(memo.get("a", lambda: "made again"), np.ndarray)
