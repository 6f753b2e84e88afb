"""Training jobs that run off the UI thread and report through the workspace.

The :data:`TRAINING` job kind (:class:`~refiner.app.jobs.base.JobKind`). Its body is a plain
function of paths and numbers (:func:`run_training`): it reads the tile, labels and coarse
probabilities from the workspace, trains, and writes its status (step, loss history, validation
scores, device, state) to ``jobs/train.json`` as it goes, checkpoints into
``models/checkpoint`` and, at the end, the model into ``models/rnn`` (the one it replaces is kept
in ``models/history``, see :mod:`refiner.app.model_history`). Cancelling is a file
(``jobs/train.cancel``) that the training loop polls. Because everything goes through the
workspace folder, where the job runs is a detail: :class:`ThreadBackend` runs it in a thread of
the app's process (the default); a Dask backend only has to implement :class:`Backend` with
``client.submit(run_training, ...)`` for workers that share the workspace's file system.

A page reads the status with ``TRAINING.read(ws)`` on every refresh; a status left "running" by a
process that has gone (server restart) is reported as "interrupted", and training continues
from the last checkpoint with ``resume=True``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from refiner.app import model_history
from refiner.app.jobs.base import Backend, JobKind, JobState, job_run, jobs_dir
from refiner.app.workspace import Workspace
from refiner.core.atomic import atomic_write_json, from_known_fields, read_json
from refiner.core.classes import check_compatible
from refiner.models.rnn import RNNConfig
from refiner.train.rnn import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS, RNNTrainConfig

#: The loss and validation curves of the workspace's RNN, kept between runs (a continued run goes on).
CURVES = "train_curves.json"
_ARCH = RNNConfig(num_classes=2)  # read only for its architecture defaults (T, variant)
_TRAIN = RNNTrainConfig()


@dataclass
class TrainParams:
    """What the Train page asks for, every default taken from a config dataclass.

    The length of a run and how often it is evaluated come from
    :data:`~refiner.train.rnn.FINETUNE_DEFAULTS` (a few minutes on a CPU; the app's usual start
    is the pretrained RNN), the rest from :class:`~refiner.train.rnn.RNNTrainConfig` and
    :class:`~refiner.models.rnn.RNNConfig` (the paper's). The regularisation of a fine-tune from
    the pretrained RNN is added by :func:`run_config`.
    """

    steps: int = FINETUNE_DEFAULTS.steps  # RNNTrainConfig's 1500 is for the paper's protocol
    iterations: int = _ARCH.iterations  # T
    variant: str = _ARCH.variant
    lr: float = _TRAIN.lr  # the page offers FINETUNE_DEFAULTS.lr for a fine-tune from the pretrained RNN
    batch_size: int = _TRAIN.batch_size
    patch_size: int = _TRAIN.patch_size
    holdout: float = _TRAIN.holdout
    eval_every: int = FINETUNE_DEFAULTS.eval_every
    #: ... or every this many seconds, whichever comes first (None: by steps only)
    eval_seconds: float | None = _TRAIN.eval_seconds
    checkpoint_every: int = 50  # the app's own (the page asks for one every fifth of the run)
    #: The app's wall-clock budget for a whole run, from its start to the new RNN's scores on the
    #: page: 300 steps took 476-892 s on a busy 2-core server while the held-out IoU was flat after
    #: about 35 (issue #22). Training gets what is left of it after reading the tile and before
    #: saving and the page's refinement (:func:`training_budget`), and ends earlier when the
    #: held-out score stops improving; None = no budget
    max_seconds: float | None = 60.0
    seed: int = _TRAIN.seed
    resume: bool = True  # continue from the workspace's current RNN (else start a new one)
    #: When not resuming: the shipped RNN (a folder name in assets/pretrained) to fine-tune from,
    #: with :data:`refiner.train.rnn.FINETUNE_DEFAULTS`' regularisation; "" = a new RNN from scratch.
    pretrained: str = ""
    device: str | None = None  # None = cuda, mps or cpu, whichever is there
    #: Weight of the pull of the refined maps towards where the run starts; None = the start's
    #: (FINETUNE_DEFAULTS' for a fine-tune, SCRATCH_DEFAULTS' otherwise); 0 = the paper's plain training
    distill: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> TrainParams:
        """Parameters from JSON, ignoring keys this version does not know."""
        return from_known_fields(cls, d)

    @property
    def from_pretrained(self) -> bool:
        """A patch fine-tune of a shipped RNN (not continuing the workspace's, not from scratch)."""
        return not self.resume and bool(self.pretrained)


#: What comes after the last training step, against the run's budget: saving the model and its
#: history (about 1 s), then the Train page refining the tile and scoring it, measured at 3.1 s
#: for a 1024² tile on a quiet 2-core EPYC (benchmarks/ui_latency.py --only finetune).
FINISH_SECONDS, REFINE_SECONDS_PER_MPX = 1.0, 3.0
#: Training never gets less than this, whatever the preparation took (a run that trains nothing helps nobody).
MIN_TRAIN_SECONDS = 10.0


def training_budget(total: float | None, spent: float, pixels: int) -> float | None:
    """Seconds left for training in a run of ``total`` seconds, ``spent`` of them on preparation.

    ``pixels``: the tile's size on the grid the page refines, which sets what the end costs
    (:data:`FINISH_SECONDS`, :data:`REFINE_SECONDS_PER_MPX`). None when there is no budget.
    """
    if total is None:
        return None
    reserve = FINISH_SECONDS + REFINE_SECONDS_PER_MPX * pixels / 1e6
    return max(MIN_TRAIN_SECONDS, total - spent - reserve)


def run_config(p: TrainParams) -> RNNTrainConfig:
    """The :class:`~refiner.train.rnn.RNNTrainConfig` a run of ``p`` trains with.

    A fine-tune from the pretrained RNN starts from :data:`~refiner.train.rnn.FINETUNE_DEFAULTS`
    (the regularisation measured for a painted patch: early stopping, the pull towards the start,
    jitter, distillation, a fresh AdaGrad; evaluation by steps unless ``eval_seconds`` is None),
    any other run (a new RNN, or the workspace's continued) from :data:`~refiner.train.rnn.SCRATCH_DEFAULTS`
    (the coarse map as the start, pulled towards where the run started); the page's values replace either. The held-out
    regions are split off by the job on the tile's grid (hence ``holdout=0`` here).
    """
    base = FINETUNE_DEFAULTS if p.from_pretrained else SCRATCH_DEFAULTS
    eval_seconds = base.eval_seconds if p.from_pretrained and p.eval_seconds is not None else p.eval_seconds
    return replace(
        base,
        steps=p.steps,
        batch_size=p.batch_size,
        patch_size=p.patch_size,
        lr=p.lr,
        seed=p.seed,
        holdout=0.0,
        eval_every=p.eval_every,
        eval_seconds=eval_seconds,
        checkpoint_every=p.checkpoint_every,
        max_seconds=p.max_seconds,
        distill=base.distill if p.distill is None else p.distill,
    )


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
    #: the seconds training may take (the run's budget less its preparation and end); None = no budget
    train_seconds: float | None = None

    def seconds_left(self, now: float) -> float | None:
        """At most how many seconds the run still takes at wall-clock time ``now`` (None: no budget)."""
        budget = self.params.get("max_seconds")
        if budget is None or not self.active:
            return None
        return max(0.0, self.started + float(budget) - now)

    @property
    def fraction(self) -> float:
        """Share of the run done, 0 to 1 (for the progress bar): by steps, or by its time budget if further."""
        by_steps = self.step / self.steps if self.steps else 0.0
        budget = self.params.get("max_seconds")
        by_time = (self.updated - self.started) / float(budget) if budget and self.updated else 0.0
        return 1.0 if self.state == "finished" else min(1.0, max(by_steps, by_time))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """A status from its JSON, the loss curves back as (step, loss) tuples."""
        status = super().from_dict(d)
        status.loss = [(s, v) for s, v in status.loss]  # JSON lists back to (step, loss) tuples
        status.earlier_loss = [(s, v) for s, v in status.earlier_loss]
        return status


# --------------------------------------------------------------------------- the job


def run_training(workspace: str | Path, job_id: str, params: dict) -> dict:
    """Fine-tune the workspace's RNN on its painted labels; returns the final status as a dict.

    Pure function of the workspace folder, so any backend (thread, process, Dask worker) can
    run it.
    """
    from refiner.core.device import pick_device
    from refiner.data.resample import to_working
    from refiner.train.loop import Progress
    from refiner.train.rnn import train_rnn
    from refiner.train.sampling import check_labels, holdout_guard, split_holdout

    ws = Workspace(Path(workspace))
    p = TrainParams.from_dict(params)
    status = JobStatus(id=job_id, state="running", steps=p.steps, started=time.time(), params=asdict(p))
    with job_run(ws, status, TRAINING.files) as run:
        dev = pick_device(p.device)
        status.device = str(dev)
        status.host = f"{socket.gethostname()}:{os.getpid()}"
        run.save(force=True)
        classes = ws.classes
        tile = ws.tile()
        probs = ws.coarse_probs()
        labels = ws.labels()
        check_labels(labels, len(classes), "painted labels")
        init, start = _starting_rnn(ws, p, classes)
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
        work, work_probs, (train_labels, val_labels) = working.tile, working.probs, working.labels
        assert work_probs is not None  # given, so on the working grid too
        status.start_step = int(init.info.get("trained_steps", 0)) if init is not None else 0
        earlier = read_json(jobs_dir(ws) / CURVES) or {}
        if init is not None and p.resume and earlier.get("model_steps") == status.start_step:
            status.earlier_loss = [tuple(x) for x in earlier.get("loss", [])]
            status.earlier_val = list(earlier.get("val", []))
        cfg = run_config(p)
        spent = time.time() - status.started
        cfg = replace(cfg, max_seconds=training_budget(p.max_seconds, spent, int(np.prod(tile.shape))))
        status.train_seconds = cfg.max_seconds
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
            run.save(force=rep.val is not None)

        has_val = bool((val_labels != 255).any())
        result = train_rnn(
            work.image,
            work_probs,
            train_labels,
            classes,
            cfg,
            arch=arch,
            init=init,
            resolution=resolution,
            device=dev,
            progress=progress,
            should_stop=run.cancelled,
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
        atomic_write_json(jobs_dir(ws) / CURVES, {"model_steps": total, **curves})
        status.message = _final_message(status, result.stopped, total, start, has_val, guard)
    return asdict(status)


def _starting_rnn(ws: Workspace, p: TrainParams, classes: Any) -> tuple[Any, str]:
    """The RNN a run starts from, and those words for the status; None for a new one.

    Resuming continues the workspace's RNN (or the checkpoint an interrupted run left, when
    newer); else ``p.pretrained`` names a shipped RNN to fine-tune; else training starts anew.
    """
    from refiner.models.store import load_model

    if p.resume:
        src = ws.model_dir("checkpoint") if _checkpoint_is_newer(ws) else ws.model_dir("rnn")
        if (src / "config.json").is_file():
            return load_model(src, expect="rnn"), "the workspace's RNN (continued)"
    elif p.pretrained:
        return _pretrained_rnn(p.pretrained, classes), f"the pretrained RNN {p.pretrained}"
    return None, "a new RNN (from scratch)"


def _final_message(status: JobStatus, stopped: str, total: int, start: str, has_val: bool, guard: int) -> str:
    """What the Train page says when a run ends: how, which weights were kept, and why none were held out."""
    message = f"{stopped} after {status.step} steps ({total} in all) from {start}; model saved"
    if status.best_step is not None and status.best_step != total:
        which = (
            "the model it started from"
            if status.best_step == status.start_step
            else (f"the weights of step {status.best_step}")
        )
        message += (
            f" with {which}, the best on the held-out regions (mean IoU {status.best_val:.3f}), not the last step's"
        )
    if not has_val:
        message += (
            f"; no pixels could be held back for validation (paint regions more than {2 * guard} px "
            "apart, or a larger area, so whole regions can be held out)"
        )
    return message


def _pretrained_rnn(name: str, classes: Any) -> Any:
    """The shipped RNN ``name``, checked against the workspace's classes.

    Only a catalogue entry: a name typed in a browser never reaches another path.
    """
    from refiner.models.pretrained import catalogue, rnn_for

    found = {m.name: m for m in catalogue() if m.kind == "rnn"}
    if name not in found:
        raise ValueError(f"there is no shipped RNN called {name!r}: pick another start on the Train page")
    try:
        bundle = rnn_for(found[name], classes)  # derived for fewer classes when the workspace has them
    except ValueError as exc:
        raise ValueError(f"{exc} — train a new RNN instead") from exc
    check_compatible(bundle.classes, classes, f"the pretrained RNN {name}", "this workspace", "train a new RNN instead")
    bundle.optimizer_state = None  # a new task: a fresh AdaGrad
    bundle.net.train()
    return bundle


def _checkpoint_is_newer(ws: Workspace) -> bool:
    """True when an interrupted run left a checkpoint newer than the saved model."""
    ck, cur = ws.model_dir("checkpoint") / "model.safetensors", ws.model_dir("rnn") / "model.safetensors"
    if not ck.is_file():
        return False
    return not cur.is_file() or ck.stat().st_mtime_ns > cur.stat().st_mtime_ns


TRAINING = JobKind(
    "train",
    "training run",
    JobStatus,
    run_training,
    interrupted="the server stopped during training; continue training to resume from the last checkpoint",
)


def start_training(
    ws: Workspace, params: TrainParams, backend: Backend | None = None, others: Iterable[Workspace] = ()
) -> JobStatus:
    """Start fine-tuning unless a job is already active in this workspace or the session's ``others``."""
    p = asdict(params)
    return TRAINING.start(ws, p, backend=backend, others=others, steps=params.steps, params=p)
