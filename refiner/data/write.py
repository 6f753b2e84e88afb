"""Writing rasters with the source's georeferencing: images, probabilities, class maps, and windows of scenes."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from refiner.core.atomic import atomic_file, commit, temp_beside
from refiner.core.classes import ClassSpec
from refiner.data.tile import Georef


def write_raster(
    path: str | Path,
    array: np.ndarray,
    georef: Georef | None,
    *,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    colormap: dict[int, tuple[int, int, int]] | None = None,
    scales: Sequence[float] | None = None,
) -> Path:
    """Write (H, W) or (B, H, W) as a tiled, deflate-compressed GeoTIFF with the given georef.

    Written to a temporary file and renamed, so a crash never leaves a half-written output.

    Args:
        path: the GeoTIFF to write (replaced whole if it exists).
        array: the bands, (H, W) or (B, H, W), of any GDAL data type.
        georef: where it lies (None: a plain pixel grid).
        nodata: the nodata value to declare.
        descriptions: a name per band.
        tags: metadata tags of the file.
        colormap: a colour table, value -> RGB, for the first band.
        scales: per-band scale factors a GIS applies on reading (8-bit probabilities: 1/255).

    Returns:
        ``path``.

    Example:
        ```python
        refiner.write_raster("entropy.tif", entropy.astype("float32"), tile.georef, descriptions=["entropy"])
        ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = array[None] if array.ndim == 2 else array
    b, h, w = arr.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": b,
        "dtype": arr.dtype.name,
        "compress": "deflate",
        "predictor": 3 if arr.dtype.kind == "f" else 2,  # deflate on differences: float32 probabilities 1.5-2x smaller
        "tiled": h >= 256 and w >= 256,
        "nodata": nodata,
    }
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    if georef is not None:
        profile.update(crs=georef.crs, transform=georef.transform)
    # A unique temp name per writer (refiner.core.atomic): with one fixed name, two sessions writing the
    # same file at once renamed each other's half-written file away ("No such file" on one of them).
    with atomic_file(path, suffix=".part") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            for i, d in enumerate(descriptions or []):
                dst.set_band_description(i + 1, d)
            if tags:
                dst.update_tags(**tags)
            if colormap and b == 1:
                dst.write_colormap(1, colormap)
            if scales:
                dst.scales = tuple(scales)
    return path


def write_probs(
    path: str | Path, probs: np.ndarray, georef: Georef | None, classes: ClassSpec, *, quantise: bool = False
) -> Path:
    """Probabilities (K, H, W) as a GeoTIFF, one band per class, class list in the tags.

    Args:
        path: the GeoTIFF to write.
        probs: the probabilities float32 (K, H, W).
        georef: where they lie (None: a plain pixel grid).
        classes: the K classes (band descriptions, and tags :func:`read_probs` reads back).
        quantise: uint8 steps of 1/255 instead of float32 (a quarter of the size; the file's scale
            factor says so to a GIS, and :func:`read_probs` reads it back to [0, 1]).

    Returns:
        ``path``.

    Example:
        ```python
        refined = refiner.refine(rnn, tile, probs)
        refiner.write_probs("refined.tif", refined.final, tile.georef, rnn.classes, quantise=True)
        ```
    """
    q = quantise_probs(probs) if quantise else probs.astype(np.float32)
    return write_raster(
        path, q, georef, descriptions=classes.names, tags={"refiner_classes": json.dumps(classes.to_dict())},
        scales=[1 / 255] * len(classes) if quantise else None,
    )  # fmt: skip


def quantise_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 steps of 1/255 (rounded: at most 0.002 off)."""
    return (np.clip(probs, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_class_map(path: str | Path, classes_map: np.ndarray, georef: Georef | None, classes: ClassSpec) -> Path:
    """A class map (H, W) written with the classes' mask values and a colour table.

    Nodata (no class) is :attr:`ClassSpec.unlabelled_value`: 255, unless 255 is a class's value.

    Args:
        path: the GeoTIFF to write.
        classes_map: class indices (H, W); 255 (no class) is written as the nodata value.
        georef: where it lies (None: a plain pixel grid).
        classes: the classes: their mask values are written, their colours make the colour table.

    Returns:
        ``path``.

    Example:
        ```python
        refiner.write_class_map("map.tif", refined.class_map(), tile.georef, rnn.classes)
        ```
    """
    values = classes.decode(classes_map)
    cmap = dict(zip(classes.values, classes.colors, strict=True))
    return write_raster(
        path, values, georef, nodata=classes.unlabelled_value, colormap=cmap,
        tags={"refiner_classes": json.dumps(classes.to_dict())},
    )  # fmt: skip


class RasterWriter:
    """A tiled, compressed GeoTIFF written window by window, for outputs larger than memory.

    Opened on a temporary ``.part`` file and renamed on a clean :meth:`close` (use it as a
    context manager), so a crash never leaves a half-written output under the final name.
    GDAL's block cache is what holds data between writes; :func:`streaming_env` bounds it.
    BigTIFF is used when the file could pass 4 GiB.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        count: int,
        dtype: str,
        georef: Georef | None,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
        colormap: dict[int, tuple[int, int, int]] | None = None,
        block: int = 256,
        quantise: bool = False,
    ) -> None:
        self.path = Path(path)
        self.tmp = temp_beside(self.path, ".part")  # unique: two writers of one path never collide
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": count,
            "dtype": dtype,
            "compress": "deflate",
            "predictor": 3 if dtype.startswith("float") else 2,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "nodata": nodata,
            "BIGTIFF": "IF_SAFER",
            "interleave": "pixel" if count <= 4 else "band",
        }
        if georef is not None:
            profile.update(crs=georef.crs, transform=georef.transform)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.ds = rasterio.open(self.tmp, "w", **profile)
            for i, d in enumerate(descriptions or []):
                self.ds.set_band_description(i + 1, d)
            if tags:
                self.ds.update_tags(**tags)
            if colormap and count == 1:
                self.ds.write_colormap(1, colormap)
            self.quantise = quantise  # probabilities written as uint8 steps of 1/255 (see quantise_probs)
            if quantise:
                self.ds.scales = (1 / 255,) * count
        except BaseException:
            self.close(keep=False)
            raise

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write (B, h, w) or (h, w) with its top-left corner at ``(row, col)``."""
        arr = array[None] if array.ndim == 2 else array
        if self.quantise:
            arr = quantise_probs(arr)
        self.ds.write(arr.astype(self.ds.dtypes[0], copy=False), window=Window(col, row, arr.shape[2], arr.shape[1]))

    def close(self, *, keep: bool = True) -> Path:
        """Finish the file under its final name (``keep``), or remove it; a failed finish removes it too."""
        ds = getattr(self, "ds", None)
        if not keep:
            with contextlib.suppress(Exception):  # e.g. a full disk failing the last flush again
                if ds is not None:
                    ds.close()
            self.tmp.unlink(missing_ok=True)
            return self.path
        try:
            self.ds.close()
            commit(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self.path

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(keep=exc_type is None)
