import re

import numpy as np

from refiner.synthetic import make_scene
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
