"""Each page's logic through ``streamlit.testing.v1.AppTest`` (custom components such as the
canvas and the map are not rendered here: the browser tests cover those)."""

from __future__ import annotations

import re

import numpy as np
import pyogrio
import pytest
from streamlit.testing.v1 import AppTest

from refiner.app import jobs, results
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.core.metrics import evaluate
from tests.helpers import REPO, TIMEOUT, TOKEN, make_workspace, run, session, train_button


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_start_page_describes_the_tile(app_ws):
    at = run("app.py")
    m = metrics(at)
    assert m["Size (rows × cols)"] == "96 × 96" and m["CRS"] == "EPSG:32614" and m["Bands"] == "3"
    assert m["Ground resolution"] == "1.00 m/px" and m["Data type"] == "uint8"
    assert not at.error


def test_every_page_ends_with_the_run_end_marker(app_ws):
    """The browser tests wait for it (tools/browser.py ``settle``): a page without it makes them hang."""
    import ast

    for page in sorted((REPO / "pages").glob("*.py")):
        assert ast.unparse(ast.parse(page.read_text()).body[-1]) == "common.end_of_run()", page.name
    at = run("app.py")
    assert at.get("html")[-1].proto.body == '<span data-refiner-run="1" style="display:none"></span>'
    at.run()
    assert at.get("html")[-1].proto.body == '<span data-refiner-run="2" style="display:none"></span>'


def test_a_bad_cog_url_is_an_error_message_not_a_traceback(app_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_DATA_ROOTS", str(tmp_path))  # the operator lets this folder be read
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 50)
    at = run("app.py")
    at.text_input(key="cog_url").input(str(bad)).run()
    at.button(key="read_cog").click().run()
    assert not at.exception
    assert at.error and "could not be opened" in at.error[0].value


def test_workspace_survives_a_new_session(app_ws, tmp_path):
    """A refresh or restart is a new session with the same address: same workspace, same labels."""
    other = make_workspace(tmp_path, "second")
    labels = other.labels()
    labels[:] = IGNORE
    labels[:3, :3] = 1
    other.write_labels(labels)
    at = run("pages/1_Label.py", ws="t")
    assert at.sidebar.selectbox[0].value == "t" and at.sidebar.selectbox[0].options == ["second", "t"]
    at.sidebar.selectbox[0].select("second").run()
    assert metrics(at)["building"] == "9"
    address = dict(at.query_params)  # what the browser's address bar now holds
    assert address == {"session": TOKEN, "ws": "second"}
    again = run("pages/1_Label.py", **address)  # the refresh
    assert again.sidebar.selectbox[0].value == "second" and metrics(again)["building"] == "9"
    assert run("pages/1_Label.py").sidebar.selectbox[0].value == "second"  # no ?ws=: the last one used


def test_label_page_counts_and_undo(app_ws):
    at = run("pages/1_Label.py")
    counts = app_ws.label_counts()
    assert metrics(at)["road"] == f"{counts['road']:,}"
    assert at.button(key="undo").disabled
    labels = app_ws.labels()
    labels[60:70, 60:70] = 2  # as a stroke would
    app_ws.write_labels(labels)
    at.run()
    assert metrics(at)["road"] == f"{counts['road'] + 100:,}"
    at.button(key="undo").click().run()
    assert metrics(at)["road"] == f"{counts['road']:,}"
    assert at.radio(key="brush").options[-1].startswith("eraser")


def test_train_page_trains_in_the_background_and_shows_progress(app_ws):
    at = run("pages/2_Train.py")
    assert any("CPU" in m.value for m in at.markdown)
    assert any("No training run yet" in i.value for i in at.info)
    at.number_input(key="steps").set_value(6)
    at.number_input(key="patch").set_value(24)
    train_button(at).click().run()  # the form's submit button
    st = jobs.TRAINING.wait(app_ws, timeout=120)
    assert st.state == "finished", st.message
    at.run()
    m = metrics(at)
    assert m["Step"] == "6 / 6" and m["Device"] == "cpu"
    assert m["Held-out mean IoU"] != "–"
    assert app_ws.holdout() is not None


def test_train_form_defaults_are_the_config_dataclasses(tmp_path, monkeypatch):
    """The form's widgets start at TrainParams' defaults (themselves the dataclasses'), the learning
    rate and the pull at FINETUNE_DEFAULTS' when the start is the pretrained RNN, the pull at
    SCRATCH_DEFAULTS' for a new one."""
    from refiner.train.rnn import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    make_workspace(tmp_path, with_rnn=False)  # no RNN yet: the pretrained one is the default start
    at = run("pages/2_Train.py")
    d = jobs.TrainParams()
    assert "pretrained RNN" in at.radio(key="start_from").value
    # the budget the page states is the whole wait, click to scores (issue #22: it was training's only)
    stated = f"at most **{d.max_seconds:.0f} s** from the click to the new RNN's scores"
    assert any(stated in m.value for m in at.markdown)
    values = {k: at.number_input(key=k).value for k in ("steps", "lr_pretrained", "iterations", "batch", "patch")}
    assert values == {"steps": d.steps, "lr_pretrained": FINETUNE_DEFAULTS.lr, "iterations": d.iterations,
                      "batch": d.batch_size, "patch": d.patch_size}  # fmt: skip
    assert at.slider(key="holdout").value == d.holdout and at.selectbox(key="variant").value == d.variant
    assert at.number_input(key="distill_pretrained").value == FINETUNE_DEFAULTS.distill
    at.radio(key="start_from").set_value("a new RNN (from scratch)").run()
    assert at.number_input(key="lr").value == d.lr
    assert at.number_input(key="distill").value == SCRATCH_DEFAULTS.distill


@pytest.mark.slow
def test_compute_setting_comes_only_from_the_operator(app_ws, monkeypatch):
    monkeypatch.delenv("REFINER_SCHEDULER", raising=False)
    at = run("pages/2_Train.py")
    assert any("Training runs on this machine." in c.value for c in at.sidebar.caption)
    assert not at.sidebar.text_input  # no field a browser user could type an address into
    app_ws.update_settings(compute={"scheduler": "tcp://127.0.0.1:9"})  # as a tampered workspace would
    assert jobs.scheduler_setting(app_ws) == ""
    monkeypatch.setenv("REFINER_SCHEDULER", "tcp://127.0.0.1:9")  # the operator's setting is used
    at = run("pages/2_Train.py")
    assert any("Dask cluster" in m.value for m in at.markdown)
    assert any("set by the server's operator" in c.value for c in at.sidebar.caption)
    at.number_input(key="steps").set_value(6)
    train_button(at).click().run()  # nothing listens there: a clear message, no job, no traceback
    assert not at.exception
    assert at.error and "cannot reach the Dask scheduler" in at.error[0].value
    assert jobs.TRAINING.read(app_ws) is None


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of the labelled pixels whose most likely class is their label: written out, not results.*."""
    painted = labels != IGNORE
    return float((probs.argmax(0)[painted] == labels[painted]).mean())


def test_iterations_page_scores_every_iteration(app_ws):
    """Scored on the painted quadrant (no run has held any back): t = 0 is the coarse map itself, t = 3
    the workspace's RNN run through the engine, both counted here by hand."""
    from refiner.models.inference import refine
    from refiner.models.store import load_model

    labels, coarse = app_ws.labels(), app_ws.coarse_probs()
    refined = refine(load_model(app_ws.model_dir("rnn")), app_ws.tile(), coarse).final
    at = run("pages/3_Iterations.py")
    slider = at.slider(key="iteration")
    assert slider.value == 3 and slider.max == 3
    assert metrics(at)["Accuracy at t = 3"] == f"{accuracy(refined, labels):.3f}"
    slider.set_value(0).run()
    assert metrics(at)["Accuracy at t = 0"] == f"{accuracy(coarse, labels):.3f}"
    assert accuracy(coarse, labels) != accuracy(refined, labels)  # so the two checks are two


def test_pages_that_need_an_rnn_say_so(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    make_workspace(tmp_path, "bare", with_rnn=False)
    for page in ("pages/3_Iterations.py", "pages/5_Filters.py", "pages/6_Export.py"):
        at = run(page)
        assert at.error and "Train page" in at.error[0].value, page


def test_compare_page_table_and_grid_search(app_ws):
    from refiner.app.jobs import crf as crf_job
    from refiner.baselines.crf import CRFParams

    at = run("pages/4_Compare.py")
    table = _shown(at.table[0].value)
    assert list(table.index) == ["Coarse CNN", "Dense CRF", "RNN"]
    assert {"overall accuracy", MEAN3, "IoU building", "IoU road"} <= set(table.columns)
    assert ((table["overall accuracy"] >= 0) & (table["overall accuracy"] <= 1)).all()
    # a hand-set value first, so the search's result must replace what the form shows
    at.number_input(key="b_rgb").set_value(77.0)
    next(b for b in at.button if b.label == "Apply").click().run()
    assert results.crf_params(app_ws).bilateral_srgb == 77.0
    at.button(key="grid_search").click().run()  # starts the search in the background
    done = crf_job.CRF_SEARCH.wait(app_ws, timeout=TIMEOUT)
    assert done.state == "finished" and done.done == done.total == 48, done.message
    assert 0 < done.searched_pixels <= done.tile_pixels
    found = results.crf_params(app_ws)
    assert found.to_dict() == {**found.to_dict(), **done.best} and found.bilateral_srgb != 77.0
    at.run()
    assert not at.exception and any("best of 48 settings" in c.value for c in at.caption)
    # the form shows the searched parameters; changing one field keeps the others
    assert at.number_input(key="b_rgb").value == found.bilateral_srgb
    assert at.number_input(key="b_sxy").value == found.bilateral_sxy
    at.number_input(key="g_sxy").set_value(7.5)
    next(b for b in at.button if b.label == "Apply").click().run()
    assert results.crf_params(app_ws) == CRFParams(**{**found.to_dict(), "gaussian_sxy": 7.5})


def test_grid_search_can_be_cancelled_and_keeps_its_best_so_far(app_ws, monkeypatch):
    from refiner.app.jobs import crf as crf_job
    from refiner.baselines import crf

    real = crf.dense_crf
    calls = []

    def slow(*a, **k):  # the job's thread polls the cancel file between trials
        calls.append(1)
        if len(calls) == 3:
            crf_job.CRF_SEARCH.cancel(app_ws)
        return real(*a, **k)

    monkeypatch.setattr(crf, "dense_crf", slow)
    crf_job.start_crf_search(app_ws)
    done = crf_job.CRF_SEARCH.wait(app_ws, timeout=TIMEOUT)
    assert done.state == "cancelled" and 0 < done.done < 48 and "best so far" in done.message
    assert results.crf_params(app_ws).to_dict() == {**results.crf_params(app_ws).to_dict(), **done.best}
    at = run("pages/4_Compare.py")
    assert any("cancelled after" in c.value for c in at.caption)


def test_filters_page_shows_kernels_and_a_response(app_ws):
    at = run("pages/5_Filters.py")
    captions = [c.value for c in at.caption]
    assert any("Response range" in c for c in captions)
    at.radio(key="filter_kind").set_value("N (image)").run()
    at.number_input(key="filter_index").set_value(31).run()
    assert not at.exception and any("normalised image" in c.value for c in at.caption)


def test_export_page_writes_georeferenced_files(app_ws):
    import rasterio
    import shapely

    from refiner.data.export import LINES, POLYGONS
    from refiner.data.write import quantise_probs

    at = run("pages/6_Export.py")
    assert not at.error
    out = app_ws.path / "results"
    with rasterio.open(out / "refined_map.tif") as ds:
        assert ds.crs.to_epsg() == 32614 and ds.shape == (96, 96)
    with rasterio.open(out / "refined_probs.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "float32" and ds.compression.name == "deflate"
        floats = ds.read()
        assert np.allclose(floats.sum(0), 1, atol=1e-3)
    meta = pyogrio.read_info(out / "refined_polygons.gpkg", layer=POLYGONS)
    assert meta["features"] > 0 and "32614" in meta["crs"]
    assert dict(pyogrio.list_layers(out / "refined_polygons.gpkg"))[LINES] == "MultiLineString"
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download class map (GeoTIFF)", "Download probabilities (GeoTIFF)",
                      "Download polygons (GeoPackage)"]  # fmt: skip
    captions = " ".join(c.value for c in at.caption)
    assert "3 float32 bands" in captions and "centre-lines (length in m)" in captions

    def vertices() -> int:
        _, _, geoms, _ = pyogrio.raw.read(out / "refined_polygons.gpkg", layer=POLYGONS)
        return int(shapely.get_num_coordinates(shapely.from_wkb(geoms)).sum())

    simplified = vertices()
    at.number_input(key="tolerance").set_value(0.0).run()  # pixel edges: the staircase
    assert vertices() > simplified
    at.checkbox(key="probs_8bit").check().run()
    with rasterio.open(out / "refined_probs.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.scales == (1 / 255,) * 3
        assert np.abs(ds.read() / 255 - floats).max() < 1.5 / 255  # the cache keeps float16
        assert np.array_equal(ds.read(), quantise_probs(results.refinement(app_ws)[-1]))
    assert any("3 8-bit bands" in c.value for c in at.caption)


def test_export_page_refines_a_whole_scene_in_the_background(app_ws, monkeypatch):
    from refiner.app.jobs import scene as scene_job

    monkeypatch.setenv("REFINER_DATA_ROOTS", str(app_ws.path.parent))  # the operator lets this folder be read
    scene = app_ws.path / "tile.tif"  # any GeoTIFF at the model's resolution will do
    at = run("pages/6_Export.py")
    assert any("No scene run yet" in c.value for c in at.caption)
    at.text_input(key="scene_source").set_value(str(app_ws.path / "nowhere.tif"))
    submit = next(b for b in at.button if b.label == "Refine the scene")
    submit.click().run()
    done = scene_job.SCENE.wait(app_ws, timeout=120)
    assert done.state == "failed" and "nowhere.tif" in done.message  # reported on the page, not raised
    at.run()
    assert not at.exception and any("scene run failed" in e.value for e in at.error)
    at.text_input(key="scene_source").set_value(str(scene))
    next(b for b in at.button if b.label == "Refine the scene").click().run()
    done = scene_job.SCENE.wait(app_ws, timeout=300)
    assert done.state == "finished", done.message
    at.run()
    labels = [b.label for b in at.get("download_button")]
    assert any(lab.startswith("Download scene class map (refined_map.tif") for lab in labels), labels
    assert any(lab.startswith("Download scene polygons and centre-lines") for lab in labels), labels
    import rasterio

    with rasterio.open(done.outputs["refined_probs"]) as ds:
        assert ds.dtypes[0] == "uint8"  # 8-bit by default for a scene
    assert pyogrio.read_info(done.outputs["polygons"], layer="classes")["features"] > 0


def test_first_start_creates_the_demo(tmp_path, monkeypatch):
    """A browser never seen before gets a session key and its own copy of the demo template."""
    if not (REPO / "assets" / "demo" / "tile.tif").is_file():
        pytest.skip("demo assets not built")
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    at = run("app.py", token=None)
    token = at.query_params["session"]
    assert len(token) >= 32 and not at.error
    assert metrics(at)["Size (rows × cols)"] == "512 × 512"
    ws = session(tmp_path, token).open("demo")
    assert ws.has_model("rnn") and ws.has_coarse() and ws.label_counts()["unlabelled"] == 512 * 512 - 192 * 192
    template = tmp_path / "templates" / "demo"
    assert (template / "workspace.json").is_file() and ws.path != template
    assert not (tmp_path / ".last_workspace").exists()  # nothing server-wide remembers "the last workspace"


def test_a_window_of_a_cloud_optimized_geotiff_becomes_a_workspace(app_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_DATA_ROOTS", str(tmp_path))  # the operator lets this folder be read
    from refiner.data.synthetic import make_scene
    from refiner.data.write import write_raster

    scene = make_scene(200, seed=3)
    cog = tmp_path / "scene.tif"  # a local path stands in for the URL: rasterio reads both alike
    write_raster(cog, (scene.image * 255).astype(np.uint8), scene.georef)
    at = run("app.py")
    at.text_input(key="cog_url").input(str(cog))
    at.number_input(key="cog_row").set_value(50)
    at.number_input(key="cog_col").set_value(20)
    at.number_input(key="cog_h").set_value(64)
    at.number_input(key="cog_w").set_value(96).run()
    at.button(key="read_cog").click().run()
    assert not at.exception and not at.error
    ws = Workspace.open(app_ws.path.parent, "cog-window")
    tile = ws.tile()
    assert tile.shape == (64, 96)
    assert tile.georef.transform.c == scene.georef.transform.c + 20  # the window's own origin
    assert metrics(at)["Size (rows × cols)"] == "64 × 96"  # the app switched to it


def _truth_png(values=(10, 20, 30)) -> tuple[bytes, np.ndarray]:
    import io

    from PIL import Image

    from refiner.data.synthetic import make_scene

    truth = make_scene(96, seed=5).truth  # the app workspace's scene: its exact classes
    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, np.uint8)[truth]).save(buf, format="PNG")
    return buf.getvalue(), truth


MEAN3 = "mean IoU (background, building, road)"  # a mean's column names the classes it covers


def _shown(table):
    """A score table as the browser shows it: class names in headers are Markdown-escaped text."""
    return table.rename(columns=lambda c: re.sub(r"\\(.)", r"\1", c))


def test_a_reference_mask_is_scored_beside_the_held_out_regions(app_ws):
    data, truth = _truth_png()
    at = run("pages/4_Compare.py")
    assert len(at.table) == 1  # held-out (here: painted) pixels only
    at.file_uploader(key="compare_ref_file").set_value(("truth.png", data, "image/png")).run()
    # values that are no class's mask value: proposed in order, each can be changed
    assert [at.selectbox(key=f"compare_ref_v{v}").value for v in (10, 20, 30)] == ["background", "building", "road"]
    at.button(key="compare_ref_attach").click().run()
    assert not at.exception and not at.error
    assert app_ws.settings["reference"]["name"] == "truth.png"
    held, ref = (_shown(t.value) for t in at.table)
    crf = results.crf_probs(app_ws, results.crf_params(app_ws)).argmax(0)
    rnn = results.refinement(app_ws)[-1].argmax(0)
    for name, m in {"Coarse CNN": app_ws.coarse_probs().argmax(0), "Dense CRF": crf, "RNN": rnn}.items():
        assert ref.loc[name, MEAN3] == round(evaluate(m, truth, 3).mean_iou, 4), name
    assert ref.loc["RNN", MEAN3] != held.loc["RNN", MEAN3]  # a different, whole-tile set
    assert any("over the whole tile" in c.value for c in at.caption)
    # the Iterations page scores every iteration on it too, beside the held-out chart
    at = run("pages/3_Iterations.py")
    at.slider(key="iteration").set_value(1).run()
    expected = results.iteration_scores(results.refinement(app_ws), truth)[1].mean_iou
    assert metrics(at)["Mean IoU (reference mask; over background, building, road)"] == f"{expected:.3f}"
    assert len(at.get("plotly_chart")) == 2
    # the Train page shows the current RNN's scores on both; the reference can be detached
    at = run("pages/2_Train.py")
    assert [t.value.index.tolist() for t in at.table] == [["Coarse CNN", "RNN"]] * 2
    at.button(key="train_ref_detach").click().run()
    assert results.reference_eval(Workspace(app_ws.path)) is None and len(at.table) == 1


def test_a_0_255_road_reference_is_proposed_as_road_with_its_pixel_counts(app_ws):
    """It proposed 255 -> building for a road mask, and showed nothing of the result before attaching."""
    data, truth = _truth_png(values=(0, 0, 255))  # road 255, everything else 0
    at = run("pages/4_Compare.py")
    at.file_uploader(key="compare_ref_file").set_value(("mask.png", data, "image/png")).run()
    assert at.selectbox(key="compare_ref_v255").value == "road"  # the coarse map has road there
    n = int((truth == 2).sum())
    assert any(f"background {truth.size - n:,} px · building 0 px · road {n:,} px" in c.value for c in at.caption)


def test_another_workspaces_labels_can_be_the_reference(app_ws, tmp_path):
    other = make_workspace(tmp_path, "surveyed")  # another of this session's workspaces
    _, truth = _truth_png()
    other.write_labels(truth)
    make_workspace(tmp_path, "elsewhere", token="another-browser-session-0123456789")
    at = run("pages/2_Train.py", ws=app_ws.name)
    at.radio(key="train_ref_from").set_value("another workspace").run()
    assert at.selectbox(key="train_ref_ws").options == ["surveyed"]  # never another session's
    at.radio(key="train_ref_from").set_value("another workspace").run()
    at.selectbox(key="train_ref_ws").set_value("surveyed").run()
    at.button(key="train_ref_attach_ws").click().run()
    assert not at.error
    ev = results.reference_eval(app_ws)
    assert ev is not None and np.array_equal(ev.labels, truth) and "surveyed" in ev.description


def test_a_reference_that_does_not_fit_is_one_clear_message(app_ws):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(buf, format="PNG")
    at = run("pages/4_Compare.py")
    at.file_uploader(key="compare_ref_file").set_value(("small.png", buf.getvalue(), "image/png")).run()
    at.button(key="compare_ref_attach").click().run()
    assert not at.exception and at.error and "50x40 pixels but the tile is 96x96" in at.error[0].value
    assert results.reference_eval(app_ws) is None


def test_adapt_to_this_tile_runs_both_stages_and_the_shipped_map_stays_selectable(app_ws):
    """One button adapts the coarse CNN (and tries the RNN) in the background; the scores table and
    the choice of t = 0 appear; switching back to the shipped map restores its probabilities."""
    from refiner.app.jobs import adapt as adapt_job
    from refiner.data.read import read_probs

    at = run("pages/2_Train.py")
    assert any("Not adapted yet" in c.value for c in at.caption)
    at.button(key="adapt").click().run()
    done = adapt_job.ADAPT.wait(app_ws, timeout=300)
    assert done.state == "finished", done.message
    at.run()
    assert not at.exception
    tables = [t for t in at.table if "map" in t.value.columns]
    assert tables and {"shipped coarse", "adapted coarse"} <= set(tables[0].value["map"])
    adapted = read_probs(app_ws.path / adapt_job.ADAPTED_PROBS)[0]
    shipped = read_probs(app_ws.path / adapt_job.SHIPPED_PROBS)[0]
    assert np.allclose(app_ws.coarse_probs(), adapted)  # the adapted map is t = 0 now
    assert len(list((app_ws.path / "models" / adapt_job.COARSE_HISTORY).iterdir())) == 1  # kept
    assert at.radio(key="coarse_in_use").value == "adapted"
    at.radio(key="coarse_in_use").set_value("shipped").run()
    assert adapt_job.active_coarse(app_ws) == "shipped"
    assert np.allclose(app_ws.coarse_probs(), shipped)
    at.radio(key="coarse_in_use").set_value("adapted").run()
    assert adapt_job.active_coarse(app_ws) == "adapted" and np.allclose(app_ws.coarse_probs(), adapted)


def test_compare_before_any_fine_tune_shows_the_shipped_rnn_or_coarse_and_crf(tmp_path, monkeypatch):
    """A fresh workspace's Compare page was one red "this workspace has no refinement RNN yet"."""
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    make_workspace(tmp_path, with_rnn=False)
    at = run("pages/4_Compare.py")
    assert not at.error and list(at.table[0].value.index) == ["Coarse CNN", "Dense CRF", "Shipped RNN rnn_1m"]
    assert "not yet fine-tuned" in at.info[0].value
    monkeypatch.setenv("REFINER_PRETRAINED", str(tmp_path / "none"))  # no shipped RNN fits: coarse vs CRF
    at = run("pages/4_Compare.py")
    assert not at.error and list(at.table[0].value.index) == ["Coarse CNN", "Dense CRF"]
    assert "no shipped RNN fits" in at.info[0].value


def test_a_picture_with_a_stated_pixel_size_exports_in_metres(tmp_path, monkeypatch):
    """A PNG stated as 0.3 m exported with an identity transform and no CRS: GeoPackage areas in px²."""
    import dataclasses

    import rasterio

    from refiner.data.synthetic import DEMO_CLASSES, make_scene
    from refiner.data.tile import Georef, is_local_grid
    from tests.helpers import _fill

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    scene = make_scene(96, seed=5)
    picture = dataclasses.replace(scene.tile(), georef=None, pixel_size=0.3)
    ws = _fill(session(tmp_path).create("picture", picture, DEMO_CLASSES, source={"kind": "test"}), scene, True)
    at = run("pages/6_Export.py")
    assert not at.error and any("local grid in metres" in c.value for c in at.caption)
    with rasterio.open(ws.path / "results" / "refined_map.tif") as ds:
        assert is_local_grid(Georef(ds.crs, ds.transform)) and (ds.transform.a, ds.transform.e) == (0.3, -0.3)
        building = int((ds.read(1) == 1).sum())
    gpkg = ws.path / "results" / "refined_polygons.gpkg"
    assert "metres" in pyogrio.read_info(gpkg, layer="classes")["crs"]
    polygons = pyogrio.read_dataframe(gpkg, layer="classes")
    area = float(polygons.loc[polygons["class"] == "building", "area"].sum())
    assert building > 0 and area == pytest.approx(building * 0.09, rel=0.05)  # m² (simplified edges), not px²


def test_the_scene_form_never_tells_to_upload_a_file_it_has_no_uploader_for(app_ws, monkeypatch):
    monkeypatch.delenv("REFINER_DATA_ROOTS", raising=False)
    at = run("pages/6_Export.py")
    at.text_input(key="scene_source").set_value("/srv/scenes/big.tif")
    next(b for b in at.button if b.label == "Refine the scene").click().run()
    (error,) = [e.value for e in at.error]
    assert "http(s) URL" in error and "upload" not in error  # it said "or upload the file"


def test_the_start_page_offers_opening_or_creating_a_workspace_before_the_uploaders_of_probabilities(app_ws):
    """The upload form sat at the bottom of the start page, below two other uploaders."""
    at = run("pages/0_Tile.py")
    headers = [h.value for h in at.header]
    assert headers.index("Open or create a workspace") < headers.index("Coarse probabilities"), headers


def test_a_road_workspace_is_offered_the_pretrained_rnn_on_the_train_page(tmp_path, monkeypatch):
    """It said "Training from scratch: no shipped RNN fits the classes background, road"."""
    from refiner.core.classes import ClassSpec
    from refiner.data.synthetic import make_scene

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    scene = make_scene(96, seed=5)
    roads = ClassSpec(("background", "road"), (0, 255))
    ws = session(tmp_path).create("roads", scene.tile(), roads, source={"kind": "test"})
    ws.write_coarse_probs(np.stack([1 - (scene.truth == 2) * 0.8, (scene.truth == 2) * 0.8]).astype("float32"), {})
    at = run("pages/2_Train.py")
    assert at.radio(key="start_from").options == ["the pretrained RNN rnn_1m (fine-tune)", "a new RNN (from scratch)"]
    assert not any("Training from scratch" in c.value for c in at.caption)
    assert any("building (background here) dropped" in c.value for c in at.caption)
