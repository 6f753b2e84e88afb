import numpy as np
import pyogrio
import pytest
import shapely

from refiner.data.export import LINES, POLYGONS, centre_lines, class_polygons, thin, write_geopackage
from refiner.data.synthetic import DEMO_CLASSES


def test_polygons_keep_class_area_and_crs(tmp_path, scene):
    m = np.zeros((40, 50), np.uint8)
    m[2:12, 3:13] = 1  # 100 px building
    m[20:25, :] = 2  # road across
    n = write_geopackage(tmp_path / "out.gpkg", m, scene.georef, DEMO_CLASSES)
    assert n == {POLYGONS: 2}
    meta, _, geoms, fields = pyogrio.raw.read(tmp_path / "out.gpkg")
    assert list(meta["fields"]) == ["class", "value", "area"]
    assert sorted(fields[0]) == ["building", "road"]
    areas = dict(zip(fields[0], fields[2], strict=True))
    assert areas["building"] == 100.0 and areas["road"] == 250.0  # 1 m pixels
    assert "32614" in meta["crs"]


def _disc_map() -> np.ndarray:
    yy, xx = np.mgrid[:80, :80]
    m = np.zeros((80, 80), np.uint8)
    m[(yy - 40) ** 2 + (xx - 30) ** 2 < 20**2] = 1  # a round building ...
    m[:, 50:] = 2  # ... touching a road
    return m


def test_simplified_polygons_lose_the_staircase_and_keep_their_shared_edges(scene):
    m = _disc_map()
    raw, _ = class_polygons(m, scene.georef, DEMO_CLASSES, skip=())
    simple, values = class_polygons(m, scene.georef, DEMO_CLASSES, skip=(), simplify=1.5)
    assert sum(shapely.get_num_coordinates(raw)) > 3 * sum(shapely.get_num_coordinates(simple))
    for a, b in zip(raw, simple, strict=True):  # each region about where it was
        assert abs(a.area - b.area) < 0.05 * a.area + 10
    union = shapely.union_all(simple)
    assert abs(union.area - 80 * 80) < 1e-6 * 80 * 80  # no gaps ...
    assert abs(sum(g.area for g in simple) - union.area) < 1e-6 * union.area  # ... and no overlaps


def test_thinning_leaves_a_one_pixel_centre_line():
    m = np.zeros((30, 60), bool)
    m[10:19, 5:55] = True  # a 9 px wide road
    sk = thin(m)
    rows = np.nonzero(sk[:, 15:45])[0]
    assert set(rows) == {14}  # the middle row, one pixel wide, away from the ends
    assert (sk <= m).all()


def test_road_centre_lines_follow_the_road():
    m = np.zeros((60, 60), bool)
    m[25:32, 5:55] = True  # east-west, centre row 28
    m[5:55, 20:27] = True  # north-south, centre column 23, crossing it
    lines = centre_lines(m, None, min_length=8)
    union = shapely.union_all(lines)
    assert 75 < union.length < 105  # two 50 px roads, shortened by thinning at their four ends
    for point in ((45, 28.5), (10, 28.5), (23.5, 45), (23.5, 10)):  # near the middle of each arm
        assert union.distance(shapely.Point(point)) < 1.5, point
    road = shapely.box(5, 25, 55, 32).union(shapely.box(20, 5, 27, 55))
    assert road.contains(union)


def test_the_geopackage_has_a_centre_line_layer_for_roads(tmp_path, scene):
    m = np.zeros((40, 50), np.uint8)
    m[20:27, :] = 2
    n = write_geopackage(tmp_path / "out.gpkg", m, scene.georef, DEMO_CLASSES, lines=True, simplify=1.0)
    assert n[LINES] == 1
    layers = dict(pyogrio.list_layers(tmp_path / "out.gpkg"))
    assert layers == {POLYGONS: "MultiPolygon", LINES: "MultiLineString"}
    meta, _, geoms, fields = pyogrio.raw.read(tmp_path / "out.gpkg", layer=LINES)
    line = shapely.from_wkb(geoms[0])
    assert 40 < fields[0][0] < 50 and abs(line.length - fields[0][0]) < 1e-9
    assert "32614" in meta["crs"]


def test_a_geopackage_is_written_whole_or_not_at_all(tmp_path, scene):
    """A write that fails midway (a cancelled scene run) leaves the previous file and no temporary."""
    from refiner.data.export import write_geopackage_windows

    m = _disc_map()
    out = tmp_path / "out.gpkg"
    assert write_geopackage(out, m, scene.georef, DEMO_CLASSES) == {POLYGONS: 2}
    before = out.read_bytes()

    def windows():
        yield m, scene.georef
        raise KeyboardInterrupt  # after the first window's features were written to the temporary

    with pytest.raises(KeyboardInterrupt):
        write_geopackage_windows(out, windows(), DEMO_CLASSES, crs=scene.georef.crs.to_wkt(), skip=())
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]
    with pytest.raises(ValueError, match="at least one window"):
        write_geopackage_windows(tmp_path / "none.gpkg", iter(()), DEMO_CLASSES, crs=None)
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]
