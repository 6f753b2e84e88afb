"""Training jobs that run off the UI thread and report through the workspace.

A job is a plain function of paths and numbers (:func:`run_training`): it reads the tile, labels
and coarse probabilities from the workspace, trains, and writes its status (step, loss history,
validation scores, device, state) to ``jobs/train.json`` as it goes, checkpoints into
``models/checkpoint`` and, at the end, the model into ``models/rnn`` (the one it replaces is kept
in ``models/history``, see :mod:`refiner.model_history`). Cancelling is a file
(``jobs/train.cancel``) that the training loop polls. Because everything goes through the
workspace folder, where the job runs is a detail: :class:`ThreadBackend` runs it in a thread of
the app's process (the default); a Dask backend only has to implement :class:`Backend` with
``client.submit(run_training, ...)`` for workers that share the workspace's file system.

A page reads the status with :func:`read_status` on every refresh; a status left "running" by a
process that has gone (server restart) is reported as "interrupted", and training continues
from the last checkpoint with ``resume=True``.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from refiner import model_history
from refiner.models.rnn import RNNConfig
from refiner.train import RNNTrainConfig
from refiner.workspace import Workspace, atomic_write_json, read_json

STATUS, CANCEL, CURVES = "train.json", "train.cancel", "train_curves.json"
#: A running job rewrites its status at least this often (seconds); older means it died.
HEARTBEAT = 10.0
ACTIVE = ("queued", "running")


_RNN_FIELDS = RNNConfig.__dataclass_fields__
_TRAIN = RNNTrainConfig()


@dataclass
class TrainParams:
    """What the Train page asks for: :class:`~refiner.train.RNNTrainConfig`'s and
    :class:`~refiner.models.rnn.RNNConfig`'s defaults (the paper's), with fewer steps for a CPU."""

    steps: int = 300  # a few minutes on a CPU (RNNTrainConfig's 1500 is for the paper's protocol)
    iterations: int = _RNN_FIELDS["iterations"].default  # T
    variant: str = _RNN_FIELDS["variant"].default
    lr: float = _TRAIN.lr
    batch_size: int = _TRAIN.batch_size
    patch_size: int = _TRAIN.patch_size
    holdout: float = _TRAIN.holdout
    eval_every: int = 25
    #: ... or every this many seconds, whichever comes first (None: by steps only)
    eval_seconds: float | None = _TRAIN.eval_seconds
    checkpoint_every: int = 50
    seed: int = _TRAIN.seed
    resume: bool = True  # continue from the workspace's current RNN (else start a new one)
    #: When not resuming: the shipped RNN (a folder name in assets/pretrained) to fine-tune from,
    #: with :data:`refiner.train.FINETUNE_DEFAULTS`' regularisation; "" = a new RNN from scratch.
    pretrained: str = ""
    device: str | None = None  # None = cuda, mps or cpu, whichever is there

    @classmethod
    def from_dict(cls, d: dict) -> TrainParams:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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
        return self.state in ACTIVE

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def mark_failed(status: JobState, exc: BaseException) -> None:
    """End a job as failed: the page shows the message, the traceback goes to the server log."""
    traceback.print_exc()
    status.state = "failed"
    status.message = str(exc) or type(exc).__name__


@dataclass
class JobStatus(JobState):
    """What a page shows about the last training run."""

    step: int = 0
    steps: int = 0
    device: str = ""
    host: str = ""  # where it runs: hostname:pid (a Dask worker's, or the app's own)
    #: (step, loss) and {step, overall_accuracy, mean_iou, iou: [...]}, steps counted over the
    #: model's whole life (``start_step`` + this run's step), so a continued run's curve goes on
    loss: list[tuple[int, float]] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    #: the curves of the earlier runs this one continues (same model, steps before ``start_step``)
    earlier_loss: list[tuple[int, float]] = field(default_factory=list)
    earlier_val: list[dict] = field(default_factory=list)
    best_val: float | None = None
    params: dict = field(default_factory=dict)
    start_step: int = 0  # steps the model had before this run
    best_step: int | None = None  # the step whose weights were kept (best on the held-out regions)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.steps) if self.steps else 0.0

    @classmethod
    def from_dict(cls, d: dict) -> JobStatus:
        status = super().from_dict(d)
        status.loss = [tuple(x) for x in status.loss]
        status.earlier_loss = [tuple(x) for x in status.earlier_loss]
        return status


def _jobs_dir(ws: Workspace) -> Path:
    d = ws.path / "jobs"
    d.mkdir(exist_ok=True)
    return d


def write_status(ws: Workspace, status: Any, file: str = STATUS) -> None:
    """Save a job's status (a dataclass with ``id``, ``state``, ``updated``) as ``jobs/<file>``."""
    status.updated = time.time()
    atomic_write_json(_jobs_dir(ws) / file, asdict(status))


def read_status(ws: Workspace) -> JobStatus | None:
    """The last training run's status; a run whose process went away reads as ``interrupted``."""
    why = "the server stopped during training; continue training to resume from the last checkpoint"
    return read_job(ws, JobStatus, STATUS, why)


def read_job(ws: Workspace, kind: type, file: str, interrupted: str) -> Any:
    """A job's status from ``jobs/<file>``; an active one whose heartbeat stopped reads as ``interrupted``."""
    d = read_json(ws.path / "jobs" / file)
    if not d:
        return None
    status = kind.from_dict(d)
    if status.state in ACTIVE and status.id not in _LIVE and time.time() - status.updated > 3 * HEARTBEAT:
        status.state = "interrupted"
        status.message = interrupted
    return status


def request_cancel(ws: Workspace) -> None:
    ws.check_writable()
    (_jobs_dir(ws) / CANCEL).touch()


#: What each status file under ``jobs/`` is, for messages (other kinds are named by their file).
KINDS = {"train": "training run", "scene": "scene run", "crf": "CRF search"}


def active_job(ws: Workspace) -> str:
    """The kind of job going in ``ws`` now ("training run", "scene run"), or "" when none is."""
    folder = ws.path / "jobs"
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if not {"id", "state"} <= set(read_json(f, {}) or {}):
            continue  # not a job's status (the loss curves kept between runs)
        status = read_job(ws, JobState, f.name, "")
        if status is not None and status.active:
            return KINDS.get(f.stem, f"{f.stem} job")
    return ""


# --------------------------------------------------------------------------- the job


def run_training(workspace: str | Path, params: dict, job_id: str) -> dict:
    """Fine-tune the workspace's RNN on its painted labels; returns the final status as a dict.

    Pure function of the workspace folder, so any backend (thread, process, Dask worker) can
    run it.
    """
    from refiner.models.io import load_model
    from refiner.raster import to_working
    from refiner.train import (
        FINETUNE_DEFAULTS,
        Progress,
        check_labels,
        holdout_guard,
        pick_device,
        split_holdout,
        train_rnn,
    )

    ws = Workspace(Path(workspace))
    p = TrainParams.from_dict(params)
    status = JobStatus(id=job_id, state="running", steps=p.steps, started=time.time(), params=asdict(p))
    cancel = _jobs_dir(ws) / CANCEL
    last_write = [0.0]

    def save(force: bool = False) -> None:
        now = time.time()
        if force or now - last_write[0] > 0.5:
            status.seconds = now - status.started
            write_status(ws, status)
            last_write[0] = now

    try:
        dev = pick_device(p.device)
        status.device = str(dev)
        status.host = f"{socket.gethostname()}:{os.getpid()}"
        save(force=True)
        classes = ws.classes
        tile = ws.tile()
        probs = ws.coarse_probs()
        labels = ws.labels()
        check_labels(labels, len(classes), "painted labels")
        init, start = None, "a new RNN (from scratch)"
        if p.resume:
            src = ws.model_dir("checkpoint") if _checkpoint_is_newer(ws) else ws.model_dir("rnn")
            if (src / "config.json").is_file():
                init = load_model(src, expect="rnn")
                start = "the workspace's RNN (continued)"
        elif p.pretrained:
            init = _pretrained_rnn(p.pretrained, classes)
            start = f"the pretrained RNN {p.pretrained}"
        resolution = init.resolution if init is not None else (ws.settings.get("coarse") or {}).get("resolution")
        arch = RNNConfig(
            num_classes=len(classes), in_channels=tile.image.shape[0], iterations=p.iterations, variant=p.variant
        )
        # held-out regions on the tile's grid (the pages score there), the guard in working pixels
        scale = resolution / tile.resolution if resolution and tile.resolution else 1.0
        guard = math.ceil(holdout_guard(init.net.cfg if init is not None else arch) * scale)
        train_labels, val_labels = split_holdout(labels, p.holdout, guard=guard, seed=p.seed)
        ws.write_holdout(val_labels)
        ws.update_settings(holdout={"fraction": p.holdout, "guard_px": guard})
        working = to_working(tile, resolution, probs, [train_labels, val_labels])
        work, probs, (train_labels, val_labels) = working.tile, working.probs, working.labels
        status.start_step = int(init.info.get("trained_steps", 0)) if init is not None else 0
        earlier = read_json(_jobs_dir(ws) / CURVES) or {}
        if init is not None and p.resume and earlier.get("model_steps") == status.start_step:
            status.earlier_loss = [tuple(x) for x in earlier.get("loss", [])]
            status.earlier_val = list(earlier.get("val", []))
        cfg = RNNTrainConfig(
            steps=p.steps,
            batch_size=p.batch_size,
            patch_size=p.patch_size,
            lr=p.lr,
            seed=p.seed,
            holdout=0.0,
            eval_every=p.eval_every,
            eval_seconds=p.eval_seconds,
            checkpoint_every=p.checkpoint_every,
        )
        if not p.resume and p.pretrained:  # a patch fine-tune: the regularisation measured for it
            d = FINETUNE_DEFAULTS
            cfg = replace(cfg, patience=d.patience, anchor=d.anchor, jitter=d.jitter, fresh_optimizer=True,
                          distill=d.distill)  # fmt: skip
            if p.eval_seconds is not None:
                cfg = replace(cfg, eval_seconds=d.eval_seconds)
        status.message = f"started from {start}"
        status.params = {**status.params, "started_from": start}

        def progress(rep: Progress) -> None:
            status.step = rep.step
            status.loss.append((status.start_step + rep.step, float(rep.loss)))
            if rep.val is not None:
                status.val.append(
                    {
                        "step": status.start_step + rep.step,
                        "overall_accuracy": rep.val.overall_accuracy,
                        "mean_iou": rep.val.mean_iou,
                        "iou": [None if np.isnan(v) else v for v in rep.val.iou],
                    }
                )
                status.best_val = rep.best_val
            save(force=rep.val is not None)

        has_val = bool((val_labels != 255).any())
        result = train_rnn(
            work.image,
            probs,
            train_labels,
            classes,
            cfg,
            arch=arch,
            init=init,
            resolution=resolution,
            device=dev,
            progress=progress,
            should_stop=cancel.exists,
            checkpoint_dir=ws.model_dir("checkpoint"),
            val_labels=val_labels if has_val else np.full_like(val_labels, 255),
        )
        # the RNN this replaces stays in the workspace's model history
        model_history.save_trained(ws, result.bundle, started_from=start, val=status.val, stopped=result.stopped)
        ws.clear_results()
        status.step = max(status.step, result.history[-1].step if result.history else 0)
        status.best_val = result.best_val
        status.state = "cancelled" if result.stopped == "cancelled" else "finished"
        total = result.bundle.info.get("trained_steps", status.step)
        status.best_step = result.bundle.info.get("best_step")
        curves = {"loss": status.earlier_loss + status.loss, "val": status.earlier_val + status.val}
        atomic_write_json(_jobs_dir(ws) / CURVES, {"model_steps": total, **curves})
        status.message = f"{result.stopped} after {status.step} steps ({total} in all) from {start}; model saved"
        if status.best_step is not None and status.best_step != total:
            which = "the model it started from" if status.best_step == status.start_step else (
                f"the weights of step {status.best_step}")
            status.message += (
                f" with {which}, the best on the held-out regions (mean IoU {status.best_val:.3f}), "
                "not the last step's"
            )
        if not has_val:
            status.message += (
                f"; no pixels could be held back for validation (paint regions more than {2 * guard} px "
                "apart, or a larger area, so whole regions can be held out)"
            )
    except Exception as exc:
        mark_failed(status, exc)
    finally:
        cancel.unlink(missing_ok=True)
        save(force=True)
    return asdict(status)


def _pretrained_rnn(name: str, classes: Any) -> Any:
    """The shipped RNN ``name`` (only a catalogue entry: a name typed in a browser never reaches
    another path), checked against the workspace's classes."""
    from refiner.pretrained import catalogue

    found = {m.name: m for m in catalogue() if m.kind == "rnn"}
    if name not in found:
        raise ValueError(f"there is no shipped RNN called {name!r}: pick another start on the Train page")
    bundle = found[name].load()
    if list(bundle.classes.names) != list(classes.names):
        raise ValueError(
            f"the pretrained RNN {name} knows classes {list(bundle.classes.names)}, this workspace has "
            f"{list(classes.names)}: train a new RNN instead"
        )
    bundle.optimizer_state = None  # a new task: a fresh AdaGrad
    bundle.net.train()
    return bundle


def _checkpoint_is_newer(ws: Workspace) -> bool:
    """True when an interrupted run left a checkpoint newer than the saved model."""
    ck, cur = ws.model_dir("checkpoint") / "model.safetensors", ws.model_dir("rnn") / "model.safetensors"
    if not ck.is_file():
        return False
    return not cur.is_file() or ck.stat().st_mtime_ns > cur.stat().st_mtime_ns


# --------------------------------------------------------------------------- backends


class Handle(Protocol):
    def done(self) -> bool: ...


class Backend(Protocol):
    """Where jobs run. ``submit`` must not block; the job reports through the workspace."""

    def submit(self, fn: Any, *args: Any) -> Handle: ...


class _ThreadHandle:
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def done(self) -> bool:
        return not self.thread.is_alive()


class ThreadBackend:
    """Run jobs in a daemon thread of this process (torch releases the GIL while it computes)."""

    def submit(self, fn: Any, *args: Any) -> Handle:
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
    from refiner.distributed import DaskBackend

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
    return uuid.uuid4().hex[:12]


def launch(
    ws: Workspace,
    status: Any,
    files: tuple[str, str],
    read: Callable[[Workspace], Any],
    what: str,
    fn: Callable[..., Any],
    *args: Any,
    backend: Backend | None = None,
    others: Iterable[Workspace] = (),
) -> Any:
    """Start ``fn(*args)`` as this workspace's job of one kind, unless a job is active already.

    ``files`` are the kind's status and cancel files under ``jobs/``; ``status`` (already
    carrying the job's id) is written before the job starts, so a page sees it at once.
    ``others`` are the starting session's other workspaces: one job at a time per session, so
    one person cannot fill a shared server with runs.
    """
    ws.check_writable()
    with _LOCK:
        for jid, h in list(_LIVE.items()):
            if h.done():
                _LIVE.pop(jid, None)
        current = read(ws)
        if current is not None and current.active:
            raise RuntimeError(f"a {what} is already going in this workspace: cancel it or wait")
        for other in [ws, *others]:
            kind = active_job(other)
            if kind:
                where = "this workspace" if other.path == ws.path else f"your workspace {other.name!r}"
                raise RuntimeError(
                    f"a {kind} is already going in {where}: one job at a time per session, "
                    "so cancel it or wait for it to finish"
                )
        (_jobs_dir(ws) / files[1]).unlink(missing_ok=True)
        write_status(ws, status, files[0])
        _LIVE[status.id] = (backend or ThreadBackend()).submit(fn, *args)
        return status


def wait_for(read: Callable[[Workspace], Any], ws: Workspace, timeout: float = 600.0, poll: float = 0.2) -> Any:
    """Block until ``read(ws)`` is no longer an active job (for scripts and tests)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = read(ws)
        if st is None or not st.active:
            return st
        time.sleep(poll)
    return read(ws)


def start_training(
    ws: Workspace, params: TrainParams, backend: Backend | None = None, others: Iterable[Workspace] = ()
) -> JobStatus:
    """Start fine-tuning unless a job is already active in this workspace or the session's ``others``."""
    job_id = new_job_id()
    status = JobStatus(id=job_id, state="queued", steps=params.steps, started=time.time(), params=asdict(params))
    args = (str(ws.path), asdict(params), job_id)
    files = (STATUS, CANCEL)
    return launch(ws, status, files, read_status, "training run", run_training, *args, backend=backend, others=others)


def wait(ws: Workspace, timeout: float = 600.0, poll: float = 0.2) -> JobStatus | None:
    """Block until the workspace's training run is no longer active (for scripts and tests)."""
    return wait_for(read_status, ws, timeout, poll)
