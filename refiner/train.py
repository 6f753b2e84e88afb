"""Training loops for the coarse CNN and the refinement RNN.

Both sample random patches around *labelled* pixels (a painted patch can be a few hundred pixels
in a corner of a tile) and use cross-entropy with unlabelled pixels (255) ignored, so they
contribute no gradient. Loops report progress through a callback, stop when ``should_stop()``
says so, can hold back spatial blocks of the labels for validation, stop early when the
validation score stalls, and write checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refiner.classes import IGNORE, ClassSpec
from refiner.metrics import Scores, evaluate
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.fused import FusedRNN
from refiner.models.io import ModelBundle, image_stats, save_model
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
    labels: np.ndarray, fraction: float = 0.2, *, block: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into (train, validation) by spatial blocks of ``block`` px.

    Blocks, not single pixels: neighbouring pixels are nearly copies of each other, so a
    pixel-level split would make the validation score meaninglessly optimistic. Returns two
    label maps with the other part set to 255. With fewer than 2 labelled blocks, the
    validation map is empty.
    """
    h, w = labels.shape
    by, bx = np.arange(h) // block, np.arange(w) // block
    block_id = by[:, None] * (bx.max() + 1) + bx[None, :]
    labelled = labels != IGNORE
    ids = np.unique(block_id[labelled])
    train, val = labels.copy(), np.full_like(labels, IGNORE)
    if fraction <= 0 or len(ids) < 2:
        return train, val
    rng = np.random.default_rng(seed)
    n_val = min(len(ids) - 1, max(1, round(len(ids) * fraction)))
    chosen = np.isin(block_id, rng.choice(ids, n_val, replace=False)) & labelled
    val[chosen] = labels[chosen]
    train[chosen] = IGNORE
    return train, val


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
    ) -> None:
        self.size, self.margin, self.augment = size, margin, augment
        h, w = labels.shape
        extra_h, extra_w = max(0, size - h), max(0, size - w)
        pad = ((margin, margin + extra_h), (margin, margin + extra_w))
        self.arrays = [np.pad(a, ((0, 0), *pad), mode="edge") for a in arrays]
        self.labels = np.pad(labels, ((0, extra_h), (0, extra_w)), constant_values=IGNORE)
        ys, xs = np.nonzero(self.labels != IGNORE)
        if ys.size == 0:
            raise NoLabelsError("no labelled pixel to sample training patches from")
        self.ys, self.xs = ys, xs
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        s, m = self.size, self.margin
        hp, wp = self.labels.shape
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
) -> ModelBundle:
    """Train the coarse CNN on (possibly imprecise) labels; images (C, H, W) in [0, 1]."""
    if len(images) != len(labels) or not images:
        raise ValueError("give one label raster per image (and at least one image)")
    for im, lab in zip(images, labels, strict=True):
        if im.shape[1:] != lab.shape:
            raise ValueError(f"image {im.shape[1:]} and labels {lab.shape} differ in size")
        check_labels(lab, len(classes))
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    net = CoarseCNN(CoarseConfig(num_classes=len(classes), in_channels=images[0].shape[0])).to(dev)
    mean, std = image_stats(images)
    bundle = ModelBundle("coarse", net, classes, resolution, mean, std)
    samplers = [
        PatchSampler([im], lab, cfg.output_size, cfg.context, seed=cfg.seed + i, augment=cfg.augment)
        for i, (im, lab) in enumerate(zip(images, labels, strict=True))
    ]
    weights = np.array([s.ys.size for s in samplers], float)
    weights /= weights.sum()
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    net.train()
    m, s = cfg.context, cfg.output_size
    for step in range(1, cfg.steps + 1):
        if should_stop():
            break
        counts = rng.multinomial(cfg.batch_size, weights)
        xs, ys = [], []
        for sampler, n in zip(samplers, counts, strict=True):
            if n:
                (x,), y = sampler.sample(int(n))
                xs.append(x)
                ys.append(y)
        x = bundle.normalise(torch.from_numpy(np.concatenate(xs)).to(dev))
        y = torch.from_numpy(np.concatenate(ys)).long().to(dev)
        scores = net(x)[..., m : m + s, m : m + s]
        loss = segmentation_loss(scores, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress and (step % 10 == 0 or step == cfg.steps):
            progress(Progress(step, cfg.steps, loss.item(), time.perf_counter() - t0))
    net.eval()
    bundle.info = {"trained_steps": step, "train_config": cfg.__dict__.copy()}
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
    holdout: float = 0.2  # fraction of labelled blocks held back for validation
    eval_every: int = 50  # steps between evaluations on the held-out pixels ...
    # ... or seconds, whichever comes first: best-weights selection needs evaluations early, and
    # on a busy CPU 50 steps can take longer than the whole 60 s budget an app user waits
    eval_seconds: float | None = 5.0
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    max_seconds: float | None = None  # wall-clock budget
    checkpoint_every: int = 0  # steps; 0 = only at the end


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
) -> RNNTrainResult:
    """Fine-tune the RNN on an accurately labelled tile.

    ``image`` (C, H, W) in [0, 1] and the frozen coarse ``probs`` (K, H, W) cover the tile;
    ``labels`` (H, W) mark the accurately labelled pixels (255 elsewhere). A ``holdout`` fraction
    of labelled blocks is kept for validation unless ``val_labels`` are given. ``init`` continues
    training an existing model (with its AdaGrad state when it has one).
    """
    k = len(classes)
    if probs.shape[0] != k:
        raise ValueError(f"the probability map has {probs.shape[0]} bands but there are {k} classes")
    if image.shape[1:] != probs.shape[1:] or labels.shape != probs.shape[1:]:
        raise ValueError(
            f"image {image.shape[1:]}, probabilities {probs.shape[1:]} and labels {labels.shape} "
            "must have the same size"
        )
    check_labels(labels, k)
    if val_labels is None:
        labels, val_labels = split_holdout(labels, cfg.holdout, seed=cfg.seed)
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
    sampler = PatchSampler([image, probs], labels, cfg.patch_size, halo, seed=cfg.seed, augment=cfg.augment)
    opt = torch.optim.Adagrad(net.parameters(), lr=cfg.lr)
    if init is not None and init.optimizer_state:
        _load_adagrad_state(opt, net, init.optimizer_state)
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
        return evaluate(u[0].argmax(0).cpu().numpy().astype(np.uint8), v_lab, k)

    result = RNNTrainResult(bundle)
    best_state, best, stale = None, -math.inf, 0
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
        x = bundle.normalise(torch.from_numpy(x).to(dev))
        p, y = torch.from_numpy(p).to(dev), torch.from_numpy(y).long().to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            u = net(x, p)[-1][..., halo : halo + cfg.patch_size, halo : halo + cfg.patch_size]
            loss = segmentation_loss(u, y)
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
                best, stale = score, 0
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
            save_model(bundle, checkpoint_dir)
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
        **bundle.info,
        "trained_steps": done_before + step,
        "train_config": cfg.__dict__.copy(),
        "best_val_mean_iou": result.best_val,
        "stopped": result.stopped,
    }
    bundle.optimizer_state = _adagrad_state(opt, net)
    if checkpoint_dir:
        save_model(bundle, checkpoint_dir)
    return result
