"""``python -m refiner``: every step of the method from the command line.

Errors are one clear line on stderr and exit status 2; long work shows a progress bar.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from refiner import __version__

if TYPE_CHECKING:  # the commands import the engine lazily, so `refiner --help` stays cheap
    from refiner.core.classes import ClassSpec
    from refiner.data.tile import Tile
    from refiner.models.store import AnyBundle
    from refiner.train.rnn import RNNTrainResult


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _log_lines(desc: str, total: int, every: float = 5.0, stream: IO[str] | None = None) -> Callable[[int], None]:
    """Progress as plain lines, one per ``every`` percent (and the last): what a log file needs.

    A tqdm bar writes one line there and then nothing until the end.
    """
    t0 = time.perf_counter()
    state = {"next": 0.0}

    def update(n: int) -> None:
        pct = 100.0 * n / max(1, total)
        if pct + 1e-9 >= state["next"] or n >= total:
            out = stream or sys.stderr
            print(f"{desc}: {n}/{total} ({pct:.0f} %), {time.perf_counter() - t0:.0f} s", file=out, flush=True)
            state["next"] = (int(pct // every) + 1) * every

    return update


def _bar(desc: str, total: int) -> Callable[[int], None]:
    """A tqdm bar driven by absolute positions (what the engine's callbacks report).

    Progress lines every 5 % instead when stderr is not a terminal (a log file).
    """
    from tqdm import tqdm

    if not sys.stderr.isatty():
        return _log_lines(desc, total)

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=None, file=sys.stderr)

    def update(n: int) -> None:
        bar.update(max(0, n - bar.n))
        if n >= total:
            bar.close()

    return update


def _progress(desc: str) -> Callable[[int, int], None]:
    """A tqdm bar for ``(done, total)`` callbacks, created on the first call."""
    state: dict[str, Callable[[int], None]] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = _bar(desc, total)
        state["bar"](done)

    return update


def stop_signal(minutes: float | None = None) -> Callable[[], bool]:
    """A ``should_stop`` for long trainings: True after ``minutes``, or once Ctrl-C or SIGTERM arrived.

    The signals no longer kill the process: the loop ends at its next step and keeps its state.
    """
    import signal

    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    asked = []

    def ask(signum: int, _frame: object) -> None:
        print(f"\n{signal.Signals(signum).name}: stopping after this step, keeping the state", file=sys.stderr)
        asked.append(signum)

    signal.signal(signal.SIGINT, ask)
    signal.signal(signal.SIGTERM, ask)
    return lambda: bool(asked) or (deadline is not None and time.monotonic() >= deadline)


def _json_file(path: Path, what: str) -> dict:
    """A JSON object from ``path``, with errors that name the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}) — fix it, or write it again") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not the JSON object of {what} expected")
    return data


def _classes(args: argparse.Namespace, fallback: ClassSpec | None = None) -> ClassSpec:
    from refiner.core.classes import ClassSpec

    if getattr(args, "classes", None):
        return ClassSpec.parse(args.classes, args.values)
    if fallback is not None:
        return fallback
    raise ValueError("say which classes there are: --classes background,road --values 0,255")


# --------------------------------------------------------------------------- training configs
# The options' defaults are the config dataclasses' (read by build_parser), never restated here.


def _field_defaults(cls: type) -> dict[str, Any]:
    """A config dataclass's field defaults by name (fields without one are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


#: ``finetune`` options whose default depends on the start: None on the command line means
#: :data:`SCRATCH_DEFAULTS`' from scratch, :data:`FINETUNE_DEFAULTS`' with ``--init``.
_START_DEPENDENT = ("steps", "lr", "patience", "distill")


def coarse_train_config(args: argparse.Namespace) -> Any:
    """``train-coarse``'s :class:`~refiner.train.coarse.CoarseTrainConfig`: its defaults, with the options given."""
    from refiner.train.coarse import CoarseTrainConfig

    return CoarseTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, arch=args.arch)


def rnn_train_config(args: argparse.Namespace) -> Any:
    """``finetune``'s :class:`~refiner.train.rnn.RNNTrainConfig`.

    With ``--init`` (a patch fine-tune of a pretrained RNN): :data:`~refiner.train.rnn.FINETUNE_DEFAULTS`,
    of which ``--steps``, ``--lr``, ``--patience``, ``--distill`` (when given), ``--seed``, ``--max-seconds`` and
    ``--checkpoint-every`` override; else (from scratch or ``--resume``)
    :data:`~refiner.train.rnn.SCRATCH_DEFAULTS` and every option.
    """
    from refiner.train.rnn import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS

    given = {k: getattr(args, k) for k in _START_DEPENDENT if getattr(args, k) is not None}
    run = dict(seed=args.seed, max_seconds=args.max_seconds, checkpoint_every=args.checkpoint_every)
    if args.init:
        return dataclasses.replace(FINETUNE_DEFAULTS, **run, **given)
    options = dict(
        batch_size=args.batch_size, patch_size=args.patch_size, holdout=args.holdout, eval_seconds=args.eval_seconds
    )
    return dataclasses.replace(SCRATCH_DEFAULTS, **run, **options, **given)


# --------------------------------------------------------------------------- commands


def cmd_demo_data(args: argparse.Namespace) -> None:
    """``demo-data``: write the synthetic demo tiles and an experiment config that runs on them."""
    from refiner.recipes.demo import write_demo_data

    paths = write_demo_data(args.out, size=args.size, seed=args.seed)
    print(f"wrote the synthetic demo data to {args.out}; run: python -m refiner experiment {paths['config']}")


def cmd_train_coarse(args: argparse.Namespace) -> None:
    """``train-coarse``: train the coarse CNN on images and their (imprecise) labels, at the working resolution."""
    from refiner.data.read import read_image, read_labels
    from refiner.data.resample import to_working
    from refiner.data.synthetic import degrade_labels
    from refiner.models.store import save_model
    from refiner.train.coarse import train_coarse

    if len(args.images) != len(args.labels):
        raise ValueError(f"{len(args.images)} images but {len(args.labels)} label files: give one per image")
    classes = _classes(args)
    images, labels = [], []
    for i, (im, lb) in enumerate(zip(args.images, args.labels, strict=True)):
        tile = read_image(im, bands=args.bands)
        lab = read_labels(lb, classes, like=tile, line_width=args.line_width)
        work = to_working(tile, args.resolution, labels=[lab])
        lab = work.labels[0]
        if args.degrade_shift or args.degrade_drop:
            lab = degrade_labels(lab, shift=args.degrade_shift, drop=args.degrade_drop, seed=args.seed + i)
        images.append(work.tile.image)
        labels.append(lab)
    cfg = coarse_train_config(args)
    tick = _bar("train coarse CNN", cfg.steps)
    bundle = train_coarse(
        images, labels, classes, cfg, resolution=args.resolution, device=args.device, progress=lambda p: tick(p.step)
    )
    save_model(bundle, args.out)
    print(f"saved the coarse CNN to {args.out}")


def cmd_predict(args: argparse.Namespace) -> None:
    """``predict``: the coarse CNN's class probabilities over a whole scene, window by window."""
    from refiner.scale.scene import predict_scene

    predict_scene(
        args.model,
        args.image,
        args.out,
        bands=args.bands,
        device=args.device,
        progress=_progress("predict"),
        window=args.window or 512,
        scheduler=args.scheduler,
        pixel_size=args.resolution,
        tta=args.tta,
    )
    print(f"wrote class probabilities to {args.out}")


def cmd_finetune(args: argparse.Namespace) -> None:
    """``finetune``: train the RNN on labelled pixels, new, from a pretrained one (``--init``) or resumed."""
    from refiner.data.read import read_labels
    from refiner.data.resample import to_working
    from refiner.models.rnn import RNNConfig
    from refiner.models.store import load_model
    from refiner.train.rnn import train_rnn
    from refiner.train.sampling import restrict_to_window

    if args.init and args.resume:
        raise ValueError("give --init (start a fine-tune from a pretrained RNN) or --resume, not both")
    start = load_model(args.init or args.resume, expect="rnn") if args.init or args.resume else None
    tile, probs, classes = _image_and_probs(args, start.classes if start is not None else None)
    labels = read_labels(args.labels, classes, like=tile, line_width=args.line_width)
    if args.window:
        labels = restrict_to_window(labels, args.window)
    working = to_working(tile, args.resolution, probs, [labels])
    work, work_probs, labels = working.tile, working.probs, working.labels[0]
    assert work_probs is not None  # given, so on the working grid too
    probs = work_probs
    if args.init:
        assert start is not None  # loaded from --init above
        return _finetune_from_pretrained(args, work, probs, labels, classes, start)
    init = start
    cfg = rnn_train_config(args)
    arch = RNNConfig(
        num_classes=len(classes), in_channels=work.image.shape[0], iterations=args.iterations, variant=args.variant
    )
    if args.scheduler:  # train on a cluster worker (one with a GPU resource when there is one)
        from refiner.scale.cluster import run_on_gpu_worker

        kwargs = dict(arch=arch, init=init, resolution=args.resolution, device=args.device)
        log = lambda m: print(f"note: {m}", file=sys.stderr)  # noqa: E731
        result = run_on_gpu_worker(
            args.scheduler, train_rnn, work.image, probs, labels, classes, cfg, log=log, **kwargs
        )
    else:
        tick = _bar("fine-tune RNN", cfg.steps)
        result = train_rnn(
            work.image,
            probs,
            labels,
            classes,
            cfg,
            arch=arch,
            init=init,
            resolution=args.resolution,
            device=args.device,
            progress=lambda p: tick(p.step),
            checkpoint_dir=_checkpoints(args),
        )
    _save_finetuned(args, result)


def _image_and_probs(
    args: argparse.Namespace, model_classes: ClassSpec | None = None
) -> tuple[Tile, np.ndarray, ClassSpec]:
    """The image, its coarse probabilities (checked: sums, size, CRS and place) and the classes."""
    from refiner.data.read import PREDICT_ON_IT, check_same_place, read_image, read_probs

    tile = read_image(args.image, bands=args.bands)
    probs, prob_classes, georef = read_probs(args.probs, check_sums=True)
    classes = _classes(args, prob_classes or model_classes)
    if probs.shape[1:] != tile.shape:
        raise ValueError(
            f"probabilities {probs.shape[1:]} and image {tile.shape} differ in size — predict them on this image"
        )
    what = f"the probability map {Path(args.probs).name}"
    check_same_place(georef, tile.georef, what, Path(args.image).name, PREDICT_ON_IT)
    return tile, probs, classes


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    """``<out>.checkpoint``: where ``--checkpoint-every`` writes, beside ``--out``, never in it.

    So an interrupted run leaves no partial model under the final name.
    """
    from refiner.models.store import CHECKPOINT_SUFFIX

    return args.out.with_name(args.out.name + CHECKPOINT_SUFFIX)


def _checkpoints(args: argparse.Namespace) -> Path | None:
    return _checkpoint_dir(args) if args.checkpoint_every else None


def _save_finetuned(args: argparse.Namespace, result: RNNTrainResult) -> None:
    """The finished model, written whole; a checkpoint beside it is then of no more use."""
    import shutil

    from refiner.core.atomic import sweep
    from refiner.models.store import save_model

    save_model(result.bundle, args.out)
    shutil.rmtree(_checkpoint_dir(args), ignore_errors=True)
    sweep(_checkpoint_dir(args))  # temporaries of a killed run's checkpoint
    best = f", held-out mean IoU {result.best_val:.3f}" if result.best_val is not None else ""
    print(f"saved the RNN to {args.out} ({result.stopped} after {result.bundle.info['trained_steps']} steps{best})")


def _finetune_from_pretrained(
    args: argparse.Namespace, work: Tile, probs: np.ndarray, labels: np.ndarray, classes: ClassSpec, init: AnyBundle
) -> None:
    from refiner.core.classes import check_compatible
    from refiner.train.rnn import finetune_from_pretrained

    todo = "give probabilities of the classes it refines, or train a new RNN without --init"
    check_compatible(init.classes, classes, f"the RNN {args.init}", "the probability map", todo)
    cfg = rnn_train_config(args)
    tick = _bar("fine-tune RNN", cfg.steps)
    result = finetune_from_pretrained(
        work.image, probs, labels, init, cfg, device=args.device, progress=lambda p: tick(p.step),
        checkpoint_dir=_checkpoints(args),
    )  # fmt: skip
    _save_finetuned(args, result)


def cmd_refine(args: argparse.Namespace) -> None:
    """``refine``: sharpen a scene's coarse probabilities with a trained RNN, window by window."""
    from refiner.scale.scene import refine_scene

    refine_scene(
        args.model,
        args.image,
        args.probs,
        args.out,
        probs_out=args.probs_out,
        iterations_out=args.iterations_out,
        iterations=args.iterations,
        bands=args.bands,
        device=args.device,
        window=args.window,
        progress=_progress("refine"),
        scheduler=args.scheduler,
        pixel_size=args.resolution,
    )
    print(f"wrote the refined class map to {args.out}")


def cmd_adapt(args: argparse.Namespace) -> None:
    """``adapt``: fine-tune the coarse CNN, then the RNN, to one tile from its painted labels."""
    from refiner.core.atomic import atomic_write_bytes
    from refiner.core.classes import ClassSpec
    from refiner.data.read import read_image, read_labels
    from refiner.models.pretrained import pretrained_root
    from refiner.models.store import load_model, save_model
    from refiner.train.adapt import adapt

    coarse = load_model(args.coarse or pretrained_root() / "coarse_1m", expect="coarse")
    rnn = None if args.no_rnn else load_model(args.rnn or pretrained_root() / "rnn_1m", expect="rnn")
    tile = read_image(args.image, bands=args.bands)
    if args.resolution is not None:
        if tile.georef is not None:
            raise ValueError(
                f"{Path(args.image).name} is georeferenced ({tile.resolution or 'unknown'} m per pixel): "
                "--resolution is for pictures without georeferencing — leave it out"
            )
        tile.pixel_size = args.resolution
    classes = ClassSpec.parse(",".join(coarse.classes.names), args.values) if args.values else coarse.classes
    labels = read_labels(args.labels, classes, like=tile, line_width=args.line_width)
    last = {"stage": ""}

    def progress(stage: str, report: Any) -> None:
        if stage != last["stage"]:
            last["stage"] = stage
            print(f"adapting the {'coarse CNN' if stage == 'coarse' else 'RNN'} ...", file=sys.stderr)

    result = adapt(tile, labels, coarse, rnn, progress=progress)
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(result.coarse, args.out / "coarse")
    if result.rnn is not None:
        save_model(result.rnn, args.out / "rnn")
    report = result.to_dict()
    atomic_write_bytes(args.out / "adapt.json", json.dumps(report, indent=2).encode())
    print(result.summary())
    print(f"wrote {args.out / 'coarse'}" + (f" and {args.out / 'rnn'}" if result.rnn is not None else ""))


def cmd_crf(args: argparse.Namespace) -> None:
    """``crf``: the dense CRF baseline, with given or grid-searched parameters."""
    from refiner.baselines.crf import CRFParams, dense_crf, grid_search
    from refiner.core.atomic import atomic_write_bytes
    from refiner.data.read import read_labels
    from refiner.data.write import write_class_map, write_probs

    params = CRFParams()
    if args.params:
        given = _json_file(args.params, "CRF parameters")
        try:
            params = CRFParams.parse(given)
        except (TypeError, ValueError) as exc:  # the file named, with the key and what to give
            raise ValueError(f"{args.params}: {exc}") from exc
    tile, probs, classes = _image_and_probs(args)
    if args.search_labels:
        labels = read_labels(args.search_labels, classes, like=tile)
        res = grid_search(tile.image, probs, labels, progress=_progress("CRF grid search"))
        params = res.best
        print(f"grid search: best mean IoU {res.best_scores.mean_iou:.3f} with {json.dumps(params.to_dict())}")
        if args.params_out:
            atomic_write_bytes(args.params_out, json.dumps(params.to_dict(), indent=2).encode())
    out = dense_crf(tile.image, probs, params)
    cls_map = out.argmax(0).astype(np.uint8)
    cls_map[~tile.valid] = 255
    write_class_map(args.out, cls_map, tile.georef, classes)
    if args.probs_out:
        write_probs(args.probs_out, out, tile.georef, classes)
    print(f"wrote the CRF class map to {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``evaluate``: score a class map against a truth mask of the same image."""
    from refiner.core.metrics import evaluate
    from refiner.data.read import check_same_place, raster_shape, read_labels

    classes = _classes(args)
    pred = read_labels(args.pred, classes)
    truth = read_labels(args.truth, classes)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in size — compare maps of one image")
    where = {p: raster_shape(p)[2] for p in (args.pred, args.truth)}
    check_same_place(where[args.pred], where[args.truth], f"the prediction {Path(args.pred).name}",
                     f"the truth {Path(args.truth).name}", "compare maps of one image")  # fmt: skip
    pred = np.where(pred == 255, 0, pred).astype(np.uint8)  # nodata in a prediction counts as background
    scores = evaluate(pred, truth, len(classes))
    report = scores.to_dict(classes.names)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"overall accuracy {scores.overall_accuracy * 100:.2f}%   mean IoU {scores.mean_iou * 100:.2f}%")
        for n, v in report["iou"].items():
            print(f"  IoU {n:<16} {'n/a' if v is None else f'{v * 100:.2f}%'}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    """``pretrain``: rebuild a shipped pretrained model from its recipe."""
    import torch

    from refiner.recipes.pretrain import run_pretrain

    torch.set_num_threads(args.threads)
    stop = stop_signal(minutes=args.minutes)
    run_pretrain(args.config, steps=args.steps, out=args.out, should_stop=stop)


def cmd_experiment(args: argparse.Namespace) -> None:
    """``experiment``: the paper's protocol from a TOML config; prints the score table and writes the report."""
    from refiner.recipes.experiment import ExperimentConfig, format_table, run_experiment, write_report

    cfg = ExperimentConfig.load(args.config)
    if args.coarse_model:  # reuse a coarse CNN from an earlier run of the same protocol
        cfg.coarse.model = args.coarse_model
    report = run_experiment(
        cfg,
        device=args.device,
        progress_factory=_bar,
        log=lambda m: print(m, file=sys.stderr),
        save_models=Path(args.save_models) if args.save_models else None,
    )
    write_report(report, args.out)
    print(format_table(report))
    print(f"\nreport written to {args.out}")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per ``cmd_*`` function, each with its checked options."""
    from refiner.data.vector import LINE_WIDTH
    from refiner.models.coarse import ARCH_HALO
    from refiner.models.rnn import VARIANTS, RNNConfig
    from refiner.train.coarse import CoarseTrainConfig
    from refiner.train.rnn import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS

    coarse, arch = _field_defaults(CoarseTrainConfig), _field_defaults(RNNConfig)
    rnn = dataclasses.asdict(SCRATCH_DEFAULTS)  # a new RNN's (``finetune`` without --init)
    ft = FINETUNE_DEFAULTS
    line_width = f"width in metres of vector lines (roads); default {LINE_WIDTH:g}"
    p = argparse.ArgumentParser(
        prog="python -m refiner",
        description="Learn to sharpen coarse satellite classification maps (Maggiori et al. 2017).",
    )
    p.add_argument("--version", action="version", version=f"refiner {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int | None], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    def common_image(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bands", type=_ints, help="1-based bands to use as RGB, e.g. 3,2,1 (default: R,G,B or 1,2,3)")
        sp.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")

    def class_args(sp: argparse.ArgumentParser, required: bool = False) -> None:
        sp.add_argument("--classes", required=required, help="class names, comma-separated, e.g. background,road")
        sp.add_argument(
            "--values",
            help="mask pixel value of each class, e.g. 0,255 (default 0,1,2,...); 255 = unlabelled unless a class "
            "is 255, then the highest value no class uses (254 for 0,255) is, and is the nodata of maps written",
        )

    def scale_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--window",
            type=int,
            default=None,
            help="processing window in pixels, which bounds memory (default: 512 for predict; for refine "
            "about 1000, sized to whole compute blocks)",
        )
        scheduler_arg(sp)

    def resolution_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--resolution",
            type=float,
            default=None,
            help="metres per pixel of a picture without georeferencing (PNG, JPEG), e.g. 0.3; "
            "georeferenced images carry their own",
        )

    def scheduler_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            default=None,
            help="run on a Dask cluster: scheduler address (tcp://host:8786) or 'local' (default: this process)",
        )

    sp = add(
        "demo-data", cmd_demo_data, "Write synthetic scenes (image, truth, OSM-like labels) and an experiment config."
    )
    sp.add_argument("--out", required=True, type=Path, help="output folder")
    sp.add_argument("--size", type=int, default=512, help="scene size in pixels (default 512)")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("train-coarse", cmd_train_coarse, "Train the coarse CNN on imagery and (imprecise) labels.")
    sp.add_argument("--images", nargs="+", required=True, help="training images (GeoTIFF, PNG, JPEG)")
    sp.add_argument("--labels", nargs="+", required=True, help="label masks or GeoJSON, one per image")
    class_args(sp, required=True)
    common_image(sp)
    sp.add_argument("--out", required=True, type=Path, help="model folder to write")
    sp.add_argument("--steps", type=int, default=coarse["steps"], help="training steps (default %(default)s)")
    sp.add_argument(
        "--batch-size", type=int, default=coarse["batch_size"], help="patches per step (default %(default)s)"
    )
    sp.add_argument("--lr", type=float, default=coarse["lr"], help="SGD learning rate (default %(default)s)")
    sp.add_argument(
        "--arch", choices=sorted(ARCH_HALO), default=coarse["arch"],
        help="the network design: mnih (the paper's, default) or skip_context (context block and skip connections)",
    )  # fmt: skip
    sp.add_argument(
        "--resolution", type=float, default=1.0, help="metres per pixel the network works at (default 1, the paper's)"
    )
    sp.add_argument("--line-width", type=float, default=LINE_WIDTH, help=line_width)
    sp.add_argument("--degrade-shift", type=int, default=0, help="simulate OSM: shift each object by up to N px")
    sp.add_argument(
        "--degrade-drop", type=float, default=0.0, help="simulate OSM: drop each object with this probability"
    )
    sp.add_argument("--seed", type=int, default=coarse["seed"])

    sp = add("predict", cmd_predict, "Coarse class probabilities of an image (a K-band float GeoTIFF).")
    sp.add_argument("--model", required=True, type=Path, help="coarse CNN model folder")
    sp.add_argument("--image", required=True)
    sp.add_argument("--out", required=True, type=Path, help="probability GeoTIFF to write")
    sp.add_argument(
        "--tta", action="store_true", help="average the image's 8 turns and flips: 8x the time, about +1 point of IoU"
    )
    common_image(sp)
    scale_args(sp)
    resolution_arg(sp)

    sp = add(
        "finetune",
        cmd_finetune,
        "Train the refinement RNN on accurately labelled pixels: a new one with the paper's plain training "
        "(SCRATCH_DEFAULTS), a fine-tune (--init) from a pretrained RNN (FINETUNE_DEFAULTS).",
    )
    sp.add_argument("--image", required=True)
    sp.add_argument("--probs", required=True, help="coarse probabilities of the image (from predict)")
    sp.add_argument("--labels", required=True, help="accurate labels (mask, 255 = unlabelled, or GeoJSON)")
    sp.add_argument("--out", required=True, type=Path, help="RNN model folder to write (checkpoints go there too)")
    class_args(sp)
    common_image(sp)
    sp.add_argument("--variant", default=arch["variant"], choices=VARIANTS)
    sp.add_argument(
        "--iterations", type=int, default=arch["iterations"], help="unrolled iterations T (default %(default)s)"
    )
    # None: the start's default (from scratch, or --init's), see rnn_train_config
    sp.add_argument(
        "--steps", type=int, default=None, help=f"training steps (default {rnn['steps']}; {ft.steps} with --init)"
    )
    sp.add_argument("--batch-size", type=int, default=rnn["batch_size"], help="patches per step (default %(default)s)")
    sp.add_argument(
        "--patch-size", type=int, default=rnn["patch_size"], help="patch side in pixels (default %(default)s)"
    )
    sp.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"AdaGrad learning rate (default {rnn['lr']}, the paper's; {ft.lr} with --init)",
    )
    sp.add_argument(
        "--holdout",
        type=float,
        default=rnn["holdout"],
        help="share of labelled pixels held back, as whole regions (default %(default)s)",
    )
    sp.add_argument(
        "--patience",
        type=int,
        default=None,
        help=f"stop after N evaluations without gain (default {rnn['patience']}: never; {ft.patience} with --init)",
    )
    sp.add_argument(
        "--distill",
        type=float,
        default=None,
        help=f"weight of the pull of the refined maps towards the start's (default {rnn['distill']:g}: the paper's "
        f"plain training; {ft.distill:g} with --init); e.g. 3 starts a new RNN as the coarse map and keeps it near "
        "it, for applying it to tiles unlike its patch",
    )
    sp.add_argument("--max-seconds", type=float, default=rnn["max_seconds"], help="wall-clock budget")
    sp.add_argument(
        "--eval-seconds",
        type=float,
        default=rnn["eval_seconds"],
        help="also evaluate every N seconds (default %(default)s)",
    )
    sp.add_argument(
        "--checkpoint-every",
        type=int,
        default=rnn["checkpoint_every"],
        help="save every N steps (default %(default)s: only the final model)",
    )
    sp.add_argument("--window", type=_ints, default=None, help="use only labels in row,col,height,width")
    sp.add_argument("--resume", type=Path, default=None, help="continue training this RNN model folder")
    sp.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune from this pretrained RNN (e.g. assets/pretrained/rnn_1m) with the regularised "
        "patch defaults (few steps, weights pulled to the pretrained ones, early stopping); "
        "--steps/--lr/--patience still override",
    )
    scheduler_arg(sp)
    sp.add_argument("--resolution", type=float, default=1.0, help="metres per pixel the RNN works at (default 1)")
    sp.add_argument("--line-width", type=float, default=LINE_WIDTH, help=line_width)
    sp.add_argument("--seed", type=int, default=rnn["seed"])

    sp = add("pretrain", cmd_pretrain, "Rebuild a shipped pretrained model from a recipe in experiments/pretrained.")
    sp.add_argument("config", type=Path, help="recipe TOML (experiments/pretrained/coarse.toml, then rnn.toml)")
    sp.add_argument("--steps", type=int, default=None, help="override the recipe's training steps (a quick check)")
    sp.add_argument("--out", type=Path, default=None, help="model folder to write (default: the recipe's out)")
    sp.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    sp.add_argument(
        "--minutes", type=float, default=None,
        help="stop after this many minutes, keeping the state in the recipe's checkpoint (run again to "
        "continue); Ctrl-C or SIGTERM stops it the same way",
    )  # fmt: skip

    sp = add("refine", cmd_refine, "Refine coarse probabilities with a trained RNN.")
    sp.add_argument("--model", required=True, type=Path, help="RNN model folder")
    sp.add_argument("--image", required=True)
    sp.add_argument("--probs", required=True, help="coarse probabilities (from predict)")
    sp.add_argument("--out", required=True, type=Path, help="class map GeoTIFF to write")
    sp.add_argument("--probs-out", type=Path, help="also write the refined probabilities")
    sp.add_argument(
        "--iterations-out",
        type=Path,
        help="also write the probabilities of every iteration (one band per class and iteration)",
    )
    sp.add_argument("--iterations", type=int, default=None, help="iterations to run (default: the model's T)")
    common_image(sp)
    scale_args(sp)
    resolution_arg(sp)

    sp = add(
        "adapt",
        cmd_adapt,
        "Adapt the coarse CNN, then the RNN, to one tile from a painted patch (writes OUT/coarse and OUT/rnn).",
    )
    sp.add_argument("--image", required=True, help="the tile (GeoTIFF, PNG, JPEG)")
    sp.add_argument(
        "--labels", required=True, help="painted labels on the tile's grid (mask, 255 = unpainted, or GeoJSON)"
    )
    sp.add_argument("--out", required=True, type=Path, help="folder to write coarse/, rnn/ and adapt.json into")
    sp.add_argument("--coarse", type=Path, default=None, help="coarse CNN to start from (default: the shipped one)")
    sp.add_argument("--rnn", type=Path, default=None, help="RNN to start from (default: the shipped one)")
    sp.add_argument("--no-rnn", action="store_true", help="adapt the coarse CNN only")
    sp.add_argument(
        "--values", help="mask pixel value of each of the model's classes, e.g. 0,255,128 (default: 0,1,2,...)"
    )
    sp.add_argument("--line-width", type=float, default=LINE_WIDTH, help=line_width)
    common_image(sp)
    resolution_arg(sp)

    sp = add("crf", cmd_crf, "Dense CRF baseline on coarse probabilities.")
    sp.add_argument("--image", required=True)
    sp.add_argument("--probs", required=True)
    sp.add_argument("--out", required=True, type=Path, help="class map GeoTIFF to write")
    sp.add_argument("--probs-out", type=Path)
    sp.add_argument("--params", type=Path, help="JSON file of CRF parameters")
    sp.add_argument("--search-labels", help="grid-search the parameters on these labels first")
    sp.add_argument("--params-out", type=Path, help="write the searched parameters here")
    class_args(sp)
    common_image(sp)

    sp = add("evaluate", cmd_evaluate, "Overall accuracy and IoU of a class map against a truth mask.")
    sp.add_argument("--pred", required=True, help="class map (mask values as in --values)")
    sp.add_argument("--truth", required=True, help="truth mask (255 = unlabelled, ignored)")
    class_args(sp, required=True)
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = add("experiment", cmd_experiment, "Run the paper's protocol from a TOML config and write a JSON report.")
    sp.add_argument("config", type=Path)
    sp.add_argument("--out", required=True, type=Path, help="JSON report to write")
    sp.add_argument("--save-models", type=Path, default=None, help="also save the trained models here")
    sp.add_argument(
        "--coarse-model", type=Path, default=None, help="use this coarse CNN instead of training [coarse] again"
    )
    sp.add_argument("--device", default=None)
    return p


#: Numeric options and the range they must lie in (checked before any work): (low, high, what to do);
#: a low bound in :data:`_ABOVE` is exclusive (the value must be larger).
_RANGES = {
    "steps": (1, None, "give at least 1 training step"),
    "batch_size": (1, None, "give a batch of at least 1 patch"),
    "patch_size": (1, None, "give a patch size of at least 1 pixel (e.g. 48)"),
    "iterations": (0, None, "give 0 or more iterations"),
    "checkpoint_every": (0, None, "give 0 (no checkpoints) or a number of steps"),
    "holdout": (0.0, 0.99, "give a fraction below 1, e.g. 0.2"),
    "lr": (0.0, None, "give a positive learning rate, e.g. 0.01"),
    "resolution": (0.0, None, "give the metres per pixel the networks work at, e.g. 1"),
    "line_width": (0.0, None, "give a road width in metres, e.g. 7"),
    "max_seconds": (0.0, None, "give a positive number of seconds, or leave it out for no budget"),
    "eval_seconds": (0.0, None, "give a positive number of seconds, e.g. 5"),
    "patience": (0, None, "give 0 (never stop early) or a number of evaluations"),
    "distill": (0.0, None, "give 0 (no pull: the paper's plain training) or a positive weight, e.g. 3"),
    "degrade_shift": (0, None, "give 0 or more pixels"),
    "degrade_drop": (0.0, 1.0, "give a probability from 0 to 1"),
    "threads": (1, None, "give at least 1 thread"),
    "size": (32, None, "give a scene size of at least 32 pixels"),
    "window": (1, None, "give a window of at least 1 pixel, e.g. 512"),
}
_ABOVE = {"lr", "resolution", "line_width", "max_seconds", "eval_seconds"}


def check_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range numbers and devices that do not exist, before any work starts."""
    for name, (low, high, todo) in _RANGES.items():
        value = getattr(args, name, None)
        if not isinstance(value, (int, float)):  # unset, or a tuple (finetune's --window)
            continue
        if value < low or (name in _ABOVE and value == low) or (high is not None and value > high):
            raise ValueError(f"--{name.replace('_', '-')} {value} is out of range — {todo}")
    device = getattr(args, "device", None)
    if device is not None:
        kind = device.split(":", 1)[0]
        if kind not in {"cpu", "cuda", "mps"}:
            raise ValueError(f"--device {device} is not a device — use cpu, cuda or mps")
        import torch

        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but this machine has no CUDA GPU — use --device cpu")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ValueError("--device mps was asked for but this machine has no Apple GPU — use --device cpu")


#: Outputs of each command: (option, "model" folder, "folder" or "file"), checked before any work.
_OUTPUTS = {
    "demo-data": [("out", "folder")],
    "train-coarse": [("out", "model")],
    "adapt": [("out", "folder")],
    "finetune": [("out", "model")],
    "pretrain": [("out", "model")],
    "predict": [("out", "file")],
    "refine": [("out", "file"), ("probs_out", "file"), ("iterations_out", "file")],
    "crf": [("out", "file"), ("probs_out", "file"), ("params_out", "file")],
    "experiment": [("out", "file"), ("save_models", "folder")],
}
_INPUTS = ("image", "probs", "labels", "model", "params", "search_labels", "resume", "init", "config", "coarse", "rnn")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that could not be written.

    A file where a folder goes (or the reverse), a folder of other files as a model, an
    unwritable place, an input as output.
    """
    from refiner.core.atomic import check_writable
    from refiner.models.store import check_model_output

    inputs = {}
    for name in _INPUTS:
        value = getattr(args, name, None)
        for v in value if isinstance(value, list) else [value]:
            if v and "://" not in str(v):
                inputs[Path(v).resolve()] = name
    for name, kind in _OUTPUTS.get(args.command, []):
        value = getattr(args, name, None)
        if value is None:
            continue
        opt, path = f"--{name.replace('_', '-')}", Path(value)
        if path.resolve() in inputs and kind != "model":
            raise ValueError(f"{opt} {path} is also the input --{inputs[path.resolve()]} — write to another file")
        if kind == "model":
            check_model_output(path)
        elif kind == "folder" and path.exists() and not path.is_dir():
            raise ValueError(f"{opt} {path} is a file, and a folder is written there — give a folder name")
        elif kind == "file" and path.is_dir():
            raise ValueError(f"{opt} {path} is a folder — give a file name, e.g. {path / 'out.tif'}")
        else:
            check_writable(path)
    if args.command == "finetune" and args.checkpoint_every:
        check_model_output(_checkpoint_dir(args))


def _os_error(exc: OSError) -> str:
    """One line for a failed read or write: what, where, and what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where} — free some space and run again (nothing was written)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror}{where} — give a path you can write, or change its permissions"
    if isinstance(exc, FileNotFoundError) and not exc.strerror:
        return str(exc)
    return f"{exc.strerror or exc}{where} — check the path and run again"


def _note(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: IO[str] | None = None,
    line: str | None = None,
) -> None:
    """Scaling notes as ``note:`` lines; other warnings as Python shows them."""
    from refiner.data.read import ScaleNote

    if issubclass(category, ScaleNote):
        print(f"note: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 2 for an error in one line, 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _note
            check_args(args)
            check_outputs(args)
            args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            raise
        msg = str(exc) if exc.errno is None and str(exc) else _os_error(exc)
        if " — " not in msg:
            msg += " — check the path and run again"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as exc:
        if args.debug:
            raise
        msg = str(exc) if not isinstance(exc, KeyError) else f"missing entry {exc}"
        if " — " not in msg:  # an engine message without its "what to do"
            msg += " — check the inputs, or run again with --debug for the details"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an unforeseen input: one line, the traceback with --debug
        if args.debug:
            raise
        if "No space left on device" in str(exc):  # GDAL's and safetensors' own errors for ENOSPC
            print(f"error: {_os_error(OSError(errno.ENOSPC, 'No space left on device'))}", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {exc} — run again with --debug for the details", file=sys.stderr)
        return 2
    return 0
