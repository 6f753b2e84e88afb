"""The app's whole-scene job: the workspace's models over a GeoTIFF, in the background, cancellable."""

import pyogrio
import pytest
import rasterio

from refiner.app.jobs import scene as scene_job
from refiner.data.tile import Georef
from refiner.scale.scene import refine_scene
from tests.helpers import make_workspace
from tests.scale.test_scene import files  # noqa: F401  (module fixture: a small georeferenced scene)


@pytest.fixture()
def ws(tmp_path):
    return make_workspace(tmp_path)  # classes background/building/road, a random RNN, no coarse CNN


def test_scene_job_refines_with_given_coarse_probabilities(ws, files, tmp_path):  # noqa: F811
    d = files["dir"]
    scene_job.start_scene_job(ws, str(d / "image.tif"), coarse=str(d / "probs.tif"))
    with pytest.raises(RuntimeError, match="already going"):
        scene_job.start_scene_job(ws, str(d / "image.tif"))
    done = scene_job.SCENE.wait(ws, timeout=300)
    assert done.state == "finished", done.message
    assert done.stage == "vectors" and done.done == done.total > 0 and done.seconds > 0
    out = scene_job.scene_outputs(ws)
    assert set(done.outputs) == {"refined_map", "refined_probs", "polygons"}  # no coarse stage: it was given
    from refiner.data.export import POLYGONS, class_polygons

    n = pyogrio.read_info(out["polygons"], layer=POLYGONS)["features"]
    with rasterio.open(out["refined_map"]) as ds:  # the scene's polygons are its class map's
        m = ws.classes.encode_mask(ds.read(1))
        expected, _ = class_polygons(m, Georef(ds.crs, ds.transform), ws.classes, min_pixels=4, simplify=ds.res[0])
    assert n == len(expected) > 0
    refine_scene(ws.model_dir("rnn"), d / "image.tif", d / "probs.tif", tmp_path / "ref.tif")
    assert out["refined_map"].read_bytes() == (tmp_path / "ref.tif").read_bytes()


def test_scene_job_computes_coarse_probabilities_with_the_shipped_cnn(ws, files, tmp_path):  # noqa: F811
    """No coarse map given and none in the workspace: the demo's shipped coarse CNN makes it."""
    from refiner.core.paths import DEMO
    from refiner.scale.scene import predict_scene

    assert not ws.has_model("coarse")
    scene_job.start_scene_job(ws, str(files["dir"] / "image.tif"))
    done = scene_job.SCENE.wait(ws, timeout=300)
    assert done.state == "finished", done.message
    assert set(done.outputs) == {"coarse_probs", "refined_map", "refined_probs", "polygons"}
    assert all(scene_job.scene_outputs(ws)[n].is_file() for n in done.outputs)
    shipped = predict_scene(DEMO / "coarse", files["dir"] / "image.tif", tmp_path / "shipped.tif")
    with rasterio.open(done.outputs["coarse_probs"]) as got, rasterio.open(shipped) as want:
        assert (got.read() == want.read()).all()


def test_scene_job_cancel_and_errors_are_reported_not_raised(ws, files, tmp_path):  # noqa: F811
    d = files["dir"]
    scene_job.SCENE.cancel(ws)  # already requested when the first window reports
    st = scene_job.run_scene_job(str(ws.path), "job1", str(d / "image.tif"), str(d / "probs.tif"), "")
    assert st["state"] == "cancelled"
    out = scene_job.scene_outputs(ws)["refined_map"]
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
    st = scene_job.run_scene_job(str(ws.path), "job2", str(tmp_path / "missing.tif"), "", "")
    assert st["state"] == "failed" and "missing.tif" in st["message"]
    import numpy as np
    import rasterio

    two_bands = tmp_path / "two_bands.tif"  # coarse probabilities for the wrong number of classes
    with rasterio.open(d / "probs.tif") as src:
        profile = src.profile | {"count": 2}
    with rasterio.open(two_bands, "w", **profile) as dst:
        dst.write(np.full((2, profile["height"], profile["width"]), 0.5, np.float32))
    st = scene_job.run_scene_job(str(ws.path), "job4", str(d / "image.tif"), str(two_bands), "")
    assert st["state"] == "failed" and "2 bands but the model has 3 classes" in st["message"]
    assert not scene_job.scene_outputs(ws)["refined_map"].exists()
    no_rnn = make_workspace(tmp_path / "other", with_rnn=False)
    st = scene_job.run_scene_job(str(no_rnn.path), "job3", str(d / "image.tif"), "", "")
    assert st["state"] == "failed" and "Train page" in st["message"]
    with pytest.raises(ValueError, match="scene's GeoTIFF"):
        scene_job.start_scene_job(ws, "  ")


def test_default_source_is_where_the_tile_came_from(ws):
    assert scene_job.default_source(ws) == ""  # a test scene: unknown
    ws.update_settings(source={"kind": "cog", "name": "https://example.com/city.tif", "window": [0, 0, 512, 512]})
    assert scene_job.default_source(ws) == "https://example.com/city.tif"
