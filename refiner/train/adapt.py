"""Adapting the whole pipeline to a user's tile from one painted patch: coarse CNN, then RNN.

:func:`adapt` is what "Adapt to this tile" in the app and ``refiner adapt`` run:

1. the painted pixels are split into training and held-out regions (whole regions, a guard band
   apart: :func:`~refiner.train.sampling.split_holdout`);
2. the coarse CNN's top layers are fine-tuned on the adaptation grid
   (:func:`~refiner.train.adapt_coarse.adapt_coarse`), never ending worse than the start on the
   held-out regions;
3. the RNN is fine-tuned on the *adapted* map, so it corrects what that map still gets wrong, and
   it is kept only if it beats the adapted map on the held-out regions (else ``rnn`` is None and
   ``rnn_note`` says so: an RNN that makes the map worse is no refinement).

Both models work on the adaptation grid (the tile's own when finer than the model's) and carry
that resolution, so :func:`~refiner.models.inference.predict_coarse` and
:func:`~refiner.models.inference.refine` use them on the tile as they would the shipped ones.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from refiner.core.classes import IGNORE
from refiner.core.metrics import Scores
from refiner.data.resample import probs_to_grid, resolution_differs, to_working
from refiner.data.tile import Tile, grid_of
from refiner.models.coarse import CoarseNet, check_part
from refiner.models.inference import predict_coarse
from refiner.models.rnn import RefinerRNN
from refiner.models.store import ModelBundle
from refiner.train.adapt_coarse import CoarseAdaptConfig, CoarseAdaptResult, adapt_coarse
from refiner.train.loop import Progress
from refiner.train.losses import allowed_table
from refiner.train.rnn import (
    FINETUNE_DEFAULTS,
    RNNTrainConfig,
    RNNTrainResult,
    held_out_scores,
    train_rnn,
    zero_update,
)
from refiner.train.sampling import NoLabelsError, split_holdout

#: The RNN stage's fine-tune: the patch defaults from the identity start (``rnn_start``), on a
#: wall-clock budget so the whole adaptation of a 1024^2 tile stays within about a minute on two
#: cores. From du = 0 the paper's learning rate (0.01) is safe, and the distillation pulls towards
#: the adapted map itself (the identity's output) where the patch says nothing. Gains are small
#: either way (docs/results.md): on the dev tiles WHU Cairo and Milan the RNN stage moved mean IoU
#: on the rest of the tile by +0.0003 / +0.0012 from this start, +0.0027 / (not run) from the
#: shipped RNN's own.
ADAPT_RNN_DEFAULTS = replace(FINETUNE_DEFAULTS, lr=0.01, distill=1.0, eval_every=10, max_seconds=20.0)


@dataclass
class AdaptConfig:
    """Both stages' settings, and how the painted pixels are split.

    Example:
        ```python
        from refiner.train.adapt_coarse import CoarseAdaptConfig

        cfg = refiner.AdaptConfig(coarse=CoarseAdaptConfig(max_seconds=60.0), holdout=0.3)
        result = refiner.adapt(tile, labels, coarse, rnn, cfg)
        ```
    """

    coarse: CoarseAdaptConfig = field(default_factory=CoarseAdaptConfig)
    rnn: RNNTrainConfig = field(default_factory=lambda: copy.copy(ADAPT_RNN_DEFAULTS))
    holdout: float = 0.25  # fraction of painted pixels held back, as whole regions
    guard: int = 8  # px (adaptation grid) between training and held-out pixels
    #: "identity": the RNN starts from the given one's filters with its update zeroed (du = 0,
    #: the refined map equals the adapted coarse map until the patch teaches otherwise);
    #: "given": from the given RNN as it is
    rnn_start: str = "identity"
    #: The class-mix guard (:func:`class_mix_shift`): the adapted coarse CNN is refused when its
    #: share of a painted class on the unpainted tile leaves the range between the start's share
    #: and the patch's own by more than this; None turns the guard off
    mix_tolerance: float | None = 0.1
    seed: int = 0


@dataclass
class Adaptation:
    """What :func:`adapt` returns: both models, held-out scores per stage and seconds per stage.

    ``coarse`` is the adapted coarse CNN (the start itself when no trained weights beat it on the
    held-out regions); ``rnn`` the RNN fine-tuned on its map, or None when it did not beat that
    map there (``rnn_note`` says why). ``scores`` are on the held-out painted regions, by stage:
    ``shipped_coarse``, ``adapted_coarse``, ``adapted_rnn`` (None where not measured).

    Example:
        ```python
        result = refiner.adapt(tile, labels, coarse, rnn)
        print(result.summary())  # held-out mean IoU per stage, seconds per stage
        refiner.save_model(result.coarse, "adapted/coarse")
        ```
    """

    coarse: ModelBundle[CoarseNet]
    rnn: ModelBundle[RefinerRNN] | None
    resolution: float | None  # metres per pixel of the adaptation grid (both models')
    scores: dict[str, Scores | None]
    seconds: dict[str, float]
    coarse_adapted: bool
    holdout: np.ndarray  # (H, W) the held-out painted regions on the tile's grid (255 elsewhere)
    rnn_note: str = ""
    coarse_note: str = ""  # why the adapted coarse CNN was not used (the class-mix guard), if so
    #: the start's and the adapted coarse CNN's probabilities (K, H, W) on the tile's own grid,
    #: computed anyway: callers need not predict them again
    start_probs: np.ndarray | None = None
    probs: np.ndarray | None = None
    coarse_result: CoarseAdaptResult | None = None
    rnn_result: RNNTrainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """Scores, seconds and what was kept, as JSON (``adapt.json`` beside the models)."""
        names = self.coarse.classes.names
        return {
            "resolution": self.resolution,
            "coarse_adapted": self.coarse_adapted,
            "rnn_kept": self.rnn is not None,
            "rnn_note": self.rnn_note,
            "coarse_note": self.coarse_note,
            "held_out": {k: (None if v is None else v.to_dict(names)) for k, v in self.scores.items()},
            "seconds": dict(self.seconds),
        }

    def summary(self) -> str:
        """One line per stage: held-out mean IoU and seconds."""
        lines = []
        labels = {"shipped_coarse": "start", "adapted_coarse": "adapted coarse CNN", "adapted_rnn": "adapted + RNN"}
        for key, label in labels.items():
            s = self.scores.get(key)
            if s is not None:
                lines.append(f"{label}: held-out mean IoU {s.mean_iou:.3f}")
        lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        for note in (self.coarse_note, self.rnn_note):
            if note:
                lines.append(f"note: {note}")
        return "\n".join(lines)


StageFn = Callable[[str, Progress], None]


def adaptation_resolution(tile: Tile, model_resolution: float | None, grid: str | float = "tile") -> float | None:
    """The adaptation grid's metres per pixel: the tile's own when finer than the model's (``grid="tile"``).

    A tile coarser than the model, or without a known resolution, is adapted on the model's grid.
    """
    if grid == "model":
        return model_resolution
    if grid != "tile":
        return float(grid)
    res = tile.resolution
    if res is None or model_resolution is None or not resolution_differs(res, model_resolution):
        return model_resolution
    return min(res, model_resolution)


#: The least share of the painted pixels each painted label must have: a 100 x 100 px patch of
#: WHU Santiago that was 99.5 % roof taught the adapted CNN to call most of the tile building
#: (mean IoU on the rest 0.60 -> 0.12; docs/results.md).
MIN_SHARE = 0.01


def check_painted(labels: np.ndarray, shape: tuple[int, int], num_classes: int) -> None:
    """Refuse labels that cannot teach anything, before any work.

    Sizes must match the tile; there must be painted pixels, at least two different label values
    (one class alone gives nothing to tell apart), each at least :data:`MIN_SHARE` of them.
    """
    if labels.shape != tuple(shape):
        raise ValueError(
            f"the labels are {labels.shape[0]}x{labels.shape[1]} px but the tile is {shape[0]}x{shape[1]}: "
            "paint on this tile (or give a mask of its size)"
        )
    values = np.unique(labels[labels != IGNORE])
    if values.size == 0:
        raise NoLabelsError("no painted pixel: paint a patch with every class that occurs in it first")
    if values.size < 2:
        raise ValueError(
            f"only one class is painted (label {int(values[0])}): paint the other classes of the patch too, "
            "the adaptation learns what tells them apart"
        )
    counts = np.array([(labels == v).sum() for v in values])
    if counts.min() < MIN_SHARE * counts.sum():
        v = int(values[counts.argmax()])
        raise ValueError(
            f"the patch is {counts.max() / counts.sum():.1%} one label ({v}): paint more of the other classes "
            f"(at least {MIN_SHARE:.0%} of the painted pixels each), or the adaptation learns that everything is that"
        )
    bad = [int(v) for v in values if v >= num_classes and v < 250]
    if bad:
        raise ValueError(f"the labels hold value(s) {bad} that are not class indices (0..{num_classes - 1})")


def _held_out(pred: np.ndarray, val: np.ndarray, allowed: torch.Tensor, partial: bool) -> Scores | None:
    return held_out_scores(pred, val, allowed, partial) if (val != IGNORE).any() else None


def adapt(
    tile: Tile,
    labels: np.ndarray,
    coarse: ModelBundle[CoarseNet],
    rnn: ModelBundle[RefinerRNN] | None = None,
    cfg: AdaptConfig | None = None,
    *,
    partial: Mapping[int, Sequence[int]] | None = None,
    progress: StageFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Adaptation:
    """Adapt the coarse CNN, then the RNN, to ``tile`` from its painted ``labels``.

    Args:
        tile: the user's tile (any resolution; a picture needs its ``pixel_size`` stated to be
            adapted on its own grid).
        labels: (H, W) class indices on the tile's grid, 255 where unpainted (partial-label codes
            allowed with ``partial``).
        coarse: the coarse CNN to start from (e.g. the shipped ``coarse_1m``).
        rnn: the RNN to start the second stage from (e.g. the shipped ``rnn_1m``); None skips it.
        cfg: both stages' settings (:class:`AdaptConfig`).
        partial: partial-label codes and the classes each allows.
        progress: called with the stage name ("coarse" or "rnn") and each training report.
        should_stop: polled between steps; True cancels (the models so far are returned).

    Returns:
        An :class:`Adaptation` with ``.coarse`` and ``.rnn`` model bundles, held-out scores and
        seconds per stage.

    Raises:
        ValueError: labels of another size, nothing painted, only one class painted, models
            whose classes differ, or a coarse part to train that no design has.

    Example:
        ```python
        tile = refiner.read_image("tile.png")
        tile.pixel_size = 0.3  # a picture without georeferencing: say its resolution
        coarse = refiner.load_model(refiner.pretrained_root() / "coarse_1m")
        rnn = refiner.load_model(refiner.pretrained_root() / "rnn_1m")
        labels = refiner.read_labels("painted.png", coarse.classes, like=tile)  # 255 = unpainted
        result = refiner.adapt(tile, labels, coarse, rnn)
        probs = refiner.predict_coarse(result.coarse, tile)
        refined = refiner.refine(result.rnn, tile, probs) if result.rnn else None
        ```
    """
    cfg = cfg or AdaptConfig()
    k = len(coarse.classes)
    check_painted(labels, tile.shape, k)
    check_part(cfg.coarse.layers)
    if rnn is not None and list(rnn.classes.names) != list(coarse.classes.names):
        raise ValueError(
            f"the RNN's classes {list(rnn.classes.names)} differ from the coarse CNN's {list(coarse.classes.names)}"
        )
    allowed = allowed_table(k, partial)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    start_probs = predict_coarse(coarse, tile)
    seconds["shipped_predict"] = time.perf_counter() - t0

    res = adaptation_resolution(tile, coarse.resolution, cfg.coarse.grid)
    # held-out regions chosen on the tile's grid (where the app scores), the guard in its pixels
    scale = res / tile.resolution if res and tile.resolution else 1.0
    train_tile, val_tile = split_holdout(labels, cfg.holdout, guard=math.ceil(cfg.guard * scale), seed=cfg.seed)
    if not (train_tile != IGNORE).any():
        train_tile, val_tile = labels, np.full_like(labels, IGNORE)
    work = to_working(tile, res, start_probs, [train_tile, val_tile])
    assert work.probs is not None
    train_labels, val_labels = work.labels

    def report(stage: str) -> Callable[[Progress], None] | None:
        return None if progress is None else (lambda p: progress(stage, p))

    t1 = time.perf_counter()
    stage1 = adapt_coarse(
        work.tile.image, train_labels, val_labels, work.probs, coarse, cfg.coarse, resolution=res,
        partial=partial, progress=report("coarse"), should_stop=should_stop,
    )  # fmt: skip
    adapted_probs = predict_coarse(stage1.bundle, work.tile) if stage1.adapted else work.probs
    mix_note = ""
    if stage1.adapted and cfg.mix_tolerance is not None:
        mix_note = class_mix_shift(
            work.probs, adapted_probs, work.labels[0], work.tile.valid, coarse.classes.names, cfg.mix_tolerance
        )
        if mix_note:  # a small patch is no sample of the tile: the start stands
            stage1.bundle, stage1.adapted, adapted_probs = coarse, False, work.probs
    seconds["coarse"] = time.perf_counter() - t1
    scores: dict[str, Scores | None] = {
        "shipped_coarse": stage1.start_val,
        "adapted_coarse": _held_out(adapted_probs.argmax(0).astype(np.uint8), val_labels, allowed, bool(partial)),
        "adapted_rnn": None,
    }
    out = Adaptation(stage1.bundle, None, res, scores, seconds, stage1.adapted, val_tile, coarse_result=stage1)
    out.coarse_note, out.start_probs = mix_note, start_probs
    if not stage1.adapted:
        out.probs = start_probs
    else:
        out.probs = adapted_probs if work.tile is tile else _on_tile_grid(adapted_probs, work.tile, tile)
    if rnn is None:
        out.rnn_note = "no RNN to start from"
        return out
    if should_stop():
        out.rnn_note = "cancelled before the RNN stage"
        return out
    t2 = time.perf_counter()
    start = copy.deepcopy(rnn)
    start.resolution = res
    if cfg.rnn_start == "identity":
        zero_update(start.net)
    start.net.train()
    stage2 = train_rnn(
        work.tile.image, adapted_probs, train_labels, rnn.classes, cfg.rnn, init=start, resolution=res,
        progress=report("rnn"), should_stop=should_stop, partial=partial,
        val_labels=val_labels if (val_labels != IGNORE).any() else None,
    )  # fmt: skip
    seconds["rnn"] = time.perf_counter() - t2
    out.rnn_result = stage2
    scores["adapted_rnn"] = _rnn_held_out(stage2.bundle, work.tile, adapted_probs, val_labels, allowed, bool(partial))
    base, refined = scores["adapted_coarse"], scores["adapted_rnn"]
    if base is not None and refined is not None and refined.mean_iou <= base.mean_iou:
        out.rnn_note = (
            f"the fine-tuned RNN did not beat the adapted coarse map on the held-out painted pixels "
            f"(mean IoU {refined.mean_iou:.3f} against {base.mean_iou:.3f}), so it is not used"
        )
        return out
    stage2.bundle.info = {**stage2.bundle.info, "adapted_coarse": True, "adapt_resolution": res}
    out.rnn = stage2.bundle
    return out


def _on_tile_grid(probs: np.ndarray, work: Tile, tile: Tile) -> np.ndarray:
    """Probabilities on the adaptation grid brought back to the tile's, as :func:`predict_coarse` does."""
    src, dst = grid_of(work), grid_of(tile)
    assert src is not None and dst is not None  # resampled, so both grids are known
    return probs_to_grid(probs, src, dst, tile.shape)


def _rnn_held_out(
    bundle: ModelBundle[RefinerRNN],
    tile: Tile,
    probs: np.ndarray,
    val: np.ndarray,
    allowed: torch.Tensor,
    partial: bool,
) -> Scores | None:
    """The RNN's held-out scores on the adaptation grid (``tile`` and ``probs`` lie on it)."""
    if not (val != IGNORE).any():
        return None
    from refiner.models.inference import refine

    refined = refine(bundle, tile, probs)
    return _held_out(refined.class_map(), val, allowed, partial)


def class_mix_shift(
    start: np.ndarray,
    adapted: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    names: Sequence[str],
    tolerance: float,
) -> str:
    """Why the adapted map's class mix on the unpainted tile is not credible, or "" when it is.

    The held-out regions lie inside the patch, so they cannot tell a model that learnt the tile
    from one that learnt the patch: on 100 x 100 px patches of WHU Santiago and Taiwan (issue
    #20's benchmark, docs/results.md) the adapted map called most of the rest of the tile
    building while scoring well on the held-out roofs (mean IoU 0.60 -> 0.12). A class the
    patch labels exactly (not only by a partial "not ..." code) may cover, on the unpainted valid
    pixels, a share between the start's and the patch's own, give or take ``tolerance``; more or
    less than that is what the patch alone taught.
    """
    free = valid & (labels == IGNORE)
    painted = labels[labels != IGNORE]
    if not free.any() or painted.size == 0:
        return ""
    before, after = start.argmax(0)[free], adapted.argmax(0)[free]
    for k, name in enumerate(names):
        if not (painted == k).any():
            continue  # only "not ..." codes, or absent: the patch says nothing of its share
        share_start, share_after = float((before == k).mean()), float((after == k).mean())
        share_patch = float((painted == k).mean())
        low, high = min(share_start, share_patch) - tolerance, max(share_start, share_patch) + tolerance
        if not low <= share_after <= high:
            return (
                f"the adapted coarse CNN was not used: it would cover {share_after:.0%} of the unpainted tile with "
                f"{name}, where the shipped map covers {share_start:.0%} and the patch {share_patch:.0%} — "
                "paint a larger or more varied patch (a few regions with every class)"
            )
    return ""
