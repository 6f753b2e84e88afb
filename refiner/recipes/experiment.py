"""The paper's protocol end to end, from one TOML file to one JSON report.

1. train the coarse CNN on the ``[coarse]`` images and (imprecise, optionally degraded) labels,
   or load ``model = "path"``;
2. predict coarse probabilities on the enhancement and test images;
3. train the three RNN variants on the ``[enhance]`` labels (optionally only a ``window`` of them,
   like a painted patch);
4. grid-search the dense CRF on the same labels;
5. evaluate every method on ``[test]`` (and the RNN at every iteration) and report.

Networks run at ``resolution`` metres per pixel; scores are computed on the test labels' own
grid, with outputs upsampled bilinearly as in the paper.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refiner.baselines.crf import DEFAULT_GRID, dense_crf, grid_search
from refiner.core.atomic import atomic_write_bytes, unknown_keys
from refiner.core.classes import IGNORE, ClassSpec
from refiner.core.metrics import confusion_matrix, scores_from_confusion
from refiner.data.read import read_image, read_labels
from refiner.data.resample import probs_to_grid, to_working
from refiner.data.synthetic import degrade_labels
from refiner.data.tile import Tile, grid_of
from refiner.data.vector import LINE_WIDTH
from refiner.models.inference import predict_coarse, refine
from refiner.models.rnn import VARIANTS, RNNConfig
from refiner.models.store import load_model, save_model
from refiner.train.coarse import CoarseTrainConfig, train_coarse
from refiner.train.loop import Progress
from refiner.train.rnn import SCRATCH_DEFAULTS, RNNTrainConfig, train_rnn
from refiner.train.sampling import restrict_to_window

#: The darkest band at or above this counts as pure white with ``nodata_white`` (250 of 255).
WHITE = 250 / 255

METHOD_KEYS = {"class_specific": "rnn", "class_agnostic": "rnn_class_agnostic", "non_recurrent": "rnn_non_recurrent"}


@dataclass
class Split:
    """One part of an experiment (``[coarse]``, ``[enhance]`` or ``[test]``): images, labels, how to use them."""

    images: list[Path]
    labels: list[Path]
    steps: int | None = None
    window: tuple[int, int, int, int] | None = None
    degrade: dict[str, float] | None = None
    model: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Pure white pixels are no-data (mosaic-edge tiles such as massachusetts_roads_extra): their
    #: labels become unlabelled, so nothing trains on them and no method is scored there.
    nodata_white: bool = False


@dataclass
class ExperimentConfig:
    """An experiment read from TOML: the classes, the three splits, the RNN variants and the CRF grid to compare."""

    classes: ClassSpec
    resolution: float | None
    seed: int
    coarse: Split
    enhance: Split
    test: Split
    bands: tuple[int, ...] | None = None
    iterations: int = 5
    variants: tuple[str, ...] = VARIANTS
    crf_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_GRID))
    line_width: float = LINE_WIDTH

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read an experiment TOML file; paths in it are relative to its folder."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such experiment config: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_dict(raw, path.parent)

    @classmethod
    def from_dict(cls, raw: dict, root: Path) -> ExperimentConfig:
        """An experiment from parsed TOML, paths relative to ``root``; refuses one without the classes or a split."""
        for key in ("classes", "coarse", "enhance", "test"):
            if key not in raw:
                raise ValueError(f"the experiment config needs a `{key}` entry")
        classes = ClassSpec(tuple(raw["classes"]), tuple(raw.get("label_values", ())))

        def split(name: str) -> Split:
            d = dict(raw[name])
            model = d.pop("model", None)
            images = [root / p for p in d.pop("images", [])]
            labels = [root / p for p in d.pop("labels", [])]
            if not model and not images:
                raise ValueError(f"[{name}] needs `images` (and `labels`)")
            if images and len(images) != len(labels) and not (name == "coarse" and model):
                raise ValueError(f"[{name}] has {len(images)} images but {len(labels)} label files")
            for p in [*images, *labels]:
                if not p.exists():
                    raise FileNotFoundError(f"[{name}] file not found: {p}")
            window = d.pop("window", None)
            nodata_white = bool(d.pop("nodata_white", False))
            if window is not None and len(window) != 4:
                raise ValueError(f"[{name}] window must be [row, col, height, width], got {window}")
            return Split(
                images,
                labels,
                d.pop("steps", None),
                tuple(window) if window else None,
                d.pop("degrade", None),
                root / model if model else None,
                d,
                nodata_white,
            )

        enhance = split("enhance")
        if len(enhance.images) != 1:
            raise ValueError("[enhance] takes exactly one image: the accurately labelled tile")
        rnn = raw.get("rnn", {})
        grid = {k: tuple(v) for k, v in raw.get("crf", {}).get("grid", DEFAULT_GRID).items()}
        return cls(
            classes=classes,
            resolution=raw.get("resolution"),
            seed=int(raw.get("seed", 0)),
            coarse=split("coarse"),
            enhance=enhance,
            test=split("test"),
            bands=tuple(raw["bands"]) if raw.get("bands") else None,
            iterations=int(rnn.get("iterations", 5)),
            variants=tuple(rnn.get("variants", VARIANTS)),
            crf_grid=grid,
            line_width=float(raw.get("line_width", LINE_WIDTH)),
        )


@dataclass
class Prepared:
    """A tile at the source grid and at the working resolution, with its labels on both."""

    tile: Tile
    labels: np.ndarray
    work: Tile
    work_labels: np.ndarray

    def to_source(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities from the working resolution back on the source grid (bilinear, renormalised)."""
        if self.work is self.tile:
            return probs
        src, dst = self.work.georef, grid_of(self.tile)
        assert src is not None and dst is not None  # resampled, so both grids are known
        return probs_to_grid(probs, src, dst, self.tile.shape)


def _prepare(
    image: Path, labels: Path, cfg: ExperimentConfig, window: tuple[int, ...] | None = None, nodata_white: bool = False
) -> Prepared:
    tile = read_image(image, bands=cfg.bands)
    lab = read_labels(labels, cfg.classes, like=tile, line_width=cfg.line_width)
    if nodata_white:
        lab = np.where(tile.image.min(axis=0) >= WHITE, IGNORE, lab).astype(lab.dtype)
    if window is not None:
        lab = restrict_to_window(lab, window)
    work = to_working(tile, cfg.resolution, labels=[lab])
    return Prepared(tile, lab, work.tile, work.labels[0])


def _scores(probs_list: list[np.ndarray], truths: list[np.ndarray], k: int) -> Any:
    cms = (confusion_matrix(p.argmax(0).astype(np.uint8), t, k) for p, t in zip(probs_list, truths, strict=True))
    return scores_from_confusion(sum(cms, np.zeros((k, k), np.int64)))


def run_experiment(
    cfg: ExperimentConfig,
    *,
    device: str | None = None,
    log: Callable[[str], None] = print,
    progress_factory: Callable[[str, int], Callable[[int], None]] | None = None,
    save_models: Path | None = None,
) -> dict:
    """Run the protocol and return the JSON-able report."""
    k, names = len(cfg.classes), cfg.classes.names
    seconds: dict[str, float] = {}

    def bar(desc: str, total: int) -> Callable[[int], None]:
        return progress_factory(desc, total) if progress_factory else (lambda n: None)

    # 1. coarse CNN
    t0 = time.perf_counter()
    if cfg.coarse.model:
        coarse = load_model(cfg.coarse.model, expect="coarse")
        log(f"loaded coarse CNN from {cfg.coarse.model}")
    else:
        imgs, labs = [], []
        for i, (im, lb) in enumerate(zip(cfg.coarse.images, cfg.coarse.labels, strict=True)):
            p = _prepare(im, lb, cfg, nodata_white=cfg.coarse.nodata_white)
            lab = p.work_labels
            if cfg.coarse.degrade:
                lab = degrade_labels(
                    lab,
                    shift=int(cfg.coarse.degrade.get("shift", 3)),
                    drop=float(cfg.coarse.degrade.get("drop", 0.2)),
                    seed=cfg.seed + i,
                )
            imgs.append(p.work.image)
            labs.append(lab)
        steps = cfg.coarse.steps or CoarseTrainConfig.steps
        tcfg = CoarseTrainConfig(steps=steps, seed=cfg.seed, **_train_extra(cfg.coarse.extra, CoarseTrainConfig))
        tick = bar("train coarse CNN", steps)
        log(f"training the coarse CNN: {steps} steps on {len(imgs)} image(s)")
        coarse = train_coarse(
            imgs, labs, cfg.classes, tcfg, resolution=cfg.resolution, device=device, progress=lambda pr: tick(pr.step)
        )
        if save_models:
            save_model(coarse, save_models / "coarse")
    seconds["train_coarse"] = time.perf_counter() - t0

    # 2. coarse probabilities at the working resolution
    enh = _prepare(cfg.enhance.images[0], cfg.enhance.labels[0], cfg, cfg.enhance.window, cfg.enhance.nodata_white)
    tests = [
        _prepare(im, lb, cfg, nodata_white=cfg.test.nodata_white)
        for im, lb in zip(cfg.test.images, cfg.test.labels, strict=True)
    ]
    t0 = time.perf_counter()
    enh_probs = predict_coarse(coarse, enh.work, device=device)
    test_probs = [predict_coarse(coarse, t.work, device=device) for t in tests]
    seconds["predict_coarse"] = time.perf_counter() - t0
    truths = [t.labels for t in tests]
    methods: dict[str, dict] = {}
    methods["cnn"] = _scores([t.to_source(p) for t, p in zip(tests, test_probs, strict=True)], truths, k).to_dict(names)

    # 3. RNN variants
    rnn_steps = cfg.enhance.steps or RNNTrainConfig.steps
    rnn_extra = _train_extra(cfg.enhance.extra, RNNTrainConfig)
    iterations_report: list[dict] = []
    seconds["train_rnn"] = 0.0
    seconds["refine"] = 0.0
    for variant in cfg.variants:
        key = METHOD_KEYS[variant]
        log(f"training the RNN ({variant}): {rnn_steps} steps")
        tick = bar(f"train {key}", rnn_steps)
        t0 = time.perf_counter()
        result = train_rnn(
            enh.work.image,
            enh_probs,
            enh.work_labels,
            cfg.classes,
            dataclasses.replace(SCRATCH_DEFAULTS, steps=rnn_steps, seed=cfg.seed, **rnn_extra),
            arch=RNNConfig(
                num_classes=k, in_channels=enh.work.image.shape[0], iterations=cfg.iterations, variant=variant
            ),
            resolution=cfg.resolution,
            device=device,
            progress=functools.partial(_report_step, tick),
        )
        dt = time.perf_counter() - t0
        seconds[f"train_{key}"] = dt
        if variant == "class_specific":
            seconds["train_rnn"] = dt
        if save_models:
            save_model(result.bundle, save_models / key)
        t0 = time.perf_counter()
        refs = [
            refine(result.bundle, t.work, p, keep_all=variant == "class_specific", device=device)
            for t, p in zip(tests, test_probs, strict=True)
        ]
        if variant == "class_specific":
            seconds["refine"] = time.perf_counter() - t0
            for it in range(len(refs[0].probs)):
                s = _scores([t.to_source(r.probs[it]) for t, r in zip(tests, refs, strict=True)], truths, k)
                iterations_report.append({"iteration": it, **s.to_dict(names)})
        methods[key] = _scores([t.to_source(r.final) for t, r in zip(tests, refs, strict=True)], truths, k).to_dict(
            names
        )

    # 4. dense CRF, grid-searched on the enhancement labels
    log("grid-searching the dense CRF on the enhancement labels")
    combos = int(np.prod([len(v) for v in cfg.crf_grid.values()]))
    tick = bar("CRF grid search", combos)
    t0 = time.perf_counter()
    search = grid_search(enh.work.image, enh_probs, enh.work_labels, cfg.crf_grid, progress=lambda i, n: tick(i))
    seconds["crf_grid_search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    crf_probs = [dense_crf(t.work.image, p, search.best) for t, p in zip(tests, test_probs, strict=True)]
    seconds["crf"] = time.perf_counter() - t0
    methods["crf"] = _scores([t.to_source(p) for t, p in zip(tests, crf_probs, strict=True)], truths, k).to_dict(names)

    order = ["cnn", "crf", *[METHOD_KEYS[v] for v in cfg.variants]]
    return {
        "classes": list(names),
        "methods": {m: methods[m] for m in order if m in methods},
        "rnn_iterations": iterations_report,
        "crf_params": search.best.to_dict(),
        "seconds": seconds,
    }


def _report_step(tick: Callable[[int], None], progress: Progress) -> None:
    tick(progress.step)


def _train_extra(extra: dict[str, Any], cls: type[CoarseTrainConfig | RNNTrainConfig]) -> dict[str, Any]:
    """Optional overrides in a split's table (e.g. ``batch_size = 32``) for the train config."""
    unknown = unknown_keys(cls, extra)
    if unknown:
        known = sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("steps", "seed"))
        raise ValueError(f"unknown option(s) {unknown}; known: {known}")
    return {k: v for k, v in extra.items() if k not in ("steps", "seed")}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def format_table(report: dict, *, markdown: bool = False) -> str:
    """The paper's Fig. 7a: overall accuracy, IoU per class and mean IoU per method (text or Markdown)."""
    names = report["classes"]
    rows = [
        [m, _pct(s["overall_accuracy"]), *(_pct(s["iou"][n]) for n in names), _pct(s["mean_iou"])]
        for m, s in report["methods"].items()
    ]
    head = ["method", "accuracy", *(f"IoU {n}" for n in names), "mean IoU"]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(str(r[i])) for r in [head, *rows]) + 2 for i in range(len(head))]

        def fmt(r: list[str]) -> str:
            cells = zip(r, widths, strict=True)
            return "".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells))

        lines = [fmt(head), "-" * sum(widths), *(fmt(r) for r in rows)]
    if report.get("rnn_iterations"):
        lines.append("")
        lines.append(
            "RNN mean IoU per iteration: "
            + ", ".join(f"t={r['iteration']}: {_pct(r['mean_iou'])}" for r in report["rnn_iterations"])
        )
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> Path:
    """Write the experiment's report as JSON, whole or not at all; returns its path."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    return path
