"""Real-imagery demo workspaces, built at run time from the shared data (never copied into the project).

Two small windows of tiles that no shipped model was trained or selected on (their ``test``
split in ``assets/pretrained/*/card.json``):

* ``real-roads``: 512 x 512 px of Massachusetts Roads tile 12 (1 m, JPEG, no georeferencing:
  its ground resolution is stated as 1 m);
* ``real-buildings``: 768 x 768 px of the Inria Austin tile ``austin_x617100_y3344400``
  (0.3 m GeoTIFF, EPSG:26914); the networks resample it to 1 m.

Both have the paper's classes background / building / road, those of the shipped models, so the
Train page fine-tunes the pretrained RNN. Each data set labels one class only, so the boxes'
"background" is "not road" (roads demo) or "not building" (buildings demo): a building inside a
road box is painted background, as a user painting roads only would.

Each starts with a few "painted" labels: ``assets/real_demo/<name>_labels.png`` (class indices,
255 = unlabelled), made by ``scripts/make_real_demo_labels.py`` from the data's reference masks
as a few boxes: the reference inside each box, nothing elsewhere. The data folder is
``$REFINER_DATA``, else ``<repo>/../shared/data``; without it the demos are not offered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from refiner.app.uploads import load_tile
from refiner.app.workspace import Workspace
from refiner.core import paths
from refiner.core.atomic import read_json
from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.read import read_image, read_labels

#: The paper's classes, as the shipped models have them (so the pretrained RNN fits for fine-tuning).
THREE = ClassSpec(("background", "building", "road"), (0, 1, 2), ((40, 40, 40), (230, 60, 50), (250, 200, 40)))
LABELS_DIR = paths.REAL_DEMO


@dataclass(frozen=True)
class RealDemo:
    """One real demo: which file, which window, which classes, and its reference mask (for the labels)."""

    name: str
    title: str
    image: str  # relative to the data folder
    mask: str  # the reference mask, used only by scripts/make_real_demo_labels.py
    window: tuple[int, int, int, int]  # row, col, height, width
    classes: ClassSpec
    reference: tuple[tuple[int, int], ...]  # (reference mask value, class index) pairs
    pixel_size: float | None = None  # for pictures without georeferencing

    @property
    def labels_file(self) -> Path:
        """The demo's shipped starting labels, made by ``scripts/make_real_demo_labels.py``."""
        return LABELS_DIR / f"{self.name}_labels.png"


REAL_DEMOS = {
    d.name: d
    for d in (
        RealDemo(
            "real-roads",
            "Massachusetts roads, 1 m (512 × 512 px of test tile 12)",
            "massachusetts_roads/images/12.jpg",
            "massachusetts_roads/masks/12.png",
            (256, 512, 512, 512),
            THREE,
            ((0, 0), (255, 2)),
            pixel_size=1.0,
        ),
        RealDemo(
            "real-buildings",
            "Inria Austin buildings, 0.3 m GeoTIFF (768 × 768 px of test tile austin_x617100_y3344400)",
            "inria_austin/images/austin_x617100_y3344400.tif",
            "inria_austin/masks/austin_x617100_y3344400.tif",
            (0, 0, 768, 768),
            THREE,
            ((0, 0), (255, 1)),
        ),
    )
}


def data_dir() -> Path:
    """``$REFINER_DATA``, else ``../shared/data`` beside the repository (:func:`refiner.core.paths.default_data`)."""
    env = os.environ.get("REFINER_DATA")
    return Path(env) if env else paths.default_data()


def unavailable(name: str) -> str:
    """Why the real demo ``name`` cannot be built here ("" when it can)."""
    demo = REAL_DEMOS[name]
    image = data_dir() / demo.image
    if not image.is_file():
        return (
            f"the real demo needs {demo.image} from the shared data, which is not at {data_dir()}: "
            "set REFINER_DATA to the data folder"
        )
    if not demo.labels_file.is_file():
        return f"its painted labels {demo.labels_file.name} are missing: run scripts/make_real_demo_labels.py"
    return ""


def create_real_demo(root: str | Path, name: str = "real-roads", *, overwrite: bool = False) -> Workspace:
    """Build the real demo workspace ``name`` from the shared data: tile window, labels, coarse map.

    The coarse probabilities come from the shipped coarse CNN that fits (:mod:`refiner.app.pretrained`);
    when none is installed, the workspace is made without them and the start page says why.
    """
    from refiner.app.pretrained import coarse_into_workspace

    if name not in REAL_DEMOS:
        raise ValueError(f"there is no real demo called {name!r}: pick one of {', '.join(REAL_DEMOS)}")
    why = unavailable(name)
    if why:
        raise FileNotFoundError(why)
    demo = REAL_DEMOS[name]
    tile = load_tile(data_dir() / demo.image, window=demo.window, name=demo.image)
    tile.source = demo.title
    if tile.georef is None:
        tile.pixel_size = demo.pixel_size
    source = {"kind": "real-demo", "name": demo.title, "data": demo.image, "window": list(demo.window)}
    ws = Workspace.create(root, name, tile, demo.classes, source=source, overwrite=overwrite)
    labels = np.asarray(Image.open(demo.labels_file))
    if labels.shape != tile.shape or not np.isin(labels, [*range(len(demo.classes)), IGNORE]).all():
        raise ValueError(f"{demo.labels_file} does not fit the demo tile: run scripts/make_real_demo_labels.py")
    ws.write_labels(labels.astype(np.uint8), undo=False)
    coarse_into_workspace(ws)
    return ws


DEMO_NAME = "demo"
ASSETS = paths.DEMO


# --------------------------------------------------------------------------- the demo


def create_demo(root: str | Path, name: str = DEMO_NAME, *, assets: Path = ASSETS) -> Workspace:
    """The embedded demo: the shipped synthetic tile, coarse CNN and RNN, and a labelled corner.

    The coarse probabilities are computed with the shipped CNN; the labels start with the exact
    truth of a 192x192 corner, as if a user had painted it (the rest is unlabelled).
    """
    from refiner.models.inference import predict_coarse
    from refiner.models.store import load_model

    if not (assets / "tile.tif").is_file():
        raise FileNotFoundError(f"the demo assets are missing from {assets}: run scripts/make_demo_assets.py")
    meta = read_json(assets / "demo.json", {})
    classes = ClassSpec.from_dict(meta["classes"]) if "classes" in meta else None
    coarse = load_model(assets / "coarse", expect="coarse")
    classes = classes or coarse.classes
    tile = read_image(assets / "tile.tif")
    tile.source = "demo (synthetic scene)"
    ws = Workspace.create(root, name, tile, classes, source={"kind": "demo", "name": "demo (synthetic scene)"})
    ws.install_model(assets / "coarse", "coarse")
    ws.install_model(assets / "rnn", "rnn")
    ws.write_coarse_probs(
        predict_coarse(coarse, tile), {"source": "shipped coarse CNN", "resolution": coarse.resolution}
    )
    truth = read_labels(assets / "truth.tif", classes, like=tile)
    labels = np.full(tile.shape, IGNORE, np.uint8)
    labels[:192, :192] = truth[:192, :192]
    ws.write_labels(labels, undo=False)
    return ws
