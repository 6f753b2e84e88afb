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
from refiner.train.loop import Progress, ProgressFn, _as_float
from refiner.train.losses import allowed_table, partial_label_loss, partial_mean_iou, segmentation_loss
from refiner.train.sampling import PatchSampler, check_counts, check_labels, holdout_guard, jitter, split_holdout

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
