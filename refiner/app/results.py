"""What the app's pages show, computed from a workspace and cached in it.

Refinements (every iteration), CRF maps and scores are cached in ``results/`` under a stamp of
their inputs (model file times, probabilities, parameters), so moving a slider or reopening a
page does not recompute them, and retraining or new probabilities invalidates them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from refiner.app.workspace import Workspace
from refiner.baselines.crf import DEFAULT_GRID, CRFParams, GridSearchResult, dense_crf, grid_search
from refiner.core.classes import IGNORE, check_compatible
from refiner.core.metrics import Scores, evaluate


def refinement(ws: Workspace) -> list[np.ndarray]:
    """The RNN's probabilities at t = 0..T over the tile: a list of (K, H, W) float32."""
    from refiner.models.inference import refine
    from refiner.models.store import load_model

    if not ws.has_model("rnn"):
        raise ValueError("this workspace has no refinement RNN yet: train one on the Train page")
    stamp = refinement_stamp(ws)
    cached = ws.load_result("refinement", stamp)
    if cached is not None:
        return [p.astype(np.float32) for p in cached["probs"]]
    bundle = load_model(ws.model_dir("rnn"), expect="rnn")
    check_compatible(bundle.classes, ws.classes, "the RNN", "this workspace", "train a new one on the Train page")
    out = refine(bundle, ws.tile(), ws.coarse_probs(), keep_all=True)
    ws.save_result("refinement", stamp, probs=np.stack(out.probs).astype(np.float16))
    return out.probs


def shipped_refinement(ws: Workspace) -> tuple[list[np.ndarray], str] | None:
    """Before any fine-tune: the shipped RNN's probabilities at t = 0..T and its name, or None if none fits.

    The pretrained RNN that the Train page would fine-tune (derived for the workspace's classes,
    :func:`refiner.models.pretrained.rnn_for`), so Compare shows a refinement on a fresh workspace
    instead of nothing. Cached per model and coarse map.
    """
    from refiner.models.inference import refine
    from refiner.models.pretrained import pick_rnn, rnn_for

    pick = pick_rnn(ws.classes, (ws.settings.get("source") or {}).get("resolution"))
    if pick.model is None:
        return None
    stamp = f"{pick.model.name}:{(pick.model.folder / 'model.safetensors').stat().st_mtime_ns}:{ws.probs_stamp()}"
    cached = ws.load_result("shipped_refinement", stamp)
    if cached is not None:
        return [p.astype(np.float32) for p in cached["probs"]], pick.model.name
    out = refine(rnn_for(pick.model, ws.classes), ws.tile(), ws.coarse_probs(), keep_all=True)
    ws.save_result("shipped_refinement", stamp, probs=np.stack(out.probs).astype(np.float16))
    return out.probs, pick.model.name


def preset_refinement(ws: Workspace, name: str, **params: float) -> list[np.ndarray]:
    """A hand-set PDE preset's probabilities at t = 0..T (:mod:`refiner.models.presets`).

    Through the same inference as the learned RNN; cached per preset, parameters and coarse map.
    """
    from refiner.models.inference import refine
    from refiner.models.presets import preset_bundle

    stamp = refinement_stamp(ws, name, **params)
    cached = ws.load_result(f"preset_{name}", stamp)
    if cached is not None:
        return [p.astype(np.float32) for p in cached["probs"]]
    tile = ws.tile()
    bundle = preset_bundle(name, ws.classes, tile.image.shape[0], **params)
    out = refine(bundle, tile, ws.coarse_probs(), keep_all=True)
    ws.save_result(f"preset_{name}", stamp, probs=np.stack(out.probs).astype(np.float16))
    return out.probs


def refinement_stamp(ws: Workspace, model: str = "learned", **params: float) -> str:
    """What :func:`model_refinement` of ``model`` is made from: changes whenever its inputs do.

    The learned RNN's file and the coarse map (``learned``), or the coarse map and a preset's
    parameters; the key of the cached result on disk, and of the pages' copies in memory.
    """
    if model == "learned":
        return f"{ws.model_stamp('rnn')}:{ws.probs_stamp()}"
    return f"{ws.probs_stamp()}:{json.dumps(params, sort_keys=True)}"


def model_refinement(ws: Workspace, model: str = "learned", **params: float) -> list[np.ndarray]:
    """``model="learned"``: the workspace's RNN (:func:`refinement`); else a preset's name."""
    return refinement(ws) if model == "learned" else preset_refinement(ws, model, **params)


def label_need(ws: Workspace, labels: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Where labels would help most (:func:`refiner.app.hints.need_map`) and what it was made from.

    The model half (entropy of the refined map, coarse / CRF / RNN disagreement) is cached per
    RNN file and coarse map, so it follows each training run; the distance from the labels is
    recomputed from the current labels.
    """
    from refiner.app import hints

    if not ws.has_coarse():
        raise ValueError("this workspace has no coarse probabilities yet: add them on the Tile page")
    labels = ws.labels() if labels is None else labels
    stamp = f"{ws.model_stamp('rnn')}:{ws.probs_stamp()}:{json.dumps(crf_params(ws).to_dict(), sort_keys=True)}"
    coarse = ws.coarse_probs()
    try:
        refined = refinement(ws)[-1] if ws.has_model("rnn") else None
    except ValueError:
        refined = None  # an RNN for other classes: hint from the coarse map alone
    what = "the RNN's probabilities and where the coarse, CRF and RNN maps disagree"
    if refined is None:
        what = "the coarse probabilities and where the coarse and CRF maps disagree (no RNN yet)"
    cached = ws.load_result("hints", stamp)
    if cached is not None:
        return hints.need_map_from(cached["uncertainty"].astype(np.float32), labels), what
    maps = [coarse.argmax(0), crf_probs(ws, crf_params(ws)).argmax(0)]
    if refined is not None:
        maps.append(refined.argmax(0))
    u = hints.uncertainty(refined if refined is not None else coarse, maps).astype(np.float16)
    ws.save_result("hints", stamp, uncertainty=u)  # float16: the same map fresh or from the cache
    u = u.astype(np.float32)
    return hints.need_map_from(u, labels), what


def crf_probs(ws: Workspace, params: CRFParams) -> np.ndarray:
    """The dense CRF's probabilities (K, H, W) on the coarse ones, with ``params``."""
    stamp = f"{ws.probs_stamp()}:{json.dumps(params.to_dict(), sort_keys=True)}"
    cached = ws.load_result("crf", stamp)
    if cached is not None:
        return cached["probs"].astype(np.float32)
    probs = dense_crf(ws.tile().image, ws.coarse_probs(), params)
    ws.save_result("crf", stamp, probs=probs.astype(np.float16))
    return probs


def crf_params(ws: Workspace) -> CRFParams:
    """The workspace's CRF parameters (set by hand or by a grid search), else the defaults."""
    d = ws.settings.get("crf")
    return CRFParams.from_dict(d) if d else CRFParams()


@dataclass
class EvalLabels:
    """Labels to score maps against, with the words the pages show about them."""

    labels: np.ndarray
    description: str
    title: str = "Held-out painted regions"
    #: Score the one class these labels have against the rest (a reference mask of one class).
    one_vs_rest: bool = False

    @property
    def pixels(self) -> int:
        """Labelled pixels, the count the score tables quote."""
        return int((self.labels != IGNORE).sum())


def eval_labels(ws: Workspace) -> EvalLabels | None:
    """Labels to score maps against: what the last training run held back, else all painted pixels.

    All painted pixels only when no run has used them; None when nothing is labelled.
    """
    held = ws.holdout()
    if held is not None and (held != IGNORE).any():
        guard = (ws.settings.get("holdout") or {}).get("guard_px")
        apart = f", at least {guard} px from any pixel it trained on" if guard else ""
        return EvalLabels(held, f"whole painted regions the last training run held back{apart}")
    labels = ws.labels()
    if not (labels != IGNORE).any():
        return None
    return EvalLabels(labels, "all painted pixels (no training run has held any back yet)", "Painted pixels")


def reference_eval(ws: Workspace) -> EvalLabels | None:
    """The attached reference mask (:mod:`refiner.app.reference`) over the whole tile, or None."""
    from refiner.app import reference

    ref = reference.reference_labels(ws)
    if ref is None or not (ref != IGNORE).any():
        return None
    what = f"the reference, {reference.describe(ws)}, over the whole tile (never trained on)"
    names = ws.classes.names
    has = sorted(set(np.unique(ref[ref != IGNORE]).tolist()) - {0})
    if len(has) == 1 and len(names) > 2:  # a one-class mask: its background is "everything else"
        one, rest = names[has[0]], ", ".join(n for i, n in enumerate(names) if i not in (0, has[0]))
        what += f"; it labels only {one}, so {one} is scored against the rest ({rest} count as {names[0]})"
        return EvalLabels(ref, what, "Reference mask", one_vs_rest=True)
    return EvalLabels(ref, what, "Reference mask")


def score_sets(ws: Workspace) -> list[EvalLabels]:
    """What the pages score on, side by side: the held-out regions, then the reference if attached."""
    return [e for e in (eval_labels(ws), reference_eval(ws)) if e is not None]


#: The IoU cell of a class the labels do not have (no IoU, in no mean).
NOT_LABELLED = "– (not labelled)"


def mean_label(names: tuple[str, ...] | list[str], in_mean: tuple[int, ...]) -> str:
    """``mean IoU (background, road)``: a mean's column says which classes it covers."""
    return f"mean IoU ({', '.join(names[i] for i in in_mean)})"


def score_table(
    maps: dict[str, np.ndarray], truth: np.ndarray, names: tuple[str, ...] | list[str], *, one_vs_rest: bool = False
) -> list[dict]:
    """One row per class map: overall accuracy, mean IoU and IoU per class against ``truth``.

    Every row's mean is over the same classes, those ``truth`` labels, and its column names them;
    a class it does not label has no IoU (:data:`NOT_LABELLED`). ``one_vs_rest``: see
    :func:`refiner.core.metrics.evaluate`.
    """
    rows = []
    for name, m in maps.items():
        s = evaluate(m, truth, len(names), one_vs_rest=one_vs_rest)
        row: dict = {"method": name, "overall accuracy": round(s.overall_accuracy, 4)}
        row[mean_label(names, s.in_mean)] = round(s.mean_iou, 4)
        for n, v in zip(names, s.iou, strict=True):
            row[f"IoU {n}"] = NOT_LABELLED if np.isnan(v) else round(v, 4)
        rows.append(row)
    return rows


def training_labels(ws: Workspace) -> np.ndarray:
    """Painted pixels minus the held-out ones: what a grid search may tune on."""
    labels = ws.labels().copy()
    held = ws.holdout()
    if held is not None:
        labels[held != IGNORE] = IGNORE
    return labels


def iteration_scores(probs: list[np.ndarray], truth: np.ndarray, *, one_vs_rest: bool = False) -> list[Scores]:
    """Scores against ``truth`` of the class map after each iteration (the Iterations page's curve)."""
    k = probs[0].shape[0]
    return map_scores([p.argmax(0).astype(np.uint8) for p in probs], truth, k, one_vs_rest=one_vs_rest)


def map_scores(maps: Sequence[np.ndarray], truth: np.ndarray, k: int, *, one_vs_rest: bool = False) -> list[Scores]:
    """Scores against ``truth`` of each class map (H, W) of ``k`` classes: :func:`iteration_scores` from argmaxes."""
    return [evaluate(m, truth, k, one_vs_rest=one_vs_rest) for m in maps]


def search_crf(
    ws: Workspace,
    grid: dict | None = None,
    *,
    progress: Callable[[int, int, dict, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> GridSearchResult:
    """Grid-search the CRF on the painted (not held-out) labels and keep the best parameters.

    A cancelled search keeps the best it found; ``progress`` gets (done, total, best parameters
    so far, their mean IoU).
    """
    labels = training_labels(ws)
    if not (labels != IGNORE).any():
        raise ValueError("the grid search needs painted labels: paint some on the Label page")
    best: list = []

    def tick(done: int, total: int) -> None:
        if progress:
            progress(done, total, best[0].to_dict(), best[1].mean_iou)

    found = grid_search(
        ws.tile().image, ws.coarse_probs(), labels, grid or DEFAULT_GRID, base=crf_params(ws), progress=tick,
        best_so_far=lambda p, s: best.__setitem__(slice(None), [p, s]), should_stop=should_stop,
    )  # fmt: skip
    if found.trials:  # also a cancelled search's best so far: the user waited for it
        ws.update_settings(crf=found.best.to_dict())
    return found


def current_class_map(ws: Workspace) -> tuple[np.ndarray | None, str]:
    """The best map there is for display: refined when an RNN exists, else the coarse argmax."""
    if not ws.has_coarse():
        return None, ""
    if ws.has_model("rnn"):
        try:
            return refinement(ws)[-1].argmax(0).astype(np.uint8), "refined (RNN)"
        except ValueError:
            pass
    return ws.coarse_probs().argmax(0).astype(np.uint8), "coarse CNN"
