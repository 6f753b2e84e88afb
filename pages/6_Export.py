"""Export: the refined map and probabilities as GeoTIFF, polygons and road centre-lines as GeoPackage."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from refiner.app import access, jobs, results
from refiner.app.jobs import scene as scene_job
from refiner.data.export import LINES, POLYGONS, road_class, write_geopackage
from refiner.data.tile import is_local_grid
from refiner.data.write import write_class_map, write_probs
from webapp import common
from webapp.job_panel import job_panel

ws = common.page("Export")
st.write(
    "Files keep the tile's coordinate reference system and georeferencing, so they overlay the "
    "source image in QGIS or any GIS. They are also written to the workspace's `results/` folder."
)

with common.guard("refining the tile"), st.spinner("Running the RNN (cached afterwards)..."):
    probs = results.refinement(ws)[-1]
    georef = ws.export_georef()
classes = ws.classes
class_map = probs.argmax(0).astype("uint8")
out = ws.results_dir()
if is_local_grid(georef):
    assert georef is not None
    crs = (
        f"none on Earth: a plain picture at its stated {georef.resolution:g} m per pixel, exported in a local "
        "grid in metres (origin at its lower-left corner; the files' CRS says so), so areas are m² and lengths m"
    )
else:
    crs = (
        georef.crs.to_string()
        if georef
        else ("none (plain picture: pixel coordinates; state its pixel size on the Tile page for metres)")
    )
st.caption(f"CRS: {crs}")

metric = georef is not None and (georef.crs.is_projected or is_local_grid(georef))
unit = "m" if metric else ("map units" if georef else "px")
pixel = georef.resolution if georef is not None else 1.0
c1, c2, c3 = st.columns(3)
with c1:
    st.subheader("Class map")
    path = write_class_map(out / "refined_map.tif", class_map, georef, classes)
    common.download(path, ws.name, "dl_map", "Download class map (GeoTIFF)")
    st.caption(
        f"`{path.name}`, {common.size(path)}: one band, mask values {list(classes.values)}, a colour table; "
        "deflate-compressed."
    )
with c2:
    st.subheader("Probabilities")
    quantise = st.checkbox(
        "8-bit (steps of 1/255, a quarter of the size)", False, key="probs_8bit",
        help="uint8 0-255 with a scale factor of 1/255 in the file, so a GIS reads 0-1; at most 0.002 off.",
    )  # fmt: skip
    path = write_probs(out / "refined_probs.tif", probs, georef, classes, quantise=quantise)
    kind = "8-bit" if quantise else "float32"
    common.download(path, ws.name, "dl_probs", "Download probabilities (GeoTIFF)")
    st.caption(
        f"`{path.name}`, {common.size(path)}: {len(classes)} {kind} bands ({common.class_list(classes.names)}); "
        "deflate-compressed."
    )
with c3:
    st.subheader("Polygons and centre-lines")
    skip_bg = st.checkbox(f"Leave out '{common.plain(classes.names[0])}'", True, key="skip_bg")
    min_px = st.number_input("Drop regions smaller than (pixels)", 0, 10_000, 10, key="min_px")
    tolerance = st.number_input(
        f"Simplify: tolerance ({unit})", 0.0, 100.0 * pixel, float(pixel), step=float(pixel) / 2, key="tolerance",
        help="How far an edge may move to drop the pixel staircase (0 keeps pixel edges). Neighbouring "
        "polygons are simplified together, so they still share their edges.",
    )  # fmt: skip
    road = road_class(classes)
    lines = road is not None and st.checkbox(
        f"Centre-lines of '{common.plain(classes.names[road])}' as a line layer", True, key="centrelines"
    )
    with common.guard("writing polygons"):
        gpkg = out / "refined_polygons.gpkg"
        n = write_geopackage(
            gpkg, class_map, georef, classes, skip=(0,) if skip_bg else (), min_pixels=int(min_px),
            simplify=float(tolerance), lines=lines, min_length=10 * pixel,
        )  # fmt: skip
    common.download(gpkg, ws.name, "dl_gpkg", "Download polygons (GeoPackage)")
    st.caption(
        f"`{gpkg.name}`, {common.size(gpkg)}: layer `{POLYGONS}`, {n[POLYGONS]} polygons (class, value, area "
        f"in {unit}²)" + (f"; layer `{LINES}`, {n[LINES]} centre-lines (length in {unit})." if LINES in n else ".")
    )

# --------------------------------------------------------------------------- the whole scene
st.divider()
st.subheader("Whole scene")
scheduler = jobs.scheduler_setting(ws)
where = f"Windows run on the Dask cluster at `{scheduler}`." if scheduler else "Runs here, in the background."
st.write(
    "Refine the whole scene this tile came from (or any GeoTIFF at the same resolution and bands), "
    "window by window at bounded memory: the coarse CNN, then this workspace's RNN. Files go to the "
    "workspace's `results/scene/` folder. " + where
)
scene_status = scene_job.SCENE.read(ws)
scene_running = scene_status is not None and scene_status.active
with st.form("scene_form"):
    source = st.text_input(
        "Scene GeoTIFF (a path on the server, or a URL)", value=scene_job.default_source(ws), key="scene_source"
    )
    coarse_in = st.text_input(
        "Coarse probabilities of the scene (optional GeoTIFF; empty: compute them with the coarse CNN)",
        key="scene_coarse",
    )
    scene_8bit = st.checkbox("Probabilities in 8 bits (a quarter of the size)", True, key="scene_8bit")
    go = st.form_submit_button("Refine the scene", disabled=scene_running, type="primary")
if go:
    with common.guard("starting the scene run"):
        shipped = (scene_job.ASSETS,)  # the demo's own scene may be read; other server paths need a data root
        safe_coarse = access.check_source(coarse_in, shipped, can_upload=False) if coarse_in.strip() else ""
        others = common.this_session().workspaces()  # one job at a time per session
        source = access.check_source(source, shipped, can_upload=False)
        scene_job.start_scene_job(
            ws, source, coarse=safe_coarse, scheduler=scheduler, quantise=scene_8bit, others=others
        )
    st.rerun()


SCENE_FILES = {
    "coarse_probs": "coarse probabilities",
    "refined_map": "class map",
    "refined_probs": "probabilities",
    "polygons": "polygons and centre-lines",
}


def scene_downloads(now: scene_job.SceneStatus) -> None:
    """Once the run has finished: a download button per output file, or where it is when too large."""
    if now.state != "finished":
        return
    for name, path in now.outputs.items():
        p = Path(path)
        size = p.stat().st_size if p.is_file() else 0
        if 0 < size <= scene_job.DOWNLOAD_LIMIT:
            label = f"Download scene {SCENE_FILES.get(name, name)} ({p.name}, {common.size(p)})"
            common.download(p, f"{ws.name}_scene", f"dl_scene_{name}", label)
        else:
            st.caption(f"`{p}` ({size / 2**20:.0f} MiB: too large to download here; copy it from the server)")


STAGES = {"coarse": "Coarse CNN", "refine": "RNN", "vectors": "Polygons"}
job_panel(
    ws,
    scene_job.SCENE,
    lambda now: f"{STAGES.get(now.stage, 'Starting')}: window {now.done} of {now.total or '…'}",
    failed="The scene run failed",
    cancel=("Cancel the scene run", "cancel_scene", "Cancelling: the partial files will be removed."),
    idle=lambda: st.caption("No scene run yet in this workspace."),
    outputs=scene_downloads,
)

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
