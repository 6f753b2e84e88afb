"""What every kind of background job must do: the contract test each kind subclasses.

As segmentation_models.pytorch's ``tests/models/base.py`` does for architectures: one place says
what a job kind (:class:`refiner.app.jobs.base.JobKind`) must do, and each kind passes it by
subclassing :class:`JobKindContract` in ``test_contract.py`` with its kind, a workspace it can
run in, and how to start it. The job runs in the test's own thread, when the test says so
(:class:`HeldBackend`), so every step is seen without racing it: start, progress, cancel,
interrupted (a stale heartbeat), finished, and the status read back from its file.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import pytest

from refiner.app.jobs import base
from refiner.app.jobs.base import JobKind, JobRun, JobState
from refiner.app.workspace import Workspace
from refiner.core.atomic import atomic_write_json, read_json


class HeldBackend:
    """A backend that keeps the job it is given until :meth:`release` runs it here, to the end."""

    def __init__(self) -> None:
        self.job: tuple[Any, tuple] | None = None
        self.ran = False

    def submit(self, fn: Any, *args: Any) -> HeldBackend:
        assert self.job is None, "one job per backend"
        self.job = (fn, args)
        return self

    def done(self) -> bool:
        return self.ran

    def release(self) -> dict:
        assert self.job is not None, "nothing was started"
        fn, args = self.job
        try:
            return fn(*args)
        finally:
            self.ran = True


class JobKindContract:
    """Subclass with ``kind`` and the two methods below; the tests here then run for that kind."""

    kind: JobKind[Any]

    @pytest.fixture()
    def ws(self, tmp_path: Any) -> Workspace:
        """A workspace in which a short run of the kind finishes."""
        raise NotImplementedError

    def start(self, ws: Workspace, backend: HeldBackend) -> JobState:
        """Start a short run of the kind (through its own start function) on ``backend``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the contract

    def test_start_writes_the_queued_status_and_refuses_a_second_job(self, ws):
        backend = HeldBackend()
        st = self.start(ws, backend)
        assert isinstance(st, self.kind.status) and st.state == "queued" and st.active
        seen = self.kind.read(ws)  # on disk before the job runs: a page sees it at once
        assert seen is not None and (seen.id, seen.state) == (st.id, "queued")
        assert backend.job is not None and backend.job[0] is self.kind.run
        assert backend.job[1][:2] == (str(ws.path), st.id)  # run(workspace, job_id, *args)
        with pytest.raises(RuntimeError, match=f"a {self.kind.what} is already going in this workspace"):
            self.start(ws, HeldBackend())
        backend.release()

    def test_progress_is_reported_while_it_runs_and_it_finishes(self, ws, monkeypatch):
        written: list[dict] = []
        write = base.write_status

        def record(w: Workspace, status: JobState, file: str) -> None:
            write(w, status, file)
            if file == self.kind.files[0]:
                written.append(asdict(status))

        monkeypatch.setattr(base, "write_status", record)
        save = JobRun.save
        monkeypatch.setattr(JobRun, "save", lambda run, force=False: save(run, force=True))  # every report
        backend = HeldBackend()
        st = self.start(ws, backend)
        out = backend.release()
        assert out["state"] == "finished", out["message"]
        states = [w["state"] for w in written]
        assert states[0] == "queued" and states[-1] == "finished" and states.count("running") >= 2
        running = [w for w in written if w["state"] == "running"]
        # what it is doing changes between reports (beyond the heartbeat), and the bar stays in range
        shown = {json.dumps({k: v for k, v in w.items() if k not in ("updated", "seconds")}) for w in running}
        assert len(shown) >= 2, "no report between the start and the end"
        assert all(0 <= self.kind.status.from_dict(w).fraction <= 1 for w in running)
        assert all(w["id"] == st.id for w in written)
        assert all(a["updated"] <= b["updated"] for a, b in zip(written, written[1:], strict=False))

    def test_the_status_reads_back_as_the_job_returned_it(self, ws):
        backend = HeldBackend()
        self.start(ws, backend)
        out = backend.release()
        done = self.kind.wait(ws, timeout=5)
        assert type(done) is self.kind.status and done.state == "finished" and not done.active
        assert asdict(done) == out  # what the page reads is what the job wrote
        assert done.fraction == 1.0 and done.seconds > 0
        assert not (ws.path / "jobs" / self.kind.files[1]).exists()

    def test_cancel_ends_it_as_cancelled(self, ws):
        backend = HeldBackend()
        self.start(ws, backend)
        self.kind.cancel(ws)  # asked before its first report: it stops there
        out = backend.release()
        assert out["state"] == "cancelled" and out["message"]
        assert self.kind.read(ws).state == "cancelled"
        assert not (ws.path / "jobs" / self.kind.files[1]).exists()  # the request is gone with it

    def test_a_job_whose_process_went_away_reads_as_interrupted(self, ws):
        status = self.kind.status(id="gone", state="running", started=time.time())
        base.write_status(ws, status, self.kind.files[0])
        assert self.kind.read(ws).state == "running"  # a fresh heartbeat: maybe another worker
        path = ws.path / "jobs" / self.kind.files[0]
        d = read_json(path)
        d["updated"] -= 4 * base.HEARTBEAT
        atomic_write_json(path, d)
        st = self.kind.read(ws)
        assert (st.state, st.message) == ("interrupted", self.kind.interrupted)
        assert not st.active
        self.start(ws, HeldBackend())  # and a new run may start

    def test_only_a_writable_workspace_starts_or_cancels_it(self, ws):
        viewer = Workspace(ws.path, readonly="shared with you to view")
        with pytest.raises(ValueError, match="read-only"):
            self.start(viewer, HeldBackend())
        with pytest.raises(ValueError, match="read-only"):
            self.kind.cancel(viewer)
        assert self.kind.read(ws) is None
