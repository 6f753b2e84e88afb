"""Refining a whole scene from the app: the workspace's models over a GeoTIFF of any size.

Users paint a corner of a scene in the browser, train the RNN on it, and then want the whole
scene refined. :func:`run_scene_job` runs :func:`refiner.scale.scene.predict_scene` (the workspace's
coarse CNN, or the shipped one; skipped when the user gives coarse probabilities for the scene)
and :func:`refiner.scale.scene.refine_scene` window by window into the workspace's ``results/scene/``
folder: on this machine, or as window tasks across a Dask cluster when the workspace has a
scheduler setting (:func:`refiner.app.jobs.base.scheduler_setting`). The job itself only drives: it runs
in a thread of the app and reports through ``jobs/scene.json`` the way training does, so a
page can show live progress and a refresh or restart loses nothing but the run in flight
(partial outputs are ``.part`` files that are removed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from refiner.app.demos import ASSETS
from refiner.app.jobs.base import Backend, Cancelled, JobKind, JobState, job_run
from refiner.app.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np

    from refiner.data.tile import Georef

#: Output files up to this size get a download button in the app; larger ones stay on the server.
DOWNLOAD_LIMIT = 200 * 2**20
#: The scene's class map is turned into polygons and centre-lines by windows of this side (px).
VECTOR_WINDOW = 4096


@dataclass
class SceneStatus(JobState):
    """What the Export page shows about the last whole-scene run."""

    stage: str = ""  # coarse | refine | vectors
    done: int = 0  # windows of the current stage
    total: int = 0
    source: str = ""
    scheduler: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the current stage's windows done, 0 to 1 (for the progress bar)."""
        return min(1.0, self.done / self.total) if self.total else 0.0


def scene_outputs(ws: Workspace) -> dict[str, Path]:
    """Where a scene run writes: coarse probabilities (when computed), class map, probabilities."""
    folder = ws.results_dir() / "scene"
    out = {n: folder / f"{n}.tif" for n in ("coarse_probs", "refined_map", "refined_probs")}
    return {**out, "polygons": folder / "refined_polygons.gpkg"}


def default_source(ws: Workspace) -> str:
    """The scene a workspace's tile was read from, when the app knows it (a URL or file), else ""."""
    src = ws.settings.get("source") or {}
    if src.get("kind") == "cog":
        return str(src.get("name", ""))
    if src.get("kind") == "demo":
        return str(ASSETS / "tile.tif")  # the demo's scene is its tile: the run shows the machinery
    return ""


def run_scene_job(
    workspace: str | Path, job_id: str, source: str, coarse: str, scheduler: str, quantise: bool = False
) -> dict:
    """Refine the ``source`` scene into files: class map, probabilities and a GeoPackage of vectors.

    Coarse probabilities (unless ``coarse`` names them), the refined map and probabilities
    (``quantise``: 8-bit), and the polygons and road centre-lines as a GeoPackage (by windows of
    4096 px: features crossing a window edge are split there).
    """
    from refiner.data.export import class_map_windows, write_geopackage_windows
    from refiner.data.read import raster_shape
    from refiner.scale.scene import predict_scene, refine_scene

    ws = Workspace(Path(workspace))
    status = SceneStatus(id=job_id, state="running", source=source, scheduler=scheduler, started=time.time())
    out = scene_outputs(ws)
    out["refined_map"].parent.mkdir(exist_ok=True)
    with job_run(ws, status, SCENE.files) as run:

        def progress(done: int, total: int) -> None:
            status.done, status.total = done, total
            run.save()
            if run.cancelled():  # raised through the scene writers, which remove their partial files
                raise Cancelled("cancelled; the partial files were removed")

        run.save(force=True)
        cluster = None
        if scheduler:  # one client for the app's lifetime, not one (or one LocalCluster) per run
            from refiner.scale.cluster import shared_client

            cluster = shared_client(scheduler)
        if not ws.has_model("rnn"):
            raise ValueError("this workspace has no RNN yet: train it on the Train page first")
        coarse_path = coarse
        if not coarse_path:
            status.stage = "coarse"
            folder = ws.model_dir("coarse") if ws.has_model("coarse") else ASSETS / "coarse"
            coarse_path = str(predict_scene(folder, source, out["coarse_probs"], progress=progress, scheduler=cluster))
            status.outputs["coarse_probs"] = coarse_path
        status.stage, status.done, status.total = "refine", 0, 0
        refine_scene(
            ws.model_dir("rnn"),
            source,
            coarse_path,
            out["refined_map"],
            probs_out=out["refined_probs"],
            quantise=quantise,
            progress=progress,
            scheduler=cluster,
        )
        status.outputs.update(refined_map=str(out["refined_map"]), refined_probs=str(out["refined_probs"]))
        status.stage, status.done = "vectors", 0
        h, w, georef, res = raster_shape(out["refined_map"])
        status.total = -(-h // VECTOR_WINDOW) * -(-w // VECTOR_WINDOW)

        def windows() -> Iterator[tuple[np.ndarray, Georef | None]]:
            for i, win in enumerate(class_map_windows(out["refined_map"], VECTOR_WINDOW)):
                progress(i, status.total)
                yield win

        write_geopackage_windows(
            out["polygons"], windows(), ws.classes, crs=georef.crs.to_wkt() if georef else None,
            simplify=res or 1.0, min_pixels=4, lines=True, min_length=10 * (res or 1.0),
        )  # fmt: skip
        progress(status.total, status.total)
        status.outputs["polygons"] = str(out["polygons"])
        status.state = "finished"
        status.message = f"{status.total} windows refined in {time.time() - status.started:.0f} s"
    return asdict(status)


#: Cancelling removes the partial outputs (the scene writers' ``.part`` files).
SCENE = JobKind(
    "scene",
    "scene run",
    SceneStatus,
    run_scene_job,
    interrupted="the server stopped during the scene run; start it again",
)


def start_scene_job(
    ws: Workspace,
    source: str,
    *,
    coarse: str = "",
    scheduler: str = "",
    quantise: bool = False,
    backend: Backend | None = None,
    others: Iterable[Workspace] = (),
) -> SceneStatus:
    """Start refining ``source`` (a GeoTIFF path or URL) unless a job is going here or in the session's ``others``."""
    source, coarse = source.strip(), coarse.strip()
    if not source:
        raise ValueError("give the scene's GeoTIFF: a file path on the server or a URL")
    return SCENE.start(
        ws, source, coarse, scheduler, quantise, backend=backend, others=others, source=source, scheduler=scheduler
    )
