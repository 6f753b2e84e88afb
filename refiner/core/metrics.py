"""Confusion matrix and the scores the paper reports: overall accuracy, IoU per class, mean IoU.

Unlabelled pixels (255) are ignored; mean IoU includes the background class, as in the paper.
A class the truth does not label has no IoU (NaN) and is left out of the mean, whatever the
prediction: its IoU would be 0 for a map that predicts it anywhere and undefined for one that
does not, so maps scored on the same truth were averaged over different classes (a road-only
reference: 0.39 over three classes for the RNN, 0.414 over two for the CRF). Its false
positives still count, in the IoU of the classes the truth has there. ``Scores.in_mean`` says
which classes a mean covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refiner.core.classes import IGNORE


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p`` (int64, K x K)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in size")
    valid = truth != IGNORE
    t = truth[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size and (t.max() >= num_classes or p.max() >= num_classes):
        raise ValueError(f"class index out of range for {num_classes} classes")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class Scores:
    """Scores derived from one confusion matrix.

    Attributes:
        overall_accuracy: share of the labelled pixels predicted right.
        iou: intersection over union per class (NaN for a class absent from prediction and truth).
        mean_iou: the mean of the defined IoUs (background included, as in the paper).
        pixels: the labelled pixels scored.

    Example:
        ```python
        scores = refiner.evaluate(class_map, truth, num_classes=3)
        print(f"OA {scores.overall_accuracy:.3f}, mean IoU {scores.mean_iou:.3f}")
        report = scores.to_dict(classes.names)  # JSON, IoU keyed by class name
        ```
    """

    overall_accuracy: float
    iou: tuple[float, ...]
    mean_iou: float
    pixels: int
    #: The classes the mean IoU is over: those the truth labels.
    in_mean: tuple[int, ...] = ()

    def to_dict(self, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The scores as JSON, IoU keyed by class name (an absent class's NaN as None)."""
        return {
            "overall_accuracy": self.overall_accuracy,
            "mean_iou": self.mean_iou,
            "iou": {n: (None if np.isnan(v) else v) for n, v in zip(names, self.iou, strict=True)},
            "pixels": self.pixels,
            "mean_over": [names[i] for i in self.in_mean],
        }


def scores_from_confusion(cm: np.ndarray) -> Scores:
    """Overall accuracy, IoU per class and their mean from a confusion matrix ``cm[t, p]``; refuses an empty one."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        raise ValueError("no labelled pixels to evaluate on")
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    labelled = cm.sum(1) > 0  # classes the truth has: the only ones with a meaningful IoU
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(labelled, tp / union, np.nan)
    return Scores(
        overall_accuracy=float(tp.sum() / total),
        iou=tuple(float(v) for v in iou),
        mean_iou=float(iou[labelled].mean()),
        pixels=int(total),
        in_mean=tuple(int(i) for i in np.flatnonzero(labelled)),
    )


def one_class_against_the_rest(pred: np.ndarray, truth: np.ndarray, background: int = 0) -> np.ndarray:
    """``pred`` with every class but the truth's one foreground class counted as ``background``.

    For a truth that labels one class and the rest (a 0/255 road mask: road and not-road), a
    map's building pixels are "not road", right where the truth says background. A truth that
    labels other classes too gets ``pred`` back unchanged.
    """
    classes = set(np.unique(truth[truth != IGNORE]).tolist()) - {background}
    if len(classes) != 1:
        return pred
    (one,) = classes
    return np.where(pred == one, one, background).astype(pred.dtype)


def evaluate(pred: np.ndarray, truth: np.ndarray, num_classes: int, *, one_vs_rest: bool = False) -> Scores:
    """Scores of a class map against a truth map (both class indices, 255 in truth = ignore).

    Args:
        pred: the predicted class indices (H, W).
        truth: the reference class indices (H, W); 255 (unlabelled) pixels are not scored.
        num_classes: how many classes there are (K).
        one_vs_rest: a truth of background and one class scores that class against the rest
            (:func:`one_class_against_the_rest`), for a reference mask of one class.

    Returns:
        Overall accuracy, IoU per class and mean IoU (:class:`Scores`).

    Raises:
        ValueError: the maps differ in size, a class index is K or more, or no pixel is labelled.

    Example:
        ```python
        refined = refiner.refine(rnn, tile, probs)
        scores = refiner.evaluate(refined.class_map(), truth, len(rnn.classes))
        ```
    """
    if one_vs_rest:
        pred = one_class_against_the_rest(np.asarray(pred), np.asarray(truth))
    return scores_from_confusion(confusion_matrix(pred, truth, num_classes))


#: Distance bins of :func:`errors_by_boundary_distance`: 1 is a pixel next to another true class,
#: then 2, 3-4, 5-8, 9-16, 17-32 and over 32 pixels inside a region.
DISTANCE_BINS = (1, 2, 3, 5, 9, 17, 33)


def errors_by_boundary_distance(
    before: np.ndarray, after: np.ndarray, truth: np.ndarray, bins: tuple[int, ...] = DISTANCE_BINS
) -> list[dict[str, Any]]:
    """Where a refinement fixes and makes errors: by distance to the nearest boundary of the truth.

    ``before`` and ``after`` are class maps (e.g. the coarse map and the RNN's), ``truth`` the
    labels (255 = unlabelled, left out). A pixel's distance is the Euclidean distance to the
    nearest pixel of another true class, so 1 is a pixel on a boundary and far means inside a
    region: the RNN, whose reach is a few pixels, can only fix errors near boundaries, the
    coarse CNN must get the rest. One row per bin ``[lo, hi)`` (the last open-ended): pixels,
    errors before and after, errors fixed (wrong before, right after) and made (the reverse).
    """
    from scipy import ndimage

    labelled = truth != IGNORE
    dist = np.full(truth.shape, np.inf)
    for c in np.unique(truth[labelled]):
        inside = truth == c
        # distance from a pixel of class c to the nearest labelled pixel of another class
        other = labelled & ~inside
        if other.any():
            d = ndimage.distance_transform_edt(~other)
            dist[inside] = d[inside]
    wrong_before, wrong_after = (before != truth) & labelled, (after != truth) & labelled
    rows = []
    edges = [*bins, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = labelled & (dist >= lo) & (dist < hi)
        rows.append({
            "from": lo, "to": None if hi == np.inf else hi, "pixels": int(sel.sum()),
            "errors_before": int((wrong_before & sel).sum()), "errors_after": int((wrong_after & sel).sum()),
            "fixed": int((wrong_before & ~wrong_after & sel).sum()),
            "made": int((~wrong_before & wrong_after & sel).sum()),
        })  # fmt: skip
    return rows
