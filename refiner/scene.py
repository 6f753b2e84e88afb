"""File-to-file inference on scenes of any size: the ``predict`` and ``refine`` commands.

A scene is cut into windows (:func:`refiner.tiling.iter_windows`); each window is read from disk
with a halo equal to the network's receptive field, run, and its core written into tiled,
compressed GeoTIFFs opened once (:class:`refiner.raster.RasterWriter`) with the source's
georeferencing. The stitched result equals whole-image inference exactly, scene borders included,
and memory depends on the window size, not on the scene. Every iteration's probabilities (for
the slider) are written window by window the same way.

A window's work is a :class:`SceneTask` plus a :class:`~refiner.tiling.WindowSpec`, both small
and picklable: :func:`run_window` reads its own inputs from the file paths and loads the model
from its folder (cached per process), so the same function runs here or on Dask workers
(:mod:`refiner.distributed`, ``scheduler=``). Results are written in window order either way,
so the files are identical byte for byte. Read windows all have one size (edge windows grow
inwards, :func:`~refiner.tiling.iter_windows` ``fixed=True``), so every process runs the same
compiled kernels on the same shapes, whatever order windows reach it in.

Scenes at another resolution than the model's are resampled as a whole (resampling by windows
would not be exact at window seams): that path holds the scene in memory and runs locally.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio

from refiner.classes import IGNORE, ClassSpec
from refiner.inference import predict_coarse, refine
from refiner.models.coarse import COARSE_HALO
from refiner.models.fused import scene_window
from refiner.models.io import ModelBundle, load_model
from refiner.raster import (
    Georef,
    RasterWriter,
    raster_shape,
    read_image,
    read_probs,
    resolution_differs,
    streaming_env,
    write_class_map,
    write_probs,
    write_raster,
)
from refiner.tiling import WindowSpec, iter_windows

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SceneTask:
    """What every window of a scene job needs; paths, so workers read their own inputs."""

    kind: str  # "predict" or "refine"
    model: str
    image: str
    probs: str | None = None
    bands: tuple[int, ...] | None = None
    iterations: int | None = None
    keep_all: bool = False
    device: str | None = None


@lru_cache(maxsize=4)
def _cached_model(folder: str, kind: str, stamp: float) -> ModelBundle:
    return load_model(folder, expect=kind)


def task_model(task: SceneTask) -> ModelBundle:
    """The task's model, loaded once per process (reloaded when its weights file changes)."""
    weights = Path(task.model) / "model.safetensors"
    stamp = weights.stat().st_mtime if weights.exists() else 0.0
    return _cached_model(str(Path(task.model).resolve()), "coarse" if task.kind == "predict" else "rnn", stamp)


def run_window(task: SceneTask, win: WindowSpec) -> dict[str, np.ndarray]:
    """Compute one window's core outputs: ``probs`` (predict), or ``classes``/``probs``/``iterations`` (refine)."""
    bundle = task_model(task)
    read = (win.read_row, win.read_col, win.read_height, win.read_width)
    tile = read_image(task.image, bands=task.bands, window=read)
    core = (slice(None), *win.core_in_read)
    big = max(win.read_height, win.read_width)
    if task.kind == "predict":
        probs = predict_coarse(bundle, tile, device=task.device, window=big + (-big) % 4)
        return {"probs": np.ascontiguousarray(probs[core])}
    assert task.probs is not None
    coarse, _, _ = read_probs(task.probs, window=read)
    result = refine(bundle, tile, coarse, iterations=task.iterations, keep_all=task.keep_all, device=task.device)
    cls_map = result.class_map()
    cls_map[~tile.valid] = IGNORE
    out = {
        "classes": np.ascontiguousarray(bundle.classes.decode(cls_map)[win.core_in_read]),
        "probs": np.ascontiguousarray(result.final[core]),
    }
    if task.keep_all:
        out["iterations"] = np.ascontiguousarray(np.concatenate(result.probs)[core])
    return out


def local_results(task: SceneTask, windows: Iterable[WindowSpec]) -> Iterator[tuple[WindowSpec, dict[str, np.ndarray]]]:
    """Run the windows one after another in this process."""
    for win in windows:
        yield win, run_window(task, win)


def _results(task: SceneTask, windows: list[WindowSpec], scheduler) -> Iterator[tuple[WindowSpec, dict]]:
    if scheduler is None:
        return local_results(task, windows)
    from refiner.distributed import map_windows

    return map_windows(scheduler, task, windows)


def _stream(
    task: SceneTask,
    windows: list[WindowSpec],
    writers: dict[str, RasterWriter],
    scheduler,
    progress: Progress | None,
) -> None:
    try:
        for i, (win, res) in enumerate(_results(task, windows, scheduler)):
            for name, w in writers.items():
                w.write(res[name], win.row, win.col)
            if progress:
                progress(i + 1, len(windows))
    except BaseException:
        for w in writers.values():
            w.close(keep=False)
        raise
    for w in writers.values():
        w.close()


def _streamable(image: str | Path, bundle: ModelBundle) -> tuple[int, int, tuple[Georef | None, bool]]:
    """Scene size, georeferencing, and whether it must be resampled to the model's resolution."""
    h, w, georef, res = raster_shape(image)
    return h, w, (georef, resolution_differs(res, bundle.resolution))


def predict_scene(
    model: str | Path,
    image: str | Path,
    out: str | Path,
    *,
    bands=None,
    device=None,
    window: int = 512,
    progress: Progress | None = None,
    scheduler=None,
) -> Path:
    """Coarse probabilities of ``image`` written to ``out`` (K float32 bands, class list in tags).

    ``scheduler``: ``None`` runs here; a Dask scheduler address or ``Client`` runs the windows
    on the cluster (:mod:`refiner.distributed`).
    """
    bundle = load_model(model, expect="coarse")
    h, w, (georef, resample) = _streamable(image, bundle)
    if resample:
        _in_memory_fallback(scheduler, h, w, bundle.resolution)
        tile = read_image(image, bands=bands)
        probs = predict_coarse(bundle, tile, device=device, window=window, progress=progress)
        return write_probs(out, probs, tile.georef, bundle.classes)
    window = max(4, window - window % 4)
    task = SceneTask("predict", str(model), str(image), bands=tuple(bands) if bands else None, device=device)
    windows = list(iter_windows(h, w, window, COARSE_HALO, align=bundle.net.cfg.stride, fixed=True))
    with streaming_env():
        writers = {"probs": _probs_writer(out, h, w, georef, bundle.classes)}
        _stream(task, windows, writers, scheduler, progress)
    return Path(out)


def _probs_writer(path, h, w, georef, classes: ClassSpec) -> RasterWriter:
    return RasterWriter(
        path,
        height=h,
        width=w,
        count=len(classes),
        dtype="float32",
        georef=georef,
        descriptions=classes.names,
        tags={"refiner_classes": json.dumps(classes.to_dict())},
    )


#: Scenes needing resampling are processed in memory up to this many pixels (~1.3 GB of float32
#: RGB); larger ones must be resampled beforehand, or they would exhaust memory.
MAX_RESAMPLED_PIXELS = 100_000_000


def _in_memory_fallback(scheduler, h: int, w: int, model_resolution: float | None) -> None:
    """Allow (with a warning) or refuse whole-scene resampling in memory, by the scene's size."""
    if h * w > MAX_RESAMPLED_PIXELS:
        raise ValueError(
            f"the scene ({h}x{w} px) is not at the model's resolution ({model_resolution} m/px), and scenes "
            f"above {MAX_RESAMPLED_PIXELS // 1_000_000} Mpx cannot be resampled in memory: resample it first, "
            f"e.g. gdalwarp -tr {model_resolution} {model_resolution} -r average scene.tif scene_1m.tif"
        )
    msg = "the scene is resampled to the model's resolution as a whole: it is processed in memory"
    if scheduler is not None:
        msg += ", locally (not on the Dask cluster)"
    warnings.warn(msg, stacklevel=3)


def _iteration_bands(classes: ClassSpec, t_max: int) -> list[str]:
    """Band names of an every-iteration file: ``t0:background``, ``t0:road``, ..., ``tT:road``."""
    return [f"t{t}:{n}" for t in range(t_max + 1) for n in classes.names]


def _check_probs(probs: str | Path, h: int, w: int, bundle: ModelBundle) -> None:
    with rasterio.open(probs) as ds:
        tags, shape, count = ds.tags(), (ds.height, ds.width), ds.count
    if "refiner_classes" in tags:
        names = ClassSpec.from_dict(json.loads(tags["refiner_classes"])).names
        if list(names) != list(bundle.classes.names):
            raise ValueError(
                f"the probabilities are for classes {list(names)} but the RNN for {list(bundle.classes.names)}"
            )
    if count != len(bundle.classes):
        raise ValueError(f"the probability map has {count} bands but the model has {len(bundle.classes)} classes")
    if shape != (h, w):
        raise ValueError(f"probabilities {shape} and image {(h, w)} differ in size")


def refine_scene(
    model: str | Path,
    image: str | Path,
    probs: str | Path,
    out: str | Path,
    *,
    probs_out: str | Path | None = None,
    iterations_out: str | Path | None = None,
    iterations: int | None = None,
    bands=None,
    device=None,
    window: int | None = None,
    progress: Progress | None = None,
    scheduler=None,
) -> Path:
    """Refined class map (and optionally probabilities, every iteration) of a scene, window by window.

    ``window``: the core side of each window; default :func:`~refiner.models.fused.scene_window`,
    which reads whole CPU blocks (about 1000 px for two classes).
    """
    bundle = load_model(model, expect="rnn")
    h, w, (georef, resample) = _streamable(image, bundle)
    _check_probs(probs, h, w, bundle)
    t_max = bundle.net.cfg.iterations if iterations is None else iterations
    classes = bundle.classes
    if resample:
        _in_memory_fallback(scheduler, h, w, bundle.resolution)
        return _refine_in_memory(bundle, image, probs, out, probs_out, iterations_out, t_max, bands, device)
    task = SceneTask(
        "refine",
        str(model),
        str(image),
        str(probs),
        bands=tuple(bands) if bands else None,
        iterations=t_max,
        keep_all=iterations_out is not None,
        device=device,
    )
    halo = (bundle.net.cfg.kernel_size // 2) * t_max
    windows = list(iter_windows(h, w, window or scene_window(bundle.net.cfg, t_max), halo, fixed=True))
    tags = {"refiner_classes": json.dumps(classes.to_dict())}
    with streaming_env():
        cmap = {v: tuple(c) for v, c in zip(classes.values, classes.colors, strict=True)}
        writers = {
            "classes": RasterWriter(
                out, height=h, width=w, count=1, dtype="uint8", georef=georef, nodata=IGNORE, tags=tags, colormap=cmap
            )
        }
        if probs_out:
            writers["probs"] = _probs_writer(probs_out, h, w, georef, classes)
        if iterations_out:
            writers["iterations"] = RasterWriter(
                iterations_out,
                height=h,
                width=w,
                count=len(classes) * (t_max + 1),
                dtype="float32",
                georef=georef,
                descriptions=_iteration_bands(classes, t_max),
                tags={"refiner_iterations": str(t_max), **tags},
            )
        _stream(task, windows, writers, scheduler, progress)
    return Path(out)


def _refine_in_memory(bundle, image, probs, out, probs_out, iterations_out, t_max, bands, device) -> Path:
    tile = read_image(image, bands=bands)
    coarse, _, _ = read_probs(probs)
    result = refine(bundle, tile, coarse, iterations=t_max, keep_all=iterations_out is not None, device=device)
    cls_map = result.class_map()
    cls_map[~tile.valid] = IGNORE
    write_class_map(out, cls_map, tile.georef, bundle.classes)
    if probs_out:
        write_probs(probs_out, result.final, tile.georef, bundle.classes)
    if iterations_out:
        stack = np.concatenate(result.probs).astype(np.float32)
        names = _iteration_bands(bundle.classes, len(result.probs) - 1)
        write_raster(
            iterations_out,
            stack,
            tile.georef,
            descriptions=names,
            tags={
                "refiner_iterations": str(len(result.probs) - 1),
                "refiner_classes": json.dumps(bundle.classes.to_dict()),
            },
        )
    return Path(out)
