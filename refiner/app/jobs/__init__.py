"""Jobs that run off the UI thread: the contract (:mod:`.base`) and one module per kind of job.

Every kind is a :class:`~refiner.app.jobs.base.JobKind` declared in its module: :data:`TRAINING`
(:mod:`.training`) fine-tunes the RNN, :data:`CRF_SEARCH` (:mod:`.crf`) grid-searches the dense
CRF, :data:`SCENE` (:mod:`.scene`) refines a whole scene. Each reports through the workspace's
``jobs/`` folder, so pages only read status files: ``KIND.read(ws)``, ``KIND.cancel(ws)``,
``KIND.wait(ws)``. Importing this package imports every kind, so :data:`KINDS` lists them all.
"""

from refiner.app.jobs.adapt import ADAPT, AdaptStatus, start_adapt
from refiner.app.jobs.base import (
    ACTIVE,
    HEARTBEAT,
    KINDS,
    Backend,
    Cancelled,
    Handle,
    JobKind,
    JobRun,
    JobState,
    ThreadBackend,
    active_job,
    backend_for,
    job_run,
    jobs_dir,
    mark_failed,
    new_job_id,
    scheduler_setting,
    write_status,
)
from refiner.app.jobs.crf import CRF_SEARCH, CRFSearchStatus, start_crf_search
from refiner.app.jobs.scene import SCENE, SceneStatus, start_scene_job
from refiner.app.jobs.training import CURVES, TRAINING, JobStatus, TrainParams, run_training, start_training

__all__ = [
    "ADAPT",
    "AdaptStatus",
    "start_adapt",
    "ACTIVE",
    "CRF_SEARCH",
    "CURVES",
    "HEARTBEAT",
    "KINDS",
    "SCENE",
    "TRAINING",
    "Backend",
    "CRFSearchStatus",
    "Cancelled",
    "Handle",
    "JobKind",
    "JobRun",
    "JobState",
    "JobStatus",
    "SceneStatus",
    "ThreadBackend",
    "TrainParams",
    "active_job",
    "backend_for",
    "job_run",
    "jobs_dir",
    "mark_failed",
    "new_job_id",
    "run_training",
    "scheduler_setting",
    "start_crf_search",
    "start_scene_job",
    "start_training",
    "write_status",
]
