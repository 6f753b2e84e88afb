"""Checking what a browser uploads or names before it becomes a tile.

Image files are sniffed by content, large ones must be read by window, pixel sizes are checked;
every refusal is a :class:`ValueError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rasterio.errors import RasterioError

from refiner.data.read import raster_info, read_image
from refiner.data.tile import RasterError, Tile

#: Largest tile the app loads whole (pixels): beyond this, read a window of the raster.
MAX_PIXELS = 4096 * 4096
#: Smallest tile side the app works on: a 1 x 1 image was accepted and stopped the Label page
#: ("y1 must be greater than or equal to y0"); the window fields start at 16 too.
MIN_SIDE = 16
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff")


# --------------------------------------------------------------------------- upload checks


def sniff_image(data: bytes, name: str) -> None:
    """Raise ``ValueError`` unless ``data`` starts like a TIFF, PNG or JPEG file."""
    if not data:
        raise ValueError(f"{name} is empty")
    if not data.startswith(_MAGIC):
        raise ValueError(f"{name} is not an image Refiner can read: upload a GeoTIFF, PNG or JPEG file")


@contextlib.contextmanager
def staged_upload(data: bytes, name: str) -> Iterator[Path]:
    """Uploaded bytes as a temporary file to read with the raster functions, removed afterwards.

    The file has the upload's suffix (GDAL picks drivers by it); error messages name the upload,
    never this path.
    """
    suffix = Path(name).suffix.lower() or ".tif"
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


MODEL_FILES = {"config.json", "model.safetensors"}


@contextlib.contextmanager
def staged_model(files: dict[str, bytes], expect: str) -> Iterator[Path]:
    """Uploaded model files as a checked model folder (removed afterwards).

    Messages name the uploaded files, never the server's temporary folder (they said
    ``/tmp/tmpXXXX/model.safetensors``).
    """
    from refiner.models.store import load_model

    if set(files) != MODEL_FILES:
        raise ValueError("upload exactly two files: config.json and model.safetensors (a model folder)")
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        try:
            load_model(d, expect=expect)
        except Exception as exc:  # noqa: BLE001 - any failure to load an upload is the upload's fault
            why = short_error(exc).replace(f"{d}/", "").replace(d, "the uploaded model")
            raise ValueError(f"the uploaded model could not be used: {why}") from exc
        yield Path(d)


def load_tile(source: str | Path, *, window: tuple[int, int, int, int] | None = None, name: str = "") -> Tile:
    """Read imagery for a workspace with app-friendly errors.

    One- or two-band images are shown as grey (band 1 three times); tiles above
    :data:`MAX_PIXELS` must be read by window.
    """
    label = name or str(source)
    try:
        info = raster_info(source)
    except (RasterError, RasterioError, FileNotFoundError) as exc:
        raise ValueError(f"{label} could not be opened as an image: {short_error(exc)}") from exc
    h, w = (window[2], window[3]) if window else (info["height"], info["width"])
    if window:
        r, c = window[0], window[1]
        if r < 0 or c < 0 or h <= 0 or w <= 0 or r + h > info["height"] or c + w > info["width"]:
            raise ValueError(
                f"the window (row {r}, col {c}, {h}x{w}) does not fit in {label}, "
                f"which is {info['height']}x{info['width']} pixels"
            )
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"{label} is {h}x{w} pixels, smaller than the {MIN_SIDE}x{MIN_SIDE} pixels the app works on — "
            "upload a larger image, or read a larger window of it"
        )
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"{label} is {info['height']}x{info['width']} pixels; the app works on tiles up to "
            f"{MAX_PIXELS // 1_000_000} megapixels: read a window of it — give its row, column, height and "
            "width in the window fields (under the upload, or with the URL), or cut the image smaller first"
        )
    bands = (1, 1, 1) if info["bands"] < 3 else None
    try:
        return read_image(source, bands=bands, window=window)
    except RasterError as exc:  # the upload's name, never the server's temporary file
        raise ValueError(str(exc).replace(str(source), label).replace(Path(str(source)).name, label)) from exc
    except (RasterioError, OSError) as exc:
        raise ValueError(f"{label} is damaged or truncated and its pixels cannot be read: {short_error(exc)}") from exc


def short_error(exc: BaseException) -> str:
    """The first line of an error (GDAL's run on for lines), at most 300 characters, for a message."""
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def check_pixel_size(metres: float) -> float:
    """A stated ground resolution in metres per pixel, checked (0.05 m to 100 m)."""
    metres = float(metres)
    if not 0.05 <= metres <= 100:
        raise ValueError(f"a ground resolution of {metres:g} m/px is out of range: give 0.05 to 100 metres per pixel")
    return metres


def tile_from_upload(data: bytes, name: str, *, window: tuple[int, int, int, int] | None = None) -> Tile:
    """Check and read an uploaded image (GeoTIFF, PNG, JPEG), or a ``window`` of it.

    ``window`` is (row, col, height, width); an image above :data:`MAX_PIXELS` needs one.
    """
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{name}: upload a GeoTIFF (.tif), PNG or JPEG image")
    sniff_image(data, name)
    with staged_upload(data, name) as tmp:
        tile = load_tile(tmp, window=window, name=name)
    tile.source = name
    return tile


def upload_shape(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) of an uploaded image, from its header (to offer a window of a large one)."""
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{name}: upload a GeoTIFF (.tif), PNG or JPEG image")
    sniff_image(data, name)
    with staged_upload(data, name) as tmp:
        try:
            info = raster_info(tmp)
        except (RasterError, RasterioError) as exc:
            why = short_error(exc).replace(str(tmp), name)
            raise ValueError(f"{name} could not be opened as an image: {why}") from exc
    return int(info["height"]), int(info["width"])
