"""The app's CRF grid search, in the background like training (:mod:`refiner.app.jobs`).

On a 1500^2 tile the search took 446 s inside the page, with a spinner only; leaving the page
lost it. Here the :data:`CRF_SEARCH` job, :func:`run_crf_search`, runs
:func:`refiner.app.results.search_crf` (windows around the painted, not held-out, labels) in a
thread and writes ``jobs/crf.json`` after every trial: how many are done, an estimate of the
time left, the best parameters so far. Cancelling is a file (``jobs/crf.cancel``) polled between
trials; the best parameters found (also of a cancelled search) become the workspace's CRF settings,
so they survive leaving the page.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from refiner.app.jobs.base import Backend, JobKind, JobState, job_run
from refiner.app.workspace import Workspace


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


def run_crf_search(workspace: str | Path, job_id: str) -> dict:
    """Grid-search the workspace's CRF and keep the best parameters; returns the final status."""
    from refiner.app import results

    ws = Workspace(Path(workspace))
    status = CRFSearchStatus(id=job_id, state="running", started=time.time())
    with job_run(ws, status, CRF_SEARCH.files) as run:

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
            status.message = f"cancelled after {len(found.trials)} of {status.total} settings" + (
                "; the best so far is now in use" if found.trials else "; the parameters are unchanged"
            )
    return asdict(status)


#: Cancelling keeps the best parameters found so far.
CRF_SEARCH = JobKind(
    "crf",
    "CRF grid search",
    CRFSearchStatus,
    run_crf_search,
    interrupted="the server stopped during the grid search; start it again",
)


def start_crf_search(ws: Workspace, backend: Backend | None = None) -> CRFSearchStatus:
    """Start the grid search unless a job is already going in this workspace."""
    return CRF_SEARCH.start(ws, backend=backend)
