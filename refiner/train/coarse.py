"""Training the coarse CNN from imprecise labels (rasterised OSM), with validation and checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from refiner.core.classes import IGNORE, ClassSpec
from refiner.core.device import pick_device
from refiner.models.coarse import CoarseConfig, CoarseNet
from refiner.models.designs import build_coarse
from refiner.models.store import ModelBundle, image_stats
from refiner.train.checkpoint import (
    TrainState,
    data_summary,
    fingerprint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from refiner.train.loop import Progress, ProgressFn, centre, lr_at, validate_and_keep, validation_due
from refiner.train.losses import allowed_table, partial_label_loss, segmentation_loss
from refiner.train.sampling import PatchSampler, TileMix, check_counts, check_labels, jitter

# --------------------------------------------------------------------------- coarse CNN


@dataclass
class CoarseTrainConfig:
    """Training hyper-parameters of the coarse CNN (defaults are the paper's).

    The CLI's ``train-coarse`` options and the experiment recipes take their defaults from here;
    each field's comment says what it does.

    Example:
        ```python
        cfg = refiner.CoarseTrainConfig(steps=500, batch_size=32)
        coarse = refiner.train_coarse([scene.image], [scene.osm], scene.classes, cfg)
        ```
    """

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
    arch: str = "mnih"  # the network design: "mnih" (the paper's) or "skip_context" (refiner.models.coarse)


@dataclass
class CoarseTrainResult:
    """What a :func:`train_coarse` run leaves besides the model: its validation history and best checkpoint."""

    bundle: ModelBundle
    #: one row per validation: {"step", "loss" (mean since the last row), "val", "seconds"
    #: (wall-clock training seconds, all sittings), "cpu_seconds" (this process's CPU time, all
    #: sittings), "train_cpu_seconds" (the part spent training, not validating: the budget that
    #: compares designs on a shared machine), "lr"}, plus what ``monitor`` returned
    history: list[dict] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    finished: bool = False  # False: ``should_stop`` ended it before ``cfg.steps`` (resume from the checkpoint)
    seconds: float = 0.0  # training seconds, validations included, over every sitting of a checkpointed run


def _check_coarse_labels(
    images: list[np.ndarray], labels: list[np.ndarray], num_classes: int, allowed: torch.Tensor, partial: bool
) -> None:
    """Refuse mismatched sizes and label values that are neither a class index nor a partial code."""
    for im, lab in zip(images, labels, strict=True):
        if im.shape[1:] != lab.shape:
            raise ValueError(f"image {im.shape[1:]} and labels {lab.shape} differ in size")
        if not partial or not (lab != IGNORE).any():
            check_labels(lab, num_classes)
        if not partial:
            continue
        present = np.unique(lab[lab != IGNORE])
        bad = [int(v) for v in present if not allowed[int(v)].any()]
        if bad:
            raise ValueError(f"labels contain value(s) {bad[:8]} that are neither a class index nor a partial code")


def _check_inputs(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    classes: ClassSpec,
    cfg: CoarseTrainConfig,
    partial: Mapping[int, Sequence[int]] | None,
) -> torch.Tensor:
    """Refuse bad inputs before any work; returns the table of classes each label code allows."""
    if len(images) != len(labels) or not images:
        raise ValueError("give one label raster per image (and at least one image)")
    check_counts(steps=cfg.steps, batch_size=cfg.batch_size)
    allowed = allowed_table(len(classes), partial)
    _check_coarse_labels(images, labels, len(classes), allowed, bool(partial))
    return allowed


def _start_net(
    images: list[np.ndarray], classes: ClassSpec, arch: str, init: ModelBundle | None, dev: torch.device
) -> CoarseNet:
    """A freshly initialised coarse network of design ``arch``, or one holding ``init``'s weights.

    ``init`` must have the same classes and design.
    """
    net = build_coarse(CoarseConfig(num_classes=len(classes), in_channels=images[0].shape[0], arch=arch)).to(dev)
    if init is not None:
        if init.kind != "coarse" or tuple(init.classes.names) != tuple(classes.names):
            raise ValueError("init must be a coarse model with the same classes")
        if init.net.cfg.arch != arch:
            raise ValueError(f"init is a {init.net.cfg.arch!r} network, the training asks for {arch!r}")
        net.load_state_dict(init.net.state_dict())
    return net


def _batches(
    images: list[np.ndarray], labels: list[np.ndarray], cfg: CoarseTrainConfig, tile_weights: Sequence[float] | None
) -> TileMix:
    """Training batches: a patch sampler per tile (its own seed), mixed by ``tile_weights``."""
    samplers = [
        PatchSampler(
            [im],
            lab,
            cfg.output_size,
            cfg.context,
            seed=cfg.seed + i,
            augment=cfg.augment,
            balance=cfg.balance,
            stride=cfg.centre_stride,
        )  # fmt: skip
        for i, (im, lab) in enumerate(zip(images, labels, strict=True))
    ]
    return TileMix(samplers, tile_weights, seed=cfg.seed)


def _monitored(bundle: ModelBundle, monitor: Callable[[ModelBundle], dict] | None) -> dict:
    """What ``monitor`` records of the model (in eval mode; back to train mode after), or nothing."""
    if monitor is None:
        return {}
    bundle.net.eval()
    row = monitor(bundle)
    bundle.net.train()
    return row


def _provenance(cfg: CoarseTrainConfig, steps: int, init: ModelBundle | None, result: CoarseTrainResult) -> dict:
    """The trained model's ``info``: steps in all (``init``'s included), the config, the checkpoint kept."""
    before = int(init.info.get("trained_steps", 0)) if init is not None else 0
    info = {"trained_steps": before + steps, "train_config": cfg.__dict__.copy()}
    if init is not None:
        info["init_steps"] = before
    if result.best_step is not None:
        info.update(best_step=result.best_step, best_val=result.best_val)
    return info


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
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    monitor: Callable[[ModelBundle], dict] | None = None,
) -> ModelBundle:
    """Train the coarse CNN on (possibly imprecise) labels; images (C, H, W) in [0, 1] (or uint8).

    Args:
        images: the training images, each (C, H, W).
        labels: their labels, each (H, W) class indices (255 = unlabelled).
        classes: the classes.
        cfg: the hyper-parameters.
        resolution: metres per pixel of the images (kept in the model).
        device: where to train (default: cuda, else mps, else cpu).
        progress: called with a report every few steps.
        should_stop: polled between steps; True ends training (the model so far is returned).
        partial: extra label codes -> the classes they allow (:func:`partial_label_loss`).
        tile_weights: share of the batch per image (default: by labelled pixels).
        stats: the normalisation (per-band mean, std) to use instead of the images' own.
        validate: scores the model every ``cfg.eval_every`` steps; the best-scoring weights are
            returned.
        result: filled with the validation history and best step when given.
        init: a trained coarse model to continue from (its weights and normalisation; the
            recipe's second stage), else training starts from Glorot.
        checkpoint: a file holding the whole training state (:mod:`refiner.train.checkpoint`),
            written every ``checkpoint_every`` steps, when ``should_stop`` ends the run and at
            the end; when it exists, training continues from it and ends with the same model as
            a run that never stopped.
        checkpoint_every: steps between checkpoints (0: only when stopped and at the end).
        monitor: extra scores recorded with each validation row of the history (e.g. the test
            tiles' IoU for a learning curve); never used to choose the weights.

    Returns:
        The trained model; ``info["trained_steps"]`` counts the steps that ran (fewer when
        ``should_stop`` ends it).

    Raises:
        ValueError: ``cfg.steps`` below 1, images and labels of different sizes, label values
            that are neither a class index nor a partial code, or a ``checkpoint`` written for
            other settings or data.

    Example:
        ```python
        scene = refiner.make_scene(256, seed=0)
        coarse = refiner.train_coarse([scene.image], [scene.osm], scene.classes, refiner.CoarseTrainConfig(steps=200))
        refiner.save_model(coarse, "models/coarse")
        ```
    """
    allowed = _check_inputs(images, labels, classes, cfg, partial)
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = _start_net(images, classes, cfg.arch, init, dev)
    if init is not None:
        stats = stats or (init.mean, init.std)
    mean, std = stats or image_stats([im.astype(np.float32) / 255 if im.dtype == np.uint8 else im for im in images])
    bundle = ModelBundle("coarse", net, classes, resolution, mean, std)
    batches = _batches(images, labels, cfg, tile_weights)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = TrainState()
    stamp = fingerprint(config=cfg.__dict__, classes=list(classes.names), data=data_summary(images, labels),
                         partial=partial, tile_weights=tile_weights, stats=[mean, std], resolution=resolution,
                         init=None if init is None else init.info.get("trained_steps"))  # fmt: skip
    if checkpoint is not None and Path(checkpoint).exists():
        state, rngs = load_checkpoint(checkpoint, net=net, optimizer=opt, fingerprint=stamp)
        set_rng_state(rngs, batches, gen)
    best = state.best
    result = result if result is not None else CoarseTrainResult(bundle)
    result.bundle, result.history = bundle, state.history
    t0 = time.perf_counter() - state.seconds
    cpu0 = time.process_time() - state.cpu_seconds

    def save() -> None:
        if checkpoint is not None:
            state.seconds, state.cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
            save_checkpoint(checkpoint, net=net, optimizer=opt, state=state, rng=rng_state(batches, gen),
                            fingerprint=stamp)  # fmt: skip

    net.train()
    losses = state.losses  # since the last history row
    step = state.step
    for step in range(state.step + 1, cfg.steps + 1):
        if should_stop():
            step -= 1  # this step did not run
            break
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.schedule, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        (x,), y = batches.sample(cfg.batch_size)
        x = bundle.normalise(jitter(x, cfg.jitter, gen).to(dev))
        scores = centre(net(x), cfg.context, cfg.output_size)
        y = y.to(dev)
        loss = partial_label_loss(scores, y, allowed) if partial else segmentation_loss(scores, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        state.step = step
        report = Progress(step, cfg.steps, losses[-1], time.perf_counter() - t0)
        if validate is not None and validation_due(step, cfg.steps, cfg.eval_every):
            cpu_eval = time.process_time()
            score = validate_and_keep(net, bundle, validate, best, report)
            row = {"step": step, "loss": float(np.mean(losses)), "val": score, "lr": lr, **_monitored(bundle, monitor)}
            state.eval_cpu_seconds += time.process_time() - cpu_eval
            cpu = time.process_time() - cpu0
            state.history.append({**row, "seconds": report.seconds, "cpu_seconds": cpu,
                                  "train_cpu_seconds": cpu - state.eval_cpu_seconds})  # fmt: skip
            losses.clear()
        if checkpoint_every and step % checkpoint_every == 0 and step != cfg.steps:
            save()
        if progress and (step % 10 == 0 or step == cfg.steps or report.message):
            progress(report)
    result.finished = state.step == cfg.steps
    save()  # at the end, or where ``should_stop`` ended it
    result.seconds = time.perf_counter() - t0
    if best.step is not None:
        result.best_val, result.best_step = best.score, best.step
    best.restore(net)  # the checkpoint that did best on the validation tiles
    net.eval()
    bundle.info = _provenance(cfg, step, init, result)
    return bundle
