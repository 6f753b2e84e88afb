"""The embedded demo: synthetic scenes written as GeoTIFFs plus a ready-to-run experiment config."""

from __future__ import annotations

from pathlib import Path

from refiner.core.atomic import atomic_write_bytes
from refiner.data.synthetic import make_scene
from refiner.data.write import write_raster

DEMO_TOML = """\
# Synthetic demo: written by `python -m refiner demo-data`. Paths are relative to this file.
classes = ["background", "building", "road"]
label_values = [0, 1, 2]
resolution = 1.0
seed = 0

[coarse]                  # the coarse CNN learns from OSM-like (shifted, incomplete) labels
images = ["coarse.tif"]
labels = ["coarse_osm.tif"]
steps = {coarse_steps}
batch_size = 16

[enhance]                 # the RNN learns from accurate labels in one window, like a painted patch
images = ["enhance.tif"]
labels = ["enhance_truth.tif"]
window = [0, 0, {window}, {window}]
steps = {rnn_steps}

[test]
images = ["test.tif"]
labels = ["test_truth.tif"]

[crf.grid]
bilateral_sxy = [5.0, 20.0]
bilateral_srgb = [5.0, 15.0]
bilateral_compat = [3.0, 10.0]
"""


def write_demo_data(
    out: str | Path, *, size: int = 512, seed: int = 0, coarse_steps: int = 600, rnn_steps: int = 600
) -> dict[str, Path]:
    """Write coarse/enhance/test scenes (image, truth, OSM labels) and ``demo.toml`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for i, name in enumerate(("coarse", "enhance", "test")):
        scene = make_scene(size, seed=seed * 10 + i + 1)
        img = (scene.image * 255 + 0.5).astype("uint8")
        paths[name] = write_raster(out / f"{name}.tif", img, scene.georef, descriptions=["red", "green", "blue"])
        paths[f"{name}_truth"] = write_raster(out / f"{name}_truth.tif", scene.truth, scene.georef)
        paths[f"{name}_osm"] = write_raster(out / f"{name}_osm.tif", scene.osm, scene.georef)
    config = out / "demo.toml"
    text = DEMO_TOML.format(coarse_steps=coarse_steps, rnn_steps=rnn_steps, window=max(64, size // 2))
    atomic_write_bytes(config, text.encode())
    paths["config"] = config
    return paths
