"""File-to-file inference: the ``predict`` and ``refine`` commands.

Reads a raster, runs the model window by window (:mod:`refiner.inference`) and writes GeoTIFFs
with the source's georeferencing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from refiner.classes import IGNORE
from refiner.inference import predict_coarse, refine
from refiner.models.io import load_model
from refiner.raster import read_image, read_probs, write_class_map, write_probs, write_raster

Progress = Callable[[int, int], None]


def predict_scene(
    model: str | Path,
    image: str | Path,
    out: str | Path,
    *,
    bands=None,
    device=None,
    window: int = 512,
    progress: Progress | None = None,
) -> Path:
    """Coarse probabilities of ``image`` written to ``out`` (K float32 bands, class list in tags)."""
    bundle = load_model(model, expect="coarse")
    tile = read_image(image, bands=bands)
    probs = predict_coarse(bundle, tile, device=device, window=window, progress=progress)
    return write_probs(out, probs, tile.georef, bundle.classes)


def refine_scene(
    model: str | Path,
    image: str | Path,
    probs: str | Path,
    out: str | Path,
    *,
    probs_out: str | Path | None = None,
    iterations_out: str | Path | None = None,
    iterations: int | None = None,
    bands=None,
    device=None,
    window: int = 512,
    progress: Progress | None = None,
) -> Path:
    """Refined class map (and optionally probabilities, every iteration) of a scene."""
    bundle = load_model(model, expect="rnn")
    tile = read_image(image, bands=bands)
    coarse, prob_classes, _ = read_probs(probs)
    if prob_classes is not None and list(prob_classes.names) != list(bundle.classes.names):
        raise ValueError(
            f"the probabilities are for classes {list(prob_classes.names)} but the RNN for {list(bundle.classes.names)}"
        )
    if coarse.shape[1:] != tile.shape:
        raise ValueError(f"probabilities {coarse.shape[1:]} and image {tile.shape} differ in size")
    result = refine(
        bundle,
        tile,
        coarse,
        iterations=iterations,
        keep_all=iterations_out is not None,
        device=device,
        window=window,
        progress=progress,
    )
    cls_map = result.class_map()
    cls_map[~tile.valid] = IGNORE
    write_class_map(out, cls_map, tile.georef, bundle.classes)
    if probs_out:
        write_probs(probs_out, result.final, tile.georef, bundle.classes)
    if iterations_out:
        stack = np.concatenate(result.probs).astype(np.float32)
        names = [f"t{t}:{n}" for t in range(len(result.probs)) for n in bundle.classes.names]
        write_raster(
            iterations_out,
            stack,
            tile.georef,
            descriptions=names,
            tags={
                "refiner_iterations": str(len(result.probs) - 1),
                "refiner_classes": json.dumps(bundle.classes.to_dict()),
            },
        )
    return Path(out)
