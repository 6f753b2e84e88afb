"""Limits checked before work: declared raster sizes and probability sums, refused in one line."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from refiner.app.uploads import load_tile
from refiner.app.workspace import Workspace
from refiner.cli import main
from refiner.data.read import DEFAULT_MAX_READ_PIXELS, read_image, read_probs
from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.data.tile import RasterError
from refiner.data.write import write_raster

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"


def huge_tiff(path: Path, n: int = 10**6) -> Path:
    """A ~120-byte uncompressed TIFF whose header declares n x n one-band pixels (one tiny strip)."""
    entries = [(256, 4, n), (257, 4, n), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8), (277, 3, 1), (278, 4, n), (279, 4, 1)]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, typ, val in entries:
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 9) + b"\x00" + ifd + struct.pack("<I", 0))
    return path


def _no_pixel_read(monkeypatch) -> None:
    """Fail the test if any pixel is read: the refusal must come from the header alone."""
    import rasterio.io

    def fail(self, *a, **k):
        pytest.fail("pixels were read before the declared size was checked")

    for name in ("read", "read_masks"):
        monkeypatch.setattr(rasterio.io.DatasetReader, name, fail)


def test_a_tiny_file_declaring_a_huge_raster_is_refused_before_reading(tmp_path, monkeypatch):
    path = huge_tiff(tmp_path / "huge.tif")
    assert path.stat().st_size < 200
    _no_pixel_read(monkeypatch)
    limit = DEFAULT_MAX_READ_PIXELS // 2**20
    with pytest.raises(RasterError, match=rf"declares 1000000 x 1000000 pixels.*{limit} megapix"):
        read_image(path, bands=(1, 1, 1))  # from the header: reading 10^12 pixels would need 3 TB
    with pytest.raises(ValueError, match="megapixels"):  # the app's loader: its own, smaller limit
        load_tile(path, name="huge.tif")


def test_the_cli_refuses_it_in_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    if not (ASSETS / "coarse" / "config.json").is_file():
        pytest.skip("demo assets not built")
    path = huge_tiff(tmp_path / "huge.tif")
    _no_pixel_read(monkeypatch)
    code = main(["predict", "--model", str(ASSETS / "coarse"), "--image", str(path), "--out", str(tmp_path / "p.tif")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "declares 1000000 x 1000000 pixels" in err[0]
    assert not (tmp_path / "p.tif").exists()


def test_the_limit_is_the_operators_to_set(tmp_path, monkeypatch):
    scene = make_scene(40, seed=1)
    path = write_raster(tmp_path / "t.tif", (scene.image * 255).astype(np.uint8), scene.georef)
    monkeypatch.setenv("REFINER_MAX_READ_PIXELS", str(40 * 40 - 1))
    with pytest.raises(RasterError, match="REFINER_MAX_READ_PIXELS"):
        read_image(path)
    assert read_image(path, window=(0, 0, 20, 20)).shape == (20, 20)  # a window under the limit is fine


@pytest.mark.parametrize(("scale", "message"), [(2.7, "they sum to 2.70"), (0.0, "holds only zeros")])
def test_probabilities_that_do_not_sum_to_one_are_refused(tmp_path, scale, message):
    probs = np.full((3, 16, 16), scale / 3, np.float32)
    probs = np.clip(probs, 0, 1)
    path = write_raster(tmp_path / "p.tif", probs, make_scene(16, seed=1).georef)
    read_probs(path)  # internal stacks (several maps) are not sum-checked...
    with pytest.raises(RasterError, match=message):
        read_probs(path, check_sums=True)  # ...a file a user gives is
    ws = Workspace.create(tmp_path, "w", make_scene(16, seed=1).tile(), DEMO_CLASSES, source={"kind": "test"})
    with pytest.raises(ValueError, match=message):
        ws.import_probs(path.read_bytes(), "mine.tif")
    assert not ws.has_coarse()


def test_real_probabilities_pass_the_sum_check(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.random((4, 16, 16)).astype(np.float32)
    p /= p.sum(axis=0)
    path = write_raster(tmp_path / "p.tif", np.round(p * 255).astype(np.uint8), None)  # uint8 rounding too
    assert read_probs(path, check_sums=True)[0].shape == (4, 16, 16)
