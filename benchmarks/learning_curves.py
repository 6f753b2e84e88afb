"""Learning curves of the long coarse runs (issue #21): validation and test IoU against training time.

Reads each run's ``curve.jsonl`` (written by ``refiner pretrain`` beside its checkpoint, one row
per validation, carried over every sitting) and plots, against the run's CPU hours (its own
process time spent training, validations left out: the budget on a shared machine, where wall
time depends on the neighbours):

- the validation score that chooses the checkpoint (mean over the road and building tasks of
  their mean IoU, at the checkpoint's best class offsets);
- the test tiles' road and building IoU, at the offsets chosen on validation (recorded only).

    python benchmarks/learning_curves.py experiments/long/coarse_mnih experiments/long/coarse_skip_context \
        --plot docs/img/learning_curves.png

It also prints, per run, the last and the best rows, so docs/results.md can quote them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(run: Path) -> list[dict]:
    """The rows of ``run/curve.jsonl`` (empty before the first validation)."""
    path = run / "curve.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def summary(name: str, rows: list[dict]) -> str:
    """One line per run: steps and CPU hours so far, the last and the best validated rows."""
    if not rows:
        return f"{name}: no validation yet"
    last, best = rows[-1], max(rows, key=lambda r: r["val"])

    def row(r: dict) -> str:
        road, building = r.get("test_road_iou", float("nan")), r.get("test_building_iou", float("nan"))
        return (f"step {r['step']} ({r['train_cpu_seconds'] / 3600:.2f} CPU h): val {r['val']:.3f}, "
                f"test road IoU {road:.3f}, building IoU {building:.3f}")  # fmt: skip

    return f"{name}: last {row(last)}; best validated {row(best)}"


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    """Three panels against CPU hours: validation score, test road IoU, test building IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("val", "validation score (selects)"), ("test_road_iou", "test road IoU"),
            ("test_building_iou", "test building IoU")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name, rows in runs.items():
            pts = [(r["train_cpu_seconds"] / 3600, r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("CPU hours (one core)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding curve.jsonl")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    runs = {run.name: read_curve(run) for run in args.runs}
    for name, rows in runs.items():
        print(summary(name, rows))
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
