"""Jobs that run off the UI thread and report through their workspace's ``jobs/`` folder.

One contract for every kind of job: a :class:`JobKind` declares its status dataclass (a
:class:`JobState`), its files (``jobs/<name>.json`` and ``jobs/<name>.cancel``), the message of
a run whose process went away, and the body that runs it; starting, reading (a stale heartbeat
reads as interrupted), cancelling and waiting are the kind's own generic methods. Every body
runs in :func:`job_run`, so all kinds write their status, cancel and end the same way. One job
at a time per workspace and per session; the backends that run them are a thread of the app's
process by default, or a Dask cluster the operator configured.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

from refiner.app.workspace import Workspace
from refiner.core.atomic import atomic_write_json, from_known_fields, read_json

#: A running job rewrites its status at least this often (seconds); older means it died.
HEARTBEAT = 10.0
ACTIVE = ("queued", "running")


@dataclass
class JobState:
    """What every background job's status has (saved as JSON under ``jobs/``, read back by pages)."""

    id: str
    state: str = "queued"  # queued | running | finished | cancelled | failed | interrupted
    started: float = 0.0
    updated: float = 0.0
    seconds: float = 0.0
    message: str = ""

    @property
    def active(self) -> bool:
        """True while the job is queued or running."""
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        """Share of the work done, 0 to 1, for the progress bar (kinds that count their work say how)."""
        return 1.0 if self.state == "finished" else 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """A status from its JSON, ignoring keys this version does not know (a file from another version)."""
        return from_known_fields(cls, d)


StatusT = TypeVar("StatusT", bound=JobState)


def mark_failed(status: JobState, exc: BaseException) -> None:
    """End a job as failed: the page shows the message, the traceback goes to the server log."""
    traceback.print_exc()
    status.state = "failed"
    status.message = str(exc) or type(exc).__name__


def jobs_dir(ws: Workspace) -> Path:
    """The workspace's ``jobs/`` folder (created if missing): each kind's status and cancel files."""
    d = ws.path / "jobs"
    d.mkdir(exist_ok=True)
    return d


def write_status(ws: Workspace, status: JobState, file: str) -> None:
    """Save a job's status as ``jobs/<file>``, its ``updated`` time (the heartbeat) set to now."""
    status.updated = time.time()
    atomic_write_json(jobs_dir(ws) / file, asdict(status))


def _read(ws: Workspace, kind: type[StatusT], file: str, interrupted: str) -> StatusT | None:
    """A status from ``jobs/<file>``; an active one whose heartbeat stopped reads as ``interrupted``."""
    d = read_json(ws.path / "jobs" / file)
    if not d:
        return None
    status = kind.from_dict(d)
    if status.state in ACTIVE and status.id not in _LIVE and time.time() - status.updated > 3 * HEARTBEAT:
        status.state = "interrupted"
        status.message = interrupted
    return status


class Cancelled(Exception):
    """Raised inside a job's body when its cancel file appears, to end the job as cancelled.

    The exception's message (if any) becomes the status message.
    """


class JobRun:
    """One run of a job, as its body sees it: the status to fill and save, and the cancel file to poll.

    :meth:`save` writes the status, :meth:`cancelled` polls the cancel file.
    """

    def __init__(self, ws: Workspace, status: Any, files: tuple[str, str], every: float) -> None:
        self.ws, self.status, self.file, self.every = ws, status, files[0], every
        self.cancel = jobs_dir(ws) / files[1]
        self._written = 0.0

    def cancelled(self) -> bool:
        """True once the user asked the job to stop."""
        return self.cancel.exists()

    def save(self, force: bool = False) -> None:
        """Write the status (its run time updated), at most once every ``every`` seconds unless ``force``."""
        now = time.time()
        if force or now - self._written > self.every:
            self.status.seconds = now - self.status.started
            write_status(self.ws, self.status, self.file)
            self._written = now


@contextlib.contextmanager
def job_run(ws: Workspace, status: Any, files: tuple[str, str], every: float = 0.5) -> Iterator[JobRun]:
    """The context a job's body runs in (``as run``), reporting how it ended in the status file.

    ``files`` are its status and cancel files. The body's errors are reported, not raised:
    :class:`Cancelled` ends the job as cancelled, any other exception as failed
    (:func:`mark_failed`). Either way, and on success, the cancel file is removed and the final
    status written.
    """
    run = JobRun(ws, status, files, every)
    try:
        yield run
    except Cancelled as exc:
        status.state, status.message = "cancelled", str(exc) or "cancelled"
    except Exception as exc:
        mark_failed(status, exc)
    finally:
        run.cancel.unlink(missing_ok=True)
        run.save(force=True)


# --------------------------------------------------------------------------- backends


class Handle(Protocol):
    """A job started by a :class:`Backend`: enough to tell whether it has ended."""

    def done(self) -> bool:
        """Whether the job has ended (finished, failed or cancelled)."""


class Backend(Protocol):
    """Where jobs run. ``submit`` must not block; the job reports through the workspace."""

    def submit(self, fn: Any, *args: Any) -> Handle:
        """Start ``fn(*args)`` and return at once."""


class _ThreadHandle:
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def done(self) -> bool:
        return not self.thread.is_alive()


class ThreadBackend:
    """Run jobs in a daemon thread of this process (torch releases the GIL while it computes)."""

    def submit(self, fn: Any, *args: Any) -> Handle:
        """Start ``fn(*args)`` in a new daemon thread and return at once."""
        t = threading.Thread(target=fn, args=args, daemon=True, name="refiner-job")
        t.start()
        return _ThreadHandle(t)


def scheduler_setting(ws: Workspace | None = None) -> str:
    """Where jobs run: the operator's ``$REFINER_SCHEDULER`` (empty: this process, the default).

    Only the operator sets it: a workspace setting could be written from a browser, and a Dask
    handshake with an address a user typed would let anyone point the server at any host (and
    its pickle protocol). ``ws`` is accepted for callers that pass it; its settings are ignored.
    """
    return os.environ.get("REFINER_SCHEDULER", "").strip()


def backend_for(scheduler: str) -> Backend:
    """The backend for a scheduler setting: a thread here, or a Dask cluster (GPU worker if any)."""
    if not scheduler:
        return ThreadBackend()
    from refiner.scale.cluster import DaskBackend

    try:
        return DaskBackend(scheduler)
    except OSError as exc:
        raise RuntimeError(
            f"{exc}. Ask the operator to check REFINER_SCHEDULER, or unset it to train on this machine"
        ) from exc


#: Jobs started by this process that have not finished: id -> handle.
_LIVE: dict[str, Handle] = {}
_LOCK = threading.Lock()


def new_job_id() -> str:
    """A short random id (12 hex digits) that names a job in its status file."""
    return uuid.uuid4().hex[:12]


#: Every kind of job declared, by name (each :class:`JobKind` adds itself; importing
#: ``refiner.app.jobs`` imports all of them, so every page and session knows every kind).
KINDS: dict[str, JobKind[Any]] = {}


@dataclass(frozen=True)
class JobKind(Generic[StatusT]):
    """One kind of background job, declared once; starting, reading, cancelling and waiting are generic.

    A kind is its status dataclass, its body and a few words. The body is a plain function of
    strings and numbers, ``run(workspace, job_id, *args) -> dict`` (so any backend runs it: a
    thread here, a Dask worker), that fills its status inside :func:`job_run` and returns it
    as a dict. A fourth kind, in full::

        @dataclass
        class AdaptStatus(JobState):
            done: int = 0
            total: int = 0

            @property
            def fraction(self) -> float:  # what the progress bar shows
                return min(1.0, self.done / self.total) if self.total else 0.0

        def run_adapt(workspace: str, job_id: str, strength: float) -> dict:
            ws = Workspace(Path(workspace))
            status = AdaptStatus(id=job_id, state="running", started=time.time(), total=10)
            with job_run(ws, status, ADAPT.files) as run:
                for status.done in range(status.total):
                    ...  # a step of the work
                    run.save()  # the heartbeat (written at most every 0.5 s)
                    if run.cancelled():
                        raise Cancelled("cancelled; nothing was changed")
                status.state, status.message = "finished", "adapted"
            return asdict(status)

        ADAPT = JobKind("adapt", "adaptation", AdaptStatus, run_adapt,
                        interrupted="the server stopped during the adaptation; start it again")

    Then ``ADAPT.start(ws, 0.5)`` writes the queued status and runs
    ``run_adapt(str(ws.path), job_id, 0.5)`` in the background; ``ADAPT.read(ws)`` is an
    ``AdaptStatus`` or None, ``ADAPT.cancel(ws)`` asks it to stop, ``ADAPT.wait(ws)`` blocks until
    it ends. Import the kind's module in ``refiner/app/jobs/__init__.py``; ``webapp/job_panel.py``
    shows it on a page; add its subclass of ``tests/app/jobs/contract.py``'s ``JobKindContract``.
    """

    #: Names its files, ``jobs/<name>.json`` (the status) and ``jobs/<name>.cancel``.
    name: str
    #: What it is called in messages ("a training run is already going in this workspace").
    what: str
    #: Its status: a :class:`JobState` with what its page shows.
    status: type[StatusT]
    #: Its body: ``run(workspace: str, job_id: str, *args) -> dict`` (the final status).
    run: Callable[..., dict[str, Any]]
    #: The message of a run whose process went away (a server restart): what the user may do.
    interrupted: str

    def __post_init__(self) -> None:
        old = KINDS.get(self.name)
        if old is not None and _where(old.run) != _where(self.run):
            raise ValueError(f"there is already a job kind called {self.name!r}")
        KINDS[self.name] = self  # also when its module is imported again (Streamlit reloads edited modules)

    @property
    def files(self) -> tuple[str, str]:
        """Its status and cancel files under ``jobs/``."""
        return f"{self.name}.json", f"{self.name}.cancel"

    def read(self, ws: Workspace) -> StatusT | None:
        """The last run's status, or None; one left active by a process that went away reads as interrupted."""
        return _read(ws, self.status, self.files[0], self.interrupted)

    def cancel(self, ws: Workspace) -> None:
        """Ask the workspace's job of this kind to stop (it polls the cancel file).

        Raises:
            ValueError: the workspace is read-only (a viewer cannot stop the owner's job).
        """
        ws.check_writable()
        (jobs_dir(ws) / self.files[1]).touch()

    def wait(self, ws: Workspace, timeout: float = 600.0, poll: float = 0.2) -> StatusT | None:
        """Block until the workspace's job of this kind is no longer active (for scripts and tests)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            st = self.read(ws)
            if st is None or not st.active:
                return st
            time.sleep(poll)
        return self.read(ws)

    def start(
        self,
        ws: Workspace,
        *args: Any,
        backend: Backend | None = None,
        others: Iterable[Workspace] = (),
        **fields: Any,
    ) -> StatusT:
        """Start ``run(str(ws.path), job_id, *args)`` unless a job is going in ``ws`` or ``others``.

        The queued status (a new id, ``fields`` filled in) is written before the job starts, so
        a page sees it at once. ``others`` are the starting session's other workspaces: one job
        at a time per session, so one person cannot fill a shared server with runs.

        Raises:
            ValueError: the workspace is read-only.
            RuntimeError: a job is already going in this workspace or in the session's others.
        """
        ws.check_writable()
        status = self.status(id=new_job_id(), state="queued", started=time.time(), **fields)
        with _LOCK:
            for jid, h in list(_LIVE.items()):
                if h.done():
                    _LIVE.pop(jid, None)
            current = self.read(ws)
            if current is not None and current.active:
                raise RuntimeError(f"a {self.what} is already going in this workspace: cancel it or wait")
            for other in [ws, *others]:
                kind = active_job(other)
                if kind:
                    where = "this workspace" if other.path == ws.path else f"your workspace {other.name!r}"
                    raise RuntimeError(
                        f"a {kind} is already going in {where}: one job at a time per session, "
                        "so cancel it or wait for it to finish"
                    )
            (jobs_dir(ws) / self.files[1]).unlink(missing_ok=True)
            write_status(ws, status, self.files[0])
            _LIVE[status.id] = (backend or ThreadBackend()).submit(self.run, str(ws.path), status.id, *args)
            return status


def _where(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def active_job(ws: Workspace) -> str:
    """What kind of job is going in ``ws`` now ("training run", "scene run"), or "" when none is."""
    folder = ws.path / "jobs"
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if not {"id", "state"} <= set(read_json(f, {}) or {}):
            continue  # not a job's status (the loss curves kept between runs)
        status = _read(ws, JobState, f.name, "")
        if status is not None and status.active:
            kind = KINDS.get(f.stem)
            return kind.what if kind is not None else f"{f.stem} job"
    return ""
