"""Start page: open or create a workspace, see the tile, get coarse probabilities (``app.py`` opens it first)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from refiner.app import access, results, viz
from refiner.app.demos import DEMO_NAME, REAL_DEMOS
from refiner.app.demos import unavailable as real_demo_unavailable
from refiner.app.pretrained import coarse_into_workspace, own_coarse_into_workspace, workspace_resolution
from refiner.app.uploads import (
    MAX_PIXELS,
    check_pixel_size,
    load_tile,
    staged_model,
    tile_from_upload,
    upload_shape,
)
from refiner.core.classes import ClassSpec
from refiner.models.pretrained import pick_coarse
from webapp import common

ws = common.page("Refiner: tile and workspace")
sess = common.this_session()
st.markdown(
    "Refiner sharpens a coarse classification map with an RNN that learns, from a few painted "
    "pixels, how to move class boundaries onto image edges (Maggiori et al., TGRS 2017). "
    "Follow the pages in the sidebar: **Label → Train → Iterations → Compare → Filters → Export**."
)
# filled at the end of this script, shown here: the upload form sat at the bottom of the page,
# below the tile and the two probability uploaders, where a new user looking for it did not
workspace_box = st.container()

# --------------------------------------------------------------------------- the tile
with common.guard("reading the workspace"):
    tile = ws.tile()
    src = ws.settings.get("source", {})
    class_map, map_kind = results.current_class_map(ws)

c = st.columns([1.2, 0.6, 0.8, 1.4, 1.2])
c[0].metric("Size (rows × cols)", f"{tile.shape[0]} × {tile.shape[1]}")
c[1].metric("Bands", src.get("bands", tile.band_count))
c[2].metric("Data type", src.get("dtype", tile.dtype))
c[3].metric("CRS", src.get("crs") or "none")
res = src.get("resolution")
c[4].metric("Ground resolution", f"{res:.2f} m/px" if res else "unknown")
if tile.georef is None:  # a picture: the networks resample it to their 1 m with what the user states
    r1, r2 = st.columns([1, 3])
    stated = r1.number_input(
        "Ground resolution of this picture (m/px)", 0.05, 100.0, float(res or 1.0), 0.1, key=f"pixel_size_{ws.name}"
    )
    r2.caption(
        "The file has no georeferencing, so its ground resolution is what you state here "
        + ("(stated)." if src.get("resolution_stated") else "(not stated yet: 1 m assumed).")
        + " The coarse CNN and the RNN resample the tile to their own resolution with it."
    )
    if abs(stated - float(res or 0)) > 1e-9 and r1.button("Use this resolution", key="set_pixel_size"):
        with common.guard("setting the ground resolution"):
            ws.set_pixel_size(stated)
        st.rerun()

coarse = ws.settings.get("coarse") or {}
st.caption(
    f"Workspace **{ws.name}** · tile from {src.get('name', '?')} · coarse probabilities: "
    f"{coarse.get('source', 'none yet')} · RNN: {'yes' if ws.has_model('rnn') else 'not trained yet'}"
    + (f" · map shown: {map_kind}" if map_kind else "")
)

rgb = viz.to_rgb(tile.image)
if tile.georef is not None:
    from webapp.maps import tile_map

    layers = [("tile", np.dstack([rgb, np.full(tile.shape, 255, np.uint8)]), 1.0)]
    if class_map is not None:
        layers.append((f"class map ({map_kind})", viz.colorize(class_map, ws.classes), 0.5))
    with common.guard("drawing the map"):
        tile_map(tile.georef, layers, state_key=ws.name)
    st.caption(
        "Map without a basemap (the app works offline): toggle the layers at the top right, set the class "
        "map's opacity at the bottom left; your browser keeps the zoom, position and layers."
    )
else:
    st.info("This tile has no georeferencing, so it is shown as a picture rather than on a map.")
    opacity = st.slider("Class map opacity", 0.0, 1.0, 0.5, 0.05, key="start_opacity")
    shown = rgb if class_map is None else viz.blend(rgb, viz.colorize(class_map, ws.classes), opacity)
    common.show(viz.downscale_to(shown, 1024), caption=map_kind or "tile")

# --------------------------------------------------------------------------- coarse probabilities
st.header("Coarse probabilities")
st.write(
    "The RNN refines class probabilities from a coarse classifier: the shipped coarse CNN, one you "
    "trained (`python -m refiner train-coarse`), or probabilities from any model as a GeoTIFF."
)
pc1, pc2, pc3 = st.columns(3)
with pc1:
    st.subheader("Coarse CNN")
    own = ws.has_model("coarse")
    with common.guard("looking for a shipped coarse CNN"):
        pick = None if own else pick_coarse(ws.classes, workspace_resolution(ws))
    if pick is not None and pick.model is not None:
        st.caption(f"Picked for this workspace: {pick.reason}.")
    elif pick is not None:
        st.warning(
            f"{pick.reason[0].upper() + pick.reason[1:]}. Bring your own probabilities (right), or train "
            "a coarse CNN for these classes (`python -m refiner train-coarse`) and upload it (middle)."
        )
    which = "this workspace's coarse CNN" if own else f"the shipped {pick.model.name}" if pick.model else "it"
    tta = st.checkbox(
        "Average its 8 turns and flips",
        key="coarse_tta",
        help="Runs the CNN on the tile turned and flipped 8 ways and averages the maps: 8 times slower, "
        "about a point of IoU better on the shipped model's test tiles.",
    )
    if st.button(f"Compute with {which}", key="compute_coarse", disabled=not own and pick.model is None):
        running = "Running the coarse CNN" + (" 8 times, turned and flipped..." if tta else "...")
        with common.guard("computing coarse probabilities"), st.spinner(running):
            if own:
                own_coarse_into_workspace(ws, tta=tta)
            else:
                coarse_into_workspace(ws, tta=tta)
        st.success("Coarse probabilities computed.")
        st.rerun()
with pc2:
    st.subheader("Your coarse CNN")
    files = st.file_uploader(
        "config.json and model.safetensors of a coarse CNN", accept_multiple_files=True, key="coarse_model"
    )
    st.caption(common.upload_limits())
    if files and st.button("Use this model", key="use_coarse_model"):
        uploaded = {f.name: f.getvalue() for f in files}
        with common.guard("loading the coarse CNN"), staged_model(uploaded, "coarse") as d:  # checked first
            ws.install_model(d, "coarse")
        st.success("Model installed: now compute the coarse probabilities with it.")
with pc3:
    st.subheader("Bring your own probabilities")
    up = st.file_uploader("Probability GeoTIFF, one band per class", type=["tif", "tiff"], key="probs_upload")
    st.caption(common.upload_limits(tile=True))
    if up is not None and st.button("Use these probabilities", key="use_probs"):
        with common.guard(f"reading {up.name}"):
            ws.import_probs(up.getvalue(), up.name)
        st.success("Probabilities imported.")
        st.rerun()

# --------------------------------------------------------------------------- workspaces
with workspace_box:
    st.header("Open or create a workspace")
    tab_demo, tab_upload, tab_url = st.tabs(["Demo", "Upload an image", "Cloud-Optimized GeoTIFF URL"])


def _classes_inputs(key: str) -> ClassSpec:
    cc1, cc2 = st.columns(2)
    names = cc1.text_input("Classes", "background,building,road", key=f"{key}_classes")
    values = cc2.text_input("Their values in mask files", "0,1,2", key=f"{key}_values")
    return ClassSpec.parse(names, values)


def _window_inputs(key: str, shape: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Row, column, height, width of a window (inside ``shape`` when it is known); the Upload and
    the URL tabs share these fields."""
    side = int(MAX_PIXELS**0.5)
    h_max, w_max = (min(shape[0], side), min(shape[1], side)) if shape else (side, side)
    w1, w2, w3, w4 = st.columns(4)
    row = w1.number_input("Row", 0, max(0, shape[0] - 16) if shape else None, 0, key=f"{key}_row")
    col = w2.number_input("Column", 0, max(0, shape[1] - 16) if shape else None, 0, key=f"{key}_col")
    height = w3.number_input("Height", 16, max(16, h_max), min(1024, max(16, h_max)), key=f"{key}_h")
    width = w4.number_input("Width", 16, max(16, w_max), min(1024, max(16, w_max)), key=f"{key}_w")
    return int(row), int(col), int(height), int(width)


def _create(name: str, tile, classes: ClassSpec, source: dict) -> None:
    new = sess.create(name, tile, classes, source=source)
    common.remember(new.name)
    with st.spinner("Computing coarse probabilities with the shipped model that fits..."):
        coarse_into_workspace(new)  # when none fits, the start page says why and what else to do
    st.rerun()


def reset_button(name: str, what: str) -> None:
    """Reset the session's own copy of a shipped demo, after a confirmation (the template never changes)."""
    if name not in sess.names():
        return
    asked = f"confirm_reset_{name}"
    key = "reset_demo" if name == DEMO_NAME else f"reset_{name}"
    if st.button(f"Reset your copy of {what}…", key=key):
        st.session_state[asked] = True
    if st.session_state.get(asked):
        st.warning(
            f"Resetting discards the labels, models and results in your copy of {what}. Only your copy "
            "changes: the shipped demo and everyone else's copies stay as they are."
        )
        y, n = st.columns(2)
        if y.button("Yes, reset it", key=f"{key}_yes", type="primary"):
            with common.guard(f"resetting {what}"):
                st.session_state.pop(asked, None)
                common.remember(sess.reset(name).name)
            st.session_state["canvas_epoch"] = st.session_state.get("canvas_epoch", 0) + 1
            st.rerun()
        if n.button("No, keep it", key=f"{key}_no"):
            st.session_state.pop(asked, None)
            st.rerun()


with tab_demo:
    st.write(
        "A 512×512 synthetic scene at 1 m/px (UTM 14N), a coarse CNN trained on OSM-like labels of "
        "another scene, and an RNN trained on a third; the top-left 192×192 corner starts labelled."
    )
    if st.button("Open the demo", key="open_demo"):
        with common.guard("opening the demo"), st.spinner("Making your copy of the demo..."):
            common.remember(sess.open_template_copy(DEMO_NAME).name)
        st.rerun()
    reset_button(DEMO_NAME, "the demo")

    st.subheader("Real imagery")
    st.write(
        "Small windows of real tiles that no shipped model was trained on, built from the shared data "
        "when first opened, with a few boxes of the data's reference labels painted in. Their coarse map "
        "comes from the shipped coarse CNN; the Train page fine-tunes the pretrained RNN."
    )
    for demo_name, demo in REAL_DEMOS.items():
        why_not = real_demo_unavailable(demo_name)
        if why_not:
            st.info(f"{demo.title}: not offered here, {why_not}.")
        else:
            if st.button(f"Open the real demo: {demo.title}", key=f"open_{demo_name}"):
                with common.guard("building the real demo"), st.spinner("Reading the tile and its coarse map..."):
                    common.remember(sess.open_template_copy(demo_name).name)
                st.rerun()
            reset_button(demo_name, f"the real demo {demo_name}")

with tab_upload:
    f = st.file_uploader("GeoTIFF, PNG or JPEG", key="tile_upload")
    st.caption(common.upload_limits(tile=True) + " Larger scenes: read a window of them (URL tab).")
    pixel_size = st.number_input(
        "Ground resolution (m/px) if the file has no georeferencing",
        0.05,
        100.0,
        1.0,
        0.1,
        key="upload_pixel_size",
        help="PNG, JPEG and plain TIFF files do not say how much ground a pixel covers: state it, so the "
        "networks can resample the tile to their 1 m. A GeoTIFF's own georeferencing is used instead.",
    )
    name_u = st.text_input("Workspace name", "my-tile", key="upload_name")
    with common.guard("class list"):
        classes_u = _classes_inputs("upload")
    window_u = None
    shape_u = None
    if f is not None:
        try:  # said at once, and the rest of the page stays
            shape_u = upload_shape(f.getvalue(), f.name)
        except ValueError as exc:
            st.error(f"reading {f.name}: {exc}")
    if shape_u is not None:
        too_big = shape_u[0] * shape_u[1] > MAX_PIXELS
        if too_big:
            side = int(MAX_PIXELS**0.5)
            st.warning(
                f"{f.name} is {shape_u[0]} × {shape_u[1]} pixels, more than the app works on at once "
                f"({MAX_PIXELS // 1_000_000} megapixels). Choose a window of it below (up to {side} × {side}), "
                "then create the workspace; or cut the image smaller first. The whole scene can be refined later "
                "from a path or URL on the Export page, or with `python -m refiner refine`."
            )
        if st.toggle("Read a window of it", value=too_big, disabled=too_big, key="upload_windowed"):
            window_u = _window_inputs("upload", shape_u)
    if shape_u is not None and st.button("Create workspace", key="create_upload"):
        with common.guard(f"reading {f.name}"):
            new_tile = tile_from_upload(f.getvalue(), f.name, window=window_u)
            if new_tile.georef is None:
                new_tile.pixel_size = check_pixel_size(pixel_size)
            source = {"kind": "upload", "name": f.name, **({"window": list(window_u)} if window_u else {})}
            _create(name_u, new_tile, classes_u, source)

with tab_url:
    url = st.text_input("URL of a Cloud-Optimized GeoTIFF", key="cog_url", placeholder="https://.../image.tif")
    row, col, height, width = _window_inputs("cog")
    name_c = st.text_input("Workspace name", "cog-window", key="cog_name")
    with common.guard("class list"):
        classes_c = _classes_inputs("cog")
    if url and st.button("Read the window", key="read_cog"):
        with common.guard(f"reading {url}"), st.spinner("Reading the window..."):
            new_tile = load_tile(access.check_source(url), window=(row, col, height, width))
            _create(name_c, new_tile, classes_c, {"kind": "cog", "name": url, "window": [row, col, height, width]})

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
