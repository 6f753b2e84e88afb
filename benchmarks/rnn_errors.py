"""Why the shipped RNN gains little: which errors of the coarse map it fixes and which it makes, and where.

For each task (roads, buildings) on the split's test tiles at 1 m (never used for training or
selection): the coarse map and the RNN's refined map as class-vs-rest maps (argmax over the
three classes, as the model cards score), and their errors

- by distance to the nearest true boundary (:func:`refiner.core.metrics.errors_by_boundary_distance`):
  the RNN's reach is a few pixels (5 iterations of 5 x 5 filters), so it can only fix errors near
  boundaries; the ones deep inside regions are the coarse CNN's to get right;
- by kind: missed (the class where the map says not) and false alarms (the reverse).

    PYTHONPATH=. python benchmarks/rnn_errors.py --json benchmarks/results/rnn_errors.json
    PYTHONPATH=. python benchmarks/rnn_errors.py --coarse experiments/long/coarse_mnih/model --rnn ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from refiner.core.classes import IGNORE
from refiner.core.metrics import errors_by_boundary_distance
from refiner.models.inference import predict_coarse, refine
from refiner.models.pretrained import pretrained_root
from refiner.models.store import load_model
from refiner.recipes.pretrain import MACHINE, load_role, load_split, task_maps

SPLIT = Path(__file__).resolve().parents[1] / "experiments" / "pretrained" / "split.toml"


def add_rows(total: list[dict], rows: list[dict]) -> list[dict]:
    """Sum two tables of :func:`errors_by_boundary_distance` bin by bin."""
    if not total:
        return [dict(r) for r in rows]
    for t, r in zip(total, rows, strict=True):
        for k in ("pixels", "errors_before", "errors_after", "fixed", "made"):
            t[k] += r[k]
    return total


def kinds(before: np.ndarray, after: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Missed pixels and false alarms of the class, before and after."""
    lab = truth != IGNORE
    return {
        "missed_before": int(((before == 0) & (truth == 1)).sum()),
        "missed_after": int(((after == 0) & (truth == 1)).sum()),
        "false_alarms_before": int(((before == 1) & (truth == 0) & lab).sum()),
        "false_alarms_after": int(((after == 1) & (truth == 0) & lab).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coarse", type=Path, default=pretrained_root() / "coarse_1m")
    ap.add_argument("--rnn", type=Path, default=pretrained_root() / "rnn_1m")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    coarse, rnn = load_model(args.coarse, expect="coarse"), load_model(args.rnn, expect="rnn")
    test = load_role(load_split(SPLIT), "test")
    t0 = time.perf_counter()
    tables: dict[str, list[dict]] = {}
    counts: dict[str, dict[str, int]] = {}
    for d in test:
        probs = predict_coarse(coarse, d.tile(), device="cpu")
        refined = refine(rnn, d.tile(), probs).final
        for task in d.tasks:
            before, truth = task_maps(probs, d.labels, task)
            after, _ = task_maps(refined, d.labels, task)
            tables[task] = add_rows(tables.get(task, []), errors_by_boundary_distance(before, after, truth))
            k = kinds(before, after, truth)
            counts[task] = {n: counts.get(task, {}).get(n, 0) + v for n, v in k.items()}
    report = {"coarse": str(args.coarse), "rnn": str(args.rnn), "machine": MACHINE,
              "seconds": round(time.perf_counter() - t0, 1), "tiles": [f"{d.set}/{d.name}" for d in test],
              "by_distance": tables, "by_kind": counts}  # fmt: skip
    for task, rows in tables.items():
        print(f"\n{task}: errors by distance to the true boundary (px), coarse -> RNN")
        print("| px from boundary | pixels | coarse errors | RNN errors | fixed | made | net |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            span = f"{r['from']}+" if r["to"] is None else (f"{r['from']}" if r["to"] - r["from"] == 1
                                                           else f"{r['from']}-{r['to'] - 1}")  # fmt: skip
            print(f"| {span} | {r['pixels']} | {r['errors_before']} | {r['errors_after']} | {r['fixed']} | "
                  f"{r['made']} | {r['fixed'] - r['made']:+d} |")  # fmt: skip
        print(f"{task}: {counts[task]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
