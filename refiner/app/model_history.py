"""Every RNN a workspace has had, kept: a new training run never destroys the previous model.

"A new RNN" used to overwrite ``models/rnn`` (the demo's RNN, held-out mean IoU 0.949, was
replaced by a 60-step one, with no way back). Now each trained RNN is also copied into
``models/history/<id>/`` with an ``entry.json`` (name, when, steps, scores, where it started
from), and the RNN a run is about to replace is kept there first if it is not already. The
current RNN is the one in ``models/rnn``; the history entry it came from is found by the
weights' hash, so restoring an entry (:func:`restore`) is just installing its folder again.

The weights a run keeps are those of its best evaluation on the held-out pixels, not of its
last step (:func:`refiner.train.rnn.train_rnn`); each entry records that step and score.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refiner.app.workspace import Workspace
from refiner.core.atomic import atomic_dir, atomic_write_json, file_lock, from_known_fields, read_json

ENTRY = "entry.json"
WEIGHTS = "model.safetensors"
#: Oldest entries beyond this many are dropped (never the current one).
MAX_ENTRIES = 50


@dataclass
class Entry:
    """One kept RNN."""

    id: str
    name: str
    created: float
    steps: int = 0  # steps trained in all
    started_from: str = ""
    stopped: str = ""  # finished | early_stopping | time_budget | cancelled | "" (not trained here)
    best_step: int | None = None  # the evaluation whose weights were kept
    last_step: int | None = None
    held_out_mean_iou: float | None = None  # at best_step
    held_out_iou: list[float | None] = field(default_factory=list)
    variant: str = ""
    iterations: int = 0
    weights_hash: str = ""

    def kept_weights(self) -> str:
        """Which step's weights this RNN has, in words for the Train page (empty when not known).

        It said "the weights of step 1300 ..., not those of its last step (1300)" when the best
        evaluation was the last one.
        """
        if self.best_step is None:
            return ""
        score = f"mean IoU {self.held_out_mean_iou:.3f}" if self.held_out_mean_iou is not None else "its best score"
        if self.last_step is None or self.best_step == self.last_step:
            return (
                f"has the weights of step {self.best_step}, the last of its run, which was also its best "
                f"evaluation on the held-out pixels ({score})"
            )
        return (
            f"has the weights of step {self.best_step} of its run, its best evaluation on the held-out "
            f"pixels ({score}), not those of its last step ({self.last_step}): each run keeps its best checkpoint"
        )

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        """An entry from the history's JSON, ignoring keys this version does not know."""
        return from_known_fields(cls, d)


def _dir(ws: Workspace) -> Path:
    return ws.path / "models" / "history"


def _hash(folder: Path) -> str:
    p = folder / WEIGHTS
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else ""


def entries(ws: Workspace) -> list[Entry]:
    """The kept RNNs, newest first (not the hidden temporaries of one being written)."""
    d = _dir(ws)
    if not d.is_dir():
        return []
    kept = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
    out = [Entry.from_dict(e) for p in kept if isinstance(e := read_json(p / ENTRY), dict)]
    return sorted(out, key=lambda e: (e.created, e.id), reverse=True)


def current(ws: Workspace) -> Entry | None:
    """The entry the workspace's current RNN (``models/rnn``) came from, if it is kept."""
    h = _hash(ws.model_dir("rnn"))
    return next((e for e in entries(ws) if h and e.weights_hash == h), None)


def _config(folder: Path) -> dict:
    return read_json(folder / "config.json", {}) or {}


def _add(ws: Workspace, src: Path, **meta: Any) -> Entry:
    ws.check_writable()
    """Copy the model folder ``src`` into the history with ``meta``; the existing entry if these
    weights are kept already."""
    h = _hash(src)
    same = next((e for e in entries(ws) if e.weights_hash == h), None)
    if same is not None:
        return same
    cfg = _config(src)
    arch, info = cfg.get("architecture", {}), cfg.get("info", {})
    n = len(entries(ws)) + 1
    entry = Entry(
        id=f"{time.time_ns():020d}",
        name=meta.pop("name", "") or f"RNN {n}",
        created=time.time(),
        steps=int(meta.pop("steps", None) or info.get("trained_steps", 0) or 0),
        variant=str(arch.get("variant", "")),
        iterations=int(arch.get("iterations", 0) or 0),
        weights_hash=h,
        **meta,
    )
    with atomic_dir(_dir(ws) / entry.id) as tmp:  # whole or not at all: a half copy is never listed
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        atomic_write_json(tmp / ENTRY, asdict(entry))
    _prune(ws)
    return entry


def _prune(ws: Workspace) -> None:
    cur = current(ws)
    for old in entries(ws)[MAX_ENTRIES:]:
        if cur is None or old.id != cur.id:
            shutil.rmtree(_dir(ws) / old.id, ignore_errors=True)


def keep_current(ws: Workspace, name: str = "") -> Entry | None:
    """Keep the workspace's current RNN in the history (once); None when it has none."""
    if not ws.has_model("rnn"):
        return None
    with file_lock(_dir(ws) / ".lock"):
        return _add(ws, ws.model_dir("rnn"), name=name or "the RNN the workspace had", started_from="kept as it was")


def save_trained(ws: Workspace, bundle: Any, *, started_from: str, val: list[dict], stopped: str) -> Entry:
    """Install a freshly trained RNN as the workspace's current one and keep it in the history.

    The RNN it replaces is kept first. ``val``: the run's held-out evaluations
    (``{"step", "mean_iou", "iou"}``), to record which one's weights were kept.
    """
    from refiner.models.store import save_model

    keep_current(ws)
    save_model(bundle, ws.model_dir("rnn"))
    best = max(val, key=lambda v: v["mean_iou"] if v.get("mean_iou") is not None else -1.0, default=None)
    with file_lock(_dir(ws) / ".lock"):
        return _add(
            ws,
            ws.model_dir("rnn"),
            started_from=started_from,
            stopped=stopped,
            best_step=int(best["step"]) if best else None,
            last_step=int(val[-1]["step"]) if val else None,
            held_out_mean_iou=best.get("mean_iou") if best else None,
            held_out_iou=list(best.get("iou", [])) if best else [],
        )


def restore(ws: Workspace, entry_id: str) -> Entry:
    """Make a kept RNN the current one again (the current one stays in the history)."""
    ws.check_writable()
    found = {e.id: e for e in entries(ws)}
    if entry_id not in found:  # only ids the history lists: never another path
        raise ValueError("that RNN is not in this workspace's history any more: pick another one")
    keep_current(ws)
    ws.install_model(_dir(ws) / entry_id, "rnn")
    rnn = ws.model_dir("rnn")
    (rnn / ENTRY).unlink(missing_ok=True)
    for f in rnn.iterdir():  # newer than any checkpoint: "continue training" starts from this one
        os.utime(f)
    ws.clear_results()
    return found[entry_id]
