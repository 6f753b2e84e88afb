"""The tile and its class map on a leafmap (folium) map that works offline.

No basemap (tiles need the internet), and Leaflet itself is inlined from ``webapp/vendor`` in
place of folium's CDN links, so the map draws on a machine with no network at all. Layers are
image overlays with bounds reprojected to EPSG:4326 (no tile server needed).
"""

from __future__ import annotations

import base64
import io
import re
from functools import cache
from pathlib import Path

import folium
import leafmap.foliumap as leafmap
import numpy as np
import streamlit as st
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

from refiner.raster import Georef

VENDOR = Path(__file__).parent / "vendor" / "leaflet"
_EXTERNAL = re.compile(r'<script[^>]*src="https?://[^"]*"[^>]*></script>|<link[^>]*href="https?://[^"]*"[^>]*/?>')


def wgs84_bounds(georef: Georef, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of a grid of ``shape`` pixels."""
    west, south, east, north = array_bounds(shape[0], shape[1], georef.transform)
    return transform_bounds(georef.crs, "EPSG:4326", west, south, east, north)


def png_data_url(image: np.ndarray) -> str:
    """An RGB(A) uint8 image as a PNG data URL (colours exactly as given)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@cache
def _leaflet() -> str:
    js = (VENDOR / "leaflet.js").read_text()
    css = (VENDOR / "leaflet.css").read_text()
    return f"<style>{css}</style><script>{js}</script>"


def offline_html(m: folium.Map) -> str:
    """The map's HTML with every CDN link removed and Leaflet inlined."""
    html = _EXTERNAL.sub("", m.get_root().render())
    return html.replace("<head>", "<head>" + _leaflet(), 1)


def to_wgs84(image: np.ndarray, georef: Georef) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Warp an (H, W, 4) RGBA picture onto a lon/lat grid (nearest neighbour; outside = transparent),
    so Leaflet can stretch it between its bounds; returns it with (west, south, east, north)."""
    h, w = image.shape[:2]
    src_bounds = array_bounds(h, w, georef.transform)
    dst_transform, dw, dh = calculate_default_transform(georef.crs, "EPSG:4326", w, h, *src_bounds)
    out = np.zeros((image.shape[2], dh, dw), np.uint8)
    reproject(
        np.ascontiguousarray(image.transpose(2, 0, 1)),
        out,
        src_transform=georef.transform,
        src_crs=georef.crs,
        dst_transform=dst_transform,
        dst_crs="EPSG:4326",
        resampling=Resampling.nearest,
    )
    west, south, east, north = array_bounds(dh, dw, dst_transform)
    return out.transpose(1, 2, 0), (west, south, east, north)


def build_map(georef: Georef, layers: list[tuple[str, np.ndarray, float]]) -> folium.Map:
    """A leafmap map with ``layers`` (name, RGBA uint8 image on the tile grid, opacity)."""
    warped = [(name, *to_wgs84(image, georef), opacity) for name, image, opacity in layers]
    west, south, east, north = warped[0][2]
    m = leafmap.Map(
        center=((south + north) / 2, (west + east) / 2),
        zoom=17,
        tiles=None,  # no basemap: the app must work without the internet
        draw_control=False,
        measure_control=False,
        search_control=False,
        fullscreen_control=False,
        scale_control=True,
    )
    for name, image, _, opacity in warped:
        folium.raster_layers.ImageOverlay(
            png_data_url(image), bounds=[[south, west], [north, east]], name=name, opacity=opacity
        ).add_to(m)
    m.fit_bounds([[south, west], [north, east]])
    folium.LayerControl(collapsed=False).add_to(m)
    return m


def tile_map(georef: Georef, layers: list[tuple[str, np.ndarray, float]], *, height: int = 480) -> None:
    """Draw the layers on an offline map in the page."""
    st.iframe(offline_html(build_map(georef, layers)), height=height)
