"""A workspace: one folder on disk that holds a tile and everything made from it.

The web app keeps nothing that matters in memory: the tile, the painted labels, the coarse
probabilities, the models, the training status and the results all live here, so a browser
refresh or a server restart finds them again. Layout::

    <root>/<name>/
        workspace.json        settings: classes, where the tile came from, CRF parameters, ...
        tile.tif              the image (uint8 or float32 RGB, with the source's georeferencing)
        labels.tif            painted labels on the tile's grid, mask values, nodata = unlabelled
        coarse_probs.tif      coarse class probabilities (K bands)
        models/coarse/        the coarse CNN (when the probabilities come from one)
        models/rnn/           the current refinement RNN
        models/checkpoint/    the latest checkpoint of a training run
        holdout.tif           the labels the last training run held back for validation
        jobs/                 training status (see :mod:`refiner.app.jobs`)
        results/              cached refinements, CRF maps, exports
        undo/                 previous label rasters, newest last
        access.json, .used    who owns it, its share links, when it was last opened (see
                              :mod:`refiner.app.sessions`, which decides who may open it)

Every write goes to a temporary file that is then renamed, so a crash never leaves half a file.
Uploads are checked here, with :class:`ValueError` messages that say what is wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from refiner.app.uploads import IMAGE_SUFFIXES, check_pixel_size, short_error, sniff_image, staged_upload
from refiner.core import paths
from refiner.core.atomic import atomic_dir, atomic_file, atomic_write_json, file_lock, read_json
from refiner.core.classes import IGNORE, ClassSpec, check_compatible
from refiner.data.read import PREDICT_ON_IT, check_same_place, raster_info, read_image, read_labels, read_probs
from refiner.data.tile import Georef, RasterError, Tile, local_grid
from refiner.data.write import write_probs, write_raster

SETTINGS = "workspace.json"
TILE, LABELS, COARSE_PROBS, HOLDOUT = "tile.tif", "labels.tif", "coarse_probs.tif", "holdout.tif"
UNDO_DEPTH = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_root() -> Path:
    """Where workspaces live: ``$REFINER_WORKSPACES``, else :func:`refiner.core.paths.default_workspaces`.

    That is ``workspaces/`` in a source checkout, and a per-user folder for an installed package.
    """
    env = os.environ.get("REFINER_WORKSPACES")
    return Path(env) if env else paths.default_workspaces()


def check_name(name: str) -> str:
    """A workspace name typed by a user, checked: one folder name, never a path (no '/', no '..')."""
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a usable workspace name: use up to 64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def _inside(root: str | Path, name: str) -> Path:
    """``root/name`` for a checked name, refused when it resolves outside ``root`` (a link placed there)."""
    folder = Path(root) / check_name(name)
    base = Path(root).resolve()
    if folder.exists() and base not in folder.resolve().parents:
        raise ValueError(f"{name!r} is not a usable workspace name: pick another")
    return folder


# --------------------------------------------------------------------------- the workspace


@dataclass
class Workspace:
    """A workspace folder; see the module docstring for its layout.

    ``readonly``, when not empty, says why this workspace may not be changed here (a share link
    to look at, a shipped template): every method that changes labels, models, probabilities,
    settings or jobs then raises ``ValueError`` with it. Cached results may still be written:
    they are what any page showing the workspace computes.
    """

    path: Path
    readonly: str = ""

    def check_writable(self) -> None:
        """Raise ``ValueError`` (what is wrong, what to do) when this workspace is read-only here."""
        if self.readonly:
            raise ValueError(f"the workspace {self.name!r} is read-only: {self.readonly}")

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        root: str | Path,
        name: str,
        tile: Tile,
        classes: ClassSpec,
        *,
        source: dict | None = None,
        overwrite: bool = False,
    ) -> Workspace:
        """A new workspace holding ``tile``, with empty labels."""
        folder = _inside(root, name)
        if folder.exists():
            if not overwrite:
                raise ValueError(f"a workspace called {name!r} exists already: open it or pick another name")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        ws = cls(folder)
        image = tile.image
        if tile.dtype == "uint8":
            write_raster(folder / TILE, (image * 255 + 0.5).astype(np.uint8), tile.georef)
        else:
            write_raster(folder / TILE, image.astype(np.float32), tile.georef)
        if not tile.valid.all():
            np.save(folder / "valid.npy", tile.valid)
        info = {
            "name": folder.name,
            "width": tile.shape[1],
            "height": tile.shape[0],
            "bands": tile.band_count,
            "dtype": tile.dtype,
            "crs": tile.georef.crs.to_string() if tile.georef else None,
            "resolution": tile.resolution,
            "resolution_stated": tile.georef is None and tile.pixel_size is not None,
        }
        ws.save_settings(
            {
                "name": folder.name,
                "created": time.time(),
                "classes": classes.to_dict(),
                "source": {**info, **(source or {})},
                "coarse": None,
                "crf": None,
            }
        )
        ws.write_labels(np.full(tile.shape, IGNORE, np.uint8), undo=False)
        return ws

    @classmethod
    def open(cls, root: str | Path, name: str) -> Workspace:
        """The existing workspace ``name`` under ``root``; refuses a name that is none or resolves outside ``root``."""
        folder = _inside(root, name)
        if not (folder / SETTINGS).is_file() or not (folder / TILE).is_file():
            raise ValueError(f"there is no workspace called {name!r} in {root}")
        return cls(folder)

    @property
    def name(self) -> str:
        """The workspace's name: its folder's."""
        return self.path.name

    # ----------------------------------------------------------------- settings
    @property
    def settings(self) -> dict:
        """``workspace.json``, read afresh each time: another page or a job may have changed it."""
        return read_json(self.path / SETTINGS, {})

    def save_settings(self, settings: dict) -> None:
        """Replace ``workspace.json`` whole, atomically."""
        self.check_writable()
        atomic_write_json(self.path / SETTINGS, settings)

    def update_settings(self, **changes: Any) -> dict:
        """Change some settings and save them; returns the new settings."""
        s = self.settings
        s.update(changes)
        self.save_settings(s)
        return s

    @property
    def classes(self) -> ClassSpec:
        """The classes the tile is labelled with: names, mask values, colours."""
        return ClassSpec.from_dict(self.settings["classes"])

    # ----------------------------------------------------------------- tile
    def tile(self) -> Tile:
        """The workspace's image as a :class:`Tile`, with the source's validity mask, data type and band count."""
        tile = read_image(self.path / TILE)
        valid_path = self.path / "valid.npy"
        if valid_path.is_file():
            tile.valid = np.load(valid_path)
        src = self.settings.get("source", {})
        tile.dtype = src.get("dtype", tile.dtype)
        tile.band_count = src.get("bands", tile.band_count)
        tile.source = src.get("name", self.name)
        if tile.georef is None and src.get("resolution"):
            tile.pixel_size = float(src["resolution"])  # stated by the user (see set_pixel_size)
        return tile

    def set_pixel_size(self, metres: float) -> None:
        """State the ground resolution of a tile without georeferencing, so networks can resample it.

        Refused for georeferenced tiles (their files say it).
        """
        if self.georef is not None:
            raise ValueError("this tile is georeferenced: its ground resolution comes from the file")
        metres = check_pixel_size(metres)
        src = dict(self.settings.get("source", {}))
        src.update(resolution=metres, resolution_stated=True)
        self.update_settings(source=src)
        self.clear_results()

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the tile, from the settings (the image is not read)."""
        s = self.settings["source"]
        return int(s["height"]), int(s["width"])

    @property
    def georef(self) -> Georef | None:
        """The tile's georeferencing, or None for a picture without one."""
        with rasterio.open(self.path / TILE) as ds:
            if ds.crs is None:
                return None
            return Georef(ds.crs, ds.transform)

    def export_georef(self) -> Georef | None:
        """The grid exported files lie on: the tile's georeferencing, else a local metric grid, else None.

        The local grid (:func:`refiner.data.tile.local_grid`) is for a picture with a stated pixel
        size; None leaves a picture without one in pixel coordinates.
        """
        georef = self.georef
        src = self.settings.get("source") or {}
        if georef is None and src.get("resolution"):
            return local_grid(float(src["resolution"]), self.shape[0])
        return georef

    # ----------------------------------------------------------------- labels
    def read_mask(self, file: str) -> np.ndarray | None:
        """A mask file of this workspace (mask values on disk) as class indices, or None if absent."""
        p = self.path / file
        if not p.is_file():
            return None
        with rasterio.open(p) as ds:
            raw = ds.read(1)
        return self.classes.encode_mask(raw, strict=False)

    def write_mask(self, file: str, labels: np.ndarray) -> None:
        """Class indices (IGNORE = unlabelled) saved as a mask file here (read back by :meth:`read_mask`)."""
        classes = self.classes
        write_raster(self.path / file, classes.decode(labels), self.georef, nodata=classes.unlabelled_value)

    def labels(self) -> np.ndarray:
        """Painted labels as class indices (H, W) uint8, 255 = unlabelled."""
        labels = self.read_mask(LABELS)
        if labels is None:
            raise FileNotFoundError(f"{self.path / LABELS} is missing")
        return labels

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The workspace's write lock (see :func:`file_lock`); not re-entrant."""
        return file_lock(self.path / ".lock")

    def write_labels(self, labels: np.ndarray, *, undo: bool = True) -> None:
        """Store class indices (H, W); the previous labels go on the undo stack."""
        self.check_writable()
        if labels.shape != self.shape:
            raise ValueError(f"labels are {labels.shape} but the tile is {self.shape}")
        with self.lock():
            self._write_labels(labels, undo)

    def _write_labels(self, labels: np.ndarray, undo: bool, previous: np.ndarray | None = None) -> None:
        """Write ``labels``; with ``undo``, those on disk go on the undo stack (``previous``: just read)."""
        if undo and (previous is not None or (self.path / LABELS).is_file()):
            self._push_undo(self.labels() if previous is None else previous)
        self.write_mask(LABELS, labels)

    def edit_labels(self, edit: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Apply ``edit`` to the labels as they are on disk now, under the workspace lock.

        Painting goes through here rather than ``write_labels(page_copy)``: two people painting
        the same workspace at once each had a stale copy, and the later write dropped the other's
        stroke; applying each stroke to the current labels keeps both. Returns the new labels.
        """
        self.check_writable()
        with self.lock():
            current = self.labels()
            new = edit(current)
            if new.shape != self.shape:
                raise ValueError(f"labels are {new.shape} but the tile is {self.shape}")
            if not np.array_equal(new, current):
                self._write_labels(new, True, previous=current)  # read once per stroke, not twice
            return new

    def label_counts(self, labels: np.ndarray | None = None) -> dict[str, int]:
        """Labelled pixels per class name (and ``unlabelled``)."""
        labels = self.labels() if labels is None else labels
        counts = np.bincount(labels.ravel(), minlength=256)
        out = {n: int(counts[i]) for i, n in enumerate(self.classes.names)}
        out["unlabelled"] = int(counts[IGNORE])
        return out

    def import_labels(self, data: bytes, name: str) -> np.ndarray:
        """Replace the labels by an uploaded mask (pixel values = the classes' mask values)."""
        self.check_writable()
        if not name.lower().endswith((".geojson", ".json")):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                raise ValueError(f"{name}: upload a label mask as GeoTIFF or PNG (or polygons as GeoJSON)")
            sniff_image(data, name)
        with staged_upload(data, name) as tmp:
            try:
                tile = self.tile()
                labels = read_labels(tmp, self.classes, like=tile)
            except RasterError as exc:  # the upload's name, never the server's temporary path
                raise ValueError(str(exc).replace(str(tmp), name).replace(tmp.name, name)) from exc
            except (RasterioError, OSError) as exc:
                raise ValueError(f"{name} could not be read as a label mask: {short_error(exc)}") from exc
        if not (labels != IGNORE).any():  # e.g. an empty GeoJSON: never swap painted labels for nothing
            raise ValueError(f"{name} labels no pixel of the tile — nothing was imported; the labels are unchanged")
        self.write_labels(labels)
        return labels

    def _undo_dir(self) -> Path:
        return self.path / "undo"

    def _push_undo(self, labels: np.ndarray) -> None:
        d = self._undo_dir()
        d.mkdir(exist_ok=True)
        stamp = f"{time.time_ns():020d}.npy"
        with atomic_file(d / stamp) as tmp, open(tmp, "wb") as f:
            np.save(f, labels)
        for old in sorted(d.glob("*.npy"))[:-UNDO_DEPTH]:
            old.unlink(missing_ok=True)

    def undo_depth(self) -> int:
        """How many label edits can be undone."""
        d = self._undo_dir()
        return len(list(d.glob("*.npy"))) if d.is_dir() else 0

    def undo(self) -> bool:
        """Restore the labels before the last change; False when there is nothing to undo."""
        self.check_writable()
        d = self._undo_dir()
        steps = sorted(d.glob("*.npy")) if d.is_dir() else []
        if not steps:
            return False
        last = steps[-1]
        labels = np.load(last)
        self.write_labels(labels, undo=False)
        last.unlink()
        return True

    def holdout(self) -> np.ndarray | None:
        """The labels the last training run held back (class indices), if any."""
        return self.read_mask(HOLDOUT)

    def write_holdout(self, labels: np.ndarray) -> None:
        """Save the labels a training run held back, on the tile's grid: what the pages score on."""
        self.check_writable()
        self.write_mask(HOLDOUT, labels)

    # ----------------------------------------------------------------- coarse probabilities
    def has_coarse(self) -> bool:
        """Whether coarse probabilities have been computed or uploaded."""
        return (self.path / COARSE_PROBS).is_file()

    def coarse_probs(self) -> np.ndarray:
        """The coarse probabilities (K, H, W); a clear error when there are none yet."""
        if not self.has_coarse():
            raise ValueError("this workspace has no coarse probabilities yet: compute or upload them on the start page")
        probs, _, _ = read_probs(self.path / COARSE_PROBS)
        return probs

    def write_coarse_probs(self, probs: np.ndarray, origin: dict) -> None:
        """Save coarse probabilities (K, H, W) of this tile with their ``origin``; cached results are dropped."""
        self.check_writable()
        k = len(self.classes)
        if probs.shape != (k, *self.shape):
            raise ValueError(
                f"the probabilities are {probs.shape[0]} bands of {probs.shape[1]}x{probs.shape[2]} pixels; "
                f"this workspace needs {k} bands (one per class: {', '.join(self.classes.names)}) "
                f"of {self.shape[0]}x{self.shape[1]}"
            )
        write_probs(self.path / COARSE_PROBS, probs, self.georef, self.classes)
        self.update_settings(coarse={**origin, "updated": time.time()})
        self.clear_results()

    def import_probs(self, data: bytes, name: str) -> None:
        """Bring your own model: an uploaded probability GeoTIFF (one band per class)."""
        self.check_writable()
        if not name.lower().endswith((".tif", ".tiff")):
            raise ValueError(f"{name}: upload probabilities as a GeoTIFF with one band per class")
        sniff_image(data, name)
        with staged_upload(data, name) as tmp:
            try:
                info = raster_info(tmp)  # the header: probabilities of another size are never read
                if (info["height"], info["width"]) != self.shape:
                    raise ValueError(
                        f"{name} is {info['bands']} bands of {info['height']}x{info['width']} pixels but the tile is "
                        f"{self.shape[0]}x{self.shape[1]} — {PREDICT_ON_IT}"
                    )
                probs, classes, georef = read_probs(tmp, check_sums=True)
                check_same_place(georef, self.georef, f"the probability map {name}", "the tile", PREDICT_ON_IT)
            except RasterError as exc:
                raise ValueError(str(exc).replace(str(tmp), name).replace(tmp.name, name)) from exc
            except (RasterioError, OSError) as exc:
                raise ValueError(f"{name} is damaged and its pixels cannot be read: {short_error(exc)}") from exc
        if classes is not None:
            todo = "upload probabilities computed for this workspace's classes"
            check_compatible(classes, self.classes, f"the probability map {name}", "this workspace", todo)
        self.write_coarse_probs(probs, {"source": "uploaded", "file": name})

    # ----------------------------------------------------------------- models
    def model_dir(self, kind: str) -> Path:
        """``coarse``, ``rnn`` or ``checkpoint``."""
        return self.path / "models" / kind

    def has_model(self, kind: str) -> bool:
        """Whether a model of ``kind`` (``coarse``, ``rnn``, ``checkpoint``) is saved here."""
        return (self.model_dir(kind) / "config.json").is_file()

    def model_stamp(self, kind: str) -> str:
        """Changes whenever the model is rewritten (for caching results made with it)."""
        p = self.model_dir(kind) / "model.safetensors"
        return f"{p.stat().st_mtime_ns}" if p.is_file() else ""

    def probs_stamp(self) -> str:
        """Changes whenever the coarse probabilities are rewritten (for caching results made from them)."""
        p = self.path / COARSE_PROBS
        return f"{p.stat().st_mtime_ns}" if p.is_file() else ""

    def install_model(self, src: str | Path, kind: str) -> None:
        """Copy a model folder into the workspace (replacing the one there)."""
        self.check_writable()
        with self.lock(), atomic_dir(self.model_dir(kind)) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)

    # ----------------------------------------------------------------- results
    def results_dir(self) -> Path:
        """The folder of cached results, made on first use."""
        d = self.path / "results"
        d.mkdir(exist_ok=True)
        return d

    def clear_results(self) -> None:
        """Drop every cached result (the inputs they were made from changed)."""
        self.check_writable()
        for p in self.results_dir().glob("*.npz"):
            p.unlink(missing_ok=True)

    def load_result(self, name: str, stamp: str) -> dict[str, np.ndarray] | None:
        """A cached result array set, if it was made from the same inputs (``stamp``)."""
        p = self.results_dir() / f"{name}.npz"
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                if str(z["stamp"]) != stamp:
                    return None
                return {k: z[k] for k in z.files if k != "stamp"}
        except (OSError, ValueError, KeyError):
            return None

    def save_result(self, name: str, stamp: str, **arrays: np.ndarray) -> None:
        """Cache ``arrays`` as ``name`` with the ``stamp`` of their inputs (read back by :meth:`load_result`)."""
        p = self.results_dir() / f"{name}.npz"
        # unique per writer: the fixed name ``refinement.npz.tmp.npz`` failed 2 of 4 fresh pages
        with atomic_file(p) as tmp, open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, stamp=np.array(stamp), **arrays)  # numbers only, as np.load reads


def list_workspaces(root: str | Path) -> list[str]:
    """Names of the workspaces under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / SETTINGS).is_file() and (p / TILE).is_file())
