"""Dense CRF baseline (Krähenbühl & Koltun), as DeepLab uses it and the paper compares against.

Unary: ``-log p`` of the coarse probabilities. Pairwise: a Gaussian (smoothness) kernel and a
bilateral (appearance) kernel on pixel position and colour. Mean-field inference, 5 iterations.
The kernel parameters are grid-searched on the enhancement labels, as the paper did.
We use ``pydensecrf2`` (imports as ``pydensecrf``): the permutohedral-lattice implementation
by the method's authors, rather than writing our own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from refiner.classes import IGNORE
from refiner.metrics import Scores, evaluate


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF kernel parameters (pixel units at the working resolution)."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 20.0
    bilateral_srgb: float = 10.0
    bilateral_compat: float = 5.0
    iterations: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CRFParams:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown CRF parameter(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


#: The search space: bilateral range/colour scale and weight (DeepLab searched the same three).
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "bilateral_sxy": (5.0, 10.0, 20.0, 40.0),
    "bilateral_srgb": (3.0, 6.0, 10.0, 20.0),
    "bilateral_compat": (3.0, 5.0, 10.0),
}


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> contiguous (H, W, 3) uint8, as the bilateral kernel expects."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refine ``probs`` (K, H, W) with a dense CRF on ``image`` (C, H, W in [0, 1]) -> (K, H, W)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = probs.shape
    if image.shape[1:] != (h, w):
        raise ValueError(f"image {image.shape[1:]} and probabilities {(h, w)} differ in size")
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=1e-5)))
    d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    d.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=_to_rgb_uint8(image), compat=params.bilateral_compat
    )
    q = d.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


@dataclass
class GridSearchResult:
    best: CRFParams
    best_scores: Scores
    trials: list[tuple[CRFParams, Scores]]
    seconds: float


def _labelled_crop(labels: np.ndarray, pad: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(labels != IGNORE)
    if ys.size == 0:
        raise ValueError("the CRF grid search needs labelled pixels (all are 255 = unlabelled)")
    h, w = labels.shape
    return (
        slice(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)),
        slice(max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)),
    )


def grid_search(
    image: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    grid: dict[str, Iterable[float]] | None = None,
    *,
    base: CRFParams = CRFParams(),
    progress: Callable[[int, int], None] | None = None,
) -> GridSearchResult:
    """Try every combination in ``grid`` and keep the best mean IoU on the labelled pixels.

    Runs on the bounding box of the labelled pixels (plus the largest spatial kernel), so a
    painted patch in a corner of a large tile is searched quickly.
    """
    grid = {k: tuple(v) for k, v in (grid or DEFAULT_GRID).items()}
    for key in grid:
        if key not in CRFParams.__dataclass_fields__:
            raise ValueError(f"unknown CRF parameter {key!r} in the grid")
    pad = int(max([base.bilateral_sxy, *grid.get("bilateral_sxy", ())]) * 2)
    rows, cols = _labelled_crop(labels, pad)
    img, pr, lab = image[:, rows, cols], probs[:, rows, cols], labels[rows, cols]
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    t0 = time.perf_counter()
    trials = []
    for i, values in enumerate(combos):
        params = CRFParams(**{**base.to_dict(), **dict(zip(keys, values, strict=True))})
        pred = dense_crf(img, pr, params).argmax(0).astype(np.uint8)
        trials.append((params, evaluate(pred, lab, probs.shape[0])))
        if progress:
            progress(i + 1, len(combos))
    best, best_scores = max(trials, key=lambda t: (t[1].mean_iou, t[1].overall_accuracy))
    return GridSearchResult(best, best_scores, trials, time.perf_counter() - t0)
