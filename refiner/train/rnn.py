"""Training the refinement RNN on a small accurately labelled patch, and fine-tuning a pretrained one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refiner.core.classes import IGNORE, ClassSpec
from refiner.core.device import pick_device
from refiner.core.metrics import Scores, evaluate
from refiner.models.fused import FusedRNN
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, image_stats, save_checkpoint
from refiner.train.loop import (
    BestWeights,
    Progress,
    ProgressFn,
    centre,
    stop_reason,
    validate_and_keep,
    validation_due,
)
from refiner.train.losses import allowed_table, partial_label_loss, partial_mean_iou, segmentation_loss
from refiner.train.sampling import (
    PatchSampler,
    TileMix,
    as_float,
    check_counts,
    check_labels,
    check_patches,
    hard_pixels,
    holdout_guard,
    jitter,
    split_holdout,
)

# --------------------------------------------------------------------------- RNN


@dataclass
class RNNTrainConfig:
    """Fine-tuning hyper-parameters of the RNN (AdaGrad lr 0.01 and cross-entropy: the paper's).

    The one source of the training defaults: the CLI's ``finetune`` options, the app's Train page
    and the recipes read them from here (``FINETUNE_DEFAULTS`` is the patch fine-tune's variant);
    each field's comment says what it does.

    Example:
        ```python
        cfg = refiner.RNNTrainConfig(steps=300, holdout=0.25, patience=6)
        result = refiner.train_rnn(tile.image, probs, labels, classes, cfg)
        ```
    """

    steps: int = 1500
    # Small batches of small patches: on a CPU, 8 x 48^2 runs ~7x faster per pixel than 16 x 64^2
    # (the per-class feature maps stay in cache), and AdaGrad does not need large batches.
    batch_size: int = 8
    patch_size: int = 48
    lr: float = 0.01
    seed: int = 0
    augment: bool = True
    holdout: float = 0.2  # fraction of labelled pixels held back for validation, as whole regions
    holdout_compact: bool = False  # ... grown as one piece (one guard band) instead of scattered
    eval_every: int = 50  # steps between evaluations on the held-out pixels (0: none by count) ...
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
    #: may be background or road), so the fine-tune keeps the start's answer there. A new RNN with
    #: a pull starts as the coarse map (as with ``identity_start``): the pull needs a start.
    distill: float = 0.0
    #: Score every iteration's map, not only the last (the loss is their mean): each u_t must be a
    #: good map on its own, so later iterations cannot drift away from what the first ones fixed
    #: (the patch-trained RNN peaked at t = 1-3 on unseen tiles and then lost ground, issue #27)
    every_iteration: bool = False
    #: A new RNN (no ``init``) starts from ``du = 0`` (:func:`zero_update`): the refined map is the
    #: coarse one at step 0, not Glorot's random update; that start is then a candidate of the
    #: best-weights selection and ``distill`` pulls towards it. Off: on the 500^2 patch protocol
    #: it alone did worse than Glorot's start on two seeds; with ``distill`` 1.0 it did best, still
    #: below the coarse CNN (docs/results.md, issue 27)
    identity_start: bool = False
    #: Share of the patches centred on pixels where the coarse map is wrong (its top class is one
    #: the label rules out) or unsure (top two within 0.2): :func:`~refiner.train.sampling.hard_pixels`
    #: on the training labels; 0 draws every centre as before
    focus: float = 0.0
    #: Unroll a random number of iterations per step, ``iterations`` +- this many (at least 1; a
    #: non-recurrent RNN, whose iterations each have their own weights, at most its own count),
    #: scoring the last map: a shared update trained this way must improve any map it meets and not
    #: only its fifth, so repeating it settles instead of drifting; 0 = always the built count
    unroll_jitter: int = 0


@dataclass
class RNNTrainResult:
    """A trained RNN with its per-step reports, best held-out score and why training ended.

    Attributes:
        bundle: the trained RNN (the weights that did best on the held-out pixels, when any).
        history: the progress reports (step, loss, validation scores).
        best_val: the best held-out mean IoU (None without held-out pixels).
        stopped: ``finished``, ``early_stopping``, ``time_budget`` or ``cancelled``.

    Example:
        ```python
        result = refiner.train_rnn(tile.image, probs, labels, classes)
        print(result.stopped, result.best_val, len(result.history))
        refiner.save_model(result.bundle, "models/rnn")
        ```
    """

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


def _optimizer(net: RefinerRNN, cfg: RNNTrainConfig, init: ModelBundle | None) -> torch.optim.Adagrad:
    """AdaGrad at ``cfg.lr``; a continued run resumes ``init``'s accumulators unless ``cfg.fresh_optimizer``."""
    opt = torch.optim.Adagrad(net.parameters(), lr=cfg.lr)
    if init is not None and init.optimizer_state and not cfg.fresh_optimizer:
        _load_adagrad_state(opt, net, init.optimizer_state)
    return opt


def _focus_map(cfg: RNNTrainConfig, probs: np.ndarray, labels: np.ndarray, allowed: torch.Tensor) -> np.ndarray | None:
    """The pixels a ``cfg.focus`` share of the patches is centred on (None when off)."""
    return hard_pixels(probs, labels, allowed.numpy()) if cfg.focus > 0 else None


def _check_config(cfg: RNNTrainConfig) -> None:
    """What both trainers refuse before any work: bad counts, a focus share outside 0..1, negative pulls or jitter."""
    check_counts(steps=cfg.steps, batch_size=cfg.batch_size, patch_size=cfg.patch_size)
    if not 0 <= cfg.focus <= 1:
        raise ValueError(
            f"focus {cfg.focus} is not a share in 0..1 — e.g. 0.5 centres half the patches where the coarse map "
            "is wrong or unsure"
        )
    for name in ("distill", "anchor"):  # a negative pull would push away from the start, or be ignored
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} {getattr(cfg, name)} is negative — give 0 (no pull) or a positive weight")
    if cfg.unroll_jitter < 0:
        raise ValueError(
            f"unroll_jitter {cfg.unroll_jitter} is negative — give 0 (always the RNN's own count) or e.g. 2"
        )


def _check_inputs(image: np.ndarray, probs: np.ndarray, labels: np.ndarray, k: int, cfg: RNNTrainConfig) -> None:
    """Refuse a bad config (:func:`_check_config`), a holdout that is not a fraction and mismatched shapes."""
    _check_config(cfg)
    if not 0 <= cfg.holdout < 1:
        raise ValueError(f"holdout {cfg.holdout} is not a fraction below 1 — keep e.g. 0.2 of the labelled blocks")
    if probs.shape[0] != k:
        raise ValueError(f"the probability map has {probs.shape[0]} bands but there are {k} classes")
    if image.shape[1:] != probs.shape[1:] or labels.shape != probs.shape[1:]:
        raise ValueError(
            f"image {image.shape[1:]}, probabilities {probs.shape[1:]} and labels {labels.shape} "
            "must have the same size"
        )
    for what, arr in (("image", image), ("probabilities", probs)):
        if not np.isfinite(arr).all():
            raise ValueError(
                f"the {what} hold NaN or infinite values — read them with refiner.read_image / read_probs "
                "(NaN pixels become nodata) or replace them before training"
            )


def _start_bundle(
    image: np.ndarray,
    classes: ClassSpec,
    arch: RNNConfig | None,
    init: ModelBundle | None,
    resolution: float | None,
    dev: torch.device,
) -> tuple[ModelBundle, RefinerRNN]:
    """The model training starts from: ``init`` itself (trained in place), else a new RNN normalised on ``image``."""
    if init is None:
        net = RefinerRNN(arch or RNNConfig(num_classes=len(classes), in_channels=image.shape[0])).to(dev)
        mean, std = image_stats([image])
        return ModelBundle("rnn", net, classes, resolution, mean, std), net
    if not isinstance(init.net, RefinerRNN):
        raise ValueError(f"training continues from an RNN model, not a {init.kind} one")
    init.net.to(dev)
    if list(init.classes.names) != list(classes.names):
        raise ValueError(f"the model was trained for classes {list(init.classes.names)}, not {list(classes.names)}")
    return init, init.net


def zero_update(net: RefinerRNN) -> None:
    """Zero the MLPs' output layers in place: ``du = 0``, so the RNN returns its input map unchanged.

    The learned filters and hidden units are kept, so training starts from features that already
    respond to edges, from a map no worse than the coarse one.
    """
    with torch.no_grad():
        for blk in net.blocks:
            blk.output.weight.zero_()
            blk.output.bias.zero_()


def held_out_scores(pred: np.ndarray, labels: np.ndarray, allowed: torch.Tensor, partial: bool) -> Scores:
    """Scores of a prediction on held-out labels; with partial codes, IoU on exact labels and partial accuracy."""
    k = allowed.shape[1]
    if not partial:
        return evaluate(pred, labels, k)
    exact = np.where(labels < k, labels, IGNORE).astype(np.uint8)
    iou = evaluate(pred, exact, k).iou if (exact != IGNORE).any() else (float("nan"),) * k
    used = labels != IGNORE
    acc = float(allowed.numpy()[labels[used], pred[used]].mean()) if used.any() else float("nan")
    return Scores(acc, iou, partial_mean_iou(pred, labels, allowed), int(used.sum()))


def _held_out_scorer(
    bundle: ModelBundle,
    net: RefinerRNN,
    image: np.ndarray,
    probs: np.ndarray,
    val_labels: np.ndarray,
    allowed: torch.Tensor,
    partial: bool,
    dev: torch.device,
) -> Callable[[], Scores] | None:
    """Score the current weights on the held-out pixels (None when there are none).

    Only the crop around them (plus the receptive field) is refined, on the exact inference
    path: refolded each time as the weights change, eager (no compile wait), several times
    faster than the training graph on a CPU.
    """
    crop = _val_crop(val_labels, net.cfg.halo)
    if crop is None:
        return None
    v_img = torch.from_numpy(np.ascontiguousarray(image[:, crop[0], crop[1]]))[None].to(dev)
    v_probs = torch.from_numpy(np.ascontiguousarray(probs[:, crop[0], crop[1]]))[None].to(dev)
    v_lab = val_labels[crop]

    def score() -> Scores:
        with torch.inference_mode():
            u = FusedRNN(net, compile=False)(bundle.normalise(v_img), v_probs, keep_all=False)[-1]
        return held_out_scores(u[0].argmax(0).cpu().numpy().astype(np.uint8), v_lab, allowed, partial)

    return score


class _Objective:
    """The loss :func:`train_rnn` minimises, with the pulls that keep a fine-tune near its start.

    The labelled pixels' cross-entropy (partial-label when codes are given), plus the L2-SP pull
    towards the starting weights (``cfg.anchor``) and the per-pixel KL pull towards the starting
    model's probabilities (``cfg.distill``, only when continuing from ``init``).
    """

    def __init__(
        self, net: RefinerRNN, cfg: RNNTrainConfig, allowed: torch.Tensor, partial: bool, from_init: bool
    ) -> None:
        self.net, self.cfg, self.allowed, self.partial = net, cfg, allowed, partial
        self.amp = next(net.parameters()).device.type == "cuda"
        self.anchor = {n: t.detach().clone() for n, t in net.named_parameters()} if cfg.anchor > 0 else None
        self.teacher = None
        if cfg.distill > 0 and from_init:
            import copy

            self.teacher = copy.deepcopy(net).eval().requires_grad_(False)

    def __call__(
        self, x: torch.Tensor, p: torch.Tensor, y: torch.Tensor, iterations: int | None = None
    ) -> torch.Tensor:
        """The loss of one batch: normalised images ``x``, coarse probabilities ``p``, labels ``y``.

        ``iterations``: how many to unroll (default: the RNN's own count).
        """
        halo, size = self.net.cfg.halo, self.cfg.patch_size
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            maps = self.net(x, p, iterations)
            u = centre(maps[-1], halo, size)
            scored = [centre(m, halo, size) for m in maps[1:]] if self.cfg.every_iteration else [u]
            loss = torch.stack(
                [partial_label_loss(m, y, self.allowed) if self.partial else segmentation_loss(m, y) for m in scored]
            ).mean()
        if self.anchor is not None:
            anchor = self.anchor
            loss = loss + self.cfg.anchor * sum(((q - anchor[n]) ** 2).sum() for n, q in self.net.named_parameters())
        if self.teacher is not None:  # KL(start || now) per pixel, summed over classes
            with torch.no_grad():
                ref = centre(self.teacher(x, p, iterations)[-1], halo, size)
            loss = (
                loss
                + self.cfg.distill
                * F.kl_div(
                    F.log_softmax(u.float(), 1), F.log_softmax(ref.float(), 1), log_target=True, reduction="none"
                )
                .sum(1)
                .mean()
            )
        return loss


@dataclass
class _Schedule:
    """What :func:`train_rnn` does after a step, by step count and wall-clock: validate, report, checkpoint.

    Validations come every ``cfg.eval_every`` steps or after ``cfg.eval_seconds`` of training,
    whichever is first (best-weights selection needs them early, and on a busy CPU 50 steps can
    outlast an app user's whole budget), the wait stretched to 4x the last validation's cost so
    that validation stays under ~20 % of the wall-clock; and always after the last step.
    """

    cfg: RNNTrainConfig
    t0: float = field(default_factory=time.perf_counter)
    last_eval: float = 0.0  # seconds since t0 when the last validation ended
    cost: float = 0.0  # how long the last validation took

    def elapsed(self) -> float:
        """Seconds since training started."""
        return time.perf_counter() - self.t0

    def is_last(self, step: int, elapsed: float) -> bool:
        """Whether ``step`` is the final one: the last of ``cfg.steps``, or the time budget is spent."""
        budget = self.cfg.max_seconds
        return step == self.cfg.steps or (budget is not None and elapsed >= budget)

    def validate_now(self, step: int, elapsed: float, last: bool) -> bool:
        """Whether to validate after ``step``, ``elapsed`` seconds in."""
        wait = None if self.cfg.eval_seconds is None else max(self.cfg.eval_seconds, 4 * self.cost)
        every = self.cfg.eval_every  # 0: by the clock (eval_seconds) and at the end only
        due = (every > 0 and step % every == 0) or (wait is not None and elapsed - self.last_eval >= wait)
        return due or last

    def timed(self, score: Callable[[], Scores]) -> Scores:
        """Run one validation, noting its cost and when it ended."""
        start = time.perf_counter()
        val = score()
        self.cost = time.perf_counter() - start
        self.last_eval = time.perf_counter() - self.t0
        return val

    def report_now(self, report: Progress, last: bool) -> bool:
        """Whether to pass ``report`` to the progress callback: every 5 steps, each validation, the end."""
        return report.step % 5 == 0 or report.val is not None or last

    def checkpoint_now(self, step: int) -> bool:
        """Whether to save a checkpoint after ``step`` (every ``cfg.checkpoint_every`` steps; 0 = never)."""
        return bool(self.cfg.checkpoint_every) and step % self.cfg.checkpoint_every == 0


def _unroll(arch: RNNConfig, cfg: RNNTrainConfig, gen: torch.Generator) -> int | None:
    """This step's iteration count under ``cfg.unroll_jitter`` (None: the RNN's own)."""
    if cfg.unroll_jitter <= 0:
        return None
    low = max(1, arch.iterations - cfg.unroll_jitter)
    high = arch.iterations if arch.variant == "non_recurrent" else arch.iterations + cfg.unroll_jitter
    return int(torch.randint(low, high + 1, (1,), generator=gen).item())


def _train_step(
    sampler: PatchSampler,
    bundle: ModelBundle,
    objective: _Objective,
    opt: torch.optim.Optimizer,
    cfg: RNNTrainConfig,
    gen: torch.Generator,
    dev: torch.device,
) -> float:
    """One AdaGrad step on a batch of jittered patches; returns its loss."""
    (x, p), y = sampler.sample(cfg.batch_size)
    x_t = bundle.normalise(jitter(as_float(x), cfg.jitter, gen).to(dev))
    loss = objective(x_t, as_float(p).to(dev), torch.from_numpy(y).long().to(dev), _unroll(bundle.net.cfg, cfg, gen))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


class DivergedError(ValueError):
    """Training produced a NaN or infinite loss or weight: stopped, nothing of it is saved."""


def check_finite_training(net: torch.nn.Module, loss: float, step: int) -> None:
    """Stop training at the first NaN or infinite loss or weight, with a message saying what to do.

    Float imagery with NaN pixels trained a model with 9,539 NaN weights that was saved (rc 0) and
    then refined every tile to all-background.
    """
    bad = [n for n, q in net.named_parameters() if not bool(torch.isfinite(q).all())]
    if math.isfinite(loss) and not bad:
        return
    what = f"the weights {', '.join(bad[:3])}" if bad else "the loss"
    raise DivergedError(
        f"training stopped at step {step}: {what} became NaN or infinite, so no model was saved — check the "
        "image and probabilities for NaN pixels (declare them as nodata) or lower the learning rate"
    )


def _save_checkpoint(bundle: ModelBundle, opt: torch.optim.Optimizer, step: int, folder: str | Path) -> None:
    """Save the weights and AdaGrad state as they are at ``step`` (steps in all) under ``folder``."""
    bundle.optimizer_state = _adagrad_state(opt, bundle.net)
    bundle.info = {**bundle.info, "trained_steps": step}
    save_checkpoint(bundle, folder, step)


def _provenance(
    info: dict, cfg: RNNTrainConfig, done_before: int, steps: int, best_step: int | None, result: RNNTrainResult
) -> dict:
    """The trained model's ``info``: steps in all, the config, the weights kept and why training ended.

    Keys of the starting model's ``info`` carry over, except that it was a checkpoint.
    """
    return {
        **{k: v for k, v in info.items() if k != "checkpoint_step"},
        "trained_steps": done_before + steps,
        "train_config": cfg.__dict__.copy(),
        "best_val_mean_iou": result.best_val,
        "best_step": done_before + best_step if best_step is not None else None,  # the weights kept
        "stopped": result.stopped,
    }


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

    A ``cfg.holdout`` fraction of labelled blocks is kept for validation unless ``val_labels``
    are given, and the weights that did best there are returned.

    Args:
        image: the tile (C, H, W) in [0, 1].
        probs: the frozen coarse probabilities (K, H, W) of the tile.
        labels: the accurately labelled pixels (H, W) class indices, 255 elsewhere.
        classes: the K classes.
        cfg: the hyper-parameters (default: the paper's plain training, which the app, ``finetune``
            and ``experiment`` use for a new RNN too: :data:`SCRATCH_DEFAULTS`).
        arch: the architecture of a new RNN (default: the paper's, 5 iterations).
        init: a model to continue training (with its AdaGrad state when it has one).
        resolution: metres per pixel of the inputs (kept in the model).
        device: where to train (default: cuda, else mps, else cpu).
        progress: called with a report every step.
        should_stop: polled between steps; True ends training (``stopped == "cancelled"``).
        checkpoint_dir: where to write a checkpoint every ``cfg.checkpoint_every`` steps.
        val_labels: held-out labels to validate on, instead of splitting ``labels``.
        partial: extra label codes -> the classes they allow (e.g. ``NOT_ROAD``).

    Returns:
        The trained RNN with its reports, best held-out score and why it stopped.

    Raises:
        ValueError: no labelled pixel, or label values that are no class index.

    Example:
        ```python
        result = refiner.train_rnn(tile.image, probs, labels, classes, refiner.RNNTrainConfig(steps=300))
        refined = refiner.refine(result.bundle, tile, probs)
        ```
    """
    _check_inputs(image, probs, labels, len(classes), cfg)
    allowed = allowed_table(len(classes), partial)
    if not partial or not (labels != IGNORE).any():  # with partial codes, only that some label exists
        check_labels(labels, len(classes))
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    bundle, net = _start_bundle(image, classes, arch, init, resolution, dev)
    # a pull needs a start to pull towards: a new RNN with one starts as the coarse map (du = 0)
    identity = init is None and (cfg.identity_start or cfg.distill > 0)
    if identity:
        zero_update(net)
    check_patches(labels.shape, net.cfg, cfg.patch_size, cfg.batch_size)  # before the first step, not in a crash
    if val_labels is None:
        labels, val_labels = split_holdout(
            labels, cfg.holdout, guard=holdout_guard(net.cfg), seed=cfg.seed, compact=cfg.holdout_compact
        )
    sampler = PatchSampler([image, probs], labels, cfg.patch_size, net.cfg.halo, seed=cfg.seed, augment=cfg.augment,
                           focus=_focus_map(cfg, probs, labels, allowed), focus_share=cfg.focus)  # fmt: skip
    opt = _optimizer(net, cfg, init)
    started = init is not None or identity  # a meaningful start: pull towards it, keep it as a candidate
    objective = _Objective(net, cfg, allowed, bool(partial), from_init=started)
    gen = torch.Generator().manual_seed(cfg.seed)
    score = _held_out_scorer(bundle, net, image, probs, val_labels, allowed, bool(partial), dev)
    result = RNNTrainResult(bundle)
    best, stale = BestWeights(min_delta=1e-4), 0
    if started and score is not None:  # the start is a candidate: a fine-tune never ends worse on the
        net.eval()  # held-out pixels than the model it started from (the coarse map, from du = 0)
        best.keep(net, score().mean_iou, 0)
    schedule = _Schedule(cfg)
    done_before = int(bundle.info.get("trained_steps", 0)) if init is not None else 0
    step = 0
    net.train()
    for step in range(1, cfg.steps + 1):
        if should_stop():
            result.stopped = "cancelled"
            step -= 1  # this step did not run
            break
        loss = _train_step(sampler, bundle, objective, opt, cfg, gen, dev)
        check_finite_training(net, loss, step)
        report = Progress(step, cfg.steps, loss, schedule.elapsed())
        last = schedule.is_last(step, report.seconds)
        if score is not None and schedule.validate_now(step, report.seconds, last):
            report.val = schedule.timed(score)
            stale = 0 if best.offer(net, report.val.mean_iou, step) else stale + 1
            report.best_val = best.score
        result.history.append(report)
        if progress and schedule.report_now(report, last):
            progress(report)
        if checkpoint_dir and schedule.checkpoint_now(step):
            _save_checkpoint(bundle, opt, done_before + step, checkpoint_dir)
        stopped = stop_reason(cfg.patience, cfg.steps, stale, last, step)
        if stopped:
            result.stopped = stopped
            break
    if best.restore(net):  # keep the weights that did best on the held-out pixels
        result.best_val = best.score
    net.eval()
    bundle.info = _provenance(bundle.info, cfg, done_before, step, best.step, result)
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

#: A new RNN from a painted patch (the app's and ``finetune``'s start without a pretrained RNN,
#: and the paper's protocol in ``experiment``): the paper's plain training, judged on the rest of
#: the painted tile. On 14 tiles from elsewhere (``benchmarks/new_rnn_elsewhere.py``, a 300^2 px
#: patch over the shipped map) it gained a mean 8.6 mIoU points there (median 3.4, worst -2.1);
#: started as the coarse map and pulled towards it (identity start, ``distill`` 3.0, jitter 0.2:
#: this default from 2026-12-07 until then) it gained 2.7 (median 1.6, worst -0.5). On the
#: rest of Massachusetts tile 12 plain training gained 2.2 against 1.44, on Inria Austin's tile
#: B 8.1 against 6.4. The pull is what keeps an RNN harmless on *other* tiles unlike its patch
#: (Massachusetts, issue 27: -2.9 plain, +0.12 pulled): give ``distill`` ~3 to apply the RNN
#: beyond the tile it was painted on (docs/results.md).
SCRATCH_DEFAULTS = RNNTrainConfig()


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
    weights that did best on held-out painted blocks are returned.

    Args:
        image: the tile (C, H, W) in [0, 1], on ``init``'s working grid.
        probs: the coarse probabilities (K, H, W) of the tile.
        labels: the painted pixels (H, W) class indices, 255 elsewhere.
        init: the pretrained RNN to start from.
        cfg: the hyper-parameters (default: the patch fine-tune's).
        partial: extra label codes -> the classes they allow.
        device: where to train (default: cuda, else mps, else cpu).
        progress: called with a report every step.
        should_stop: polled between steps; True ends training.
        checkpoint_dir: where to write checkpoints.

    Returns:
        The adapted RNN with its reports, best held-out score and why it stopped.

    Raises:
        ValueError: ``init`` is not an RNN, or the labels hold no labelled pixel.

    Example:
        ```python
        rnn = refiner.load_model(refiner.pretrained_root() / "rnn_1m", expect="rnn")
        adapted = refiner.finetune_from_pretrained(tile.image, probs, labels, rnn).bundle
        ```
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
) -> RNNTrainResult:
    """Pretrain the RNN over many tiles on a coarse model's outputs (the fine-tunes' start).

    Like :func:`train_rnn` with patches drawn from every tile (``tile_weights`` share the batch),
    partial labels, class-balanced centres, and the best weights by ``validate`` every
    ``cfg.eval_every`` steps. ``cfg.identity_start`` zeroes the MLPs' output layers, so training
    starts from ``du = 0`` (the refined map equals the coarse one) instead of a random update
    that first has to be unlearnt. ``cfg.focus`` is the share of patches centred on pixels where
    the coarse map is wrong or unsure (:func:`~refiner.train.sampling.hard_pixels`), the rest
    drawn as ``balance`` says. ``cfg.steps``, ``batch_size`` or ``patch_size`` below 1 is a
    ``ValueError``, as in :func:`train_rnn`; so are a focus outside 0..1 and negative pulls.
    """
    _check_config(cfg)
    allowed = allowed_table(len(classes), partial)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = RefinerRNN(RNNConfig(num_classes=len(classes), in_channels=images[0].shape[0]))
    mean, std = stats or image_stats([im.astype(np.float32) / 255 if im.dtype == np.uint8 else im for im in images])
    bundle = ModelBundle("rnn", net, classes, resolution, mean, std)
    if cfg.identity_start:
        zero_update(net)
    halo = net.cfg.halo
    samplers = [
        PatchSampler(
            [im, pr],
            lab,
            cfg.patch_size,
            halo,
            seed=cfg.seed + i,
            augment=cfg.augment,
            balance=balance,
            stride=centre_stride,
            focus=_focus_map(cfg, pr, lab, allowed),
            focus_share=cfg.focus,
        )  # fmt: skip
        for i, (im, pr, lab) in enumerate(zip(images, probs, labels, strict=True))
    ]
    batches = TileMix(samplers, tile_weights, seed=cfg.seed)
    opt = torch.optim.Adagrad(net.parameters(), lr=cfg.lr)
    result = RNNTrainResult(bundle)
    best = BestWeights()
    if validate is not None and cfg.eval_every:  # the start is a candidate: never end worse than it
        net.eval()
        best.keep(net, float(validate(bundle)), 0)
        if progress:
            message = f"validation at the start {best.score:.3f}"
            progress(Progress(0, cfg.steps, math.nan, 0.0, best_val=best.score, message=message))
    t0 = time.perf_counter()
    net.train()
    step = 0
    for step in range(1, cfg.steps + 1):
        (x, p), y = batches.sample(cfg.batch_size)
        x = bundle.normalise(jitter(x, cfg.jitter, gen))
        maps = net(x, p, _unroll(net.cfg, cfg, gen))
        scored = maps[1:] if cfg.every_iteration else maps[-1:]
        loss = torch.stack([partial_label_loss(centre(m, halo, cfg.patch_size), y, allowed) for m in scored]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        report = Progress(step, cfg.steps, loss.item(), time.perf_counter() - t0)
        if validate is not None and validation_due(step, cfg.steps, cfg.eval_every):
            validate_and_keep(net, bundle, validate, best, report)
        result.history.append(report)
        if progress and (step % 10 == 0 or step == cfg.steps or report.message):
            progress(report)
    if best.restore(net):
        result.best_val = best.score
    net.eval()
    bundle.info = {"trained_steps": step, "train_config": cfg.__dict__.copy(), "best_step": best.step or 0,
                   "best_val": result.best_val}  # fmt: skip
    bundle.optimizer_state = _adagrad_state(opt, net)
    return result
