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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from refiner.core.atomic import from_known_fields, unknown_keys
from refiner.core.classes import IGNORE
from refiner.core.metrics import Scores, confusion_matrix, scores_from_confusion


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF kernel parameters (pixel units at the working resolution).

    Attributes:
        gaussian_sxy: the smoothness kernel's spatial scale (pixels).
        gaussian_compat: the smoothness kernel's weight.
        bilateral_sxy: the appearance kernel's spatial scale (pixels).
        bilateral_srgb: the appearance kernel's colour scale (0-255 units).
        bilateral_compat: the appearance kernel's weight.
        iterations: mean-field iterations.

    Example:
        ```python
        params = refiner.CRFParams(bilateral_sxy=40.0, bilateral_srgb=6.0)
        crf_probs = refiner.dense_crf(tile.image, probs, params)
        ```
    """

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 20.0
    bilateral_srgb: float = 10.0
    bilateral_compat: float = 5.0
    iterations: int = 5

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON (kept in workspace settings, read by ``crf --params``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CRFParams:
        """Parameters from JSON (a workspace's settings), ignoring names this version does not know.

        What a person wrote is read with :meth:`parse`, which refuses unknown names.
        """
        return from_known_fields(cls, d)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> CRFParams:
        """Parameters a person wrote (``refiner crf --params``), refusing unknown names.

        Raises:
            ValueError: a name is no CRF parameter (a typo would otherwise silently keep a default).
        """
        unknown = unknown_keys(cls, d)
        if unknown:
            known = sorted(f.name for f in fields(cls))
            raise ValueError(f"unknown CRF parameter(s) {unknown}; known: {known}")
        out: dict[str, Any] = {}
        for key, value in d.items():
            whole = key == "iterations"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"CRF parameter {key} is {value!r}, not {kind} — give e.g. {key}: {_DEFAULTS[key]}")
            low, high = _RANGES[key]
            if not (low <= value <= high if whole else low < value <= high):
                raise ValueError(
                    f"CRF parameter {key} is {value}, out of range — give a value "
                    + (f"from {low} to {high}" if whole else f"above {low:g} and at most {high:g}")
                    + f", e.g. {_DEFAULTS[key]}"
                )
            out[key] = int(value) if whole else float(value)
        return cls(**out)


_DEFAULTS = {f: CRFParams.__dataclass_fields__[f].default for f in CRFParams.__dataclass_fields__}
#: Accepted ranges: lengths and weights above 0 (a negative sxy was accepted), mean-field iterations 1-100.
_RANGES: dict[str, tuple[float, float]] = {
    "gaussian_sxy": (0.0, 1e4),
    "gaussian_compat": (0.0, 1e4),
    "bilateral_sxy": (0.0, 1e4),
    "bilateral_srgb": (0.0, 1e4),
    "bilateral_compat": (0.0, 1e4),
    "iterations": (1, 100),
}

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
    """Refine ``probs`` (K, H, W) with a dense CRF on ``image`` (C, H, W in [0, 1]) -> (K, H, W).

    The fully connected CRF of Kraehenbuehl and Koltun (pydensecrf): a Gaussian smoothness kernel
    and a bilateral appearance kernel, mean-field inference; the baseline the RNN is compared with.

    Args:
        image: the tile (C, H, W) in [0, 1] (its first three bands are the colours).
        probs: the probabilities (K, H, W) to refine (the unary term).
        params: the kernels' parameters and the iterations.

    Returns:
        The CRF's probabilities float32 (K, H, W).

    Raises:
        ValueError: the image and the probabilities differ in size.

    Example:
        ```python
        crf_map = refiner.dense_crf(tile.image, probs, refiner.CRFParams()).argmax(0)
        ```
    """
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
    """What :func:`grid_search` found: the best parameters and their scores, every trial, where the CRF ran."""

    best: CRFParams
    best_scores: Scores
    trials: list[tuple[CRFParams, Scores]]
    seconds: float
    windows: list[tuple[slice, slice]] = field(default_factory=list)  # where the CRF ran
    complete: bool = True  # False when ``should_stop`` ended the search early

    @property
    def searched_pixels(self) -> int:
        """Pixels inside the windows the CRF ran on: the search's cost, against the whole tile's."""
        return sum((r.stop - r.start) * (c.stop - c.start) for r, c in self.windows)


def label_windows(labels: np.ndarray, pad: int, cell: int = 256) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Windows around the labelled pixels, each with the labels it scores (255 elsewhere).

    The labelled pixels are cut into ``cell`` px squares; each square's labelled part, padded by
    ``pad`` (the reach of the CRF's kernels), is one window and scores only that part, so every
    labelled pixel is scored once. When one window around all the labels is smaller in all (a
    single painted box), that one is used. Strokes spread over a 1500^2 tile then cost the CRF
    a few windows around them instead of the whole tile.
    """
    labelled = labels != IGNORE
    ys, xs = np.nonzero(labelled)
    if ys.size == 0:
        raise ValueError("the CRF grid search needs labelled pixels (all are 255 = unlabelled)")
    h, w = labels.shape

    def around(y0: int, y1: int, x0: int, x1: int) -> tuple[slice, slice]:
        return slice(max(0, y0 - pad), min(h, y1 + pad)), slice(max(0, x0 - pad), min(w, x1 + pad))

    def area(win: tuple[slice, slice]) -> int:
        return (win[0].stop - win[0].start) * (win[1].stop - win[1].start)

    whole = around(ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    ncx = (w + cell - 1) // cell
    key = (ys // cell) * ncx + xs // cell
    order = np.argsort(key, kind="stable")
    key, ys, xs = key[order], ys[order], xs[order]
    ids, starts = np.unique(key, return_index=True)
    bounds = [np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts),
              np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)]  # fmt: skip
    out = []
    for cid, y0, y1, x0, x1 in zip(ids, *bounds, strict=True):
        win = around(int(y0), int(y1) + 1, int(x0), int(x1) + 1)
        cy, cx = divmod(int(cid), ncx)
        lab = labels[win].copy()  # score only this cell's labels: each labelled pixel once
        rr = np.arange(win[0].start, win[0].stop)[:, None] // cell != cy
        cc = np.arange(win[1].start, win[1].stop)[None, :] // cell != cx
        lab[rr | cc] = IGNORE
        out.append((win, lab))
    if sum(area(win) for win, _ in out) >= area(whole):
        return [(whole, labels[whole])]
    return out


def _rank(trial: tuple[CRFParams, Scores]) -> tuple[float, float]:
    return trial[1].mean_iou, trial[1].overall_accuracy


def grid_search(
    image: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    grid: Mapping[str, Iterable[float]] | None = None,
    *,
    base: CRFParams = CRFParams(),
    progress: Callable[[int, int], None] | None = None,
    best_so_far: Callable[[CRFParams, Scores], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> GridSearchResult:
    """Try every combination in ``grid`` and keep the best mean IoU on the labelled pixels.

    The CRF runs on windows around the labelled pixels (:func:`label_windows`, padded by twice
    the largest spatial kernel), not on the whole tile: that is all it is scored on.

    Args:
        image: the tile (C, H, W) in [0, 1].
        probs: the probabilities (K, H, W) to refine.
        labels: the labelled pixels (H, W) class indices, 255 elsewhere.
        grid: values to try per :class:`CRFParams` field (default: ``DEFAULT_GRID``).
        base: the parameters the grid's values replace.
        progress: called after each trial with (done, total).
        best_so_far: called after each trial with the best parameters and scores yet.
        should_stop: polled between trials; True ends the search (the best so far is returned,
            ``complete=False``).

    Returns:
        The best parameters and their scores, every trial, where the CRF ran (``GridSearchResult``).

    Raises:
        ValueError: a grid key is no CRF parameter, or no pixel is labelled.

    Example:
        ```python
        found = refiner.grid_search(tile.image, probs, labels, {"bilateral_sxy": (10.0, 40.0)})
        crf_probs = refiner.dense_crf(tile.image, probs, found.best)
        ```
    """
    grid = {k: tuple(v) for k, v in (grid or DEFAULT_GRID).items()}
    if unknown := unknown_keys(CRFParams, grid):
        raise ValueError(f"unknown CRF parameter {unknown[0]!r} in the grid")
    pad = int(max([base.bilateral_sxy, *grid.get("bilateral_sxy", ())]) * 2)
    windows = label_windows(labels, pad)
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    k = probs.shape[0]
    t0 = time.perf_counter()
    trials = []
    for i, values in enumerate(combos):
        if should_stop():
            break
        params = CRFParams(**{**base.to_dict(), **dict(zip(keys, values, strict=True))})
        cm = np.zeros((k, k), np.int64)
        for (rows, cols), lab in windows:
            pred = dense_crf(image[:, rows, cols], probs[:, rows, cols], params).argmax(0).astype(np.uint8)
            cm += confusion_matrix(pred, lab, k)
        trials.append((params, scores_from_confusion(cm)))
        if best_so_far:
            best_so_far(*max(trials, key=_rank))
        if progress:
            progress(i + 1, len(combos))
    if not trials:
        return GridSearchResult(base, Scores(float("nan"), (float("nan"),) * k, float("nan"), 0), [],
                                time.perf_counter() - t0, [w for w, _ in windows], complete=False)  # fmt: skip
    best, best_scores = max(trials, key=_rank)
    return GridSearchResult(
        best, best_scores, trials, time.perf_counter() - t0, [w for w, _ in windows], len(trials) == len(combos)
    )
