"""Jobs that run off the UI thread: the framework (:mod:`.base`) and one module per kind of job.

:mod:`.training` fine-tunes the RNN, :mod:`.crf` grid-searches the dense CRF, :mod:`.scene`
refines a whole scene; each reports through the workspace's ``jobs/`` folder, so pages only read
status files. The names most pages use are re-exported here.
"""

from refiner.app.jobs.base import (
    ACTIVE,
    CANCEL,
    CURVES,
    HEARTBEAT,
    KINDS,
    STATUS,
    Backend,
    Cancelled,
    Handle,
    JobRun,
    JobState,
    ThreadBackend,
    active_job,
    backend_for,
    job_run,
    jobs_dir,
    launch,
    mark_failed,
    new_job_id,
    read_job,
    request_cancel,
    scheduler_setting,
    wait_for,
    write_status,
)
from refiner.app.jobs.training import JobStatus, TrainParams, read_status, run_training, start_training, wait

__all__ = [
    "ACTIVE",
    "CANCEL",
    "CURVES",
    "HEARTBEAT",
    "KINDS",
    "STATUS",
    "Backend",
    "Cancelled",
    "Handle",
    "JobRun",
    "JobState",
    "JobStatus",
    "ThreadBackend",
    "TrainParams",
    "active_job",
    "backend_for",
    "job_run",
    "jobs_dir",
    "launch",
    "mark_failed",
    "new_job_id",
    "read_job",
    "read_status",
    "request_cancel",
    "run_training",
    "scheduler_setting",
    "start_training",
    "wait",
    "wait_for",
    "write_status",
]
