"""Pretrained real-data models: the written split, the data at 1 m, the recipes, the model cards.

``python -m refiner pretrain experiments/pretrained/coarse.toml`` (then ``rnn.toml``) rebuilds
``assets/pretrained/coarse_1m`` and ``rnn_1m`` from ``../shared/data`` (read at run time, never
copied). One 3-class model (background / building / road) learns from road-only and
building-only sets through partial labels: on a road tile a non-road pixel is ``NOT_ROAD``
(background or building), on a building tile ``NOT_BUILDING`` (background or road).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
import tomllib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from refiner.core.atomic import atomic_write_bytes
from refiner.core.classes import IGNORE, ClassSpec
from refiner.core.metrics import confusion_matrix, scores_from_confusion
from refiner.data.read import read_image
from refiner.data.resample import to_working
from refiner.data.tile import Tile
from refiner.models.coarse import CoarseNet
from refiner.models.inference import predict_coarse, refine
from refiner.models.rnn import RefinerRNN
from refiner.models.store import ModelBundle, load_model, save_model
from refiner.train.coarse import CoarseTrainConfig, CoarseTrainResult, train_coarse
from refiner.train.loop import Progress
from refiner.train.losses import NOT_BUILDING, NOT_ROAD
from refiner.train.rnn import RNNTrainConfig, train_rnn_tiles

CLASSES = ClassSpec(("background", "building", "road"), (0, 1, 2))
PARTIAL = {NOT_ROAD: (0, 1), NOT_BUILDING: (0, 2)}
#: What a mask value may be declared as in the split file.
CODES = {"background": 0, "building": 1, "road": 2, "not_road": NOT_ROAD, "not_building": NOT_BUILDING}
#: The task each set scores: the class its labels are about (merged tiles score both).
TASK_CLASS = {"road": 2, "building": 1}


def describe_machine() -> str:
    """This machine in a few words for cards and benchmark rows: cores, CPU model, family/model, widest vectors.

    Sittings ran on different CPUs behind the same "AMD EPYC" name (a Zen 2 with AVX2, a family
    25 model 17 with AVX-512), so a number must say which one gave it.
    """
    import os

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return f"{os.cpu_count()}-core {platform.processor() or platform.machine()}"
    flags = info.get("flags", "").split()
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{os.cpu_count()}-core {info.get('model name', platform.machine())} (family {info.get('cpu family', '?')} "
            f"model {info.get('model', '?')}, {vectors})")  # fmt: skip


MACHINE = describe_machine()


@dataclass
class SetSpec:
    """One data set of the pretraining config: its images and masks, their classes, each tile's role."""

    name: str
    root: Path
    images: str
    masks: str
    label_map: dict[int, int]  # mask value -> class index or partial code
    resolution: float  # m/px for files without projected georeferencing
    tasks: tuple[str, ...]  # "road" and/or "building"
    nodata_white: bool
    roles: dict[str, list[str]]  # train / val / test / patch -> tile names


@dataclass
class TileData:
    """A tile at 1 m: uint8 image (3, H, W) and label codes (H, W), 255 = unlabelled / no-data."""

    set: str
    name: str
    image: np.ndarray
    labels: np.ndarray
    tasks: tuple[str, ...]

    def tile(self) -> Tile:
        """The tile as the engine takes it: image in [0, 1], every pixel valid."""
        return Tile(image=self.image.astype(np.float32) / 255, valid=np.ones(self.labels.shape, bool))


def _toml(path: Path) -> dict:
    """A recipe or split TOML, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such recipe: {path} — see experiments/pretrained/ for the shipped ones")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}) — fix it, or take the shipped one again") from exc


def load_split(path: str | Path) -> dict[str, SetSpec]:
    """The data sets and their train / val / test (/ patch) tiles from a split TOML."""
    path = Path(path)
    raw = _toml(path)
    sets = {}
    for name, d in raw["sets"].items():
        sets[name] = SetSpec(
            name=name,
            root=(path.parent / d["root"]).resolve(),
            images=d.get("images", "images"),
            masks=d.get("masks", "masks"),
            label_map={int(k): CODES[v] for k, v in d["label_map"].items()},
            resolution=float(d["resolution"]),
            tasks=tuple(d["tasks"]),
            nodata_white=bool(d.get("nodata_white", False)),
            roles={r: list(d.get(r, [])) for r in ("train", "val", "test", "patch")},
        )
    names = [(s.name, t) for s in sets.values() for r in ("train", "val") for t in s.roles[r]]
    tests = {(s.name, t) for s in sets.values() for t in s.roles["test"]}
    leak = tests & set(names)
    if leak:
        raise ValueError(f"test tiles also used for training or validation: {sorted(leak)}")
    return sets


def _find(folder: Path, name: str) -> Path:
    hits = sorted(p for p in folder.glob(name + ".*") if p.suffix.lower() in (".png", ".jpg", ".tif", ".tiff"))
    if not hits:
        raise FileNotFoundError(f"no image named {name}.* in {folder}")
    return hits[0]


def load_tile(spec: SetSpec, name: str, resolution: float = 1.0) -> TileData:
    """One tile of a set at ``resolution`` m: image by area average, label codes by majority vote."""
    tile = read_image(_find(spec.root / spec.images, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(_find(spec.root / spec.masks, name)) as ds:
            raw = ds.read(1)
    lut = np.full(256, IGNORE, np.uint8)
    for v, code in spec.label_map.items():
        lut[v] = code
    labels = lut[raw]
    labels[~tile.valid] = IGNORE
    if spec.nodata_white:  # mosaic-edge tiles: pure white is no-data, not background
        labels[(tile.image.min(axis=0) >= 250 / 255)] = IGNORE
    if tile.georef is None or not tile.georef.crs.is_projected:
        # a plain picture (or degrees): on a local pixel grid at the set's stated pixel size
        tile = dataclasses.replace(tile, georef=None, pixel_size=spec.resolution)
    # the engine's own resampling: the image by area average, the labels by majority vote
    work = to_working(tile, resolution, labels=[labels])
    image = np.round(work.tile.image * 255).astype(np.uint8)
    return TileData(spec.name, name, image, work.labels[0], spec.tasks)


def load_role(sets: dict[str, SetSpec], role: str, *, only: list[str] | None = None) -> list[TileData]:
    """Every tile with role ``role`` (train, val, test or patch) in the sets (or in those named in ``only``)."""
    return [load_tile(s, t) for s in sets.values() if only is None or s.name in only for t in s.roles[role]]


# --------------------------------------------------------------------------- scoring


def task_maps(probs: np.ndarray, labels: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The class-vs-rest map of the 3-class ``probs`` for ``task`` and its truth (255 where unlabelled).

    Partial labels (``NOT_ROAD``, ``NOT_BUILDING``) count as not-class.
    """
    c = TASK_CLASS[task]
    truth = np.where(labels == IGNORE, IGNORE, labels == c).astype(np.uint8)
    return (probs.argmax(0) == c).astype(np.uint8), truth


def task_confusion(probs: np.ndarray, data: TileData, task: str) -> np.ndarray:
    """2x2 confusion (not-class, class) of :func:`task_maps`; unlabelled pixels are left out."""
    return confusion_matrix(*task_maps(probs, data.labels, task), 2)


def scores_2x2(cm: np.ndarray) -> dict:
    """Overall accuracy, IoU of not-class and class, and their mean (:mod:`refiner.core.metrics`)."""
    s = scores_from_confusion(cm)
    return {"overall_accuracy": s.overall_accuracy, "iou_other": s.iou[0], "iou": s.iou[1],
            "mean_iou": s.mean_iou, "pixels": s.pixels}  # fmt: skip


def score_probs(items: list[tuple[np.ndarray, TileData]]) -> dict[str, dict]:
    """Per task, scores over all the tiles that have that task."""
    out = {}
    for task in ("road", "building"):
        cms = [task_confusion(p, d, task) for p, d in items if task in d.tasks]
        if cms:
            out[task] = scores_2x2(sum(cms, np.zeros((2, 2), np.int64)))
    return out


def score_by_set(items: list[tuple[np.ndarray, TileData]]) -> dict[str, dict[str, dict]]:
    """:func:`score_probs` per data set.

    A pooled score is mostly its largest tiles' (a card's building row is 95 % the one
    Massachusetts 3-class tile), so cards list each set too.
    """
    sets: dict[str, list[tuple[np.ndarray, TileData]]] = {}
    for probs, d in items:
        sets.setdefault(d.set, []).append((probs, d))
    return {name: score_probs(group) for name, group in sets.items()}


def card_scores(items: list[tuple[np.ndarray, TileData]]) -> dict[str, dict]:
    """A card's score fields for ``items``: ``test_scores`` pooled per task, ``test_scores_by_set``."""
    return {"test_scores": score_probs(items), "test_scores_by_set": score_by_set(items)}


def crop_center(data: TileData, size: int) -> TileData:
    """The ``size`` x ``size`` centre of a tile (all of it along a side shorter than ``size``)."""
    h, w = data.labels.shape
    r, c = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return TileData(data.set, data.name, data.image[:, r : r + size, c : c + size],
                    data.labels[r : r + size, c : c + size], data.tasks)  # fmt: skip


#: Offsets tried for building and road (background fixed at 0) when calibrating: checkpoint
#: selection uses the coarse grid, the final calibration the fine one.
SELECT_GRID = np.arange(-1.0, 3.01, 0.5)
CALIBRATE_GRID = np.arange(-1.0, 3.01, 0.25)


def validation_score(res: dict[str, dict]) -> float:
    """What checkpoints and offsets are chosen by: the mean over tasks of their mean IoU."""
    return float(np.mean([r["mean_iou"] for r in res.values()]))


def best_offsets(
    logps: list[np.ndarray], tiles: list[TileData], grid: np.ndarray = CALIBRATE_GRID
) -> tuple[float, tuple[float, ...]]:
    """The validation score (mean over tasks of their mean IoU) at the best per-class score offsets.

    A network trained with partial labels and class-balanced patches ends with priors that
    argmax turns into too few (or too many) road and building pixels, and IoU of thin, rare
    classes is very sensitive to that. A constant offset per class on the log-probabilities,
    chosen on validation tiles only, is the cheapest fix; checkpoints are compared at their own
    best offsets, so selection is not fooled by a prior that drifts during training. The score
    is mean IoU (class and not-class), the paper's measure: the class IoU alone pays any number
    of false positives for a few more hits (building offsets chosen on it cost 0.15 IoU of the
    background on the test tiles).
    """
    k = logps[0].shape[0]
    fg = [TASK_CLASS["building"], TASK_CLASS["road"]]
    best, best_bias = -np.inf, (0.0,) * k
    for offsets in np.stack(np.meshgrid(*[grid] * len(fg), indexing="ij"), -1).reshape(-1, len(fg)):
        bias = np.zeros(k, np.float32)
        bias[fg] = offsets
        res = score_probs([(lp + bias[:, None, None], d) for lp, d in zip(logps, tiles, strict=True)])
        value = validation_score(res)
        if value > best + 1e-9:
            best, best_bias = value, tuple(float(b) for b in bias)
    return best, best_bias


def _logp(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probs, 1e-6))


def calibrate_class_bias(bundle: ModelBundle[CoarseNet], val: list[TileData]) -> tuple[float, ...]:
    """Per-class score offsets for a coarse model (its config's ``class_bias``), by :func:`best_offsets`."""
    if bundle.net.cfg.class_bias is not None:
        raise ValueError("the model is calibrated already")
    return best_offsets([_logp(predict_coarse(bundle, d.tile(), device="cpu")) for d in val], val)[1]


def calibrate_rnn_bias(
    bundle: ModelBundle[RefinerRNN], val: list[TileData], vprobs: list[np.ndarray], grid: np.ndarray = CALIBRATE_GRID
) -> tuple[float, ...]:
    """Shift each class's update bias so the refined maps score best on the validation tiles.

    The reason is :func:`best_offsets`'; here the offset ``beta_k`` is spread over the
    iterations (``beta_k / T`` on the class MLP's output bias), so it lives in the weights and
    every inference path (fused, native, scenes, Dask) applies it. Starts from the offsets that
    are best on the final scores, then a coordinate search, a class at a time, refining each
    candidate. Returns the offsets applied (zeros for the class-agnostic variant: one shared bias).
    """
    net = bundle.net
    k = len(bundle.classes)
    if net.cfg.variant == "class_agnostic":
        return (0.0,) * k
    t = net.cfg.iterations
    base = [blk.output.bias.detach().clone() for blk in net.blocks]

    def apply(beta: np.ndarray) -> None:
        with torch.no_grad():
            for blk, b0 in zip(net.blocks, base, strict=True):
                blk.output.bias.copy_(b0 + torch.as_tensor(beta, dtype=b0.dtype) / t)

    def value(beta: np.ndarray) -> float:
        apply(beta)
        res = score_probs([(refine(bundle, d.tile(), p).final, d) for p, d in zip(vprobs, val, strict=True)])
        return validation_score(res)

    zero = np.zeros(k, np.float32)
    final = [_logp(refine(bundle, d.tile(), p).final) for p, d in zip(vprobs, val, strict=True)]
    start = np.asarray(best_offsets(final, val)[1], np.float32)
    best, beta = max((value(zero), zero), (value(start), start), key=lambda x: x[0])
    for c in (TASK_CLASS["road"], TASK_CLASS["building"]):
        for g in beta[c] + np.array([-0.5, -0.25, 0.25, 0.5], np.float32):
            trial = beta.copy()
            trial[c] = g
            v = value(trial)
            if v > best + 1e-9:
                best, beta = v, trial
    apply(beta)
    return tuple(float(b) for b in beta)


class CoarseValidator:
    """The checkpoint selector: mean over tasks of the mean IoU on the validation tiles.

    Scored at the checkpoint's best class offsets (:func:`best_offsets`); the offsets are kept
    (``bias``) so the learning curve can score the test tiles with them (:meth:`curve_row`).
    """

    def __init__(self, val: list[TileData], test: list[TileData] | None = None) -> None:
        self.val, self.test = val, test or []
        self.bias: tuple[float, ...] | None = None
        self.plain: dict[str, dict] = {}

    def __call__(self, bundle: ModelBundle[CoarseNet]) -> float:
        """The validation score of ``bundle`` (its offsets kept in ``bias``)."""
        logps = [_logp(predict_coarse(bundle, d.tile(), device="cpu")) for d in self.val]
        self.plain = score_probs(list(zip(logps, self.val, strict=True)))
        value, self.bias = best_offsets(logps, self.val, SELECT_GRID)
        print("  validation IoU " + ", ".join(f"{t} {r['iou']:.3f}" for t, r in self.plain.items())
              + f"; calibrated {value:.3f} at offsets {self.bias}", flush=True)  # fmt: skip
        return value

    def curve_row(self, bundle: ModelBundle[CoarseNet]) -> dict:
        """A learning-curve row: validation and test IoU per task, the test at the offsets chosen on validation.

        Recorded only: the weights are chosen by the validation score alone.
        """
        row: dict = {f"val_{t}_iou": r["iou"] for t, r in self.plain.items()}
        row["offsets"] = list(self.bias or ())
        bias = np.asarray(self.bias or (0.0,) * len(CLASSES), np.float32)[:, None, None]
        items = [(_logp(predict_coarse(bundle, d.tile(), device="cpu")) + bias, d) for d in self.test]
        for task, r in score_probs(items).items():
            row[f"test_{task}_iou"], row[f"test_{task}_miou"] = r["iou"], r["mean_iou"]
        return row


def coarse_validator(val: list[TileData]) -> Callable[[ModelBundle[CoarseNet]], float]:
    """The checkpoint selector of :class:`CoarseValidator` on ``val`` (no test tiles)."""
    return CoarseValidator(val)


def write_curve(path: Path, history: list[dict]) -> None:
    """The learning curve as JSON lines, one per validation (rewritten whole from the checkpoint's history)."""
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in history).encode())


# --------------------------------------------------------------------------- recipes


def _log(desc: str) -> Callable[[Progress], None]:
    def show(p: Progress) -> None:
        if p.message or p.step % max(1, p.steps // 20) == 0:
            extra = f", {p.message}" if p.message else ""
            print(f"{desc}: step {p.step}/{p.steps} ({100 * p.step / p.steps:.0f} %), loss {p.loss:.3f}, "
                  f"{p.seconds:.0f} s{extra}", flush=True)  # fmt: skip

    return show


def _task_weights(tiles: list[TileData], shares: dict[str, float]) -> list[float]:
    """Share the batch between tasks as ``shares`` says, within a task by labelled pixels."""
    w = []
    for d in tiles:
        task = d.tasks[0] if len(d.tasks) == 1 else "merged"
        same = [e for e in tiles if (e.tasks[0] if len(e.tasks) == 1 else "merged") == task]
        total = sum(int((e.labels != IGNORE).sum()) for e in same)
        w.append(shares.get(task, 0.0) * int((d.labels != IGNORE).sum()) / max(1, total))
    return w


def _rnn_patches(raw: dict) -> str:
    """How an RNN recipe started and drew its patches, in words for its card."""
    start = "du = 0 at the start (`identity_start`)" if raw.get("identity_start") else "Glorot's start"
    centres = "balanced over label values" if raw.get("balance", True) else "uniform over the labelled pixels"
    focus = float(raw.get("focus", 0.0))
    hard = f"; {focus:.0%} centred where the coarse map is wrong or unsure (`focus`)" if focus else ""
    return f"{start}; centres {centres}{hard}"


def _card(folder: Path, card: dict) -> None:
    atomic_write_bytes(folder / "card.json", json.dumps(card, indent=2).encode())
    lines = [f"# {card['title']}", "", card["summary"], "",
             f"- kind: {card['kind']}; classes: {', '.join(card['classes'])}; resolution: {card['resolution_m']} m/px",
             f"- trained: {card['steps']} steps in {card['training_seconds']:.0f} s on {card['machine']} "
             f"(torch threads: {card['torch_threads']}), seed {card['seed']}; rebuild: `{card['rebuild']}`",
             f"- selected checkpoint: step {card.get('best_step')} (validation score {card.get('best_val')})",
             *([f"- continued from: `{card['init']}`"] if card.get("init") else []),
             *([f"- test scores recomputed {card['rescored']}"] if card.get("rescored") else []),
             *([f"- class score offsets (calibrated on the validation tiles): {card['class_bias']}"]
               if card.get("class_bias") else []),
             *([f"- training patches: {card['patches']}"] if card.get("patches") else []),
             *([f"- note: {card['note']}"] if card.get("note") else []),
             f"- split: `{card['split_file']}`", "", "| set | train | val | test |", "|---|---|---|---|"]  # fmt: skip
    for name, roles in card["data"].items():
        lines.append(f"| {name} | {len(roles['train'])} | {len(roles['val'])} | {', '.join(roles['test']) or '-'} |")
    atomic_write_bytes(folder / "card.md", ("\n".join([*lines, "", *_scores_md(card)]) + "\n").encode())


SCORES_HEADER = "## Test scores (test tiles only, at 1 m; IoU of the class against everything else)"
_SCORES_START = "## Test scores"  # how an older card's score section begins too
_TABLE_HEAD = ["| task | OA | IoU other | IoU class | mean IoU | pixels |", "|---|---|---|---|---|---|"]


def _scores_md(card: dict) -> list[str]:
    """A card's score section: pooled per task, the baseline's (an RNN's coarse map), then per set."""
    lines = [SCORES_HEADER, "", *_TABLE_HEAD, *(_score_row(t, s) for t, s in card["test_scores"].items())]
    base = card.get("baseline") or {}
    if base.get("test_scores"):  # an RNN: the coarse map it refines, on the same tiles
        lines += ["", f"The coarse map it refines ({base['model']}) on the same tiles, for comparison:", "",
                  *_TABLE_HEAD, *(_score_row(t, s) for t, s in base["test_scores"].items())]  # fmt: skip
    by_set, base_by_set = card.get("test_scores_by_set") or {}, base.get("test_scores_by_set") or {}
    if by_set:
        compare = " coarse map: IoU class / mean IoU |" if base_by_set else ""
        lines += ["", "Per data set (a pooled row above is mostly its largest tiles):", "",
                  "| set | task | IoU class | mean IoU | pixels |" + compare,
                  "|---|---|---|---|---|" + ("---|" if compare else "")]  # fmt: skip
        for name, tasks in by_set.items():
            for task, sc in tasks.items():
                row = f"| {name} | {task} | {sc['iou']:.3f} | {sc['mean_iou']:.3f} | {sc['pixels']} |"
                if compare and task in base_by_set.get(name, {}):
                    b = base_by_set[name][task]
                    row += f" {b['iou']:.3f} / {b['mean_iou']:.3f} |"
                lines.append(row)
    return [*lines, "", "Data: see each set's PROVENANCE.md in ../shared/data (research use; cite the sources)."]


def predictions_on(
    model: ModelBundle, tiles: Sequence[TileData], coarse: ModelBundle[CoarseNet] | None = None
) -> tuple[list[tuple[np.ndarray, TileData]], list[tuple[np.ndarray, TileData]]]:
    """The model's probabilities on each tile and, for an RNN, the coarse map it refined (else [])."""
    items, base = [], []
    for d in tiles:
        if model.kind == "coarse":
            items.append((predict_coarse(model, d.tile(), device="cpu"), d))
            continue
        if coarse is None:
            raise ValueError("scoring an RNN needs the coarse model whose maps it refines")
        probs = predict_coarse(coarse, d.tile(), device="cpu")
        items.append((refine(model, d.tile(), probs).final, d))
        base.append((probs, d))
    return items, base


def scores_on(
    model: ModelBundle, tiles: Sequence[TileData], coarse: ModelBundle[CoarseNet] | None = None
) -> tuple[dict[str, dict], dict[str, dict] | None]:
    """Pooled task scores of the model (and, for an RNN, of the coarse map it refines) on ``tiles``."""
    items, base = predictions_on(model, tiles, coarse)
    return score_probs(items), (score_probs(base) if base else None)


def rescore_card(folder: str | Path, root: str | Path = ".") -> dict:
    """Recompute a shipped model's test scores with today's inference code and rewrite its card.

    Inference changes (the mirrored tile edges of issue #22 moved the coarse road IoU from 0.307
    to 0.317) make a card's scores stale while its weights are unchanged; the card then says
    when it was rescored. ``root`` is where the card's ``split_file`` path starts.
    """
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    model = load_model(folder, expect=card["kind"])
    coarse = None
    if card["kind"] == "rnn":
        coarse = load_model(folder.parent / card["baseline"]["model"], expect="coarse")
    items, base = predictions_on(model, load_role(load_split(Path(root) / card["split_file"]), "test"), coarse)
    card.update(card_scores(items))
    if base:
        card["baseline"].update(card_scores(base))
    card["rescored"] = time.strftime("%Y-%m-%d", time.gmtime()) + " (weights unchanged; today's inference code)"
    md = folder / "card.md"
    text = md.read_text() if md.is_file() else None
    _card(folder, card)
    if text is not None:  # keep what was written by hand around the tables; new rows, a dated line
        atomic_write_bytes(md, _rescored_md(text, card).encode())
    return card


def _score_row(task: str, s: dict) -> str:
    return (f"| {task} | {s['overall_accuracy']:.3f} | {s['iou_other']:.3f} | {s['iou']:.3f} | {s['mean_iou']:.3f} | "
            f"{s['pixels']} |")  # fmt: skip


def _rescored_md(text: str, card: dict) -> str:
    """``text`` (a card.md) with its score section rebuilt from ``card`` and a dated line.

    What was written by hand above the score section is kept; the section itself (from its
    header on) is generated.
    """
    out = []
    for line in text.splitlines():
        if line.startswith(_SCORES_START):
            break
        if line.startswith("- test scores recomputed"):
            continue  # an earlier rescoring's line: the new one follows the split's
        out.append(line)
        if line.startswith("- split:"):
            out.append(f"- test scores recomputed {card['rescored']}")
    while out and not out[-1]:
        out.pop()
    return "\n".join([*out, "", *_scores_md(card)]) + "\n"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class _Recipe:
    """A recipe TOML with its data loaded: what the coarse and the RNN training steps share."""

    path: Path
    raw: dict
    sets: dict[str, SetSpec]
    seed: int
    train: list[TileData]
    val: list[TileData]  # central crops (checkpoint selection)
    test: list[TileData]
    weights: list[float]
    train_args: dict

    def val_whole(self) -> list[TileData]:
        """The validation tiles whole (calibration), never the test tiles."""
        return load_role(self.sets, "val", only=self.raw.get("sets"))


@dataclass
class _Trained:
    bundle: ModelBundle
    best_step: int | None
    best_val: float | None
    seconds: float
    scores: dict[str, dict]  # card_scores: pooled and per set
    baseline: dict | None = None


def _load_recipe(config: Path, steps: int | None) -> _Recipe:
    raw = _toml(config)
    sets = load_split(config.parent / raw["split"])
    t_load = time.perf_counter()
    only = raw.get("sets")
    train = load_role(sets, "train", only=only)
    val = [crop_center(d, int(raw.get("val_crop", 400))) for d in load_role(sets, "val", only=only)]
    test = load_role(sets, "test", only=only)
    print(f"pretrain {raw['kind']}: {len(train)} training, {len(val)} validation, {len(test)} test tiles at 1 m "
          f"(loaded in {time.perf_counter() - t_load:.0f} s)", flush=True)  # fmt: skip
    tr = dict(raw.get("train", {}))
    if steps is not None:
        tr["steps"] = steps
    weights = _task_weights(train, raw.get("shares", {"road": 0.5, "building": 0.5}))
    return _Recipe(config, raw, sets, int(raw.get("seed", 0)), train, val, test, weights, tr)


def _pretrain_coarse(r: _Recipe, should_stop: Callable[[], bool]) -> _Trained | None:
    """Train (or continue) the coarse CNN of a recipe; None when stopped before its last step."""
    raw, root = r.raw, r.path.parent
    cfg = CoarseTrainConfig(seed=r.seed, **r.train_args)
    res = CoarseTrainResult(None)  # type: ignore[arg-type]
    init = load_model(root / raw["init"], expect="coarse") if raw.get("init") else None
    ckpt = root / raw["checkpoint"] if raw.get("checkpoint") else None
    selector = CoarseValidator(r.val, r.test if ckpt else None)
    log = _log("coarse")

    def progress(p: Progress) -> None:
        log(p)
        if ckpt is not None and p.message:  # a validation: its row is in the history now
            write_curve(ckpt.parent / "curve.jsonl", res.history)

    bundle = train_coarse([d.image for d in r.train], [d.labels for d in r.train], CLASSES, cfg, resolution=1.0,
                          device="cpu", progress=progress, partial=PARTIAL, tile_weights=r.weights,
                          validate=selector, result=res, init=init, should_stop=should_stop, checkpoint=ckpt,
                          checkpoint_every=int(raw.get("checkpoint_every", 0)),
                          monitor=selector.curve_row if ckpt else None)  # fmt: skip
    if ckpt is not None:
        write_curve(ckpt.parent / "curve.jsonl", res.history)
    if not res.finished:
        print(f"pretrain coarse: stopped at step {bundle.info['trained_steps']} of {cfg.steps}"
              + (f", state kept in {ckpt}; run the same command again to continue" if ckpt else ""),
              flush=True)  # fmt: skip
        return None
    t_cal = time.perf_counter()
    if raw.get("calibrate"):  # on the whole validation tiles, never the test tiles
        bias = calibrate_class_bias(bundle, r.val_whole())
        bundle.net.cfg = dataclasses.replace(bundle.net.cfg, class_bias=bias)
        bundle.info = {**bundle.info, "class_bias": list(bias)}
        print(f"pretrain coarse: class score offsets chosen on the validation tiles: {bias}", flush=True)
    seconds = res.seconds + time.perf_counter() - t_cal  # training (every sitting) and calibration
    items, _ = predictions_on(bundle, r.test)
    return _Trained(bundle, res.best_step, res.best_val, seconds, card_scores(items))


def _pretrain_rnn(r: _Recipe) -> _Trained:
    """Train a recipe's RNN on its coarse model's outputs over many tiles, then calibrate its class offsets."""
    raw, val = r.raw, r.val
    t0 = time.perf_counter()
    coarse = load_model(r.path.parent / raw["coarse"], expect="coarse")
    limit = int(raw.get("tiles_per_set", 1000))
    train: list[TileData] = []
    per: dict[str, int] = {}
    for d in r.train:
        per[d.set] = per.get(d.set, 0) + 1
        if per[d.set] <= limit:
            train.append(d)
    weights = _task_weights(train, raw.get("shares", {"road": 0.5, "building": 0.5}))
    probs = [np.round(predict_coarse(coarse, d.tile(), device="cpu") * 255).astype(np.uint8) for d in train]
    vprobs = [predict_coarse(coarse, d.tile(), device="cpu") for d in val]
    print(f"pretrain rnn: coarse outputs on {len(train)} tiles in {time.perf_counter() - t0:.0f} s", flush=True)

    def validate(b: ModelBundle[RefinerRNN]) -> float:
        logps = [_logp(refine(b, d.tile(), p).final) for p, d in zip(vprobs, val, strict=True)]
        res = score_probs(list(zip(logps, val, strict=True)))
        value, bias = best_offsets(logps, val, SELECT_GRID)
        print("  validation IoU " + ", ".join(f"{t} {r['iou']:.3f}" for t, r in res.items())
              + f"; calibrated {value:.3f} at offsets {bias}", flush=True)  # fmt: skip
        return value

    rnn_cfg = RNNTrainConfig(seed=r.seed, identity_start=bool(raw.get("identity_start", False)),
                             focus=float(raw.get("focus", 0.0)), **r.train_args)  # fmt: skip
    result = train_rnn_tiles([d.image for d in train], probs, [d.labels for d in train], CLASSES, rnn_cfg,
                             partial=PARTIAL, tile_weights=weights, resolution=1.0, stats=(coarse.mean, coarse.std),
                             validate=validate, progress=_log("rnn"), centre_stride=4,
                             balance=bool(raw.get("balance", True)))  # fmt: skip
    bundle = result.bundle
    bundle.optimizer_state = None  # fine-tunes start a fresh AdaGrad (FINETUNE_DEFAULTS)
    if raw.get("calibrate"):  # on the whole validation tiles, as the coarse model's: 14x the road pixels of the crops
        whole = r.val_whole()
        beta = calibrate_rnn_bias(bundle, whole, [predict_coarse(coarse, d.tile(), device="cpu") for d in whole])
        bundle.info = {**bundle.info, "class_bias": list(beta)}
        print(f"pretrain rnn: class offsets chosen on the validation tiles: {beta}", flush=True)
    seconds = time.perf_counter() - t0
    items, base = predictions_on(bundle, r.test, coarse)
    # the coarse map's scores on the same tiles, beside the RNN's: the card showed two near-equal
    # rows (road IoU 0.31 / 0.29) that read as the coarse card's repeated, with nothing to compare
    baseline = {"model": Path(raw["coarse"]).name, **card_scores(base)}
    return _Trained(bundle, bundle.info.get("best_step"), result.best_val, seconds, card_scores(items), baseline)


def run_pretrain(
    config: str | Path,
    *,
    steps: int | None = None,
    out: str | Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Path | None:
    """Train one shipped model from a recipe TOML (``kind = "coarse"`` or ``"rnn"``); returns its folder.

    A coarse recipe with a ``checkpoint`` file is resumable: it continues from that file when it
    exists, writes it every ``checkpoint_every`` steps and when ``should_stop`` says so (then
    returns None: run the same command again to continue), and keeps the learning curve
    (validation and test IoU per validation) in ``curve.jsonl`` beside it.
    """
    config = Path(config)
    kind = _toml(config)["kind"]
    if kind not in ("coarse", "rnn"):
        raise ValueError(f"{config}: kind must be 'coarse' or 'rnn', not {kind!r}")
    r = _load_recipe(config, steps)
    raw, split_file = r.raw, config.parent / r.raw["split"]
    torch.manual_seed(r.seed)
    folder = Path(out) if out else config.parent / raw["out"]
    trained = _pretrain_coarse(r, should_stop) if kind == "coarse" else _pretrain_rnn(r)
    if trained is None:
        return None
    bundle, seconds, scores, seed, sets = trained.bundle, trained.seconds, trained.scores, r.seed, r.sets
    best_step, best_val, baseline = trained.best_step, trained.best_val, trained.baseline
    bundle.info = {**bundle.info, "recipe": str(config), "training_seconds": seconds}
    save_model(bundle, folder)
    used = {s.name: s.roles for s in sets.values() if raw.get("sets") is None or s.name in raw["sets"]}
    _card(folder, {
        "title": f"Pretrained {kind} model, 3 classes at 1 m",
        "summary": raw.get("summary", ""),
        "kind": kind, "classes": list(CLASSES.names), "resolution_m": 1.0,
        "partial_labels": {"not_road": list(PARTIAL[NOT_ROAD]), "not_building": list(PARTIAL[NOT_BUILDING])},
        "data": used, "split_file": _rel(split_file),
        "steps": int(bundle.info.get("trained_steps", 0)), "best_step": best_step, "best_val": best_val,
        "training_seconds": round(seconds, 1), "machine": f"{MACHINE}, {platform.system()}, torch {torch.__version__}",
        "torch_threads": torch.get_num_threads(), "seed": seed,
        "rebuild": f"python -m refiner pretrain {config}", "train_config": bundle.info.get("train_config"),
        **scores, "init": raw.get("init"), "class_bias": bundle.info.get("class_bias"),
        **({"baseline": baseline, "patches": _rnn_patches(raw)} if kind == "rnn" else {}),
    })  # fmt: skip
    pooled = json.dumps(scores["test_scores"])
    print(f"pretrain {kind}: saved {folder} ({seconds:.0f} s); test scores: {pooled}", flush=True)
    return folder
