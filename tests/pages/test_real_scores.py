"""On the Inria Austin tile (../shared/data, skipped without it): the app's score with the
reference mask attached agrees with a whole-tile evaluation against that mask done here, from
the files, without the app's code paths (issue #14: the app said building IoU 0.77 where the tile
said 0.46)."""

from __future__ import annotations

import pytest
import rasterio
from rasterio.windows import Window
from streamlit.testing.v1 import AppTest

from refiner.app import jobs, results
from refiner.data.read import read_image
from refiner.models.inference import refine
from refiner.models.store import load_model
from tests.helpers import REPO, SHARED_DATA

INRIA = SHARED_DATA / "inria_austin"
NAME = "austin_x617100_y3344400.tif"
SHIPPED = REPO / "assets" / "pretrained"
pytestmark = pytest.mark.skipif(
    not (INRIA / "masks" / NAME).is_file() or not (SHIPPED / "rnn_1m" / "config.json").is_file(),
    reason="needs ../shared/data/inria_austin and the shipped models",
)


@pytest.mark.slow
def test_the_apps_reference_score_on_austin_is_the_whole_tile_score(tmp_path, monkeypatch):
    from refiner.app.demos import REAL_DEMOS

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    from tests.helpers import session

    ws = session(tmp_path).open_template_copy("real-buildings")  # this test's browser session's copy
    params = jobs.TrainParams(steps=60, eval_every=20, checkpoint_every=60, resume=False, pretrained="rnn_1m")
    jobs.start_training(ws, params)
    done = jobs.TRAINING.wait(ws, timeout=900)
    assert done.state == "finished", done.message

    at = AppTest.from_file(str(REPO / "pages/4_Compare.py"), default_timeout=600).run()
    mask_file = INRIA / "masks" / NAME  # the whole 1000^2 tile's mask; the workspace is a 768^2 window of it
    at.file_uploader(key="compare_ref_file").set_value((NAME, mask_file.read_bytes(), "image/tiff")).run()
    assert [at.selectbox(key=f"compare_ref_v{v}").value for v in (0, 255)] == ["background", "building"]
    at.button(key="compare_ref_attach").click().run()
    assert not at.exception and not at.error
    held, ref = (t.value for t in at.table)
    app_iou = ref.loc["RNN", "IoU building"]

    # the same evaluation from the files: the image window, the saved RNN, the mask's window
    r, c, h, w = REAL_DEMOS["real-buildings"].window
    tile = read_image(SHARED_DATA / REAL_DEMOS["real-buildings"].image, window=(r, c, h, w))
    refined = refine(load_model(ws.model_dir("rnn"), expect="rnn"), tile, ws.coarse_probs()).class_map()
    with rasterio.open(mask_file) as ds:
        truth = ds.read(1, window=Window(c, r, w, h)) == 255
    pred = refined == ws.classes.names.index("building")
    tile_iou = (pred & truth).sum() / (pred | truth).sum()
    print(f"held-out building IoU {held.loc['RNN', 'IoU building']:.3f}, reference {app_iou:.3f}, tile {tile_iou:.3f}")
    assert abs(app_iou - tile_iou) < 0.03, (app_iou, tile_iou)
    assert results.reference_eval(ws).pixels == h * w  # scored over the whole window
