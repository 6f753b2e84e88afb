import numpy as np
import pyogrio

from refiner.export import write_geopackage
from refiner.synthetic import DEMO_CLASSES


def test_polygons_keep_class_area_and_crs(tmp_path, scene):
    m = np.zeros((40, 50), np.uint8)
    m[2:12, 3:13] = 1  # 100 px building
    m[20:25, :] = 2  # road across
    n = write_geopackage(tmp_path / "out.gpkg", m, scene.georef, DEMO_CLASSES)
    assert n == 2
    meta, _, geoms, fields = pyogrio.raw.read(tmp_path / "out.gpkg")
    assert list(meta["fields"]) == ["class", "value", "area"]
    assert sorted(fields[0]) == ["building", "road"]
    areas = dict(zip(fields[0], fields[2], strict=True))
    assert areas["building"] == 100.0 and areas["road"] == 250.0  # 1 m pixels
    assert "32614" in meta["crs"]
