"""Training loops for the coarse CNN and the refinement RNN.

Both sample random patches around *labelled* pixels (a painted patch can be a few hundred pixels
in a corner of a tile) and use cross-entropy with unlabelled pixels (255) ignored, so they
contribute no gradient. Loops report progress through a callback, stop when ``should_stop()``
says so, can hold back whole regions of the labels (a guard band apart) for validation, stop early when the
validation score stalls, and write checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refiner.classes import IGNORE, ClassSpec
from refiner.metrics import Scores, evaluate
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.fused import FusedRNN
from refiner.models.io import ModelBundle, image_stats, save_checkpoint
from refiner.models.rnn import RefinerRNN, RNNConfig


def pick_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when available, else ``mps``, else ``cpu`` (or what ``prefer`` names)."""
    if prefer and prefer != "auto":
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class Progress:
    """One report from a training loop."""

    step: int
    steps: int
    loss: float
    seconds: float
    val: Scores | None = None
    best_val: float | None = None
    message: str = ""


ProgressFn = Callable[[Progress], None]


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
    """Refuse training step, batch and patch counts below 1 before any work (an untrained model
    saved as if trained, or ``high <= 0`` from the sampler)."""
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name.replace('_', ' ')} {value} is below 1 — give at least 1")


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
    labels: np.ndarray, fraction: float = 0.2, *, guard: int = 0, block: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into (train, validation) *regions*, ``guard`` px apart.

    Neighbouring pixels are nearly copies of each other, so scoring on pixels beside (or inside)
    the training strokes flatters the model: on the Inria Austin tile 16 px blocks of the strokes
    said building IoU 0.77 where the whole tile, against the reference mask, gave 0.46. Here the
    units held out are whole connected labelled regions (strokes, boxes), cut by a grid of
    ``block`` px squares (default ``max(16, 2 * guard)``) so that one painted box still gives
    several; about ``fraction`` of the labelled pixels are held out as whole units, and training
    pixels closer than ``guard`` px (chessboard distance) to a held-out one are dropped from both,
    so no training pixel's receptive field overlaps a held-out pixel's when ``guard`` is twice the
    RNN's halo (:func:`holdout_guard`). Returns two label maps with the other part set to 255;
    the validation map is empty when fewer than 2 units exist or the guard would leave nothing
    to train on.
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
    ids, sizes = np.unique(unit_of[labelled], return_counts=True)
    if len(ids) < 2:
        return train, val
    order = np.random.default_rng(seed).permutation(len(ids))
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
    ) -> None:
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
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        s, m = self.size, self.margin
        hp, wp = self.labels.shape
        if self.groups:
            g = self.rng.integers(0, len(self.groups), n)
            idx = np.array([self.groups[i][self.rng.integers(0, self.groups[i].size)] for i in g])
        else:
            idx = self.rng.integers(0, self.ys.size, n)
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


def segmentation_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels only: 255 contributes no gradient."""
    return F.cross_entropy(scores.float(), labels.long(), ignore_index=IGNORE)


#: Partial-label codes (label values past the class indices): on a road-only tile a pixel
#: that is not road may still be a building, so it is labelled NOT_ROAD, not background.
NOT_ROAD, NOT_BUILDING = 250, 251


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


def lr_at(step: int, steps: int, base: float, schedule: str = "constant", warmup: int = 0) -> float:
    """Learning rate at ``step`` (1-based): constant, or linear warm-up then cosine decay to 1 %."""
    if warmup and step <= warmup:
        return base * step / warmup
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (constant or cosine)")
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _as_float(x: np.ndarray) -> torch.Tensor:
    """Patches to float [0, 1]: uint8 imagery (kept as uint8 to save memory) is scaled."""
    t = torch.from_numpy(x)
    return t.float() / 255.0 if t.dtype == torch.uint8 else t


# --------------------------------------------------------------------------- coarse CNN


@dataclass
class CoarseTrainConfig:
    """Training hyper-parameters of the coarse CNN (defaults are the paper's)."""

    steps: int = 3000
    batch_size: int = 64
    output_size: int = 64  # patches with 64x64 output maps
    context: int = 32  # extra input pixels on each side (the network's receptive field)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4
    seed: int = 0
    augment: bool = True
    balance: bool = False  # centre patches on each label value equally often
    jitter: float = 0.0  # brightness/contrast jitter amount (see :func:`jitter`); 0 = off
    schedule: str = "constant"  # or "cosine" (after ``warmup`` linear steps)
    warmup: int = 0
    eval_every: int = 0  # steps between ``validate`` calls (best weights kept); 0 = never
    centre_stride: int = 1  # grid step of candidate patch centres (memory on many big tiles)


@dataclass
class CoarseTrainResult:
    bundle: ModelBundle
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "val", "seconds"}
    best_val: float | None = None
    best_step: int | None = None


def train_coarse(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    classes: ClassSpec,
    cfg: CoarseTrainConfig = CoarseTrainConfig(),
    *,
    resolution: float | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    partial: Mapping[int, Sequence[int]] | None = None,
    tile_weights: Sequence[float] | None = None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    validate: Callable[[ModelBundle], float] | None = None,
    result: CoarseTrainResult | None = None,
    init: ModelBundle | None = None,
) -> ModelBundle:
    """Train the coarse CNN on (possibly imprecise) labels; images (C, H, W) in [0, 1] (or uint8).

    ``partial`` maps extra label codes to the classes they allow (:func:`partial_label_loss`);
    ``tile_weights`` share the batch between images (default: by labelled pixels); ``validate``
    scores the model every ``cfg.eval_every`` steps and the best-scoring weights are returned
    (history in ``result`` when given). ``init`` continues from a trained coarse model (its
    weights and normalisation; the recipe's second stage), else training starts from Glorot.
    """
    if len(images) != len(labels) or not images:
        raise ValueError("give one label raster per image (and at least one image)")
    check_counts(steps=cfg.steps, batch_size=cfg.batch_size)
    allowed = allowed_table(len(classes), partial)
    for im, lab in zip(images, labels, strict=True):
        if im.shape[1:] != lab.shape:
            raise ValueError(f"image {im.shape[1:]} and labels {lab.shape} differ in size")
        if not partial:
            check_labels(lab, len(classes))
            continue
        if not (lab != IGNORE).any():
            check_labels(lab, len(classes))
        present = np.unique(lab[lab != IGNORE])
        bad = [int(v) for v in present if not allowed[int(v)].any()]
        if bad:
            raise ValueError(f"labels contain value(s) {bad[:8]} that are neither a class index nor a partial code")
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = CoarseCNN(CoarseConfig(num_classes=len(classes), in_channels=images[0].shape[0])).to(dev)
    if init is not None:
        if init.kind != "coarse" or tuple(init.classes.names) != tuple(classes.names):
            raise ValueError("init must be a coarse model with the same classes")
        net.load_state_dict(init.net.state_dict())
        stats = stats or (init.mean, init.std)
    mean, std = stats or image_stats([im.astype(np.float32) / 255 if im.dtype == np.uint8 else im for im in images])
    bundle = ModelBundle("coarse", net, classes, resolution, mean, std)
    samplers = [
        PatchSampler(
            [im], lab, cfg.output_size, cfg.context, seed=cfg.seed + i, augment=cfg.augment,
            balance=cfg.balance, stride=cfg.centre_stride,
        )  # fmt: skip
        for i, (im, lab) in enumerate(zip(images, labels, strict=True))
    ]
    weights = np.array(tile_weights if tile_weights is not None else [s.ys.size for s in samplers], float)
    weights /= weights.sum()
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    net.train()
    m, s = cfg.context, cfg.output_size
    best, best_state = -math.inf, None
    result = result if result is not None else CoarseTrainResult(bundle)
    result.bundle = bundle
    step = 0
    for step in range(1, cfg.steps + 1):
        if should_stop():
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.schedule, cfg.warmup)
        counts = rng.multinomial(cfg.batch_size, weights)
        xs, ys = [], []
        for sampler, n in zip(samplers, counts, strict=True):
            if n:
                (x,), y = sampler.sample(int(n))
                xs.append(_as_float(x))
                ys.append(y)
        x = jitter(torch.cat(xs), cfg.jitter, gen)
        x = bundle.normalise(x.to(dev))
        y = torch.from_numpy(np.concatenate(ys)).long().to(dev)
        scores = net(x)[..., m : m + s, m : m + s]
        loss = partial_label_loss(scores, y, allowed) if partial else segmentation_loss(scores, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        report = Progress(step, cfg.steps, loss.item(), time.perf_counter() - t0)
        if validate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            net.eval()
            score = float(validate(bundle))
            net.train()
            result.history.append({"step": step, "loss": report.loss, "val": score, "seconds": report.seconds})
            if score > best:
                best, result.best_val, result.best_step = score, score, step
                best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
            report.best_val = best
            report.message = f"validation {score:.3f} (best {best:.3f})"
        if progress and (step % 10 == 0 or step == cfg.steps or report.message):
            progress(report)
    if best_state is not None:  # the checkpoint that did best on the validation tiles
        net.load_state_dict(best_state)
    net.eval()
    before = int(init.info.get("trained_steps", 0)) if init is not None else 0
    bundle.info = {"trained_steps": before + step, "train_config": cfg.__dict__.copy()}
    if init is not None:
        bundle.info["init_steps"] = before
    if result.best_step is not None:
        bundle.info.update(best_step=result.best_step, best_val=result.best_val)
    return bundle


# --------------------------------------------------------------------------- RNN


@dataclass
class RNNTrainConfig:
    """Fine-tuning hyper-parameters of the RNN (AdaGrad lr 0.01 and cross-entropy: the paper's)."""

    steps: int = 1500
    # Small batches of small patches: on a CPU, 8 x 48^2 runs ~7x faster per pixel than 16 x 64^2
    # (the per-class feature maps stay in cache), and AdaGrad does not need large batches.
    batch_size: int = 8
    patch_size: int = 48
    lr: float = 0.01
    seed: int = 0
    augment: bool = True
    holdout: float = 0.2  # fraction of labelled pixels held back for validation, as whole regions
    eval_every: int = 50  # steps between evaluations on the held-out pixels ...
    # ... or seconds, whichever comes first: best-weights selection needs evaluations early, and
    # on a busy CPU 50 steps can take longer than the whole 60 s budget an app user waits
    eval_seconds: float | None = 5.0
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    max_seconds: float | None = None  # wall-clock budget
    checkpoint_every: int = 0  # steps; 0 = only at the end
    #: L2 pull of the weights towards the starting model (``init``), "L2-SP": a patch's few
    #: hundred labelled pixels then adjust the pretrained refiner instead of overwriting it
    anchor: float = 0.0
    jitter: float = 0.0  # brightness/contrast jitter of the image patches (see :func:`jitter`)
    fresh_optimizer: bool = False  # ignore ``init``'s AdaGrad state (a new task, not a resume)
    #: Weight of a KL pull of the refined probabilities towards the starting model's, on every
    #: pixel of each patch ("learning without forgetting"): a painted patch says nothing about the
    #: unpainted pixels or about classes its labels leave open (a building patch's "not building"
    #: may be background or road), so the fine-tune keeps the start's answer there.
    distill: float = 0.0


@dataclass
class RNNTrainResult:
    bundle: ModelBundle
    history: list[Progress] = field(default_factory=list)
    best_val: float | None = None
    stopped: str = "finished"  # finished | early_stopping | time_budget | cancelled


def _val_crop(labels: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(labels != IGNORE)
    if ys.size == 0:
        return None
    h, w = labels.shape
    return (
        slice(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)),
        slice(max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)),
    )


def _adagrad_state(opt: torch.optim.Optimizer, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in net.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st and "sum" in st:
                out[names[id(p)]] = st["sum"].detach().cpu()
    return out


def _load_adagrad_state(opt: torch.optim.Optimizer, net: torch.nn.Module, sums: dict[str, torch.Tensor]) -> None:
    params = dict(net.named_parameters())
    for name, s in sums.items():
        if name in params:
            p = params[name]
            opt.state[p]["sum"] = s.to(p.device, p.dtype).clone()
            opt.state[p].setdefault("step", torch.tensor(0.0))


def train_rnn(
    image: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    classes: ClassSpec,
    cfg: RNNTrainConfig = RNNTrainConfig(),
    *,
    arch: RNNConfig | None = None,
    init: ModelBundle | None = None,
    resolution: float | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    checkpoint_dir: str | Path | None = None,
    val_labels: np.ndarray | None = None,
    partial: Mapping[int, Sequence[int]] | None = None,
) -> RNNTrainResult:
    """Fine-tune the RNN on an accurately labelled tile.

    ``image`` (C, H, W) in [0, 1] and the frozen coarse ``probs`` (K, H, W) cover the tile;
    ``labels`` (H, W) mark the accurately labelled pixels (255 elsewhere). A ``holdout`` fraction
    of labelled blocks is kept for validation unless ``val_labels`` are given. ``init`` continues
    training an existing model (with its AdaGrad state when it has one).
    """
    k = len(classes)
    check_counts(steps=cfg.steps, batch_size=cfg.batch_size, patch_size=cfg.patch_size)
    if not 0 <= cfg.holdout < 1:
        raise ValueError(f"holdout {cfg.holdout} is not a fraction below 1 — keep e.g. 0.2 of the labelled blocks")
    if probs.shape[0] != k:
        raise ValueError(f"the probability map has {probs.shape[0]} bands but there are {k} classes")
    if image.shape[1:] != probs.shape[1:] or labels.shape != probs.shape[1:]:
        raise ValueError(
            f"image {image.shape[1:]}, probabilities {probs.shape[1:]} and labels {labels.shape} "
            "must have the same size"
        )
    allowed = allowed_table(k, partial)
    if partial:
        if not (labels != IGNORE).any():
            check_labels(labels, k)
    else:
        check_labels(labels, k)
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    if init is not None:
        bundle = init
        bundle.net.to(dev)
        if list(init.classes.names) != list(classes.names):
            raise ValueError(f"the model was trained for classes {list(init.classes.names)}, not {list(classes.names)}")
    else:
        arch = arch or RNNConfig(num_classes=k, in_channels=image.shape[0])
        mean, std = image_stats([image])
        bundle = ModelBundle("rnn", RefinerRNN(arch).to(dev), classes, resolution, mean, std)
    net: RefinerRNN = bundle.net  # type: ignore[assignment]
    halo = net.cfg.halo
    if val_labels is None:
        labels, val_labels = split_holdout(labels, cfg.holdout, guard=holdout_guard(net.cfg), seed=cfg.seed)
    sampler = PatchSampler([image, probs], labels, cfg.patch_size, halo, seed=cfg.seed, augment=cfg.augment)
    opt = torch.optim.Adagrad(net.parameters(), lr=cfg.lr)
    if init is not None and init.optimizer_state and not cfg.fresh_optimizer:
        _load_adagrad_state(opt, net, init.optimizer_state)
    anchor = {n: t.detach().clone() for n, t in net.named_parameters()} if cfg.anchor > 0 else None
    teacher = None
    if cfg.distill > 0 and init is not None:
        import copy

        teacher = copy.deepcopy(net).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    amp = dev.type == "cuda"
    crop = _val_crop(val_labels, halo)
    if crop is not None:
        v_img = torch.from_numpy(np.ascontiguousarray(image[:, crop[0], crop[1]]))[None].to(dev)
        v_probs = torch.from_numpy(np.ascontiguousarray(probs[:, crop[0], crop[1]]))[None].to(dev)
        v_lab = val_labels[crop]

    def validate() -> Scores:
        # the exact inference path (refolded each time, the weights change; eager, so no compile
        # wait): several times faster than the training graph on a CPU
        with torch.inference_mode():
            u = FusedRNN(net, compile=False)(bundle.normalise(v_img), v_probs, keep_all=False)[-1]
        pred = u[0].argmax(0).cpu().numpy().astype(np.uint8)
        if not partial:
            return evaluate(pred, v_lab, k)
        exact = np.where(v_lab < k, v_lab, IGNORE).astype(np.uint8)
        iou = evaluate(pred, exact, k).iou if (exact != IGNORE).any() else (float("nan"),) * k
        used = v_lab != IGNORE
        acc = float(allowed.numpy()[v_lab[used], pred[used]].mean()) if used.any() else float("nan")
        return Scores(acc, iou, partial_mean_iou(pred, v_lab, allowed), int(used.sum()))

    result = RNNTrainResult(bundle)
    best_state, best, stale, best_step = None, -math.inf, 0, 0
    if init is not None and crop is not None:  # the start is a candidate: a fine-tune never ends worse
        net.eval()  # on the held-out pixels than the model it started from
        best = validate().mean_iou
        best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
    t0 = time.perf_counter()
    last_eval, eval_cost = 0.0, 0.0
    done_before = int(bundle.info.get("trained_steps", 0)) if init is not None else 0
    step = 0
    net.train()
    for step in range(1, cfg.steps + 1):
        if should_stop():
            result.stopped = "cancelled"
            step -= 1  # this step did not run
            break
        (x, p), y = sampler.sample(cfg.batch_size)
        x = bundle.normalise(jitter(_as_float(x), cfg.jitter, gen).to(dev))
        p, y = _as_float(p).to(dev), torch.from_numpy(y).long().to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            u = net(x, p)[-1][..., halo : halo + cfg.patch_size, halo : halo + cfg.patch_size]
            loss = partial_label_loss(u, y, allowed) if partial else segmentation_loss(u, y)
        if anchor is not None:
            loss = loss + cfg.anchor * sum(((q - anchor[n]) ** 2).sum() for n, q in net.named_parameters())
        if teacher is not None:  # KL(start || now) per pixel, summed over classes
            with torch.no_grad():
                ref = teacher(x, p)[-1][..., halo : halo + cfg.patch_size, halo : halo + cfg.patch_size]
            loss = loss + cfg.distill * F.kl_div(
                F.log_softmax(u.float(), 1), F.log_softmax(ref.float(), 1), log_target=True, reduction="none"
            ).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - t0
        report = Progress(step, cfg.steps, loss.item(), elapsed)
        last = step == cfg.steps or (cfg.max_seconds is not None and elapsed >= cfg.max_seconds)
        # time-based evaluations also keep validation under ~20% of the wall-clock
        wait = None if cfg.eval_seconds is None else max(cfg.eval_seconds, 4 * eval_cost)
        due = step % cfg.eval_every == 0 or (wait is not None and elapsed - last_eval >= wait)
        if crop is not None and (due or last):
            t_eval = time.perf_counter()
            report.val = validate()
            eval_cost = time.perf_counter() - t_eval
            last_eval = time.perf_counter() - t0
            score = report.val.mean_iou
            if score > best + 1e-4:
                best, stale, best_step = score, 0, step
                best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
            else:
                stale += 1
            report.best_val = best
        result.history.append(report)
        if progress and (step % 5 == 0 or report.val is not None or last):
            progress(report)
        if checkpoint_dir and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            bundle.optimizer_state = _adagrad_state(opt, net)
            bundle.info = {**bundle.info, "trained_steps": done_before + step}
            save_checkpoint(bundle, checkpoint_dir, done_before + step)
        if cfg.patience and stale >= cfg.patience:
            result.stopped = "early_stopping"
            break
        if last and step != cfg.steps:
            result.stopped = "time_budget"
            break
    if best_state is not None:  # keep the weights that did best on the held-out pixels
        net.load_state_dict(best_state)
        result.best_val = best
    net.eval()
    bundle.info = {
        **{k: v for k, v in bundle.info.items() if k != "checkpoint_step"},
        "trained_steps": done_before + step,
        "train_config": cfg.__dict__.copy(),
        "best_val_mean_iou": result.best_val,
        "best_step": done_before + best_step if best_state is not None else None,  # the weights kept
        "stopped": result.stopped,
    }
    bundle.optimizer_state = _adagrad_state(opt, net)
    return result


#: Fine-tuning from the pretrained RNN on a painted patch: few steps, a smaller learning rate
#: than from scratch, the weights pulled towards the pretrained ones, the refined probabilities
#: pulled towards the pretrained model's (``distill``: without it a building-rich patch taught
#: every other tile to over-predict, test mIoU 0.599 -> 0.500 on Austin), augmentation, and the
#: weights that did best on held-out painted pixels, the start included (docs/results.md).
FINETUNE_DEFAULTS = RNNTrainConfig(
    steps=300, lr=0.003, holdout=0.25, eval_every=25, eval_seconds=None, patience=6, anchor=1e-3,
    jitter=0.2, fresh_optimizer=True, distill=5.0,
)  # fmt: skip


def finetune_from_pretrained(
    image: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    init: ModelBundle,
    cfg: RNNTrainConfig = FINETUNE_DEFAULTS,
    *,
    partial: Mapping[int, Sequence[int]] | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    checkpoint_dir: str | Path | None = None,
) -> RNNTrainResult:
    """Adapt a pretrained RNN (e.g. ``assets/pretrained/rnn_1m``) to a painted patch.

    The default fine-tune of the app and of ``finetune --init``: the patch (``labels``, 255
    elsewhere) is small, so training starts from the pretrained refiner, a copy of ``init``
    (the loaded model is left untouched) is trained with :data:`FINETUNE_DEFAULTS` and the
    weights that did best on held-out painted blocks are returned. ``image``, ``probs`` and
    ``labels`` are on ``init``'s working grid.
    """
    import copy

    if init.kind != "rnn":
        raise ValueError("fine-tuning starts from an RNN model (e.g. assets/pretrained/rnn_1m)")
    start = copy.deepcopy(init)
    start.net.train()
    return train_rnn(
        image, probs, labels, init.classes, cfg, init=start, resolution=init.resolution, device=device,
        progress=progress, should_stop=should_stop, checkpoint_dir=checkpoint_dir, partial=partial,
    )  # fmt: skip


def train_rnn_tiles(
    images: list[np.ndarray],
    probs: list[np.ndarray],
    labels: list[np.ndarray],
    classes: ClassSpec,
    cfg: RNNTrainConfig = RNNTrainConfig(),
    *,
    partial: Mapping[int, Sequence[int]] | None = None,
    tile_weights: Sequence[float] | None = None,
    resolution: float | None = None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    validate: Callable[[ModelBundle], float] | None = None,
    progress: ProgressFn | None = None,
    balance: bool = True,
    centre_stride: int = 1,
    identity_start: bool = False,
) -> RNNTrainResult:
    """Pretrain the RNN over many tiles on a coarse model's outputs (the fine-tunes' start).

    Like :func:`train_rnn` with patches drawn from every tile (``tile_weights`` share the batch),
    partial labels, class-balanced centres, and the best weights by ``validate`` every
    ``cfg.eval_every`` steps. ``identity_start`` zeroes the MLPs' output layers, so training
    starts from ``du = 0`` (the refined map equals the coarse one) instead of a random update
    that first has to be unlearnt.
    """
    k = len(classes)
    allowed = allowed_table(k, partial)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    arch = RNNConfig(num_classes=k, in_channels=images[0].shape[0])
    mean, std = stats or image_stats([im.astype(np.float32) / 255 if im.dtype == np.uint8 else im for im in images])
    bundle = ModelBundle("rnn", RefinerRNN(arch), classes, resolution, mean, std)
    net: RefinerRNN = bundle.net  # type: ignore[assignment]
    if identity_start:
        with torch.no_grad():
            for blk in net.blocks:
                blk.output.weight.zero_()
                blk.output.bias.zero_()
    halo = net.cfg.halo
    samplers = [
        PatchSampler([im, pr], lab, cfg.patch_size, halo, seed=cfg.seed + i, augment=cfg.augment,
                     balance=balance, stride=centre_stride)  # fmt: skip
        for i, (im, pr, lab) in enumerate(zip(images, probs, labels, strict=True))
    ]
    weights = np.array(tile_weights if tile_weights is not None else [s.ys.size for s in samplers], float)
    weights /= weights.sum()
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adagrad(net.parameters(), lr=cfg.lr)
    result = RNNTrainResult(bundle)
    best, best_state, best_step = -math.inf, None, 0
    if validate is not None and cfg.eval_every:  # the start is a candidate: never end worse than it
        net.eval()
        best = float(validate(bundle))
        best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
        if progress:
            message = f"validation at the start {best:.3f}"
            progress(Progress(0, cfg.steps, math.nan, 0.0, best_val=best, message=message))
    t0 = time.perf_counter()
    net.train()
    step = 0
    for step in range(1, cfg.steps + 1):
        counts = rng.multinomial(cfg.batch_size, weights)
        xs, ps, ys = [], [], []
        for sampler, n in zip(samplers, counts, strict=True):
            if n:
                (x, p), y = sampler.sample(int(n))
                xs.append(_as_float(x))
                ps.append(_as_float(p))
                ys.append(torch.from_numpy(y))
        x = bundle.normalise(jitter(torch.cat(xs), cfg.jitter, gen))
        u = net(x, torch.cat(ps))[-1][..., halo : halo + cfg.patch_size, halo : halo + cfg.patch_size]
        loss = partial_label_loss(u, torch.cat(ys).long(), allowed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        report = Progress(step, cfg.steps, loss.item(), time.perf_counter() - t0)
        if validate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            net.eval()
            score = float(validate(bundle))
            net.train()
            if score > best:
                best, best_step = score, step
                best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
            report.best_val = best
            report.message = f"validation {score:.3f} (best {best:.3f})"
        result.history.append(report)
        if progress and (step % 10 == 0 or step == cfg.steps or report.message):
            progress(report)
    if best_state is not None:
        net.load_state_dict(best_state)
        result.best_val = best
    net.eval()
    bundle.info = {"trained_steps": step, "train_config": cfg.__dict__.copy(), "best_step": best_step,
                   "best_val": result.best_val}  # fmt: skip
    bundle.optimizer_state = _adagrad_state(opt, net)
    return result
