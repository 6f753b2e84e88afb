"""The tile and its class map on a leafmap (folium) map that works offline.

No basemap (tiles need the internet), and Leaflet itself is inlined from ``webapp/vendor`` in
place of folium's CDN links, so the map draws on a machine with no network at all. Layers are
image overlays with bounds reprojected to EPSG:4326 (no tile server needed).
"""

from __future__ import annotations

import base64
import io
import json
import re
from functools import cache
from pathlib import Path

import folium
import leafmap.foliumap as leafmap
import numpy as np
import streamlit as st
from branca.element import MacroElement
from jinja2 import Template
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

from refiner.data.tile import Georef

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
    """Warp an (H, W, 4) RGBA picture onto a lon/lat grid, so Leaflet can stretch it between its bounds.

    Nearest neighbour, transparent outside; returned with its (west, south, east, north).
    """
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


def build_map(georef: Georef, layers: list[tuple[str, np.ndarray, float]], *, state_key: str = "") -> folium.Map:
    """A leafmap map with ``layers`` (name, RGBA uint8 image on the tile grid, opacity).

    Each layer after the first gets an opacity slider on the map itself, so changing it does not
    rebuild the map; with ``state_key``, the browser keeps the zoom, centre, layers shown and
    opacities (``localStorage``) across reruns, rebuilt maps and reloads.
    """
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
    overlays = {}
    for name, image, _, opacity in warped:
        overlay = folium.raster_layers.ImageOverlay(
            png_data_url(image), bounds=[[south, west], [north, east]], name=name, opacity=opacity
        )
        overlay.add_to(m)
        overlays[name] = overlay.get_name()
    m.fit_bounds([[south, west], [north, east]])
    folium.LayerControl(collapsed=False).add_to(m)
    # the view belongs to this place: a new tile under the same workspace name starts afresh
    key = f"{state_key}@{west:.6f},{south:.6f},{east:.6f},{north:.6f}" if state_key else ""
    _Script(_view_script(m.get_name(), overlays, key)).add_to(m)  # after the layers and control
    return m


class _Script(MacroElement):
    """Raw JavaScript rendered in the map's script, in the order children are added."""

    _template = Template("{% macro script(this, kwargs) %}{{ this.code }}{% endmacro %}")

    def __init__(self, code: str) -> None:
        super().__init__()
        self._name = "RefinerScript"
        self.code = code


def _view_script(map_var: str, overlays: dict[str, str], state_key: str) -> str:
    """Leaflet code: opacity sliders for the overlays after the first, and the view kept."""
    layers = "{" + ",".join(f"{json.dumps(n)}: {v}" for n, v in overlays.items()) + "}"
    return f"""
(function () {{
  var map = {map_var}, layers = {layers}, names = Object.keys(layers);
  var key = {json.dumps("refiner-map:" + state_key) if state_key else "null"}, saved = null;
  try {{ saved = key && JSON.parse(window.localStorage.getItem(key) || "null"); }} catch (e) {{ saved = null; }}
  if (saved) {{
    var back = function () {{ map.setView(saved.center, saved.zoom, {{animate: false}}); }};
    if (saved.center && saved.zoom !== undefined) {{
      back();  // and again when the fitBounds above ends its animation (next frames), or it would win
      map.once("zoomend", back);
      setTimeout(function () {{ map.off("zoomend", back); }}, 1500);
    }}
    names.forEach(function (n) {{
      if (saved.opacity && saved.opacity[n] !== undefined) layers[n].setOpacity(saved.opacity[n]);
      if (saved.hidden && saved.hidden.indexOf(n) >= 0 && map.hasLayer(layers[n])) map.removeLayer(layers[n]);
    }});
  }}
  function save() {{
    if (!key) return;
    var op = {{}}, hidden = [];
    names.forEach(function (n) {{ op[n] = layers[n].options.opacity; if (!map.hasLayer(layers[n])) hidden.push(n); }});
    try {{
      var view = {{center: map.getCenter(), zoom: map.getZoom(), hidden: hidden, opacity: op}};
      window.localStorage.setItem(key, JSON.stringify(view));
    }} catch (e) {{}}
  }}
  map.on("moveend zoomend overlayadd overlayremove", save);
  if (names.length > 1) {{
    var ctl = L.control({{position: "bottomleft"}});
    ctl.onAdd = function () {{
      var div = L.DomUtil.create("div", "leaflet-bar refiner-opacity");
      div.style.background = "white"; div.style.padding = "4px 8px"; div.style.font = "12px sans-serif";
      names.slice(1).forEach(function (n) {{
        var label = L.DomUtil.create("label", "", div);
        label.style.display = "block";
        label.appendChild(document.createTextNode(n + " opacity "));
        var input = L.DomUtil.create("input", "", label);
        input.type = "range"; input.min = 0; input.max = 1; input.step = 0.05;
        input.value = layers[n].options.opacity; input.setAttribute("aria-label", n + " opacity");
        input.addEventListener("input", function () {{ layers[n].setOpacity(parseFloat(input.value)); save(); }});
      }});
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    }};
    ctl.addTo(map);
  }}
}})();
"""


def tile_map(
    georef: Georef, layers: list[tuple[str, np.ndarray, float]], *, height: int = 480, state_key: str = ""
) -> None:
    """Draw the layers on an offline map in the page (see :func:`build_map` for ``state_key``)."""
    st.iframe(offline_html(build_map(georef, layers, state_key=state_key)), height=height)
