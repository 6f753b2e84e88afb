"""Export: the refined map and probabilities as GeoTIFF, polygons as GeoPackage."""

from __future__ import annotations

import streamlit as st

from refiner import results
from refiner.export import write_geopackage
from refiner.raster import write_class_map, write_probs
from webapp import common

ws = common.page("Export")
st.write(
    "Files keep the tile's coordinate reference system and georeferencing, so they overlay the "
    "source image in QGIS or any GIS. They are also written to the workspace's `results/` folder."
)

with common.guard("refining the tile"), st.spinner("Running the RNN (cached afterwards)..."):
    probs = results.refinement(ws)[-1]
    georef = ws.georef
classes = ws.classes
class_map = probs.argmax(0).astype("uint8")
out = ws.results_dir()
crs = georef.crs.to_string() if georef else "none (plain picture: pixel coordinates)"
st.caption(f"CRS: {crs}")

c1, c2, c3 = st.columns(3)
with c1:
    st.subheader("Class map")
    path = write_class_map(out / "refined_map.tif", class_map, georef, classes)
    st.download_button(
        "Download refined_map.tif",
        path.read_bytes(),
        file_name=f"{ws.name}_refined_map.tif",
        mime="image/tiff",
        key="dl_map",
    )
    st.caption(f"One band, mask values {list(classes.values)}, with a colour table.")
with c2:
    st.subheader("Probabilities")
    path = write_probs(out / "refined_probs.tif", probs, georef, classes)
    st.download_button(
        "Download refined_probs.tif",
        path.read_bytes(),
        file_name=f"{ws.name}_refined_probs.tif",
        mime="image/tiff",
        key="dl_probs",
    )
    st.caption(f"{len(classes)} float32 bands: {', '.join(classes.names)}.")
with c3:
    st.subheader("Polygons")
    skip_bg = st.checkbox(f"Leave out '{classes.names[0]}'", True, key="skip_bg")
    min_px = st.number_input("Drop regions smaller than (pixels)", 0, 10_000, 10, key="min_px")
    with common.guard("writing polygons"):
        n = write_geopackage(
            out / "refined_polygons.gpkg",
            class_map,
            georef,
            classes,
            skip=(0,) if skip_bg else (),
            min_pixels=int(min_px),
        )
    st.download_button(
        f"Download refined_polygons.gpkg ({n} polygons)",
        (out / "refined_polygons.gpkg").read_bytes(),
        file_name=f"{ws.name}_refined_polygons.gpkg",
        mime="application/geopackage+sqlite3",
        key="dl_gpkg",
    )
    st.caption("Fields: class, value, area (in CRS units²).")
