"""The app's CRF grid search, in the background like training (:mod:`refiner.app.jobs`).

On a 1500^2 tile the search took 446 s inside the page, with a spinner only; leaving the page
lost it. Here :func:`run_crf_search` runs :func:`refiner.app.results.search_crf` (windows around the
painted, not held-out, labels) in a thread and writes ``jobs/crf.json`` after every trial: how
many are done, an estimate of the time left, the best parameters so far. Cancelling is a file
(``jobs/crf.cancel``) polled between trials; the best parameters found (also of a cancelled
search) become the workspace's CRF settings, so they survive leaving the page.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from refiner.app.jobs.base import Backend, JobState, job_run, launch, new_job_id, read_job, request_cancel, wait_for
from refiner.app.workspace import Workspace

CRF_STATUS, CRF_CANCEL = "crf.json", "crf.cancel"


@dataclass
class CRFSearchStatus(JobState):
    """What the Compare page shows about the last grid search."""

    done: int = 0  # trials
    total: int = 0
    best: dict = field(default_factory=dict)  # CRFParams.to_dict() of the best so far
    best_mean_iou: float | None = None
    searched_pixels: int = 0  # pixels of the windows around the labels
    tile_pixels: int = 0

    @property
    def fraction(self) -> float:
        """Share of the trials done, 0 to 1 (for the progress bar)."""
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left, from the time per trial so far (None before the first trial)."""
        if not self.done or not self.total:
            return None
        return self.seconds / self.done * (self.total - self.done)


def read_crf_status(ws: Workspace) -> CRFSearchStatus | None:
    """The last grid search's status, or None; one left running by a server that stopped reads as interrupted."""
    return read_job(ws, CRFSearchStatus, CRF_STATUS, "the server stopped during the grid search; start it again")


def request_crf_cancel(ws: Workspace) -> None:
    """Ask the running grid search to stop; it keeps the best parameters found so far."""
    request_cancel(ws, CRF_CANCEL)


def run_crf_search(workspace: str | Path, job_id: str) -> dict:
    """Grid-search the workspace's CRF and keep the best parameters; returns the final status."""
    from refiner.app import results

    ws = Workspace(Path(workspace))
    status = CRFSearchStatus(id=job_id, state="running", started=time.time())
    with job_run(ws, status, (CRF_STATUS, CRF_CANCEL)) as run:

        def progress(done: int, total: int, best: dict, best_iou: float) -> None:
            status.done, status.total, status.best, status.best_mean_iou = done, total, best, best_iou
            run.save(force=True)  # after every trial: each takes seconds

        run.save(force=True)
        status.tile_pixels = ws.shape[0] * ws.shape[1]
        found = results.search_crf(ws, progress=progress, should_stop=run.cancelled)
        status.searched_pixels = found.searched_pixels
        status.done, status.best = len(found.trials), found.best.to_dict()
        status.best_mean_iou = found.best_scores.mean_iou if found.trials else None
        share = f"{status.searched_pixels / status.tile_pixels:.0%} of the tile, around the painted labels"
        if found.complete:
            status.state = "finished"
            status.message = f"best of {len(found.trials)} settings, searched on {share}; now in use"
        else:
            status.state = "cancelled"
            status.message = (
                f"cancelled after {len(found.trials)} of {status.total} settings"
                + ("; the best so far is now in use" if found.trials else "; the parameters are unchanged")
            )
    return asdict(status)


def start_crf_search(ws: Workspace, backend: Backend | None = None) -> CRFSearchStatus:
    """Start the grid search unless one is already going in this workspace."""
    job_id = new_job_id()
    status = CRFSearchStatus(id=job_id, started=time.time())
    files = (CRF_STATUS, CRF_CANCEL)
    return launch(ws, status, files, read_crf_status, "CRF grid search", run_crf_search, str(ws.path), job_id,
                  backend=backend)  # fmt: skip


def wait_crf(ws: Workspace, timeout: float = 600.0, poll: float = 0.2) -> CRFSearchStatus | None:
    """Block until the workspace's grid search is no longer active (for scripts and tests)."""
    return wait_for(read_crf_status, ws, timeout, poll)
