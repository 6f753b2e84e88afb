"""Training the coarse CNN from imprecise labels (rasterised OSM), with validation and checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from refiner.core.classes import IGNORE, ClassSpec
from refiner.core.device import pick_device
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.store import ModelBundle, image_stats
from refiner.train.loop import Progress, ProgressFn, _as_float, lr_at
from refiner.train.losses import allowed_table, partial_label_loss, segmentation_loss
from refiner.train.sampling import PatchSampler, check_counts, check_labels, jitter

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
