"""Adapting the coarse CNN to one tile from a painted patch (the first stage of :func:`refiner.adapt`).

A CNN trained on Massachusetts and a few other cities finds little on imagery from elsewhere
(building IoU 0.07 on a 0.3 m tile from China). The RNN cannot fix that: it sharpens a map that
found the objects. So the painted pixels retrain the recogniser itself, as labelling tools do
(Microsoft's land-cover tool refits its classifier from a user's clicks):

- **on a fine grid**: a 300 x 300 px patch of a 0.3 m tile is only 90 x 90 px at the model's 1 m,
  and fine-tuning there lifted mIoU on the rest of the tile by 0.02 where the tile's own grid gave
  0.07 (measured before this module); the adaptation grid is the tile's own when it is finer than
  the model's (``CoarseAdaptConfig.grid``), and the adapted model keeps that resolution;
- **early layers frozen and cached**: their features on the patch are computed once, and only the
  last layers learn, on the whole patch at once (full-batch steps of a few milliseconds instead of
  a forward and backward pass through the whole network per batch);
- **held-out painted regions decide**: whole painted regions are held back (as for the RNN), the
  weights that score best on them are kept, and the shipped model itself is the first candidate,
  so the adapted map is never worse than the start on them;
- **distillation** towards the shipped model's map on the unpainted pixels around the patch
  keeps what it knew where the patch says nothing (weight ``distill``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from refiner.core.classes import IGNORE
from refiner.core.metrics import Scores
from refiner.models.coarse import CoarseNet, CoarseSplit, check_part
from refiner.models.store import ModelBundle
from refiner.train.loop import BestWeights, Progress, ProgressFn, stop_reason
from refiner.train.losses import allowed_table, partial_label_loss
from refiner.train.rnn import held_out_scores


@dataclass
class CoarseAdaptConfig:
    """How the coarse CNN is adapted to a tile (defaults chosen on development tiles: docs/results.md)."""

    #: "tile": the tile's own grid when finer than the model's (else the model's); "model": the
    #: model's grid; or a number of metres per pixel
    grid: str | float = "tile"
    layers: str = "head"  # which part learns: refiner.models.coarse.TRAINABLE_PARTS
    steps: int = 200
    lr: float = 3e-3  # Adam on full batches
    weight_decay: float = 0.0
    holdout: float = 0.25  # fraction of painted pixels held back (whole regions) to choose the weights
    distill: float = 0.1  # KL pull towards the shipped map on unpainted pixels near the patch
    margin: int = 48  # unpainted pixels (adaptation grid) around the painted ones that are distilled
    eval_every: int = 5
    patience: int = 6  # evaluations without gain before stopping
    max_seconds: float | None = 30.0
    seed: int = 0


@dataclass
class CoarseAdaptResult:
    """The adapted coarse model with its held-out scores (start and best) and why it ended."""

    bundle: ModelBundle
    start_val: Scores | None
    best_val: Scores | None
    adapted: bool  # False: the start did best on the held-out pixels, ``bundle`` is the start
    steps: int
    seconds: float
    stopped: str = "finished"  # finished | early_stopping | time_budget | cancelled
    history: list[dict] = field(default_factory=list)


def _crop_box(mask: np.ndarray, pad: int, align: int) -> tuple[slice, slice]:
    """Rows and columns of the box around ``mask`` plus ``pad``, its corner on an ``align`` grid."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    r0 = max(0, int(ys.min()) - pad) // align * align
    c0 = max(0, int(xs.min()) - pad) // align * align
    return slice(r0, min(h, int(ys.max()) + 1 + pad)), slice(c0, min(w, int(xs.max()) + 1 + pad))


@dataclass
class _Problem:
    """The patch as the trainable layers see it: cached features, targets and held-out labels.

    Everything is cropped to the box around the painted pixels (plus the distillation margin
    and the trainable layers' reach); ``size`` is the crop's (height, width). The features cover
    that size rounded up to the stride, as the network computes it.
    """

    feats: tuple[torch.Tensor, ...]
    size: tuple[int, int]
    train: torch.Tensor  # (1, h, w) labels to learn
    val: np.ndarray  # (h, w) held-out labels
    near: torch.Tensor  # (1, h, w) unpainted pixels distilled towards the start's map
    log_target: torch.Tensor  # (1, K, h, w) the start's log-probabilities
    start_pred: np.ndarray  # (h, w) the start's class map

    bias: torch.Tensor | None  # the network's class offsets (K, 1, 1)

    def scores(self, top: torch.nn.Module) -> torch.Tensor:
        """The trainable top's class scores (1, K, h, w) on the crop, offsets added."""
        h, w = self.size
        scores = top(self.feats)[..., :h, :w]
        return scores if self.bias is None else scores + self.bias


def _prepare(
    image: np.ndarray,
    labels: np.ndarray,
    val_labels: np.ndarray,
    start_probs: np.ndarray,
    coarse: ModelBundle[CoarseNet],
    split: CoarseSplit,
    margin: int,
) -> _Problem:
    """Crop around the painted pixels and run the frozen trunk once (exact: a full halo around)."""
    net = coarse.net
    stride = net.cfg.stride
    used = (labels != IGNORE) | (val_labels != IGNORE)
    rows, cols = _crop_box(used, margin + net.cfg.halo, stride)
    img = torch.from_numpy(np.ascontiguousarray(image[:, rows, cols], dtype=np.float32))[None]
    h, w = img.shape[-2:]
    x = coarse.normalise(F.pad(img, (0, (-w) % stride, 0, (-h) % stride), mode="replicate"))
    with torch.no_grad():
        feats = split.trunk(x)
    # from here on only the pixels the loss, the distillation and the held-out scores need, plus
    # the top's reach: the trunk's halo was only needed to make these features exact
    inner_r, inner_c = _crop_box(used[rows, cols], margin + split.reach, stride)
    ph = -(-(inner_r.stop - inner_r.start) // stride) * stride  # the inner box rounded up to the stride
    pw = -(-(inner_c.stop - inner_c.start) // stride) * stride
    feats = tuple(
        f[..., inner_r.start // s : (inner_r.start + ph) // s, inner_c.start // s : (inner_c.start + pw) // s]
        for f, s in zip(feats, split.strides, strict=True)
    )
    rows = slice(rows.start + inner_r.start, rows.start + inner_r.stop)
    cols = slice(cols.start + inner_c.start, cols.start + inner_c.stop)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    val = val_labels[rows, cols]
    near = _near(used[rows, cols], margin) & (labels[rows, cols] == IGNORE) & (val == IGNORE)
    target = torch.from_numpy(np.ascontiguousarray(start_probs[:, rows, cols], dtype=np.float32))[None]
    train = torch.from_numpy(labels[rows, cols].astype(np.int64))[None]
    start_pred = start_probs[:, rows, cols].argmax(0).astype(np.uint8)
    near_t = torch.from_numpy(near)[None]
    bias = None if net.cfg.class_bias is None else torch.tensor(net.cfg.class_bias)[:, None, None]
    return _Problem(feats, (h, w), train, val, near_t, target.clamp_min(1e-6).log(), start_pred, bias)


def _loss(s: torch.Tensor, prob: _Problem, allowed: torch.Tensor, partial: bool, distill: float) -> torch.Tensor:
    """Cross-entropy (partial-label with codes) on the painted pixels, plus the distillation pull."""
    if partial:
        loss = partial_label_loss(s, prob.train, allowed)
    else:
        loss = F.cross_entropy(s, prob.train, ignore_index=IGNORE)
    if distill > 0 and bool(prob.near.any()):
        kl = F.kl_div(F.log_softmax(s, 1), prob.log_target, log_target=True, reduction="none").sum(1)
        loss = loss + distill * kl[prob.near].mean()
    return loss


def adapt_coarse(
    image: np.ndarray,
    labels: np.ndarray,
    val_labels: np.ndarray,
    start_probs: np.ndarray,
    coarse: ModelBundle[CoarseNet],
    cfg: CoarseAdaptConfig = CoarseAdaptConfig(),
    *,
    resolution: float | None,
    partial: Mapping[int, Sequence[int]] | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CoarseAdaptResult:
    """Fine-tune ``coarse``'s top layers on painted ``labels`` of one tile, on the adaptation grid.

    ``image`` (C, H, W) in [0, 1], ``labels`` (training part) and ``val_labels`` (held-out
    regions), and ``start_probs`` (K, H, W: the start's map, the distillation target and the
    first candidate) all lie on the adaptation grid, of ``resolution`` metres per pixel (the
    adapted model's). Returns the start itself when no trained weights beat it on the held-out
    pixels.
    """
    check_part(cfg.layers)
    if cfg.steps < 1:
        raise ValueError(f"steps {cfg.steps} is below 1 — give at least 1")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    allowed = allowed_table(len(coarse.classes), partial)
    # a copy learns (its top's modules are its own); the start is left as it was
    net = copy.deepcopy(coarse.net).cpu().eval()
    split = net.split(cfg.layers)
    head = split.top
    prob = _prepare(image, labels, val_labels, start_probs, coarse, split, cfg.margin)
    has_val = bool((prob.val != IGNORE).any())

    def held_out(pred: np.ndarray) -> Scores | None:
        return held_out_scores(pred, prob.val, allowed, bool(partial)) if has_val else None

    start_val = held_out(prob.start_pred)
    # the start is the first candidate (it has no weights of its own here: it is ``coarse``)
    best = BestWeights(min_delta=1e-4, score=start_val.mean_iou if start_val is not None else -float("inf"))
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = CoarseAdaptResult(coarse, start_val, start_val, False, 0, 0.0)
    stale, step = 0, 0
    # the network stays in eval mode while it learns: batch norm keeps the statistics of its
    # training data (one patch is too small a batch to estimate them)
    for step in range(1, cfg.steps + 1):
        if should_stop():
            result.stopped, step = "cancelled", step - 1
            break
        loss = _loss(prob.scores(head), prob, allowed, bool(partial), cfg.distill)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        report = Progress(step, cfg.steps, float(loss.item()), time.perf_counter() - t0)
        last = step == cfg.steps or (cfg.max_seconds is not None and report.seconds >= cfg.max_seconds)
        if step % cfg.eval_every == 0 or last:
            if not has_val:  # nothing held out: the last weights are the result
                best.keep(head, float("nan"), step)
            else:
                with torch.no_grad():
                    report.val = held_out(prob.scores(head)[0].argmax(0).numpy().astype(np.uint8))
                assert report.val is not None
                improved = best.offer(head, report.val.mean_iou, step)
                stale, result.best_val = (0, report.val) if improved else (stale + 1, result.best_val)
                report.best_val = best.score
            result.history.append({"step": step, "loss": report.loss, "val": report.val and report.val.mean_iou})
        if progress and (step % 5 == 0 or report.val is not None or last):
            progress(report)
        result.stopped = stop_reason(cfg.patience, cfg.steps, stale, last, step) or result.stopped
        if result.stopped != "finished":
            break
    result.steps, result.seconds = step, time.perf_counter() - t0
    if best.restore(head):  # else the start did best (or nothing ran): ``coarse`` stands
        result.bundle, result.adapted = _adapted_bundle(coarse, net, resolution, cfg, result, best.step), True
    return result


def _adapted_bundle(
    coarse: ModelBundle[CoarseNet],
    net: CoarseNet,
    resolution: float | None,
    cfg: CoarseAdaptConfig,
    result: CoarseAdaptResult,
    best_step: int | None,
) -> ModelBundle[CoarseNet]:
    """A copy of ``coarse`` carrying ``net`` (the trained copy), at the adaptation grid's ``resolution``."""
    adapted = copy.deepcopy(coarse)
    adapted.net = net.eval()
    adapted.resolution = resolution
    adapted.info = {
        **{k: v for k, v in coarse.info.items() if k not in ("best_step", "best_val")},
        "adapted_from": coarse.info.get("name", "coarse"),
        "adapt_config": cfg.__dict__.copy(),
        "adapt_steps": result.steps,
        "adapt_best_step": best_step,
        "adapt_val_mean_iou": None if result.best_val is None else result.best_val.mean_iou,
        "adapt_start_val_mean_iou": None if result.start_val is None else result.start_val.mean_iou,
    }
    return adapted


def _near(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels within ``distance`` (chessboard) of ``mask``."""
    from scipy import ndimage

    return ndimage.distance_transform_cdt(~mask, metric="chessboard") <= distance
