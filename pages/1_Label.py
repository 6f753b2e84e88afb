"""Label: paint accurate labels on the tile, one brush per class; they are saved as you paint."""

from __future__ import annotations

import streamlit as st

from refiner.app import hints, results, viz
from refiner.app.painting import ERASER, brush_colors, hex_color, resize_nearest
from refiner.core.classes import IGNORE
from refiner.data import masks as mask_import
from webapp import cache, canvas, common

ws = common.page("Label")
st.write(
    "Paint a few accurate labels: a brush per class, the eraser to unlabel. Every stroke is saved "
    "to the workspace (`labels.tif`, 255 = unlabelled), however fast you paint; **Undo** takes back "
    "the last stroke or import. A small, carefully painted area is enough."
)

with common.guard("reading the workspace"):
    classes = ws.classes
    tile_rgb = cache.tile_rgb(ws)  # read once per version of the tile (webapp.cache)
with common.guard("saving your strokes"):
    canvas.merge_reported(ws)  # before anything is drawn: the picture shows them
    labels = ws.labels()

brushes = [*classes.names, "eraser"]
colors = brush_colors(classes)
layers = ["imagery only"]
if ws.has_coarse():
    layers.append("coarse map")
    if ws.has_model("rnn"):
        layers.append("refined map")
VIEW_KEYS = ["brush", "brush_size", "label_opacity", "label_layer", "layer_opacity", "show_hints"]
common.restore_view(
    ws,
    "label_page",
    {
        "brush": brushes[0],
        "brush_size": 16,
        "label_opacity": 0.55,
        "label_layer": layers[0],
        "layer_opacity": 0.35,
        "show_hints": False,
    },  # fmt: skip
    {"brush": brushes, "label_layer": layers},
)


def _swatch(rgb: tuple[int, int, int]) -> str:
    return (
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{hex_color(rgb)};'
        'border:1px solid #000;outline:1px solid #fff;vertical-align:middle"></span>'
    )


side, main = st.columns([1, 3])
with side:
    brush = st.radio(
        "Brush",
        brushes,
        key="brush",
        format_func=lambda b: f"{common.plain(b)} ({hex_color(colors[brushes.index(b)])})",
    )
    st.markdown(  # each swatch with its name on one line: the narrow column wrapped road's away from it
        " ".join(
            f'<span class="swatch-item" style="white-space:nowrap">{_swatch(c)}&nbsp;{common.plain(b)}</span>'
            for b, c in zip(brushes, colors, strict=True)  # names: user text
        ),
        unsafe_allow_html=True,
    )
    size = st.slider("Brush size (screen pixels)", 1, 60, key="brush_size")
    opacity = st.slider("Label opacity", 0.0, 1.0, step=0.05, key="label_opacity")
    layer = st.radio(
        "Under the labels",
        layers,
        key="label_layer",
        help="Show the coarse or the refined class map, semi-transparent, under your labels and strokes.",
    )
    layer_opacity = st.slider("Map opacity", 0.0, 1.0, step=0.05, key="layer_opacity", disabled=layer == layers[0])
    if st.button("Undo last change", disabled=ws.undo_depth() == 0 or bool(ws.readonly), key="undo"):
        with common.guard("undoing"):
            ws.undo()
        canvas.bump()  # a fresh canvas: the undone stroke must not stay drawn on it
        st.rerun()
    st.caption(f"{ws.undo_depth()} change(s) can be undone (each stroke, each import).")
    show_hints = st.toggle(
        "Show where to label next",
        key="show_hints",
        help="A heat map of where labels would help most (uncertain or disputed, far from your labels) "
        "and a few suggested boxes; it follows each training run.",
    )


def _stop(key: str, value: object) -> callable:
    return lambda: st.session_state.__setitem__(key, value)


with main:
    view = common.view_controls(ws.shape, "label", ws=ws)
    # every layer is drawn at the canvas's size, on the view only: the whole tile took a stroke's
    # rerun half a second (issue 22, item 9); nearest pixels, so crisp pixels when zoomed
    fit = view.canvas_size
    background = resize_nearest(tile_rgb[view.slices], fit)
    if layer != layers[0]:
        with common.guard(f"drawing the {layer}"):
            if layer == "coarse map":
                class_map = cache.coarse_map(ws)
            else:
                class_map = common.run_busy(
                    "Refining the tile for the map layer (cached afterwards)",
                    lambda: cache.iterations(ws).maps[-1],
                    "stop_layer",
                    _stop("label_layer", layers[0]),
                )
            shown_map = resize_nearest(class_map[view.slices], fit)
            background = viz.blend(background, viz.colorize(shown_map, classes), layer_opacity)
    shown_labels = resize_nearest(labels[view.slices], fit)
    background = viz.blend(background, viz.colorize(shown_labels, classes), opacity)
    boxes, hint_source = [], ""
    if show_hints:
        try:  # no hints is no reason to stop painting: say why and keep the canvas
            need, hint_source = common.run_busy(
                "Finding where labels would help most",
                lambda: results.label_need(ws, labels),
                "stop_hints",
                _stop("show_hints", False),
            )
            boxes = hints.suggest_boxes(need, labels, n=5, size=max(16, min(64, min(ws.shape) // 8)))
        except ValueError as exc:
            st.warning(f"No hints: {exc}")
            show_hints = False
        else:
            heat = viz.heat_rgba(resize_nearest(need[view.slices], fit), 0.0, max(float(need.max()), 1e-6))
            background = hints.draw_boxes(viz.blend(background, heat, 0.6), hints.boxes_in_view(boxes, view))
    # a black-and-white outline around every labelled region
    shown = viz.outline(background, shown_labels)
    if ws.readonly:  # a link to look at: the labels as a picture, no canvas to paint on
        st.info(f"Read-only: {ws.readonly}.")
        st.image(common.to_png(shown))
    else:
        canvas.draw(ws, view, shown, hex_color(colors[brushes.index(brush)]), size)
    if show_hints:
        st.caption(
            f"Where to label next (yellow = most needed), from {hint_source}, times the distance from your "
            "labels. Suggested boxes (magenta), best first: "
            + "; ".join(f"rows {b.row}–{b.row + b.height - 1}, columns {b.col}–{b.col + b.width - 1}" for b in boxes)
            + ("." if boxes else "none: no free room left.")
        )
    st.caption(
        # after the canvas: once it names the brush, the canvas paints with it (the browser tests wait on it)
        f"Brush: {common.plain(brush)}, {size} px. Showing rows {view.row}–{view.row + view.height - 1}, columns "
        f"{view.col}–{view.col + view.width - 1} at {view.scale:.2f} screen px per pixel"
        + (f", over the {layer}." if layer != layers[0] else ".")
    )
common.save_view(ws, "label_page", VIEW_KEYS)

# --------------------------------------------------------------------------- counts, import, export
st.subheader("Labelled pixels")
counts = ws.label_counts(labels)
cols = st.columns(len(classes) + 1)
for i, name in enumerate(classes.names):
    cols[i].metric(common.plain(name), f"{counts[name]:,}")
total = sum(counts[n] for n in classes.names)
cols[-1].metric("unlabelled", f"{counts['unlabelled']:,}", help=f"{total:,} labelled in all")

ic, ec = st.columns(2)
with ic:
    st.subheader("Import a mask")
    # shown until the labels change again, not only on the next run: the fresh canvas can rerun
    # the page at once, and a message shown for one run only was gone before anyone read it
    done = st.session_state.get("import_done")
    if done and done[1] == ws.undo_depth():
        st.success(done[0])
    up = st.file_uploader(
        "GeoTIFF/PNG mask of the tile's size (any pixel values: you say which class each is), "
        "or GeoJSON polygons with a `class` property",
        type=["tif", "tiff", "png", "geojson", "json"],
        key="mask_upload",
    )
    st.caption(common.upload_limits(tile=True))
    if up is not None:
        with common.guard(f"reading {up.name}"):
            mask = mask_import.read_mask(up.getvalue(), up.name, ws.tile(), classes)
        guide = ws.coarse_probs().argmax(0).astype("uint8") if ws.has_coarse() else None
        proposed = mask_import.propose_mapping(mask, classes, guide)
        choices = [*range(len(classes)), IGNORE]
        st.caption(f"{up.name} holds {len(mask.values)} pixel value(s). Which class is each?")
        mapping = {}
        grid = st.columns(min(4, len(mask.values)))
        for j, (v, n) in enumerate(zip(mask.values, mask.counts, strict=True)):
            mapping[v] = grid[j % len(grid)].selectbox(
                f"value {v} ({n:,} px)",
                choices,
                index=choices.index(proposed[v]),
                format_func=lambda c: "unlabelled" if c == IGNORE else classes.names[c],
                key=f"map_{up.file_id}_{v}",
            )
        counts = dict(zip(mask.values, mask.counts, strict=True))
        st.caption(f"With this mapping the mask is {mask_import.counts_by_class(counts, mapping, classes)}.")
        mode = st.radio(
            "With the labels painted so far", list(mask_import.MODES), format_func=mask_import.MODES.get,
            key="import_mode",
        )  # fmt: skip
        if st.button("Import the mask", key="import_mask"):
            with common.guard(f"importing {up.name}"):
                imported = mask_import.apply_mapping(mask, mapping, classes)
                ws.edit_labels(lambda now: mask_import.merge(now, imported, mode))
            canvas.bump()
            st.session_state["import_done"] = (
                f"Imported {up.name} ({mask_import.describe(mapping, classes)}; {mask_import.MODES[mode]}). "
                "Undo takes it back.",
                ws.undo_depth(),
            )
            st.rerun()
with ec:
    st.subheader("Export the labels")
    common.download(ws.path / "labels.tif", ws.name, "download_labels", "Download labels.tif (GeoTIFF, the tile's CRS)")
    st.caption(f"Eraser colour on the canvas: {hex_color(ERASER)}.")

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
