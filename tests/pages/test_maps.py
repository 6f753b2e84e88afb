import re

import numpy as np

from refiner.data.synthetic import make_scene
from webapp.maps import build_map, offline_html, to_wgs84, wgs84_bounds


def test_layers_are_warped_to_lon_lat_and_keep_their_colours():
    s = make_scene(64)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[...] = (230, 60, 50, 255)
    warped, (west, south, east, north) = to_wgs84(rgba, s.georef)
    assert -98 < west < east < -97 and 30 < south < north < 31  # south Austin
    inside = warped[..., 3] == 255
    assert inside.mean() > 0.9 and (warped[inside][:, :3] == (230, 60, 50)).all()
    w2, s2, e2, n2 = wgs84_bounds(s.georef, (64, 64))
    assert np.allclose([west, south, east, north], [w2, s2, e2, n2], atol=1e-4)


def test_the_map_needs_no_network():
    s = make_scene(32)
    html = offline_html(build_map(s.georef, [("tile", np.zeros((32, 32, 4), np.uint8), 1.0)]))
    assert not re.search(r'<(script|link|img)[^>]*(src|href)="https?://', html)  # no CDN script, style or basemap tile
    assert "L.map(" in html or "L.map (" in html
    assert "leafletjs.com" in html  # Leaflet itself is inlined


def test_the_map_keeps_its_view_per_workspace_and_place():
    s = make_scene(32)
    layers = [("tile", np.zeros((32, 32, 4), np.uint8), 1.0), ("class map", np.zeros((32, 32, 4), np.uint8), 0.5)]
    html = offline_html(build_map(s.georef, layers, state_key="demo"))
    assert re.search(r'"refiner-map:demo@-?\d+\.\d{6},', html) and "localStorage" in html
    assert 'aria-label", n + " opacity"' in html  # the class map's opacity is set on the map
    other = make_scene(32, seed=3)
    other.georef = type(s.georef)(s.georef.crs, s.georef.transform * s.georef.transform.translation(500, 0))
    moved = offline_html(build_map(other.georef, layers, state_key="demo"))
    key = re.compile(r'"refiner-map:demo@[^"]+"')
    assert key.search(html).group() != key.search(moved).group()
    assert "var key = null" in offline_html(build_map(s.georef, layers))  # nothing kept without a key
