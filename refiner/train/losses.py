"""Losses: cross-entropy with unlabelled pixels ignored, and the partial-label loss for 'not road' codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from refiner.core.classes import IGNORE

#: Partial-label codes (label values past the class indices): on a road-only tile a pixel
#: that is not road may still be a building, so it is labelled NOT_ROAD, not background.
NOT_ROAD, NOT_BUILDING = 250, 251


def segmentation_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels only: 255 contributes no gradient."""
    return F.cross_entropy(scores.float(), labels.long(), ignore_index=IGNORE)


def allowed_table(num_classes: int, partial: Mapping[int, Sequence[int]] | None = None) -> torch.Tensor:
    """(256, K) bool: row ``v`` marks the classes a pixel labelled ``v`` may belong to.

    ``v < K`` is class ``v`` alone, ``partial`` maps extra codes to sets of classes (e.g.
    ``{NOT_ROAD: (background, building)}``); 255 and any other value allow nothing (ignored).
    """
    table = torch.zeros(256, num_classes, dtype=torch.bool)
    table[torch.arange(num_classes), torch.arange(num_classes)] = True
    for code, allowed in (partial or {}).items():
        if not num_classes <= code < IGNORE:
            raise ValueError(f"partial-label code {code} must lie in {num_classes}..254")
        table[code] = False
        table[code, list(allowed)] = True
    return table


def partial_label_loss(scores: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over labelled pixels of ``-log(sum of p(c) over the classes c the label allows)``.

    With one class per label this is the cross-entropy; a "not road" pixel on a road-only tile
    costs ``-log(p_background + p_building)``, so road tiles teach nothing about buildings.
    """
    logp = F.log_softmax(scores.float(), 1)
    mask = allowed.to(scores.device)[labels.long()].permute(0, 3, 1, 2)  # (B, K, H, W)
    used = mask.any(1)
    mask = mask | ~used[:, None]  # unlabelled pixels: log(1) = 0, and no -inf in the graph
    ll = torch.logsumexp(logp.masked_fill(~mask, -1e4), 1)
    return -(ll[used].mean()) if bool(used.any()) else logp.sum() * 0.0


def partial_mean_iou(pred: np.ndarray, labels: np.ndarray, allowed: torch.Tensor) -> float:
    """Mean over the label values present of IoU({pred allowed by v}, {label == v}).

    With one class per label this is the mean IoU of the classes present; under partial labels
    "not road" counts as right wherever the prediction is background or building.
    """
    table = allowed.numpy()
    ious = []
    for v in np.unique(labels[labels != IGNORE]):
        hit = table[v][pred]
        truth = labels == v
        union = (hit & (labels != IGNORE)) | truth
        ious.append(float((hit & truth).sum()) / max(1, int(union.sum())))
    return float(np.mean(ious)) if ious else 0.0
