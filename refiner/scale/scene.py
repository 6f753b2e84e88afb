"""File-to-file inference on scenes of any size: the ``predict`` and ``refine`` commands.

A scene is cut into windows (:func:`refiner.core.windows.iter_windows`); each window is read from disk
with a halo equal to the network's receptive field, run, and its core written into tiled,
compressed GeoTIFFs opened once (:class:`refiner.data.write.RasterWriter`) with the source's
georeferencing. The stitched result equals whole-image inference exactly, scene borders included,
and memory depends on the window size, not on the scene. Every iteration's probabilities (for
the slider) are written window by window the same way.

A window's work is a :class:`SceneTask` plus a :class:`~refiner.core.windows.WindowSpec`, both small
and picklable: :func:`run_window` reads its own inputs from the file paths and loads the model
from its folder (cached per process), so the same function runs here or on Dask workers
(:mod:`refiner.scale.cluster`, ``scheduler=``). Results are written in window order either way,
so the files are identical byte for byte. Read windows all have one size (edge windows grow
inwards, :func:`~refiner.core.windows.iter_windows` ``fixed=True``), so every process runs the same
compiled kernels on the same shapes, whatever order windows reach it in.

Scenes at another resolution than the model's take two streaming passes (:func:`_on_working_grid`):
the windows above run on the working grid, each reading its inputs resampled from just the
source pixels under it (:mod:`refiner.data.resample`), into temporary working-grid files; a second pass
brings the probabilities back onto the scene's grid window by window. Both equal resampling the
whole scene, so memory stays bounded whatever the scene's size or resolution.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio

from refiner.core.classes import IGNORE, ClassSpec, check_compatible
from refiner.core.windows import WindowSpec, even_windows, iter_windows
from refiner.data.read import (
    PREDICT_ON_IT,
    check_probs_file,
    check_same_place,
    raster_shape,
    read_image,
    read_probs,
    read_valid,
    streaming_env,
    tagged_classes,
)
from refiner.data.resample import Grid, probs_back_on, read_image_on, read_probs_on, resolution_differs, working_grid_of
from refiner.data.tile import Georef, Tile, pixel_grid
from refiner.data.write import RasterWriter
from refiner.models.fused import scene_window
from refiner.models.inference import predict_coarse, refine
from refiner.models.store import ModelBundle, load_model
from refiner.scale.cluster import Scheduler, map_windows

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
    grid: tuple[Grid, Grid] | None = None  # (scene, working): windows lie on the working grid
    tta: bool = False  # predict: average the 8 turns and flips of each window (predict_coarse's tta)


def _read_window(task: SceneTask, read: tuple[int, int, int, int]) -> tuple[Tile, np.ndarray | None]:
    """The window's image tile and (for refine) coarse probabilities, on the grid the windows lie on."""
    if task.grid is None:
        tile = read_image(task.image, bands=task.bands, window=read)
        return tile, None if task.probs is None else read_probs(task.probs, window=read)[0]
    scene, work = task.grid
    dst = work.window(*read)
    tile = read_image_on(task.image, scene, dst, bands=task.bands)
    return tile, None if task.probs is None else read_probs_on(task.probs, scene, dst)


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
    tile, coarse = _read_window(task, read)
    core = (slice(None), *win.core_in_read)
    big = max(win.read_height, win.read_width)
    if task.kind == "predict":
        probs = predict_coarse(bundle, tile, device=task.device, window=big + (-big) % 4, tta=task.tta)
        return {"probs": np.ascontiguousarray(probs[core])}
    assert coarse is not None
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


def _results(
    task: SceneTask, windows: list[WindowSpec], scheduler: Scheduler
) -> Iterator[tuple[WindowSpec, dict[str, np.ndarray]]]:
    if scheduler is None:
        return local_results(task, windows)
    return map_windows(scheduler, run_window, task, windows)


def _stream(
    task: SceneTask,
    windows: list[WindowSpec],
    writers: dict[str, RasterWriter],
    scheduler: Scheduler,
    progress: Progress | None,
) -> None:
    with _all_or_nothing(writers):
        for i, (win, res) in enumerate(_results(task, windows, scheduler)):
            for name, w in writers.items():
                w.write(res[name], win.row, win.col)
            if progress:
                progress(i + 1, len(windows))


@contextmanager
def _all_or_nothing(writers: dict[str, RasterWriter]) -> Iterator[None]:
    """Finish every output when the block succeeds; on any error (or Ctrl-C) remove them all."""
    done: list[RasterWriter] = []
    try:
        yield
        for w in writers.values():
            w.close()
            done.append(w)
    except BaseException:
        for w in writers.values():
            if w not in done:
                w.close(keep=False)
        raise


def _streamable(
    image: str | Path, bundle: ModelBundle, pixel_size: float | None = None
) -> tuple[int, int, tuple[Georef | None, Georef | None, bool]]:
    """Scene size, its georeferencing (for the outputs), the grid to resample on, and whether to.

    A picture without georeferencing but with a stated ``pixel_size`` is resampled on a local
    grid of that pixel size (:func:`~refiner.data.tile.grid_of`); its outputs stay pictures.
    """
    h, w, georef, res = raster_shape(image)
    grid = georef
    if georef is not None and pixel_size:
        raise ValueError(
            f"{Path(str(image)).name} is georeferenced: a stated pixel size (--resolution) is only for "
            "pictures without georeferencing — leave it out"
        )
    if pixel_size:
        grid = pixel_grid(pixel_size)
        res = pixel_size
    return h, w, (georef, grid, resolution_differs(res, bundle.resolution))


#: Core side of the windows that bring working-grid results back onto the scene's grid.
REGRID_WINDOW = 1024


def _on_working_grid(
    task: SceneTask,
    georef: Georef,
    shape: tuple[int, int],
    resolution: float,
    window_on: Callable[[Grid], list[WindowSpec]],
    outputs: dict[str, Callable[[], RasterWriter]],
    out_dir: Path,
    scheduler: Scheduler,
    progress: Progress | None,
) -> None:
    """Run ``task`` on the working grid, then resample its outputs onto the scene grid, both by windows.

    ``window_on(work)`` lists the working-grid windows. ``outputs`` maps ``"classes"``, ``"probs"``
    and ``"iterations"`` to writer factories on the scene grid; ``"classes"`` is the argmax of the
    scene-grid probabilities (nodata where the scene has none), as in the whole-tile path. The
    working-grid files live in a temporary folder in ``out_dir``, removed at the end.
    """
    scene = Grid(georef, shape)
    work = working_grid_of(scene, resolution)
    task = replace(task, grid=(scene, work))
    windows = window_on(work)
    back = list(iter_windows(*shape, REGRID_WINDOW, 0))
    total = len(windows) + len(back)
    classes = task_model(task).classes
    k = len(classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".refiner-working-", dir=out_dir) as tmp:
        working = {"probs": Path(tmp) / "probs.tif"}
        if "iterations" in outputs:
            working["iterations"] = Path(tmp) / "iterations.tif"
        bands = {"probs": k, "iterations": k * ((task.iterations or 0) + 1)}
        writers = {
            name: RasterWriter(
                path, height=work.shape[0], width=work.shape[1], count=bands[name], dtype="float32", georef=work.georef
            )
            for name, path in working.items()
        }
        _stream(task, windows, writers, scheduler, progress and (lambda done, _: progress(done, total)))
        finals = {name: make() for name, make in outputs.items()}
        with _all_or_nothing(finals):
            for i, win in enumerate(back, len(windows) + 1):
                dst = scene.window(win.row, win.col, win.height, win.width)
                probs = probs_back_on(working["probs"], work, dst, k)
                if "probs" in finals:
                    finals["probs"].write(probs, win.row, win.col)
                if "iterations" in finals:
                    finals["iterations"].write(probs_back_on(working["iterations"], work, dst, k), win.row, win.col)
                if "classes" in finals:
                    values = classes.decode(probs.argmax(0).astype(np.uint8))
                    valid = read_valid(task.image, bands=task.bands, window=(win.row, win.col, *dst.shape))
                    values[~valid] = classes.unlabelled_value
                    finals["classes"].write(values[None], win.row, win.col)
                if progress:
                    progress(i, total)


def _run_scene(
    task: SceneTask,
    georef: Georef | None,
    shape: tuple[int, int],
    resample_to: float | None,
    windows_on: Callable[[int, int], list[WindowSpec]],
    outputs: dict[str, Callable[[], RasterWriter]],
    out_dir: Path,
    scheduler: Scheduler,
    progress: Progress | None,
) -> None:
    """Stream ``task``'s windows into ``outputs``, on the working grid first when ``resample_to`` is set."""
    with streaming_env():
        if resample_to is None:
            _stream(task, windows_on(*shape), {name: make() for name, make in outputs.items()}, scheduler, progress)
        else:
            assert georef is not None
            on_work = lambda g: windows_on(*g.shape)  # noqa: E731
            _on_working_grid(task, georef, shape, resample_to, on_work, outputs, out_dir, scheduler, progress)


def predict_scene(
    model: str | Path,
    image: str | Path,
    out: str | Path,
    *,
    bands: Sequence[int] | None = None,
    device: str | None = None,
    window: int = 512,
    progress: Progress | None = None,
    scheduler: Scheduler = None,
    pixel_size: float | None = None,
    tta: bool = False,
) -> Path:
    """Coarse probabilities of ``image`` written to ``out`` (K float32 bands, class list in tags).

    Window by window at bounded memory, streamed into a tiled GeoTIFF; the result equals one
    whole-scene pass.

    Args:
        model: a coarse CNN model folder.
        image: the scene (a GeoTIFF file or URL) of any size.
        out: the probability GeoTIFF to write.
        bands: 1-based band indices to use as RGB.
        device: where to run (default: cuda, else mps, else cpu).
        window: the side in pixels of the windows.
        progress: called with (windows done, windows in all).
        scheduler: ``None`` runs here; a Dask scheduler address or ``Client`` runs the windows on
            the cluster (:mod:`refiner.scale.cluster`).
        pixel_size: metres per pixel of a picture without georeferencing (PNG, JPEG), so it is
            resampled to the model's resolution; a georeferenced scene carries its own.
        tta: average each window's 8 turns and flips (:func:`~refiner.models.inference.predict_coarse`'s
            ``tta``): 8 times the work, about a point of IoU more.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: the model or the scene is missing.
        RasterError: the scene cannot be read or is too large (a ``ValueError``).

    Example:
        ```python
        refiner.predict_scene("models/coarse", "scene.tif", "scene_probs.tif", scheduler="tcp://10.0.0.5:8786")
        ```
    """
    bundle = load_model(model, expect="coarse")
    h, w, (georef, grid, resample) = _streamable(image, bundle, pixel_size)
    window = max(4, window - window % 4)
    task = SceneTask("predict", str(model), str(image), bands=tuple(bands) if bands else None, device=device, tta=tta)

    def windows_on(grid_h: int, grid_w: int) -> list[WindowSpec]:
        return list(iter_windows(grid_h, grid_w, window, bundle.net.cfg.halo, align=bundle.net.cfg.stride, fixed=True))

    makers = {"probs": lambda: _probs_writer(out, h, w, georef, bundle.classes)}
    resample_to = bundle.resolution if resample else None
    _run_scene(task, grid, (h, w), resample_to, windows_on, makers, Path(out).parent, scheduler, progress)
    return Path(out)


def _probs_writer(
    path: str | Path, h: int, w: int, georef: Georef | None, classes: ClassSpec, quantise: bool = False
) -> RasterWriter:
    return RasterWriter(
        path,
        height=h,
        width=w,
        count=len(classes),
        dtype="uint8" if quantise else "float32",
        georef=georef,
        descriptions=classes.names,
        tags={"refiner_classes": json.dumps(classes.to_dict())},
        quantise=quantise,
    )


def _iteration_bands(classes: ClassSpec, t_max: int) -> list[str]:
    """Band names of an every-iteration file: ``t0:background``, ``t0:road``, ..., ``tT:road``."""
    return [f"t{t}:{n}" for t in range(t_max + 1) for n in classes.names]


def _check_probs(probs: str | Path, h: int, w: int, georef: Georef | None, bundle: ModelBundle, image: str) -> None:
    """The probabilities fit the model (classes, bands) and the image (size, CRS, place), before any work."""
    if "://" not in str(probs) and not Path(probs).is_file():
        raise FileNotFoundError(f"no such file: {probs}")
    with rasterio.open(probs) as ds:
        tags, shape, count = ds.tags(), (ds.height, ds.width), ds.count
    tagged = tagged_classes(tags, probs)
    todo = "predict the probabilities with a coarse model of the RNN's classes"
    if tagged is not None:
        check_compatible(tagged, bundle.classes, "the probability map", "the RNN", todo)
    check_compatible(count, bundle.classes, "the probability map", "the model", todo)
    if shape != (h, w):
        raise ValueError(f"probabilities {shape} and image {(h, w)} differ in size — predict them on this image")
    check_probs_file(probs)  # finite, in [0, 1], summing to 1, not all zeros: as finetune and crf check
    what = f"the probability map {Path(str(probs)).name}"
    check_same_place(raster_shape(probs)[2], georef, what, image, PREDICT_ON_IT)


def refine_scene(
    model: str | Path,
    image: str | Path,
    probs: str | Path,
    out: str | Path,
    *,
    probs_out: str | Path | None = None,
    quantise: bool = False,
    iterations_out: str | Path | None = None,
    iterations: int | None = None,
    bands: Sequence[int] | None = None,
    device: str | None = None,
    window: int | None = None,
    progress: Progress | None = None,
    scheduler: Scheduler = None,
    pixel_size: float | None = None,
) -> Path:
    """Refined class map (and optionally probabilities, every iteration) of a scene, window by window.

    Each window is read with the RNN's reach around it, so the stitched result equals refining
    the whole scene at once; outputs are tiled GeoTIFFs written as they go.

    Args:
        model: an RNN model folder.
        image: the scene (a GeoTIFF file or URL) of any size.
        probs: its coarse probabilities (a GeoTIFF of the same grid, from any model).
        out: the class map GeoTIFF to write.
        probs_out: also write the refined probabilities here.
        quantise: the probabilities as uint8 steps of 1/255 (a quarter of float32's size).
        iterations_out: also write every iteration's probabilities here.
        iterations: how many iterations to run (default: the RNN's own T).
        bands: 1-based band indices to use as RGB.
        device: where to run (default: cuda, else mps, else cpu).
        window: the core side of each window; default: the scene split evenly into windows of at
            most :func:`~refiner.models.fused.scene_window` (which reads whole CPU blocks; about
            1100 px for two classes), so no window is computed twice over.
        progress: called with (windows done, windows in all).
        scheduler: ``None`` runs here; a Dask scheduler address or ``Client`` runs the windows on
            the cluster.
        pixel_size: metres per pixel of a picture without georeferencing (as in :func:`predict_scene`).

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: the model, scene or probabilities are missing.
        RasterError: they cannot be read, lie on different grids, or the probabilities have
            another number of classes than the model (a ``ValueError``).

    Example:
        ```python
        refiner.refine_scene("models/rnn", "scene.tif", "probs.tif", "map.tif", probs_out="refined.tif")
        ```
    """
    bundle = load_model(model, expect="rnn")
    h, w, (georef, grid, resample) = _streamable(image, bundle, pixel_size)
    _check_probs(probs, h, w, georef, bundle, Path(str(image)).name)
    t_max = bundle.net.cfg.iterations if iterations is None else iterations
    classes = bundle.classes
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

    def windows_on(grid_h: int, grid_w: int) -> list[WindowSpec]:
        size = window or even_windows(grid_h, grid_w, scene_window(bundle.net.cfg, t_max))
        return list(iter_windows(grid_h, grid_w, size, halo, fixed=True))

    tags = {"refiner_classes": json.dumps(classes.to_dict())}
    cmap = dict(zip(classes.values, classes.colors, strict=True))
    makers: dict[str, Callable[[], RasterWriter]] = {
        "classes": lambda: RasterWriter(
            out,
            height=h,
            width=w,
            count=1,
            dtype="uint8",
            georef=georef,
            nodata=classes.unlabelled_value,
            tags=tags,
            colormap=cmap,
        )
    }
    if probs_out:
        makers["probs"] = lambda: _probs_writer(probs_out, h, w, georef, classes, quantise)
    if iterations_out:
        makers["iterations"] = lambda: RasterWriter(
            iterations_out,
            height=h,
            width=w,
            count=len(classes) * (t_max + 1),
            dtype="float32",
            georef=georef,
            descriptions=_iteration_bands(classes, t_max),
            tags={"refiner_iterations": str(t_max), **tags},
        )
    resample_to = bundle.resolution if resample else None
    _run_scene(task, grid, (h, w), resample_to, windows_on, makers, Path(out).parent, scheduler, progress)
    return Path(out)
