"""Label: paint accurate labels on the tile, one brush per class; they are saved as you paint."""

from __future__ import annotations

import html

import streamlit as st

from refiner import hints, results, viz
from refiner.painting import ERASER, apply_strokes, brush_colors, hex_color
from webapp import common

ws = common.page("Label")
st.write(
    "Paint a few accurate labels: a brush per class, the eraser to unlabel. Every stroke is saved "
    "to the workspace (`labels.tif`, 255 = unlabelled). A small, carefully painted area is enough."
)

with common.guard("reading the workspace"):
    classes = ws.classes
    tile = ws.tile()
    labels = ws.labels()

brushes = [*classes.names, "eraser"]
colors = brush_colors(classes)
side, main = st.columns([1, 3])
with side:
    brush = st.radio(
        "Brush",
        brushes,
        key="brush",
        format_func=lambda b: f"{b} ({hex_color(colors[brushes.index(b)])})",
    )
    st.markdown(
        " ".join(
            f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{hex_color(c)};'
            f'border:1px solid #888;vertical-align:middle"></span> {html.escape(b)}'  # class names are user text
            for b, c in zip(brushes, colors, strict=True)
        ),
        unsafe_allow_html=True,
    )
    size = st.slider("Brush size (screen pixels)", 1, 60, 16, key="brush_size")
    opacity = st.slider("Label opacity", 0.0, 1.0, 0.55, 0.05, key="label_opacity")
    if st.button("Undo last change", disabled=ws.undo_depth() == 0 or bool(ws.readonly), key="undo"):
        with common.guard("undoing"):
            ws.undo()
        st.session_state["canvas_epoch"] = st.session_state.get("canvas_epoch", 0) + 1
        st.rerun()
    st.caption(f"{ws.undo_depth()} change(s) can be undone.")
    show_hints = st.toggle(
        "Show where to label next",
        key="show_hints",
        help="A heat map of where labels would help most (uncertain or disputed, far from your labels) "
        "and a few suggested boxes; it follows each training run.",
    )

with main:
    view = common.view_controls(tile.shape, "label")
    background = viz.blend(viz.to_rgb(tile.image), viz.colorize(labels, classes), opacity)
    boxes, hint_source = [], ""
    if show_hints:
        try:  # no hints is no reason to stop painting: say why and keep the canvas
            with st.spinner("Finding where labels would help most..."):
                need, hint_source = results.label_need(ws, labels)
                boxes = hints.suggest_boxes(need, labels, n=5, size=max(16, min(64, min(tile.shape) // 8)))
        except ValueError as exc:
            st.warning(f"No hints: {exc}")
            show_hints = False
        else:
            heat = viz.heat_rgba(need, 0.0, max(float(need.max()), 1e-6))
            background = hints.draw_boxes(viz.blend(background, heat, 0.6), boxes)
    background = background[view.slices]
    ch, cw = view.canvas_size
    bg = common.to_png(background).resize((cw, ch), resample=0)  # nearest: crisp pixels when zoomed
    epoch = st.session_state.get("canvas_epoch", 0)
    from streamlit_drawable_canvas import st_canvas

    if ws.readonly:  # a link to look at: the labels as a picture, no canvas to paint on
        st.info(f"Read-only: {ws.readonly}.")
        st.image(bg)
    result = None if ws.readonly else st_canvas(
        stroke_width=size,
        stroke_color=hex_color(colors[brushes.index(brush)]),
        background_image=bg,
        height=ch,
        width=cw,
        drawing_mode="freedraw",
        return_image_data=True,
        key=f"canvas_{ws.path.parent.name[:8]}_{ws.name}_{epoch}_{view.row}_{view.col}_{view.height}_{int(show_hints)}",
    )
    if show_hints:
        st.caption(
            f"Where to label next (yellow = most needed), from {hint_source}, times the distance from your "
            "labels. Suggested boxes (magenta), best first: "
            + "; ".join(f"rows {b.row}–{b.row + b.height - 1}, columns {b.col}–{b.col + b.width - 1}" for b in boxes)
            + ("." if boxes else "none: no free room left.")
        )
    st.caption(  # after the canvas: once it shows the brush, the canvas paints with it (the browser tests wait on it)
        f"Brush: {brush}, {size} px. Showing rows {view.row}–{view.row + view.height - 1}, columns "
        f"{view.col}–{view.col + view.width - 1} at {view.scale:.2f} screen px per pixel."
    )
    strokes = result.image_data if result is not None else None
    if strokes is not None and strokes.ndim == 3 and (strokes[..., 3] >= 128).any():
        # merged into the labels as they are now (another session may have painted meanwhile)
        with common.guard("saving the stroke"):
            labels = ws.edit_labels(lambda now: apply_strokes(now, strokes, view, classes)[0])
        # a fresh canvas shows the merged labels as its background
        st.session_state["canvas_epoch"] = epoch + 1
        st.rerun()

# --------------------------------------------------------------------------- counts, import, export
st.subheader("Labelled pixels")
counts = ws.label_counts(labels)
cols = st.columns(len(classes) + 1)
for i, name in enumerate(classes.names):
    cols[i].metric(name, f"{counts[name]:,}")
total = sum(counts[n] for n in classes.names)
cols[-1].metric("unlabelled", f"{counts['unlabelled']:,}", help=f"{total:,} labelled in all")

ic, ec = st.columns(2)
with ic:
    st.subheader("Import a mask")
    up = st.file_uploader(
        f"GeoTIFF/PNG mask of the tile's size, pixel values {list(classes.values)} (255 = unlabelled), "
        "or GeoJSON polygons",
        type=["tif", "tiff", "png", "geojson", "json"],
        key="mask_upload",
    )
    st.caption(common.upload_limits(tile=True))
    if up is not None and st.button("Replace the labels with this mask", key="import_mask"):
        with common.guard(f"importing {up.name}"):
            ws.import_labels(up.getvalue(), up.name)
        st.session_state["canvas_epoch"] = st.session_state.get("canvas_epoch", 0) + 1
        st.success(f"Imported {up.name}.")
        st.rerun()
with ec:
    st.subheader("Export the labels")
    common.download(ws.path / "labels.tif", ws.name, "download_labels", "Download labels.tif (GeoTIFF, the tile's CRS)")
    st.caption(f"Eraser colour on the canvas: {hex_color(ERASER)}.")
