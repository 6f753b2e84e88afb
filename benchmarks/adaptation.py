"""Adapting to tiles from elsewhere: a painted patch, then the score on the *rest* of the tile.

    nice -n 5 python benchmarks/adaptation.py [--set report|dev] [--sizes 100 200 300]
        [--placements objects hints] [--tiles NAME ...] [--json out.json] [--plot out.png]
        [--coarse MODEL_DIR] [--rnn MODEL_DIR] [--layers head|top2|all] [--grid tile|model] [--rnn-stage JSON]

``--coarse`` / ``--rnn`` score other models than the shipped ones (a candidate before it ships),
``--layers`` the coarse part that adaptation trains and ``--grid`` the grid it adapts on (defaults:
``CoarseAdaptConfig``'s), ``--rnn-stage`` the RNN stage's training settings (defaults:
``ADAPT_RNN_DEFAULTS``).

For every tile, patch size (px at the tile's own resolution) and placement, a simulated user
paints a ``size`` x ``size`` patch with the tile's reference labels, and each method is scored on
every pixel *outside* the patch:

- ``shipped``: the shipped coarse CNN (``assets/pretrained/coarse_1m``), no adaptation;
- ``rnn_only``: the shipped RNN fine-tuned on the patch over the shipped map (what the Train
  page's "Fine-tune the RNN only" runs: :func:`refiner.train.rnn.finetune_from_pretrained` with
  the app's 60 s budget, at the 1 m working grid);
- ``adapted``: the coarse CNN adapted to the tile (:func:`refiner.adapt`, first stage);
- ``adapted_rnn``: the adapted map refined by the RNN stage, when :func:`refiner.adapt` kept
  it (it is dropped when it does not beat the adapted map on the held-out painted regions; the
  row then repeats ``adapted`` and says so);
- ``crf``: the dense CRF (default parameters) on the adapted map.

Placements: ``objects``, the window holding the most object pixels (a user paints where
buildings or roads are); ``hints``, the app's first suggested box
(:func:`refiner.app.hints.suggest_boxes` on the shipped map's uncertainty).

Tiles (none in the shipped models' training, validation or calibration sets,
``experiments/pretrained/split.toml``): WHU satellite-I cities (buildings; resolution not
recorded, estimated from car lengths), SpaceNet Atlanta and Vegas panchromatic chips (grey
images as three equal bands), DeepGlobe roads (0.5 m, South/South-East Asia, incomplete labels:
unlabelled tracks count as errors), and the 3-class Massachusetts tile (a shipped-model *test*
tile, at 1.465 m, the only one with buildings and roads). ``--set dev`` are the tiles the
adaptation's settings were chosen on; ``--set report`` (the default) never were.

Single-class tiles are scored as that class against the rest (2-class mean IoU); the painted
"not building" / "not road" pixels are partial labels (background or the other class), as the
app's partial-label codes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import DATA, machine  # noqa: E402
from refiner.core.classes import IGNORE  # noqa: E402
from refiner.train.losses import NOT_BUILDING, NOT_ROAD  # noqa: E402

PARTIAL = {NOT_ROAD: (0, 1), NOT_BUILDING: (0, 2)}
CLASS_INDEX = {"building": 1, "road": 2}


@dataclass(frozen=True)
class Foreign:
    """A tile from elsewhere: image, mask, what the mask labels, metres per pixel, bands."""

    name: str
    image: str
    mask: str
    labels: str  # "building", "road" or "merged" (0 background, 1 building, 2 road)
    resolution: float | None  # None: georeferenced, the file says
    bands: tuple[int, ...] | None = None
    note: str = ""


def _whu(city: str, res: float) -> Foreign:
    return Foreign(f"whu_{city}", f"whu_samples/images/sat1_{city}.png", f"whu_samples/masks/sat1_{city}.png",
                   "building", res, note="resolution estimated (cars ~9-10 px)")  # fmt: skip


def _dg(n: str) -> Foreign:
    return Foreign(f"deepglobe_{n}", f"deepglobe_roads/images/{n}.jpg", f"deepglobe_roads/masks/{n}.png", "road", 0.5,
                   note="incomplete road labels")  # fmt: skip


DEV = [
    Foreign("whu_cairo", "whu_samples/images/sat1_cairo.png", "whu_samples/masks/sat1_cairo.png", "building", 0.8),
    _whu("milan", 0.5),
    _dg("104"),
    Foreign("inria_austin_val", "inria_austin/images/austin_x616800_y3344700.tif",
            "inria_austin/masks/austin_x616800_y3344700.tif", "building", None),
]  # fmt: skip
REPORT = [
    *(_whu(c, 0.5) for c in ("newyork", "ottawa", "santiago", "taiwan", "venice", "wuhan", "cordoba", "los_angeles")),
    *(_dg(n) for n in ("113", "343", "388")),
    Foreign("spacenet_atlanta_pan", "spacenet_samples/images/SN4_Atlanta_PAN_solaris_sample.tif",
            "spacenet_samples/masks/SN4_Atlanta_PAN_solaris_sample.tif", "building", None, (1, 1, 1)),
    Foreign("spacenet_vegas_pan", "spacenet_samples/images/SN3_AOI_2_Vegas_PAN_solaris_sample.tif",
            "spacenet_samples/masks/SN3_AOI_2_Vegas_PAN_solaris_sample.tif", "road", None, (1, 1, 1)),
    Foreign("massachusetts_merged", "massachusetts_merged/images/23429080_15.png",
            "massachusetts_merged/masks/23429080_15.png", "merged", 1.465, note="a shipped-model test tile"),
]  # fmt: skip


def load(t: Foreign):
    """The tile and its truth in the shipped classes (partial codes where the mask labels one class)."""
    from PIL import Image

    import refiner

    tile = refiner.read_image(DATA / t.image, bands=t.bands)
    if tile.georef is None:
        tile.pixel_size = t.resolution
    raw = np.asarray(Image.open(DATA / t.mask))
    raw = raw[..., 0] if raw.ndim == 3 else raw
    if t.labels == "merged":
        truth = raw.astype(np.uint8)
    else:
        idx = CLASS_INDEX[t.labels]
        on = raw == idx if raw.max() <= 2 else raw > 127  # SpaceNet masks use 1 / 2, the others 0 / 255
        truth = np.where(on, idx, NOT_BUILDING if idx == 1 else NOT_ROAD).astype(np.uint8)
    truth[~tile.valid] = IGNORE
    return tile, truth


def rest_scores(pred: np.ndarray, truth: np.ndarray, window: tuple[int, int, int], what: str) -> dict:
    """IoU of the object class(es) and mean IoU on the pixels outside the painted window."""
    from refiner.core.metrics import evaluate

    r, c, s = window
    t = truth.copy()
    t[r : r + s, c : c + s] = IGNORE
    keep = t != IGNORE
    if what == "merged":
        sc = evaluate(pred[keep], t[keep], 3)
        return {"mean_iou": sc.mean_iou, "building": sc.iou[1], "road": sc.iou[2]}
    idx = CLASS_INDEX[what]
    p, tt = pred[keep] == idx, t[keep] == idx
    iou = float((p & tt).sum() / max(1, (p | tt).sum()))
    iou_rest = float((~p & ~tt).sum() / max(1, (~p | ~tt).sum()))
    return {"mean_iou": (iou + iou_rest) / 2, what: iou}


def _window_sums(a: np.ndarray, s: int) -> np.ndarray:
    c = np.pad(a.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]


def place(truth: np.ndarray, probs: np.ndarray, size: int, how: str) -> tuple[int, int, int]:
    """Where the patch goes: most object pixels, or the app's first hint box."""
    if how == "objects":
        obj = (truth == 1) | (truth == 2)
        ws = _window_sums(obj, size)
        r, c = np.unravel_index(int(ws.argmax()), ws.shape)
        return int(r), int(c), size
    from refiner.app import hints

    need = hints.need_map(probs, [probs.argmax(0).astype(np.uint8)], np.full(truth.shape, IGNORE, np.uint8))
    box = hints.suggest_boxes(need, np.full(truth.shape, IGNORE, np.uint8), n=1, size=size)[0]
    return box.row, box.col, size


def run_one(
    t: Foreign, size: int, how: str, models: dict, rnn_only: bool, coarse_cfg: dict | None = None,
    rnn_cfg: dict | None = None,
) -> dict:  # fmt: skip
    """One tile, patch size and placement: every method's scores on the rest, seconds per stage."""
    import refiner
    from refiner.baselines.crf import dense_crf
    from refiner.train.sampling import restrict_to_window

    tile, truth = load(t)
    if size > min(tile.shape):
        return {}
    t0 = time.perf_counter()
    shipped = refiner.predict_coarse(models["coarse"], tile)
    seconds = {"shipped": time.perf_counter() - t0}
    window = place(truth, shipped, size, how)
    labels = restrict_to_window(truth, (window[0], window[1], size, size))
    row = {"tile": t.name, "size": size, "placement": how, "window": list(window),
           "painted_object_px": int(((labels == 1) | (labels == 2)).sum())}  # fmt: skip
    row["shipped"] = rest_scores(shipped.argmax(0), truth, window, t.labels)
    if rnn_only:
        from refiner.app.jobs.training import TrainParams
        from refiner.data.resample import to_working
        from refiner.train.rnn import FINETUNE_DEFAULTS, finetune_from_pretrained

        t1 = time.perf_counter()
        work = to_working(tile, models["rnn"].resolution, shipped, [labels])
        assert work.probs is not None
        cfg = replace(FINETUNE_DEFAULTS, max_seconds=TrainParams().max_seconds)  # as the app's Train page runs it
        ft = finetune_from_pretrained(work.tile.image, work.probs, work.labels[0], models["rnn"], cfg, partial=PARTIAL)
        refined = refiner.refine(ft.bundle, tile, shipped).final
        seconds["rnn_only"] = time.perf_counter() - t1
        row["rnn_only"] = rest_scores(refined.argmax(0), truth, window, t.labels)
    t2 = time.perf_counter()
    try:
        cfg = refiner.AdaptConfig()
        cfg = replace(cfg, coarse=replace(cfg.coarse, **(coarse_cfg or {})), rnn=replace(cfg.rnn, **(rnn_cfg or {})))
        result = refiner.adapt(tile, labels, models["coarse"], models["rnn"], cfg, partial=PARTIAL)
    except ValueError as exc:  # e.g. a patch of one class only: what the user would be told
        return {**row, "refused": str(exc)}
    adapted = result.probs  # the adapted coarse CNN's map on the tile's grid
    assert adapted is not None
    seconds["adapt_total"] = time.perf_counter() - t2
    seconds.update({f"adapt_{k}": v for k, v in result.seconds.items()})
    row["adapted"] = rest_scores(adapted.argmax(0), truth, window, t.labels)
    row["rnn_kept"] = result.rnn is not None
    row["coarse_note"] = result.coarse_note
    row["rnn_note"] = result.rnn_note
    if result.rnn_result is not None:  # the RNN stage's model, kept or not, for the record
        cand = refiner.refine(result.rnn_result.bundle, tile, adapted).final
        row["adapted_rnn_candidate"] = rest_scores(cand.argmax(0), truth, window, t.labels)
    row["adapted_rnn"] = row["adapted_rnn_candidate"] if result.rnn is not None else row["adapted"]
    t3 = time.perf_counter()
    crf = dense_crf(tile.image, adapted)
    seconds["crf"] = time.perf_counter() - t3
    row["crf"] = rest_scores(crf.argmax(0), truth, window, t.labels)
    row["held_out"] = {k: (None if v is None else v.mean_iou) for k, v in result.scores.items()}
    row["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return row


METHODS = ("shipped", "rnn_only", "adapted", "adapted_rnn", "crf")


def table(rows: list[dict]) -> str:
    """The Markdown table docs/results.md shows: mean IoU on the rest, object IoU, seconds.

    "guard": the class-mix guard of :func:`refiner.train.adapt.class_mix_shift` was "off" (a row
    run before it existed), "on", or refused the adapted coarse CNN ("kept shipped").
    """
    tail = " | object IoU shipped → adapted | guard | s (adapt) |"
    head = "| tile | patch | placement | " + " | ".join(METHODS) + tail
    lines = [head, "|" + "---|" * (len(METHODS) + 6)]
    for r in rows:
        if not r or "refused" in r:
            continue
        obj = [k for k in ("building", "road") if k in r["shipped"]]
        cells = [f"{r[m]['mean_iou']:.3f}" if m in r else "–" for m in METHODS]
        ob = ", ".join(f"{k} {r['shipped'][k]:.3f} → {r['adapted'][k]:.3f}" for k in obj)
        guard = "off" if "coarse_note" not in r else ("kept shipped" if r["coarse_note"] else "on")
        lines.append(f"| {r['tile']} | {r['size']}² | {r['placement']} | " + " | ".join(cells)
                     + f" | {ob} | {guard} | {r['seconds']['adapt_total']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Object IoU on the rest of the tile against painted object pixels, shipped and adapted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, colour in (("shipped", "#888"), ("rnn_only", "#1f77b4"), ("adapted", "#d62728"),
                           ("adapted_rnn", "#2ca02c")):  # fmt: skip
        xs, ys = [], []
        for r in rows:
            if r and method in r and "refused" not in r:
                for k in ("building", "road"):
                    if k in r[method]:
                        xs.append(max(1, r["painted_object_px"]))
                        ys.append(r[method][k])
        ax.scatter(xs, ys, s=18, c=colour, label=method, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("painted object pixels (building or road) in the patch")
    ax.set_ylabel("object IoU on the rest of the tile")
    ax.set_title("Adapting to tiles from elsewhere")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Run the benchmark and write its JSON, table and plot."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--set", choices=("report", "dev"), default="report")
    p.add_argument("--tiles", nargs="*", default=None, help="only these tile names")
    p.add_argument("--sizes", nargs="+", type=int, default=[100, 200, 300])
    p.add_argument("--placements", nargs="+", default=["objects", "hints"], choices=("objects", "hints"))
    p.add_argument("--rnn-only-sizes", nargs="*", type=int, default=[300], help="sizes that also run rnn_only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--coarse", type=Path, default=None, help="coarse model folder (default: the shipped coarse_1m)")
    p.add_argument("--rnn", type=Path, default=None, help="RNN model folder (default: the shipped rnn_1m)")
    p.add_argument("--layers", choices=("head", "top2", "all"), default=None, help="coarse part adaptation trains")
    p.add_argument("--grid", choices=("tile", "model"), default=None, help="the grid the coarse CNN adapts on")
    p.add_argument("--rnn-stage", type=json.loads, default=None,
                   help='RNNTrainConfig fields for the RNN stage as JSON, e.g. \'{"lr": 0.03}\'')  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import refiner

    root = refiner.pretrained_root()
    models = {
        "coarse": refiner.load_model(args.coarse or root / "coarse_1m", expect="coarse"),
        "rnn": refiner.load_model(args.rnn or root / "rnn_1m", expect="rnn"),
    }
    tiles = [t for t in (REPORT if args.set == "report" else DEV) if not args.tiles or t.name in args.tiles]
    chosen = {"coarse": args.coarse, "rnn": args.rnn, "layers": args.layers, "grid": args.grid}
    chosen["rnn_stage"] = args.rnn_stage
    coarse_cfg = {k: v for k, v in (("layers", args.layers), ("grid", args.grid)) if v}
    out = {"machine": machine(), "set": args.set, "rows": [], **{k: str(v) for k, v in chosen.items() if v}}
    for size in args.sizes:  # size-major: every tile at the first size before the next size
        for t in tiles:
            for how in args.placements:
                row = run_one(t, size, how, models, size in args.rnn_only_sizes, coarse_cfg, args.rnn_stage)
                if row:
                    out["rows"].append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(out, indent=1))
    print(table(out["rows"]))
    if args.plot:
        plot(out["rows"], args.plot)


if __name__ == "__main__":
    main()
