"""An independent reference mask per workspace, used only for scoring (never for training).

Held-out painted regions say how the model does near where the user painted; a reference mask
(the Inria or OSM mask of the tile, or the labels of another workspace on the same grid) says
how it does over the whole tile. The issue that asked for it measured the gap on Austin: building
IoU 0.77 on painted blocks, 0.46 against the reference over the tile.

A mask file's pixel values go through an explicit value -> class mapping (:func:`propose_mapping`
reads the values present and suggests one; ``None`` = unlabelled, only when chosen). The mask is
stored as ``reference.tif`` on the tile's grid (class mask values, nodata = unlabelled) with its
origin in the workspace settings under ``reference``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from rasterio.errors import RasterioError

from refiner.app.uploads import short_error, sniff_image, staged_upload
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE, ClassSpec, check_compatible
from refiner.data.masks import foreground_guess
from refiner.data.read import read_mask_band
from refiner.data.resample import labels_to_grid, resample
from refiner.data.tile import Georef, RasterError

REFERENCE = "reference.tif"
#: More distinct values than this: not a class mask (a photo or a probability map).
MAX_VALUES = 32


def mask_values(raw: np.ndarray) -> dict[int, int]:
    """The pixel values of a mask and how many pixels have each (raises if it is no class mask)."""
    values, counts = np.unique(raw, return_counts=True)
    if len(values) > MAX_VALUES:
        raise ValueError(
            f"the mask has {len(values)} distinct values: a class mask has a few (e.g. 0 and 255) — "
            "upload a single-band mask of class values"
        )
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def propose_mapping(
    values: list[int],
    classes: ClassSpec,
    *,
    name: str = "",
    raw: np.ndarray | None = None,
    guide: np.ndarray | None = None,
) -> dict[int, int | None]:
    """A value -> class index (None = unlabelled) suggestion for the values found in a mask.

    A value equal to a class's mask value maps to that class; of the others, a binary mask's low
    value is background, and a single remaining value is the class the file ``name`` names, else
    the class the ``guide`` map (the workspace's coarse map, on ``raw``'s grid) has most on its
    pixels (:func:`refiner.data.masks.foreground_guess`): a 0/255 road mask on background/
    building/road is background/road, where 255 used to be proposed as building. Several others
    go, in increasing order, to the classes not taken yet; values beyond the classes are
    unlabelled. 255 stays a value like any other.
    """
    lookup = {v: i for i, v in enumerate(classes.values)}
    out: dict[int, int | None] = {v: lookup[v] for v in values if v in lookup}
    rest = sorted(v for v in values if v not in out)
    if len(rest) == 2 and not out:  # a binary mask: low = background
        out[rest.pop(0)] = 0
    free = [i for i in range(len(classes)) if i not in out.values()]
    if len(rest) == 1 and free:
        fg = [i for i in free if i != 0] or free
        out.update(foreground_guess(rest, fg, classes, name, raw, guide))
        return dict(sorted(out.items()))
    for v in rest:
        out[v] = free.pop(0) if free else None
    return dict(sorted(out.items()))


def encode(raw: np.ndarray, mapping: Mapping[int, int | None], num_classes: int) -> np.ndarray:
    """Raw mask values -> class indices (255 = unlabelled) through ``mapping``; unmapped values are unlabelled."""
    lut = np.full(256 if raw.dtype == np.uint8 else int(raw.max()) + 1, IGNORE, np.uint8)
    for v, c in mapping.items():
        if c is not None and not 0 <= c < num_classes:
            raise ValueError(f"class index {c} for value {v} is not one of the {num_classes} classes")
        if 0 <= v < lut.size:
            lut[v] = IGNORE if c is None else c
    if raw.min() < 0:
        raise ValueError("mask values must not be negative")
    return lut[raw]


def read_mask(data: bytes, name: str) -> tuple[np.ndarray, Georef | None]:
    """An uploaded single-band mask (GeoTIFF or PNG): its raw values and georeferencing."""
    if not name.lower().endswith((".tif", ".tiff", ".png")):
        raise ValueError(f"{name}: upload a reference mask as GeoTIFF or PNG (one band of class values)")
    sniff_image(data, name)
    with staged_upload(data, name) as tmp:
        try:  # the one checked opener: the declared size is refused before any pixel is read
            raw, _, georef = read_mask_band(tmp, name=name)
        except RasterError as exc:
            raise ValueError(str(exc).replace(str(tmp), name).replace(tmp.name, name)) from exc
        except (RasterioError, OSError) as exc:
            raise ValueError(f"{name} could not be read as a mask: {short_error(exc)}") from exc
    if raw.dtype.kind not in "ui":
        raise ValueError(f"{name} has {raw.dtype} pixels: a class mask has integer values")
    mask_values(raw)  # a photo or a probability map is refused here, with what to upload instead
    return raw, georef


def on_tile_grid(ws: Workspace, labels: np.ndarray, georef: Georef | None, name: str = "the mask") -> np.ndarray:
    """Class indices of a mask placed on the workspace's tile grid.

    Same size as the tile (and no other georeferencing): taken as is. A georeferenced mask of
    another extent or resolution in the tile's CRS (a whole Inria tile for a window of it):
    resampled by nearest neighbour (majority vote when coarser); pixels it does not cover are
    unlabelled.
    """
    shape, target = ws.shape, ws.georef
    if labels.shape == shape and (georef is None or target is None or georef == target):
        return labels
    if georef is None or target is None:
        raise ValueError(
            f"{name} is {labels.shape[0]}x{labels.shape[1]} pixels but the tile is {shape[0]}x{shape[1]}, and "
            "without georeferencing on both it cannot be placed: upload a mask of the tile's size"
        )
    if georef.crs != target.crs:
        raise ValueError(
            f"{name} is in {georef.crs.to_string()}, the tile in {target.crs.to_string()}: reproject it first"
        )
    out = labels_to_grid(labels, georef, target, shape)
    covered = resample(np.ones(labels.shape, np.uint8), georef, shape, target, method="nearest").astype(bool)
    out[~covered] = IGNORE
    return out


def attach_mask(
    ws: Workspace, raw: np.ndarray, georef: Georef | None, mapping: Mapping[int, int | None], source: str
) -> np.ndarray:
    """Store ``raw`` through ``mapping``, on the tile's grid, as the workspace's reference; returns class indices."""
    ws.check_writable()
    labels = on_tile_grid(ws, encode(raw, mapping, len(ws.classes)), georef, source)
    labels[~ws.tile().valid] = IGNORE  # no score where the image has no data
    if not (labels != IGNORE).any():
        raise ValueError("with this mapping no pixel of the tile has a class: map at least one value to a class")
    _save(ws, labels, {"kind": "file", "name": source, "mapping": {str(k): v for k, v in mapping.items()}})
    return labels


def attach_workspace(ws: Workspace, other: Workspace) -> np.ndarray:
    """Use ``other``'s painted labels (same tile grid and classes) as ``ws``'s reference."""
    ws.check_writable()
    if other.path == ws.path:
        raise ValueError("a workspace's own labels are what it trains on: pick another workspace")
    todo = "pick a workspace painted with this workspace's classes"
    check_compatible(other.classes, ws.classes, f"the workspace {other.name}", "this workspace", todo)
    if other.shape != ws.shape or other.georef != ws.georef:
        raise ValueError(f"{other.name}'s tile is not on this tile's grid (size or georeferencing differ)")
    labels = other.labels()
    if not (labels != IGNORE).any():
        raise ValueError(f"{other.name} has no labelled pixel yet")
    _save(ws, labels, {"kind": "workspace", "name": other.name})
    return labels


def _save(ws: Workspace, labels: np.ndarray, origin: dict) -> None:
    ws.write_mask(REFERENCE, labels)
    ws.update_settings(reference={**origin, "attached": time.time()})


def detach(ws: Workspace) -> None:
    """Remove the workspace's reference mask; the pages stop scoring against it."""
    ws.check_writable()
    (ws.path / REFERENCE).unlink(missing_ok=True)
    ws.update_settings(reference=None)


def reference_labels(ws: Workspace) -> np.ndarray | None:
    """The attached reference as class indices (H, W), or None."""
    return ws.read_mask(REFERENCE)


def describe(ws: Workspace) -> str:
    """Where the reference came from, for captions."""
    ref = ws.settings.get("reference") or {}
    if ref.get("kind") == "workspace":
        return f"the labels of workspace {ref['name']}"
    return f"the mask {ref.get('name', '?')}" if ref else ""
