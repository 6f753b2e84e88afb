"""Where to label next: a map of where painted labels would help the refiner most, and boxes.

The map combines three signals, each in [0, 1]:

- **entropy** of the refined probabilities (normalised by ``log K``): where the model hesitates;
  given several probability maps (a committee: coarse CNN, CRF, RNN), the entropy of their mean
  (query-by-committee's consensus entropy), so an RNN fine-tuned on a few boxes, confident
  everywhere, does not silence the calibrated coarse CNN's doubt;
- **disagreement** between the coarse, CRF and RNN class maps: where methods are each confident
  but differ, which entropy alone misses (a confidently wrong map has low entropy);
- **distance from existing labels** (``1 - exp(-d / scale)``): training patches are drawn around
  painted pixels, so the area near them is already taught; far-away areas are not.

``need = (w_e * entropy + w_d * disagreement) * novelty``: the product, not a sum, so painted
areas score 0 whatever the model thinks of them, and a very uncertain region next to labels
still ranks below an equally uncertain one far away. Suggested boxes are the non-overlapping
windows with the highest mean need that contain no painted pixel (chosen greedily).
``benchmarks/label_hints.py`` measures whether painting them beats painting random boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from refiner.app.painting import View
from refiner.core.classes import IGNORE


@dataclass(frozen=True)
class HintWeights:
    """How the signals combine; the defaults weigh uncertainty and disagreement equally."""

    entropy: float = 0.5
    disagreement: float = 0.5
    #: Distance (px) at which novelty reaches 63 %: about one training patch (48 px) radius.
    distance_scale: float = 24.0


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy of class probabilities (K, H, W), divided by ``log K``: (H, W) in [0, 1]."""
    k = probs.shape[0]
    p = np.clip(probs.astype(np.float32), 1e-7, 1.0)
    return (-(p * np.log(p)).sum(0) / np.log(k)).clip(0, 1).astype(np.float32)


def disagreement(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Where the class maps (H, W each) disagree: (H, W) in [0, 1], 1 where no two agree.

    The share of the maps that differ from the pixel's majority class, scaled so that 1 means
    no two agree; 0 everywhere with fewer than two maps.
    """
    if len(maps) < 2:
        return np.zeros(np.asarray(maps[0]).shape if maps else (0, 0), np.float32)
    stack = np.stack([np.asarray(m) for m in maps])
    n = len(stack)
    agree = np.max([(stack == stack[i]).sum(0) for i in range(n)], axis=0)  # size of the majority
    return ((n - agree) / (n - 1)).astype(np.float32)


def novelty(labels: np.ndarray, scale: float = HintWeights.distance_scale) -> np.ndarray:
    """How far each pixel is from the painted ones: ``1 - exp(-d / scale)``, ``d`` in px.

    0 on painted pixels, towards 1 far away; all 1 when nothing is painted.
    """
    painted = labels != IGNORE
    if not painted.any():
        return np.ones(labels.shape, np.float32)
    d = ndimage.distance_transform_edt(~painted)
    return (1 - np.exp(-d / scale)).astype(np.float32)


Probs = np.ndarray | Sequence[np.ndarray]


def consensus(probs: Probs) -> np.ndarray:
    """One probability map (K, H, W) as it is, or the mean of several (a committee's consensus)."""
    if isinstance(probs, np.ndarray):
        return probs
    if not probs:
        raise ValueError("no probabilities to take the entropy of")
    shapes = {p.shape for p in probs}
    if len(shapes) > 1:
        raise ValueError(f"the committee's probabilities differ in shape: {sorted(shapes)}")
    return np.mean(np.stack([p.astype(np.float32) for p in probs]), axis=0)


def need_map(
    probs: Probs,
    maps: Sequence[np.ndarray],
    labels: np.ndarray,
    weights: HintWeights = HintWeights(),
) -> np.ndarray:
    """Where labels would help most: (H, W) float32 in [0, 1] (see the module docstring).

    ``probs``: the refined (or best available) probabilities (K, H, W), or several (coarse, CRF,
    RNN: the entropy of their mean is used); ``maps``: class maps of the methods to compare
    (coarse, CRF, RNN); ``labels``: the painted labels (255 = none).
    """
    probs = consensus(probs)
    if probs.shape[1:] != labels.shape:
        raise ValueError(f"probabilities {probs.shape[1:]} and labels {labels.shape} differ in size")
    return (uncertainty(probs, maps, weights) * novelty(labels, weights.distance_scale)).astype(np.float32)


def uncertainty(probs: Probs, maps: Sequence[np.ndarray], weights: HintWeights = HintWeights()) -> np.ndarray:
    """The model half of the need map: ``(w_e * entropy + w_d * disagreement) / (w_e + w_d)``.

    It changes only when a model does, so the app caches it per model (the labels half is cheap).
    """
    total = weights.entropy + weights.disagreement
    if total <= 0:
        raise ValueError("at least one of the entropy and disagreement weights must be positive")
    u = weights.entropy * entropy(consensus(probs))
    if maps:
        u = u + weights.disagreement * disagreement(maps)
    return (u / total).astype(np.float32)


def need_map_from(
    uncertainty_map: np.ndarray, labels: np.ndarray, scale: float = HintWeights.distance_scale
) -> np.ndarray:
    """:func:`need_map` from a precomputed :func:`uncertainty` (what the app caches per model)."""
    if uncertainty_map.shape != labels.shape:
        raise ValueError(f"the uncertainty map {uncertainty_map.shape} and labels {labels.shape} differ in size")
    return (uncertainty_map * novelty(labels, scale)).astype(np.float32)


@dataclass(frozen=True)
class Box:
    """A suggested box to paint next, with its mean need."""

    row: int
    col: int
    height: int
    width: int
    score: float  # mean need inside

    @property
    def slices(self) -> tuple[slice, slice]:
        """The box's rows and columns in the tile."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def _window_sums(a: np.ndarray, size: int) -> np.ndarray:
    """Sum of ``a`` over every ``size`` x ``size`` window, indexed by its top-left corner."""
    c = np.pad(a.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def _free_windows(labels: np.ndarray, size: int, taken: Sequence[Box] = ()) -> np.ndarray:
    """Top-left corners whose window holds no painted pixel and overlaps none of ``taken``."""
    ok = _window_sums(labels != IGNORE, size) < 0.5
    for b in taken:
        ok[max(0, b.row - size + 1) : b.row + b.height, max(0, b.col - size + 1) : b.col + b.width] = False
    return ok


def suggest_boxes(
    need: np.ndarray, labels: np.ndarray, n: int = 5, size: int = 32, spread: float = HintWeights.distance_scale
) -> list[Box]:
    """Up to ``n`` non-overlapping ``size`` x ``size`` boxes of highest mean need, off painted pixels.

    Fewer when the tile has no more room. With ``spread`` > 0, each chosen box counts as painted
    for the next choice (the need is multiplied by :func:`novelty` of the boxes so far, scale
    ``spread``), so five boxes do not pile up on one hot spot: neighbouring boxes would teach the
    same thing twice.
    """
    h, w = need.shape
    if size < 1 or size > min(h, w):
        raise ValueError(f"a box of {size} px does not fit the {h}x{w} tile")
    ok = _free_windows(labels, size)
    chosen = np.full(need.shape, IGNORE, np.uint8)
    boxes: list[Box] = []
    current = need
    for _ in range(n):
        if not ok.any():
            break
        mean = _window_sums(current, size) / (size * size)
        r, c = np.unravel_index(np.argmax(np.where(ok, mean, -np.inf)), mean.shape)
        box = Box(int(r), int(c), size, size, float(mean[r, c]))
        boxes.append(box)
        ok[max(0, r - size + 1) : r + size, max(0, c - size + 1) : c + size] = False
        if spread > 0:
            chosen[box.slices] = 0
            current = need * novelty(chosen, spread)
    return boxes


def random_boxes(labels: np.ndarray, n: int = 5, size: int = 32, seed: int = 0) -> list[Box]:
    """``n`` random boxes under the same rules as :func:`suggest_boxes` (the benchmark's baseline)."""
    rng = np.random.default_rng(seed)
    ok = _free_windows(labels, size)
    boxes: list[Box] = []
    for _ in range(n):
        free = np.flatnonzero(ok)
        if free.size == 0:
            break
        r, c = np.unravel_index(rng.choice(free), ok.shape)
        boxes.append(Box(int(r), int(c), size, size, float("nan")))
        ok[max(0, r - size + 1) : r + size, max(0, c - size + 1) : c + size] = False
    return boxes


def boxes_in_view(boxes: Sequence[Box], view: View) -> list[Box]:
    """``boxes`` (tile pixels) in those of a picture of ``view`` at its canvas size, clipped; those outside dropped.

    So a page draws them on the picture it shows, rather than on the whole tile first.
    """
    ch, cw = view.canvas_size
    sy, sx = ch / view.height, cw / view.width
    out = []
    for b in boxes:
        r0, r1 = max(0, round((b.row - view.row) * sy)), min(ch, round((b.row + b.height - view.row) * sy))
        c0, c1 = max(0, round((b.col - view.col) * sx)), min(cw, round((b.col + b.width - view.col) * sx))
        if r1 > r0 and c1 > c0:
            out.append(Box(r0, c0, r1 - r0, c1 - c0, b.score))
    return out


def draw_boxes(
    rgb: np.ndarray, boxes: Sequence[Box], colour: tuple[int, int, int] = (255, 0, 255), width: int = 2
) -> np.ndarray:
    """The boxes' outlines drawn on a copy of ``rgb`` (H, W, 3) uint8."""
    out = rgb.copy()
    for b in boxes:
        r0, c0, r1, c1 = b.row, b.col, b.row + b.height, b.col + b.width
        out[r0 : r0 + width, c0:c1] = colour
        out[r1 - width : r1, c0:c1] = colour
        out[r0:r1, c0 : c0 + width] = colour
        out[r0:r1, c1 - width : c1] = colour
    return out
