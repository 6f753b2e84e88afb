"""Importing a label mask with an explicit pixel value -> class mapping.

A mask from elsewhere rarely uses the workspace's values: the Inria building masks are 0/255,
and 255 is also what Refiner writes for "unlabelled", so reading them with the workspace's
values made every building pixel unlabelled. Here the values present in the file are read
first (:func:`read_mask`), a mapping is proposed (:func:`propose_mapping`: a value that is a
class's mask value is that class, the file's own nodata is unlabelled, any other value goes to
a foreground class in order — a 0/255 mask becomes background/foreground), the user changes
it, and :func:`merge` combines the mapped mask with the painted labels. "Unlabelled" is only
ever the file's nodata or what the user picks. Undo is the workspace's: the page applies the
result through :meth:`Workspace.edit_labels`, which keeps the labels before the import.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError

from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.read import read_labels, read_mask_band
from refiner.data.tile import RasterError, Tile
from refiner.data.vector import VECTOR_SUFFIXES

#: A label mask has a few values (one per class); more means it is not one (an image, a DEM).
MAX_VALUES = 64
MASK_SUFFIXES = (".tif", ".tiff", ".png")
#: How the imported labels meet the painted ones.
MODES = {
    "keep": "merge: keep my painted labels, fill the rest from the mask",
    "mask": "merge: the mask wins where it has a class, my labels elsewhere",
    "replace": "replace my labels by the mask",
}


@dataclass
class MaskFile:
    """A mask read as its pixel values, on the tile's grid."""

    name: str
    raw: np.ndarray  # (H, W) int64 pixel values as in the file
    values: list[int]  # distinct values, ascending
    counts: list[int]  # pixels of each value
    nodata: int | None  # the file's declared nodata value, if it is one of ``values``
    outside: np.ndarray  # (H, W) bool: pixels off the tile's valid area (never labelled)


def read_mask(data: bytes, name: str, tile: Tile, classes: ClassSpec) -> MaskFile:
    """Read an uploaded mask (GeoTIFF / PNG, or GeoJSON polygons) of the tile's size.

    GeoJSON features carry their class (a ``class`` property) and are rasterised onto the tile;
    their pixel values are then the classes' mask values, unlabelled elsewhere.
    """
    lower = name.lower()
    if not lower.endswith((*MASK_SUFFIXES, *VECTOR_SUFFIXES)):
        raise ValueError(f"{name}: upload a label mask as GeoTIFF or PNG (or polygons as GeoJSON)")
    if not data:
        raise ValueError(f"{name} is empty")
    fd, tmp = tempfile.mkstemp(suffix=Path(lower).suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    nodata: int | None
    try:
        if lower.endswith(VECTOR_SUFFIXES):
            labels = read_labels(tmp, classes, like=tile)
            raw, nodata = classes.decode(labels).astype(np.int64), classes.unlabelled_value
        else:
            band, declared, _ = read_mask_band(tmp, name=name, shape=tile.shape)  # size checked before reading
            raw, nodata = _as_values(band, name), _as_value(declared)
    except RasterError as exc:  # the upload's name, never the server's temporary file
        why = str(exc).replace(tmp, name).replace(Path(tmp).name, name)
        if why.startswith("cannot read"):
            why = f"{name} could not be read as a label mask: upload a GeoTIFF or PNG mask ({why})"
        raise ValueError(why) from exc
    except (RasterioError, OSError) as exc:
        raise ValueError(f"{name} could not be read as a label mask: upload a GeoTIFF or PNG mask") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    if raw.shape != tile.shape:
        raise ValueError(
            f"{name} is {raw.shape[0]}x{raw.shape[1]} pixels but the tile is {tile.shape[0]}x{tile.shape[1]}: "
            "they must cover the same grid (export a mask of this tile, or crop it to the tile)"
        )
    outside = ~np.asarray(tile.valid, bool)
    values, counts = np.unique(raw[~outside], return_counts=True)
    if len(values) > MAX_VALUES:
        raise ValueError(
            f"{name} has {len(values)} different pixel values: a label mask has a few, one per class "
            "(is it an image rather than a mask?)"
        )
    values_l = [int(v) for v in values]
    return MaskFile(name, raw, values_l, [int(c) for c in counts], nodata if nodata in values_l else None, outside)


def _as_value(v: float | None) -> int | None:
    return None if v is None or not np.isfinite(v) or v != int(v) else int(v)


def _as_values(band: np.ndarray, name: str) -> np.ndarray:
    if band.dtype.kind == "f":
        finite = np.isfinite(band)
        if not finite.all() or (band[finite] != np.round(band[finite])).any():
            raise ValueError(f"{name} holds fractional values: a label mask holds whole numbers, one per class")
    return band.astype(np.int64)


def class_named(name: str, classes: ClassSpec, among: list[int]) -> int | None:
    """The one class of ``among`` that the file ``name`` is named after ("roads_austin.png" -> road), or None."""
    stem = Path(name).stem.lower()
    hits = [i for i in among if classes.names[i].lower().rstrip("s") in stem]
    return hits[0] if len(hits) == 1 else None


#: A guide map's class is the mask value's when it is this many times as frequent on the value's pixels as elsewhere.
ENRICHED = 1.5


def class_most_there(where: np.ndarray, guide: np.ndarray | None, among: list[int]) -> int | None:
    """The class of ``among`` that the ``guide`` map (class indices, e.g. the coarse map) has most where ``where``.

    Most relative to the rest of the map, and clearly (:data:`ENRICHED`): a mask's road pixels
    are where the coarse map has road far more often than elsewhere; a value with no such class
    gets None (the proposal falls back to the classes' order).
    """
    if guide is None or guide.shape != where.shape or not among or not where.any() or where.all():
        return None
    inside = np.bincount(guide[where].ravel(), minlength=256) / where.sum()
    outside = np.bincount(guide[~where].ravel(), minlength=256) / (~where).sum()
    ratio = {i: inside[i] / max(outside[i], 1e-6) for i in among if inside[i] > 0}
    best = max(ratio, key=lambda i: ratio[i], default=None)
    return best if best is not None and ratio[best] >= ENRICHED else None


def foreground_guess(
    rest: list[int], free: list[int], classes: ClassSpec, name: str, raw: np.ndarray | None, guide: np.ndarray | None
) -> dict[int, int]:
    """Classes for the mask values ``rest`` that are no class's value, from the foreground classes ``free``.

    A mask with one such value (255 of a 0/255 mask) is the class the file is named after, else
    the class the ``guide`` map has most on its pixels: a 0/255 road mask on background/building/
    road is road, not the first free class (building), which is what was proposed before. Other
    values go to the free classes in ascending order (the last one again when they run out).
    """
    out: dict[int, int] = {}
    if len(rest) == 1 and free:
        v = rest[0]
        guess = class_named(name, classes, free)
        if guess is None and raw is not None:
            guess = class_most_there(raw == v, guide, free)
        if guess is not None:
            return {v: guess}
    free = free or [len(classes) - 1]
    for j, v in enumerate(rest):
        out[v] = free[min(j, len(free) - 1)]
    return out


def propose_mapping(mask: MaskFile, classes: ClassSpec, guide: np.ndarray | None = None) -> dict[int, int]:
    """A class index (or IGNORE) for each value of ``mask``.

    A value that is a class's mask value is that class, the file's nodata value is unlabelled;
    a binary mask's low value is background; the other values go to the foreground classes not
    taken yet by :func:`foreground_guess` (the file's name, else the ``guide`` map, e.g. the
    coarse map, decides a single one: a 0/255 ``roads.png`` is background/road). Unlabelled is
    never proposed for a value the file does not call nodata.
    """
    mapping: dict[int, int] = {}
    taken: set[int] = set()
    for v in mask.values:
        if v == mask.nodata:
            mapping[v] = IGNORE
        elif v in classes.values:
            mapping[v] = classes.values.index(v)
            taken.add(mapping[v])
    rest = [v for v in mask.values if v not in mapping]
    if len(rest) == 2 and not taken and len(classes) >= 2:  # a binary mask: low = background
        mapping[rest[0]] = 0
        taken.add(0)
        rest = rest[1:]
    free = [i for i in range(1, len(classes)) if i not in taken]
    return {**mapping, **foreground_guess(rest, free, classes, mask.name, mask.raw, guide)}


def apply_mapping(mask: MaskFile, mapping: dict[int, int], classes: ClassSpec) -> np.ndarray:
    """The mask as class indices (H, W) uint8 with ``mapping``; IGNORE off the tile's valid area."""
    missing = [v for v in mask.values if v not in mapping]
    if missing:
        raise ValueError(f"no class chosen for the mask values {missing}: pick a class or 'unlabelled' for each")
    bad = {v: c for v, c in mapping.items() if c != IGNORE and not 0 <= c < len(classes)}
    if bad:
        raise ValueError(f"the mapping names classes {sorted(set(bad.values()))} that this workspace does not have")
    values = np.asarray(mask.values, np.int64)
    codes = np.asarray([mapping[v] for v in mask.values], np.uint8)
    idx = np.clip(np.searchsorted(values, mask.raw), 0, len(values) - 1)
    out = np.where(values[idx] == mask.raw, codes[idx], IGNORE).astype(np.uint8)
    out[mask.outside] = IGNORE
    return out


def counts_by_class(counts: dict[int, int], mapping: dict[int, int], classes: ClassSpec) -> str:
    """What a mapping makes of a mask, before it is applied: ``background 2,087,312 px · road 162,688 px``.

    ``counts`` are the pixels of each mask value; a value mapped to IGNORE counts as unlabelled.
    """
    per = dict.fromkeys([*range(len(classes)), IGNORE], 0)
    for v, n in counts.items():
        per[mapping.get(v, IGNORE)] += n
    names = [*classes.names, "unlabelled"]
    return " · ".join(f"{names[i if i != IGNORE else -1]} {n:,} px" for i, n in per.items())


def merge(painted: np.ndarray, imported: np.ndarray, mode: str) -> np.ndarray:
    """Combine the painted labels and the imported ones (both class indices); see :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"unknown import mode {mode!r}: use one of {', '.join(MODES)}")
    if painted.shape != imported.shape:
        raise ValueError(f"the mask is {imported.shape} but the labels are {painted.shape}")
    if mode == "replace":
        return imported.copy()
    if mode == "keep":
        return np.where(painted != IGNORE, painted, imported).astype(np.uint8)
    return np.where(imported != IGNORE, imported, painted).astype(np.uint8)


def describe(mapping: dict[int, int], classes: ClassSpec) -> str:
    """``0 -> background, 255 -> building`` (for messages)."""
    return ", ".join(f"{v} → {classes.names[c] if c != IGNORE else 'unlabelled'}" for v, c in sorted(mapping.items()))
