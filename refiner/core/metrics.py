"""Confusion matrix and the scores the paper reports: overall accuracy, IoU per class, mean IoU.

Unlabelled pixels (255) are ignored; mean IoU includes the background class, as in the paper.
A class absent from both prediction and truth has an undefined IoU (NaN) and is left out of the
mean rather than counted as 0 or 1.
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

    def to_dict(self, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The scores as JSON, IoU keyed by class name (an absent class's NaN as None)."""
        return {
            "overall_accuracy": self.overall_accuracy,
            "mean_iou": self.mean_iou,
            "iou": {n: (None if np.isnan(v) else v) for n, v in zip(names, self.iou, strict=True)},
            "pixels": self.pixels,
        }


def scores_from_confusion(cm: np.ndarray) -> Scores:
    """Overall accuracy, IoU per class and their mean from a confusion matrix ``cm[t, p]``; refuses an empty one."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        raise ValueError("no labelled pixels to evaluate on")
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    valid = ~np.isnan(iou)
    return Scores(
        overall_accuracy=float(tp.sum() / total),
        iou=tuple(float(v) for v in iou),
        mean_iou=float(iou[valid].mean()) if valid.any() else float("nan"),
        pixels=int(total),
    )


def evaluate(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> Scores:
    """Scores of a class map against a truth map (both class indices, 255 in truth = ignore).

    Args:
        pred: the predicted class indices (H, W).
        truth: the reference class indices (H, W); 255 (unlabelled) pixels are not scored.
        num_classes: how many classes there are (K).

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
    return scores_from_confusion(confusion_matrix(pred, truth, num_classes))
