"""The "Adapt to this tile" job: the painted patch adapts the coarse CNN, then the RNN (:func:`refiner.adapt`).

The :data:`ADAPT` job kind. Its body reads the workspace's tile and painted labels, runs both
stages with progress per stage, and only at the end writes anything: the shipped coarse map is
kept as ``coarse_probs_shipped.tif``, the adapted model goes to ``models/coarse_adapted`` and its
map becomes the workspace's coarse probabilities (so Iterations, Compare, Filters and Export use
it as t = 0), and an RNN that beat the adapted map on the held-out regions joins the model
history as the current RNN. A cancelled run changes nothing. :func:`use_coarse` switches the
workspace's t = 0 between the shipped and the adapted map.

Workspaces whose classes the shipped CNN fits by merging (background / road: its building is
merged into background) are adapted too: a painted "background" pixel then says "background or
building" (a partial label), and the RNN stage is skipped, as the RNN works in the model's classes.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refiner.app.jobs.base import Backend, JobKind, JobState, job_run
from refiner.app.workspace import COARSE_PROBS, Workspace

SHIPPED_PROBS, ADAPTED_PROBS = "coarse_probs_shipped.tif", "coarse_probs_adapted.tif"
ADAPTED_MODEL = "coarse_adapted"
#: ``models/coarse_history/<id>``: every coarse CNN an adaptation made (the RNNs go to the model history)
COARSE_HISTORY = "coarse_history"
STAGES = ("coarse", "rnn")


@dataclass
class AdaptStatus(JobState):
    """What the Train page shows of an adaptation: the stage, its progress, and the scores at the end."""

    stage: str = ""  # coarse | rnn | scoring
    step: int = 0
    steps: int = 0
    #: seconds each stage may take at most (the coarse stage's and the RNN's budgets): the estimate
    budget: dict = field(default_factory=dict)
    #: mean IoU and IoU per class by method, per score set ("held-out", "reference")
    scores: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)  # seconds each stage took
    stage_elapsed: float = 0.0  # seconds into the current stage
    note: str = ""  # why the RNN stage was skipped or its model not used

    @property
    def fraction(self) -> float:
        """Share of the work done: the stages count by their time budgets, each by its steps."""
        if self.state == "finished":
            return 1.0
        if self.stage not in STAGES:
            return 0.0 if not self.stage else 0.97
        total = sum(self.budget.values()) or 1.0
        before = sum(self.budget.get(s, 0.0) for s in STAGES[: STAGES.index(self.stage)])
        within = self.budget.get(self.stage, 0.0) * (self.step / self.steps if self.steps else 0.0)
        return min(0.97, (before + within) / total)

    @property
    def eta(self) -> float | None:
        """At most how many seconds are left: the budgets of the stages not yet done."""
        if self.stage not in STAGES:
            return None
        i = STAGES.index(self.stage)
        left = sum(self.budget.get(s, 0.0) for s in STAGES[i:])
        return max(0.0, left - self.stage_elapsed)


def _partial_labels(labels: np.ndarray, merge: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, dict[int, tuple]]:
    """Workspace class indices -> the model's, merged classes as partial-label codes (250 + i)."""
    from refiner.core.classes import IGNORE

    out = np.full(labels.shape, IGNORE, np.uint8)
    partial: dict[int, tuple] = {}
    for i, targets in enumerate(merge):
        code = targets[0] if len(targets) == 1 else 250 + i
        if len(targets) > 1:
            partial[code] = tuple(targets)
        out[labels == i] = code
    return out, partial


def run_adapt(workspace: str | Path, job_id: str, seconds: float | None = None) -> dict:
    """Adapt the workspace's coarse CNN, then its RNN, to its tile; returns the final status.

    ``seconds``: the training time both stages may take together (default: their own budgets,
    about a minute in all), shared 3 : 2 between the coarse CNN and the RNN.
    """
    from refiner.app.pretrained import workspace_resolution
    from refiner.models.pretrained import pick_coarse, pick_rnn
    from refiner.models.store import load_model
    from refiner.train.adapt import adapt

    ws = Workspace(Path(workspace))
    cfg = config(seconds)
    status = AdaptStatus(id=job_id, state="running", started=time.time(), budget=budget(cfg))
    with job_run(ws, status, ADAPT.files) as run:
        run.save(force=True)
        pick = pick_coarse(ws.classes, workspace_resolution(ws))
        if pick.model is None or pick.merge is None:
            raise ValueError(f"no shipped coarse CNN to adapt: {pick.reason}")
        coarse = load_model(pick.model.folder, expect="coarse")
        labels, partial = _partial_labels(ws.labels(), pick.merge)
        rnn = None
        if not partial:
            rnn_pick = pick_rnn(coarse.classes, workspace_resolution(ws))
            rnn = load_model(rnn_pick.model.folder, expect="rnn") if rnn_pick.model is not None else None
        stage_t0 = {"t": time.time()}

        def progress(stage: str, rep: Any) -> None:
            if stage != status.stage:
                status.stage, stage_t0["t"] = stage, time.time()
            status.step, status.steps = rep.step, rep.steps
            status.stage_elapsed = time.time() - stage_t0["t"]
            run.save()

        tile = ws.tile()
        result = adapt(tile, labels, coarse, rnn, cfg, partial=partial or None, progress=progress,
                       should_stop=run.cancelled)  # fmt: skip
        if run.cancelled():
            status.state, status.message = "cancelled", "cancelled: the workspace was left as it was"
            return asdict(status)
        status.stage = "scoring"
        run.save(force=True)
        _install(ws, pick, result, cfg.holdout)
        rnn_note = result.rnn_note if rnn is not None else "the RNN stage needs the model's classes; skipped"
        status.note = "; ".join(n for n in (result.coarse_note, rnn_note) if n)
        status.stage_seconds = {k: round(v, 1) for k, v in result.seconds.items()}
        status.scores = adapted_scores(ws)
        status.state = "finished"
        status.message = _final_message(result)
    return asdict(status)


def _install(ws: Workspace, pick: Any, result: Any, holdout: float) -> None:
    """Write the adaptation into the workspace: models, both coarse maps, the held-out regions."""
    from refiner.app import model_history
    from refiner.data.write import write_probs
    from refiner.models.store import save_model

    shipped = ws.path / SHIPPED_PROBS
    if not shipped.is_file() and (ws.settings.get("coarse") or {}).get("model") == pick.model.name:
        shutil.copyfile(ws.path / COARSE_PROBS, shipped)  # the shipped map as the user saw it
    elif not shipped.is_file():
        write_probs(shipped, pick.adapt(result.start_probs), ws.georef, ws.classes)
    save_model(result.coarse, ws.model_dir(ADAPTED_MODEL))
    kept = f"{time.time_ns():020d}"  # every adapted coarse CNN is kept, as every RNN is
    save_model(result.coarse, ws.path / "models" / COARSE_HISTORY / kept)
    adapted = pick.adapt(result.probs)
    write_probs(ws.path / ADAPTED_PROBS, adapted, ws.georef, ws.classes)
    ws.write_holdout(result.holdout)
    ws.update_settings(holdout={"fraction": holdout, "guard_px": None, "by": "adaptation"})
    origin = {"source": "coarse CNN adapted to this tile", "model": ADAPTED_MODEL, "resolution": result.resolution,
              "adapted": result.coarse_adapted}  # fmt: skip
    ws.write_coarse_probs(adapted, origin)
    if result.rnn is not None:
        s = result.scores.get("adapted_rnn")
        val = [] if s is None else [{"step": result.rnn.info.get("best_step") or 0, "mean_iou": s.mean_iou,
                                     "iou": [None if np.isnan(v) else v for v in s.iou]}]  # fmt: skip
        model_history.save_trained(ws, result.rnn, started_from=f"adapted to this tile (coarse CNN {kept})", val=val,
                                   stopped=result.rnn_result.stopped if result.rnn_result else "")  # fmt: skip
    ws.clear_results()


def adapted_scores(ws: Workspace) -> dict[str, dict[str, dict]]:
    """Mean IoU and IoU per class of shipped coarse, adapted coarse, adapted + RNN and the CRF.

    On the held-out painted regions and, when one is attached, on the reference over the whole
    tile; keyed by score set, then method.
    """
    from refiner.app import results
    from refiner.core.metrics import evaluate
    from refiner.data.read import read_probs

    maps: dict[str, np.ndarray] = {}
    if (ws.path / SHIPPED_PROBS).is_file():
        maps["shipped coarse"] = read_probs(ws.path / SHIPPED_PROBS)[0].argmax(0).astype(np.uint8)
    if (ws.path / ADAPTED_PROBS).is_file():
        maps["adapted coarse"] = read_probs(ws.path / ADAPTED_PROBS)[0].argmax(0).astype(np.uint8)
    if ws.has_model("rnn") and active_coarse(ws) == "adapted":
        with contextlib.suppress(ValueError):
            maps["adapted + RNN"] = results.refinement(ws)[-1].argmax(0).astype(np.uint8)
    if active_coarse(ws) == "adapted":
        maps["CRF on adapted"] = results.crf_probs(ws, results.crf_params(ws)).argmax(0).astype(np.uint8)
    out: dict[str, dict[str, dict]] = {}
    names = ws.classes.names
    for kind, labels in (("held-out", results.eval_labels(ws)), ("reference", results.reference_eval(ws))):
        if labels is None:
            continue
        out[kind] = {}
        for method, m in maps.items():
            s = evaluate(m, labels.labels, len(names))
            iou = {n: _num(v) for n, v in zip(names, s.iou, strict=True)}
            out[kind][method] = {"mean_iou": _num(s.mean_iou), "iou": iou}
    return out


def _num(v: float) -> float | None:
    """A score as JSON: NaN (a class absent from truth and prediction) as None."""
    return None if np.isnan(v) else float(v)


def _final_message(result: Any) -> str:
    """What the page says when the adaptation ends: what changed, and the held-out gain."""
    s0, s1, s2 = (result.scores.get(k) for k in ("shipped_coarse", "adapted_coarse", "adapted_rnn"))
    parts = []
    if result.coarse_adapted and s0 is not None and s1 is not None:
        parts.append(f"coarse CNN adapted: held-out mean IoU {s0.mean_iou:.3f} → {s1.mean_iou:.3f}")
    elif result.coarse_note:
        parts.append("the coarse CNN stayed as shipped: the patch alone would have changed the tile's class mix")
    elif not result.coarse_adapted:
        parts.append("the coarse CNN stayed as shipped: no trained weights beat it on the held-out regions")
    if result.rnn is not None and s2 is not None:
        parts.append(f"RNN fine-tuned on the adapted map: {s2.mean_iou:.3f}")
    return "; ".join(parts) or "adapted"


def active_coarse(ws: Workspace) -> str:
    """Which coarse map the workspace uses as t = 0: "adapted", "shipped" (after an adaptation) or "other"."""
    origin = ws.settings.get("coarse") or {}
    if origin.get("model") == ADAPTED_MODEL:
        return "adapted"
    return "shipped" if (ws.path / SHIPPED_PROBS).is_file() else "other"


def use_coarse(ws: Workspace, which: str) -> None:
    """Make the shipped or the adapted coarse map the workspace's t = 0 (both are kept)."""
    from refiner.data.read import read_probs

    if which not in ("shipped", "adapted"):
        raise ValueError(f"pick the shipped or the adapted coarse map, not {which!r}")
    src = ws.path / (SHIPPED_PROBS if which == "shipped" else ADAPTED_PROBS)
    if not src.is_file():
        raise ValueError(f"this workspace has no {which} coarse map yet: run “Adapt to this tile” first")
    probs = read_probs(src)[0]
    if which == "adapted":
        origin = {"source": "coarse CNN adapted to this tile", "model": ADAPTED_MODEL}
    else:
        origin = {"source": "shipped coarse CNN (kept before the adaptation)", "model": "shipped"}
    ws.write_coarse_probs(probs, origin)


def config(seconds: float | None = None) -> Any:
    """The adaptation's settings: :class:`~refiner.train.adapt.AdaptConfig`'s, on a total time budget if given."""
    from refiner.train.adapt import AdaptConfig

    cfg = AdaptConfig()
    if seconds is not None:
        cfg.coarse.max_seconds, cfg.rnn.max_seconds = 0.6 * seconds, 0.4 * seconds
    return cfg


def budget(cfg: Any) -> dict[str, float]:
    """Seconds each stage may take at most (its time budget, plus a few seconds of prediction)."""
    coarse = float(cfg.coarse.max_seconds or 60.0) + 5.0
    rnn = float(cfg.rnn.max_seconds or 60.0) + 5.0
    return {"coarse": coarse, "rnn": rnn}


ADAPT = JobKind(
    "adapt",
    "adaptation",
    AdaptStatus,
    run_adapt,
    interrupted="the server stopped during the adaptation; nothing was changed — start it again",
)


def start_adapt(
    ws: Workspace, seconds: float | None = None, backend: Backend | None = None, others: Any = ()
) -> AdaptStatus:
    """Start "Adapt to this tile" unless a job is already going in this workspace or the session."""
    cfg = config(seconds)
    return ADAPT.start(ws, seconds, backend=backend, others=others, budget=budget(cfg))
