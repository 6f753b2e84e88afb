"""The paper's protocol with a painted-patch-sized enhancement set, cheaply (issue 27).

One coarse CNN (600 steps x 16 patches on massachusetts_roads 01, 02, 04, 05, 07, 08), an RNN
trained on a 500 x 500 window (500, 500) of tile 12, and the per-iteration mean IoU pooled over
tile 11 and massachusetts_roads_extra 18028870_15, 21628930_15, 24928900_15 (white no-data
masked). ``train`` imports ``refiner`` from the working directory, so the same cached inputs
train the RNN at any commit (``cd`` into a worktree of it, ``PATCH_PROTOCOL_OUT`` naming one
shared folder); ``eval`` scores saved weights::

    PYTHONPATH=. python benchmarks/patch_protocol.py prep                  # coarse CNN + cached inputs (once)
    PYTHONPATH=. python benchmarks/patch_protocol.py train all class_specific 1000 '{"holdout": 0, "seed": 1}'
    PYTHONPATH=. python benchmarks/patch_protocol.py train g0 class_specific 1000 '{"guard": 0}'  # 16 px cells, no band
    PYTHONPATH=. python benchmarks/patch_protocol.py train os class_specific 1000 '{"guard": "9cd8846"}'  # its draw
    PYTHONPATH=. python benchmarks/patch_protocol.py eval all              # per-iteration mIoU, t = 0 is the CNN
    PYTHONPATH=. python benchmarks/patch_protocol.py same all              # the same on the rest of tile 12
    PYTHONPATH=. python benchmarks/patch_protocol.py crf                   # the dense CRF, grid-searched on the window
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(os.environ.get("PATCH_PROTOCOL_OUT", "runs/patch_protocol")).resolve()  # share it across worktrees
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TESTS = ["18028870_15", "21628930_15", "24928900_15"]


def _classes():  # noqa: ANN202 - the ClassSpec of whichever commit runs this
    try:
        from refiner.core.classes import ClassSpec
    except ImportError:  # before the package split (a5a7b05)
        from refiner.classes import ClassSpec  # type: ignore[no-redef]
    return ClassSpec(("background", "road"), (0, 255))


def prep(steps: int = 600) -> None:
    """Train the coarse CNN and cache the enhancement and test inputs in ``OUT / "data.npz"``."""
    from refiner.data.read import read_image, read_labels
    from refiner.models.inference import predict_coarse
    from refiner.models.store import save_model
    from refiner.train.coarse import CoarseTrainConfig, train_coarse

    classes = _classes()

    def load(img: Path, lab: Path) -> tuple:
        tile = read_image(img)
        return tile, read_labels(lab, classes, like=tile)

    roads = DATA / "massachusetts_roads"
    train = [load(roads / f"images/{i}.jpg", roads / f"masks/{i}.png") for i in ["01", "02", "04", "05", "07", "08"]]
    cfg = CoarseTrainConfig(steps=steps, batch_size=16, seed=0)
    coarse = train_coarse([t.image for t, _ in train], [lab for _, lab in train], classes, cfg, resolution=1.0)
    save_model(coarse, OUT / "coarse")
    enh, enh_lab = load(roads / "images/12.jpg", roads / "masks/12.png")
    window = np.full_like(enh_lab, 255)
    window[500:1000, 500:1000] = enh_lab[500:1000, 500:1000]
    out = {"enh_image": enh.image, "enh_probs": predict_coarse(coarse, enh), "enh_labels": window}
    extra = DATA / "massachusetts_roads_extra"
    tests = [("11", roads / "images/11.jpg", roads / "masks/11.png")]
    tests += [(n, extra / f"images/{n}.png", extra / f"masks/{n}.png") for n in TESTS]
    for name, img, lab in tests:
        tile, labels = load(img, lab)
        labels[tile.image.min(0) >= 250 / 255] = 255  # mosaic edge: no-data, not background
        out[f"t_{name}_image"], out[f"t_{name}_labels"] = tile.image, labels
        out[f"t_{name}_probs"] = predict_coarse(coarse, tile)
    np.savez(OUT / "data.npz", **out)


def train(tag: str, variant: str, steps: int, options: dict) -> None:
    """Train one RNN with the working directory's ``train_rnn`` and save its weights as ``tag``."""
    try:
        from refiner.train.rnn import RNNTrainConfig, train_rnn
    except ImportError:  # before the package split
        from refiner.train import RNNTrainConfig, train_rnn  # type: ignore[no-redef,attr-defined]
    from refiner.models.rnn import RNNConfig

    d = np.load(OUT / "data.npz")
    t0 = time.perf_counter()
    arch = RNNConfig(num_classes=2, in_channels=3, iterations=5, variant=variant)
    guard = options.pop("guard", None)  # split here with this guard band (0: a8b8cbb's parent's split)
    cfg = RNNTrainConfig(steps=steps, **{"seed": 0, **options})
    labels, val = d["enh_labels"], None
    if guard == "9cd8846":  # that commit's own draw: 16 px blocks, rng.choice, no band
        labels, val = _split_9cd8846(labels, cfg.holdout, cfg.seed)
    elif guard is not None:
        from refiner.train.sampling import split_holdout

        labels, val = split_holdout(labels, cfg.holdout, guard=guard, block=16 if guard == 0 else None, seed=cfg.seed)
    res = train_rnn(
        d["enh_image"], d["enh_probs"], labels, _classes(), cfg, arch=arch, resolution=1.0, val_labels=val
    )  # fmt: skip
    b = res.bundle
    torch.save({"state": b.net.state_dict(), "mean": b.mean, "std": b.std, "variant": variant}, OUT / f"{tag}.pt")
    n_val = sum(h.val is not None for h in res.history)
    print(json.dumps({"tag": tag, "seconds": round(time.perf_counter() - t0, 1), "validations": n_val,
                      "best_step": b.info.get("best_step"), "best_val": b.info.get("best_val_mean_iou")}))  # fmt: skip


def _split_9cd8846(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """a8b8cbb's parent's ``split_holdout``, draw for draw: random 16 px blocks held out, no guard band."""
    h, w = labels.shape
    block_id = (np.arange(h) // 16)[:, None] * (w // 16 + 1) + (np.arange(w) // 16)[None, :]
    labelled = labels != 255
    ids = np.unique(block_id[labelled])
    n_val = min(len(ids) - 1, max(1, round(len(ids) * fraction)))
    chosen = np.isin(block_id, np.random.default_rng(seed).choice(ids, n_val, replace=False)) & labelled
    train, val = labels.copy(), np.full_like(labels, 255)
    val[chosen], train[chosen] = labels[chosen], 255
    return train, val


def _per_iteration(tags: list[str], cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], key: str) -> None:
    """Print each saved RNN's per-iteration mean and road IoU, pooled over ``cases`` (image, probs, labels)."""
    from refiner.core.metrics import confusion_matrix, scores_from_confusion
    from refiner.models.fused import FusedRNN
    from refiner.models.rnn import RefinerRNN, RNNConfig

    for tag in tags:
        ck = torch.load(OUT / f"{tag}.pt")
        net = RefinerRNN(RNNConfig(num_classes=2, in_channels=3, iterations=5, variant=ck["variant"]))
        net.load_state_dict(ck["state"])
        fast = FusedRNN(net.eval(), compile=False)
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (ck["mean"], ck["std"]))
        cms = np.zeros((6, 2, 2), np.int64)
        for image, probs, labels in cases:
            with torch.inference_mode():
                us = fast((torch.from_numpy(image)[None] - mean) / std, torch.from_numpy(probs)[None], keep_all=True)
            for t, u in enumerate(us):
                cms[t] += confusion_matrix(u[0].argmax(0).numpy().astype(np.uint8), labels, 2)
        scores = [scores_from_confusion(cm) for cm in cms]
        print(json.dumps({"tag": tag, key: [round(s.mean_iou, 4) for s in scores],
                          "road": [round(s.iou[1], 4) for s in scores]}))  # fmt: skip


def evaluate(tags: list[str]) -> None:
    """Per-iteration mean and road IoU of saved RNNs, pooled over the test tiles (t = 0 is the CNN)."""
    d = np.load(OUT / "data.npz")
    cases = [(d[f"t_{n}_image"], d[f"t_{n}_probs"], d[f"t_{n}_labels"]) for n in ["11", *TESTS]]
    _per_iteration(tags, cases, "miou")


def evaluate_same_tile(tags: list[str]) -> None:
    """Like :func:`evaluate` on the rest of the RNNs' own tile 12 (the paper's setting: the same
    image as the patch), the window and a ring of 20 px around it left out."""
    d = np.load(OUT / "data.npz")
    _per_iteration(tags, [(d["enh_image"], d["enh_probs"], _same_tile_truth())], "same_tile_miou")


def crf() -> None:
    """The dense CRF with its default grid searched on the enhancement window, scored like :func:`evaluate`."""
    from refiner.baselines.crf import dense_crf, grid_search
    from refiner.core.metrics import confusion_matrix, scores_from_confusion

    d = np.load(OUT / "data.npz")
    best = grid_search(d["enh_image"], d["enh_probs"], d["enh_labels"]).best
    cm = np.zeros((2, 2), np.int64)
    for name in ["11", *TESTS]:
        probs = dense_crf(d[f"t_{name}_image"], d[f"t_{name}_probs"], best)
        cm += confusion_matrix(probs.argmax(0).astype(np.uint8), d[f"t_{name}_labels"], 2)
    s = scores_from_confusion(cm)
    print(json.dumps({"tag": "crf", "miou": round(s.mean_iou, 4), "road": round(s.iou[1], 4)}), best.to_dict())
    probs = dense_crf(d["enh_image"], d["enh_probs"], best)  # and on the rest of tile 12, as evaluate_same_tile
    same = scores_from_confusion(confusion_matrix(probs.argmax(0).astype(np.uint8), _same_tile_truth(), 2))
    print(json.dumps({"tag": "crf", "same_tile_miou": round(same.mean_iou, 4), "road": round(same.iou[1], 4)}))


def _same_tile_truth(ring: int = 20) -> np.ndarray:
    """Tile 12's labels with the RNNs' window and a ``ring`` of pixels around it left out (255)."""
    from refiner.data.read import read_image, read_labels

    roads = DATA / "massachusetts_roads"
    truth = read_labels(roads / "masks/12.png", _classes(), like=read_image(roads / "images/12.jpg"))
    truth[500 - ring : 1000 + ring, 500 - ring : 1000 + ring] = 255
    return truth


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prep":
        prep(*(int(a) for a in args))
    elif cmd == "train":
        train(args[0], args[1], int(args[2]), json.loads(args[3]) if len(args) > 3 else {})
    elif cmd == "crf":
        crf()
    elif cmd == "same":
        evaluate_same_tile(args)
    else:
        evaluate(args)
