"""Write the real demos' starting labels: a few boxes of the reference mask, as if painted.

    .venv/bin/python scripts/make_real_demo_labels.py

For each demo of :mod:`refiner.app.demos`, the reference mask of its window is read from the
shared data and ``BOXES`` boxes of ``BOX_M`` metres are kept where both classes are present
(a foreground fraction of 15-60 %, far from each other), chosen with a fixed seed; everything
else is unlabelled (255). The result, ``assets/real_demo/<name>_labels.png`` (class indices), is
a few KiB: labels, not imagery, so it may be shipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from refiner.app.demos import LABELS_DIR, REAL_DEMOS, data_dir  # noqa: E402
from refiner.core.classes import IGNORE  # noqa: E402
from refiner.data.read import read_image  # noqa: E402

BOXES, BOX_M, SEED = 4, 60.0, 0


def boxes_from_reference(reference: np.ndarray, box: int, seed: int = SEED) -> np.ndarray:
    """Class indices inside ``BOXES`` boxes of side ``box`` px with a foreground class present, else 255."""
    rng = np.random.default_rng(seed)
    h, w = reference.shape
    out = np.full((h, w), IGNORE, np.uint8)
    chosen: list[tuple[int, int]] = []
    for _ in range(5000):
        r, c = int(rng.integers(0, h - box)), int(rng.integers(0, w - box))
        win = reference[r : r + box, c : c + box]
        frac = float(((win > 0) & (win != IGNORE)).mean())
        if not 0.15 <= frac <= 0.6 or any(abs(r - a) < 1.5 * box and abs(c - b) < 1.5 * box for a, b in chosen):
            continue
        chosen.append((r, c))
        out[r : r + box, c : c + box] = reference[r : r + box, c : c + box]
        if len(chosen) == BOXES:
            break
    return out


def main() -> None:
    LABELS_DIR.mkdir(parents=True, exist_ok=True)
    for demo in REAL_DEMOS.values():
        r, c, h, w = demo.window
        path = data_dir() / demo.mask
        mask = np.asarray(Image.open(path)) if path.suffix == ".png" else None
        if mask is None:
            import rasterio

            with rasterio.open(path) as ds:
                mask = ds.read(1)
        mask = mask[r : r + h, c : c + w]
        reference = np.full(mask.shape, IGNORE, np.uint8)
        for v, i in demo.reference:
            reference[mask == v] = i
        res = demo.pixel_size or read_image(data_dir() / demo.image, window=(0, 0, 8, 8)).resolution
        labels = boxes_from_reference(reference, round(BOX_M / res))
        Image.fromarray(labels).save(demo.labels_file, optimize=True)
        n = int((labels != IGNORE).sum())
        print(
            f"{demo.labels_file.relative_to(LABELS_DIR.parents[1])}: {n} labelled px, "
            f"{demo.labels_file.stat().st_size} bytes"
        )


if __name__ == "__main__":
    main()
