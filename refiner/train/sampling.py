"""Training pixels: label checks, held-out validation regions, and random patches around labelled pixels."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from refiner.core.classes import IGNORE
from refiner.models.rnn import RNNConfig


class NoLabelsError(ValueError):
    """The label raster has no labelled pixel to learn from."""


def check_labels(labels: np.ndarray, num_classes: int, what: str = "labels") -> int:
    """Count labelled pixels, with clear errors for empty or out-of-range labels."""
    labelled = labels != IGNORE
    n = int(labelled.sum())
    if n == 0:
        raise NoLabelsError(
            f"the {what} have no labelled pixel (all are 255 = unlabelled): paint or import some labels first"
        )
    top = int(labels[labelled].max())
    if top >= num_classes:
        raise ValueError(f"the {what} contain class index {top}, but there are only {num_classes} classes")
    return n


def check_counts(**counts: int) -> None:
    """Refuse training step, batch and patch counts below 1 before any work.

    Zero steps would save an untrained model as if trained; a zero batch or patch size fails
    deep in the sampler (``high <= 0``).
    """
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name.replace('_', ' ')} {value} is below 1 — give at least 1")


#: Training memory the patches of one step may take (``$REFINER_TRAIN_MEMORY_GB``, GiB).
TRAIN_MEMORY_ENV = "REFINER_TRAIN_MEMORY_GB"
DEFAULT_TRAIN_MEMORY_GB = 8.0
#: Smallest patch side always allowed, whatever the tile (the default patch is 48 px).
ALWAYS_PATCH = 64


def train_memory_budget() -> float:
    """Bytes one training step may take: ``$REFINER_TRAIN_MEMORY_GB`` (default 8 GiB)."""
    raw = os.environ.get(TRAIN_MEMORY_ENV, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_TRAIN_MEMORY_GB
    except ValueError:
        gb = DEFAULT_TRAIN_MEMORY_GB
    return (gb if gb > 0 else DEFAULT_TRAIN_MEMORY_GB) * 2**30


def step_bytes(cfg: RNNConfig, patch_size: int, batch_size: int) -> int:
    """Estimated memory of one training step: the activations autograd keeps for every iteration.

    Per pixel of a patch and its halo, per iteration: the map and image features, the hidden
    layer of each class's MLP and its output, in float32. Measured on CPU (K = 3, T = 5): 2.6 KB
    per pixel; this says 3.4 KB.
    """
    side = patch_size + 2 * cfg.halo
    per_pixel = (
        4
        * max(cfg.iterations, 1)
        * (cfg.map_filters + cfg.image_filters + (cfg.hidden + 2) * cfg.num_classes + cfg.in_channels)
    )
    return batch_size * side * side * per_pixel


def check_patches(shape: tuple[int, int], cfg: RNNConfig, patch_size: int, batch_size: int) -> None:
    """Refuse, before any work, patches larger than the tile or steps beyond the memory budget.

    ``finetune --patch-size 4096`` on a 128 x 128 tile (patches of padding) ran for 42 s to 11.6 GB
    and ended in a segmentation fault.
    """
    h, w = shape
    largest = max(h, w, ALWAYS_PATCH)
    if patch_size > largest:
        raise ValueError(
            f"patch size {patch_size} is larger than the tile ({h} x {w} pixels at the working resolution): a patch "
            f"beyond it is only padding — give a patch size of at most {largest} (the default is 48)"
        )
    need, budget = step_bytes(cfg, patch_size, batch_size), train_memory_budget()
    if need > budget:
        raise ValueError(
            f"a batch of {batch_size} patches of {patch_size} x {patch_size} pixels needs about {need / 2**30:.1f} GiB "
            f"per training step, above the budget of {budget / 2**30:.1f} GiB — give a smaller patch size or batch "
            f"size (defaults 48 and 8), or raise {TRAIN_MEMORY_ENV}"
        )


def restrict_to_window(labels: np.ndarray, window: tuple[int, ...] | list[int]) -> np.ndarray:
    """Keep only the labels inside ``window`` = (row, col, height, width); the rest become 255.

    Simulates a painted patch from a fully labelled tile; a window outside the labels is an error.
    """
    if len(window) != 4:
        raise ValueError(f"a window is row, col, height, width; got {list(window)}")
    r, c, h, w = (int(v) for v in window)
    if r < 0 or c < 0 or h <= 0 or w <= 0 or r + h > labels.shape[0] or c + w > labels.shape[1]:
        raise ValueError(
            f"window {[r, c, h, w]} (row, col, height, width) does not fit in the "
            f"{labels.shape[0]}x{labels.shape[1]} labels"
        )
    out = np.full_like(labels, IGNORE)
    out[r : r + h, c : c + w] = labels[r : r + h, c : c + w]
    return out


def split_holdout(
    labels: np.ndarray,
    fraction: float = 0.2,
    *,
    guard: int = 0,
    block: int | None = None,
    seed: int = 0,
    compact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into (train, validation) *regions*, ``guard`` px apart.

    Neighbouring pixels are nearly copies of each other, so scoring on pixels beside (or inside)
    the training strokes flatters the model: on the Inria Austin tile 16 px blocks of the strokes
    said building IoU 0.77 where the whole tile, against the reference mask, gave 0.46. Here the
    units held out are whole connected labelled regions (strokes, boxes), cut by a grid of
    ``block`` px squares (default ``max(16, 2 * guard)``) so that one painted box still gives
    several; about ``fraction`` of the labelled pixels are held out as whole units (drawn at random,
    or with ``compact`` from a random one outwards, :func:`nearest_first`, so that they form one
    piece with one guard band), and training pixels closer than ``guard`` px (chessboard
    distance) to a held-out one are dropped from both, so no training pixel's receptive field
    overlaps a held-out pixel's when ``guard`` is twice the RNN's halo (:func:`holdout_guard`).
    Returns two label maps with the other part set to 255; the validation map is empty when fewer
    than 2 units exist or the guard would leave nothing to train on.
    """
    from scipy import ndimage

    labelled = labels != IGNORE
    train, val = labels.copy(), np.full_like(labels, IGNORE)
    if fraction <= 0 or not labelled.any():
        return train, val
    block = block or max(16, 2 * guard)
    h, w = labels.shape
    comp, _ = ndimage.label(labelled, structure=np.ones((3, 3), bool))
    by, bx = np.arange(h) // block, np.arange(w) // block
    cell = by[:, None] * (bx.max() + 1) + bx[None, :]
    unit_of = np.where(labelled, comp.astype(np.int64) * (cell.max() + 1) + cell, -1)
    ids, unit, sizes = np.unique(unit_of[labelled], return_inverse=True, return_counts=True)
    if len(ids) < 2:
        return train, val
    rng = np.random.default_rng(seed)
    if compact:
        ys, xs = np.nonzero(labelled)
        centres = np.stack([np.bincount(unit, ys) / sizes, np.bincount(unit, xs) / sizes], 1)
        order = nearest_first(centres, rng)
    else:
        order = rng.permutation(len(ids))
    taken = np.cumsum(sizes[order]) <= max(fraction * sizes.sum(), sizes[order[0]])
    chosen = ids[order[: max(1, min(len(ids) - 1, int(taken.sum())))]]
    held = np.isin(unit_of, chosen)
    near = ndimage.distance_transform_cdt(~held, metric="chessboard") <= guard if guard else held
    keep = labelled & ~near
    if not keep.any():
        return train, val
    val[held] = labels[held]
    train[~keep] = IGNORE
    return train, val


def nearest_first(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit indices from a random one outwards, nearest centre (N, 2) first: a compact held-out set.

    Every held-out unit costs the training set a guard band all round it, so scattered units cost
    far more than the same area held out in one piece: on a fully labelled 500 x 500 patch, 20 %
    held out as random 40 px cells with a 20 px guard left 42 % of the labels to train on, the
    same 20 % grown as one piece of neighbouring cells 72-76 % (issue 27).
    """
    start = centres[rng.integers(len(centres))]
    dist = np.abs(centres - start).max(1)  # chessboard, as the guard band: a square grows
    return np.lexsort((rng.random(len(centres)), dist))


def holdout_guard(arch: RNNConfig) -> int:
    """The guard band between training and held-out pixels: twice the RNN's receptive-field radius."""
    return 2 * arch.halo


class PatchSampler:
    """Random square patches (with a context margin) centred near labelled pixels.

    The image is padded by replicating its edge, as inference pads it, and the labels by 255,
    so patches at the border see what whole-image inference sees there.
    """

    def __init__(
        self,
        arrays: list[np.ndarray],
        labels: np.ndarray,
        size: int,
        margin: int,
        *,
        seed: int = 0,
        augment: bool = True,
        balance: bool = False,
        stride: int = 1,
        focus: np.ndarray | None = None,
        focus_share: float = 0.0,
    ) -> None:
        if not 0.0 <= focus_share <= 1.0:
            raise ValueError(f"focus_share must lie in 0..1, not {focus_share}")
        if focus is not None and focus.shape != labels.shape:
            raise ValueError(f"the focus map {focus.shape} and the labels {labels.shape} differ in size")
        self.size, self.margin, self.augment = size, margin, augment
        h, w = labels.shape
        extra_h, extra_w = max(0, size - h), max(0, size - w)
        pad = ((margin, margin + extra_h), (margin, margin + extra_w))
        self.arrays = [np.pad(a, ((0, 0), *pad), mode="edge") for a in arrays]
        self.labels = np.pad(labels, ((0, extra_h), (0, extra_w)), constant_values=IGNORE)
        # candidate centres on a ``stride`` grid: a 1500^2 tile's every pixel as int64 indices
        # would cost 36 MB per tile, every 4th row and column 2 MB, with the same coverage
        sub = self.labels[::stride, ::stride]
        ys, xs = np.nonzero(sub != IGNORE)
        if ys.size == 0:
            raise NoLabelsError("no labelled pixel to sample training patches from")
        self.ys, self.xs = (ys * stride).astype(np.int32), (xs * stride).astype(np.int32)
        # balance: centre patches on each label value equally often (roads are 4-8 % of a
        # Massachusetts tile; uniform centres show the network a road in few patches)
        values = sub[ys, xs]
        self.groups = [np.flatnonzero(values == v) for v in np.unique(values)] if balance else []
        # focus: a share of the centres drawn among the candidates the focus map marks (e.g. where a
        # coarse map is wrong or unsure, :func:`hard_pixels`), so training sees the errors to fix
        # more often than their few percent of the pixels would show them
        self.focus_share = focus_share if focus is not None else 0.0
        self.focus = np.flatnonzero(focus[::stride, ::stride][ys, xs]) if focus is not None else np.zeros(0, np.int64)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        """``n`` patches: per array (n, C, size + 2 margin, size + 2 margin), and labels (n, size, size).

        Randomly rotated and flipped together when ``augment`` is on.
        """
        s, m = self.size, self.margin
        hp, wp = self.labels.shape
        if self.groups:
            g = self.rng.integers(0, len(self.groups), n)
            idx = np.array([self.groups[i][self.rng.integers(0, self.groups[i].size)] for i in g])
        else:
            idx = self.rng.integers(0, self.ys.size, n)
        if self.focus_share > 0 and self.focus.size:  # no extra draws when off: the same patches as before
            hard = self.rng.random(n) < self.focus_share
            idx[hard] = self.focus[self.rng.integers(0, self.focus.size, int(hard.sum()))]
        tops = np.clip(self.ys[idx] - self.rng.integers(0, s, n), 0, hp - s)
        lefts = np.clip(self.xs[idx] - self.rng.integers(0, s, n), 0, wp - s)
        outs = [
            np.stack([a[:, t : t + s + 2 * m, lft : lft + s + 2 * m] for t, lft in zip(tops, lefts, strict=False)])
            for a in self.arrays
        ]
        lab = np.stack([self.labels[t : t + s, lft : lft + s] for t, lft in zip(tops, lefts, strict=False)])
        if self.augment:  # the 8 symmetries of the square: aerial views have no "up"
            k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            outs = [np.rot90(o, k, axes=(-2, -1)) for o in outs]
            lab = np.rot90(lab, k, axes=(-2, -1))
            if flip:
                outs = [o[..., ::-1] for o in outs]
                lab = lab[..., ::-1]
        return [np.ascontiguousarray(o) for o in outs], np.ascontiguousarray(lab)


def hard_pixels(probs: np.ndarray, labels: np.ndarray, allowed: np.ndarray, margin: float = 0.2) -> np.ndarray:
    """(H, W) bool: the labelled pixels where a coarse map is wrong or unsure.

    Wrong: its most likely class is one the label rules out (``allowed``: the (256, K) table of
    :func:`~refiner.train.losses.allowed_table`, so "not road" is wrong only where the map says
    road). Unsure: its two most likely classes lie within ``margin`` of each other. ``probs``:
    (K, H, W) probabilities, float or uint8 (0-255).
    """
    if probs.shape[1:] != labels.shape:
        raise ValueError(f"the probabilities {probs.shape[1:]} and the labels {labels.shape} differ in size")
    scale = 255.0 if probs.dtype == np.uint8 else 1.0
    top2 = np.sort(probs, axis=0)[-2:].astype(np.float32) / scale
    best = probs.argmax(0)
    wrong = ~allowed[labels, best]
    unsure = top2[1] - top2[0] < margin
    return (labels != IGNORE) & (wrong | unsure)


def as_float(x: np.ndarray) -> torch.Tensor:
    """Patches to float [0, 1]: uint8 imagery (kept as uint8 to save memory) is scaled."""
    t = torch.from_numpy(x)
    return t.float() / 255.0 if t.dtype == torch.uint8 else t


class TileMix:
    """Batches from several tiles' samplers, each tile's share of a batch drawn by its weight.

    ``weights`` default to each tile's number of candidate centres (its labelled pixels), so a
    tile with more labels is seen more often; each batch's split is multinomial (``seed``).
    """

    def __init__(self, samplers: list[PatchSampler], weights: Sequence[float] | None = None, *, seed: int = 0) -> None:
        self.samplers = samplers
        w = np.array(weights if weights is not None else [s.ys.size for s in samplers], float)
        w /= w.sum()
        self.weights = w
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``n`` patches: each sampler array as float [0, 1] (B, C, h, w) tensors, and the labels (B, s, s) as long."""
        counts = self.rng.multinomial(n, self.weights)
        arrays: list[list[torch.Tensor]] = []
        labels = []
        for sampler, count in zip(self.samplers, counts, strict=True):
            if count:
                xs, y = sampler.sample(int(count))
                arrays.append([as_float(x) for x in xs])
                labels.append(torch.from_numpy(y))
        return [torch.cat(parts) for parts in zip(*arrays, strict=True)], torch.cat(labels).long()


def jitter(x: torch.Tensor, amount: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Per-patch brightness (+-amount/2) and contrast (x(1 +- amount)) jitter of (B, C, H, W) in [0, 1].

    Tiles of one set share a camera and season; other users' imagery does not.
    """
    if amount <= 0:
        return x
    b = x.shape[0]
    c = 1 + amount * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    o = amount / 2 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - m) * c.to(x) + m + o.to(x)).clamp(0, 1)
