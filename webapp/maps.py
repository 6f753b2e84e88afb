"""The tile and its class map on a leafmap (folium) map, without any basemap, so it works offline."""

from __future__ import annotations

import folium
import leafmap.foliumap as leafmap
import numpy as np
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds
from streamlit_folium import st_folium

from refiner.raster import Georef


def wgs84_bounds(georef: Georef, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of a grid of ``shape`` pixels."""
    west, south, east, north = array_bounds(shape[0], shape[1], georef.transform)
    return transform_bounds(georef.crs, "EPSG:4326", west, south, east, north)


def tile_map(
    georef: Georef,
    layers: list[tuple[str, np.ndarray, float]],
    *,
    height: int = 480,
    key: str = "map",
) -> None:
    """Draw ``layers`` (name, RGB(A) uint8 image on the tile grid, opacity) on a leafmap map."""
    h, w = layers[0][1].shape[:2]
    west, south, east, north = wgs84_bounds(georef, (h, w))
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
    for name, image, opacity in layers:
        folium.raster_layers.ImageOverlay(
            image, bounds=[[south, west], [north, east]], name=name, opacity=opacity, mercator_project=True
        ).add_to(m)
    m.fit_bounds([[south, west], [north, east]])
    folium.LayerControl(collapsed=False).add_to(m)
    st_folium(m, height=height, use_container_width=True, returned_objects=[], key=key)
