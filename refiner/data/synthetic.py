"""Procedural aerial-like scenes with exact truth and OSM-like degraded labels.

Used by the fast tests and the embedded demo. A scene has vegetation and bare soil, roads of
varying width with markings, buildings with coloured roofs and cast shadows, and trees. The
"OSM" labels are degraded the way volunteered data is: every building shifted by its own
offset, some buildings missing, roads drawn as fixed-width lines along their centre lines
whatever their true width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from refiner.core.classes import IGNORE, ClassSpec

# The geo types (rasterio, affine) are imported where a scene is georeferenced, not here: the
# label helpers below (``degrade_labels``, ``coarse_like``) and the tests' conftest must import
# on the GPU machine, whose Python has torch and numpy but no rasterio (benchmarks/gpu_run.py).
if TYPE_CHECKING:
    from rasterio.crs import CRS

    from refiner.data.tile import Georef, Tile

BACKGROUND, BUILDING, ROAD = 0, 1, 2
DEMO_CLASSES = ClassSpec(("background", "building", "road"), (0, 1, 2), ((40, 40, 40), (230, 60, 50), (250, 200, 40)))

#: Where demo scenes are placed on Earth (south Austin, UTM 14N), so they show on a map.
DEMO_EPSG = 32614
DEMO_ORIGIN = (617000.0, 3345000.0)


@dataclass
class SyntheticScene:
    """A made-up tile for tests and demos: an image, its exact labels and OSM-like degraded ones."""

    image: np.ndarray  # float32 (3, H, W) in [0, 1]
    truth: np.ndarray  # uint8 (H, W) class indices
    osm: np.ndarray  # uint8 (H, W) degraded labels
    georef: Georef
    classes: ClassSpec = DEMO_CLASSES

    def tile(self) -> Tile:
        """The scene's image as a :class:`Tile` (every pixel valid), as a file read from disk would be."""
        from refiner.data.tile import Tile

        h, w = self.truth.shape
        return Tile(self.image, np.ones((h, w), bool), self.georef, source="synthetic", dtype="uint8")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n: np.ndarray = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-9)


def _road_centrelines(rng: np.random.Generator, h: int, w: int, n: int) -> list[tuple[np.ndarray, float]]:
    """Straight roads crossing the scene, as (distance-to-centre function samples, width)."""
    roads = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        angle = rng.uniform(0, np.pi) if i >= 2 else (0.0 if i == 0 else np.pi / 2) + rng.uniform(-0.25, 0.25)
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        # signed distance to the line through (cy, cx) with direction angle
        dist = (xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle)
        width = float(rng.uniform(4.0, 13.0))
        roads.append((dist, width))
    return roads


def make_scene(
    size: int | tuple[int, int] = 256,
    *,
    seed: int = 0,
    roads: int = 3,
    buildings: int | None = None,
    osm_shift: int = 4,
    osm_drop: float = 0.25,
    osm_road_width: float = 7.0,
) -> SyntheticScene:
    """Generate a scene of ``size`` pixels at 1 m/px with exact truth and degraded labels.

    Procedural aerial-like imagery (ground texture, roads, buildings with shadows) with its exact
    labels, and OSM-like labels (objects shifted, some dropped, roads drawn at a fixed width) to
    train a coarse model on, as the paper's imprecise labels.

    Args:
        size: the side in pixels, or (height, width).
        seed: the random seed: the same seed gives the same scene.
        roads: how many roads cross it.
        buildings: how many buildings (default: from the area).
        osm_shift: the largest shift in pixels of an object in the degraded labels.
        osm_drop: the chance that an object is missing from the degraded labels.
        osm_road_width: the road width in metres of the degraded labels.

    Returns:
        A ``SyntheticScene``: ``image`` float32 (3, H, W), ``truth`` and ``osm`` class indices
        (H, W), ``georef`` and ``classes`` (background, building, road); ``tile()`` as a :class:`Tile`.

    Example:
        ```python
        scene = refiner.make_scene(256, seed=1)
        probs = refiner.predict_coarse(coarse, scene.tile())
        print(refiner.evaluate(probs.argmax(0), scene.truth, 3).mean_iou)
        ```
    """
    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    truth = np.zeros((h, w), np.uint8)
    osm = np.zeros((h, w), np.uint8)

    # --- ground: grass/soil mixture with low-frequency variation and fine texture
    veg = _smooth_noise(rng, (h, w), 18) > -0.2
    base = np.empty((3, h, w), np.float32)
    grass = np.array([0.30, 0.42, 0.20])[:, None, None]
    soil = np.array([0.52, 0.46, 0.36])[:, None, None]
    base[:] = np.where(veg[None], grass, soil)
    base += 0.05 * _smooth_noise(rng, (h, w), 4)[None] + 0.03 * rng.standard_normal((3, h, w))

    # --- roads: asphalt of varying width, lane markings, OSM as fixed-width centre lines
    road_mask = np.zeros((h, w), bool)
    for dist, width in _road_centrelines(rng, h, w, roads):
        on = np.abs(dist) <= width / 2
        road_mask |= on
        osm[np.abs(dist) <= osm_road_width / 2] = ROAD
        marking = (np.abs(dist) < 0.6) & (width > 8)
        shade = rng.uniform(0.33, 0.48)
        base[:, on] = shade + 0.02 * rng.standard_normal((3, int(on.sum())))
        base[:, marking] = 0.85
    truth[road_mask] = ROAD

    # --- buildings: rotated-free rectangles with roofs and shadows, away from roads
    n_buildings = buildings if buildings is not None else max(4, int(h * w / 2500))
    roof_colours = np.array([[0.62, 0.30, 0.25], [0.55, 0.55, 0.58], [0.80, 0.78, 0.74], [0.45, 0.35, 0.30]])
    near_road = ndimage.binary_dilation(road_mask, iterations=3)
    placed = np.zeros((h, w), bool)
    for _ in range(n_buildings * 6):
        if n_buildings == 0:
            break
        bh, bw = int(rng.integers(8, 26)), int(rng.integers(8, 26))
        r, c = int(rng.integers(2, max(3, h - bh - 6))), int(rng.integers(2, max(3, w - bw - 6)))
        region = (slice(r, r + bh), slice(c, c + bw))
        grown = (slice(max(0, r - 3), r + bh + 6), slice(max(0, c - 3), c + bw + 6))
        if near_road[grown].any() or placed[grown].any():
            continue
        placed[region] = True
        n_buildings -= 1
        # shadow to the south-east, drawn before the roof
        base[:, r + 3 : r + bh + 4, c + 3 : c + bw + 4] *= 0.45
        roof = roof_colours[rng.integers(len(roof_colours))][:, None, None]
        base[:, region[0], region[1]] = roof + 0.03 * rng.standard_normal((3, bh, bw))
        # a ridge line halves the roof into two shades, like a gable
        base[:, r : r + bh // 2, c : c + bw] *= 0.9
        truth[region] = BUILDING
        if rng.random() >= osm_drop:
            dy, dx = rng.integers(-osm_shift, osm_shift + 1, size=2)
            rr = slice(int(np.clip(r + dy, 0, h)), int(np.clip(r + bh + dy, 0, h)))
            cc = slice(int(np.clip(c + dx, 0, w)), int(np.clip(c + bw + dx, 0, w)))
            osm[rr, cc] = np.where(osm[rr, cc] == ROAD, ROAD, BUILDING)

    # --- trees: dark round crowns over the ground, sometimes hiding a road's edge
    for _ in range(int(h * w / 1500)):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        r0, r1 = max(0, int(cy - rad)), min(h, int(cy + rad) + 1)
        c0, c1 = max(0, int(cx - rad)), min(w, int(cx + rad) + 1)
        yy, xx = np.ogrid[r0:r1, c0:c1]
        crown = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2) & (truth[r0:r1, c0:c1] != BUILDING)
        patch = base[:, r0:r1, c0:c1]
        patch[:, crown] = np.array([0.16, 0.28, 0.12])[:, None] + 0.03 * rng.standard_normal((3, int(crown.sum())))
        truth[r0:r1, c0:c1][crown] = BACKGROUND  # what is visible is what the truth says

    image = np.clip(ndimage.gaussian_filter(base, (0, 0.6, 0.6)), 0, 1).astype(np.float32)
    x0, y0 = DEMO_ORIGIN
    from affine import Affine
    from rasterio.crs import CRS

    from refiner.data.tile import Georef

    georef = Georef(CRS.from_epsg(DEMO_EPSG), Affine(1.0, 0, x0 + seed * 1000.0, 0, -1.0, y0))
    return SyntheticScene(image=image, truth=truth, osm=osm, georef=georef)


def degrade_labels(
    labels: np.ndarray, *, shift: int = 3, drop: float = 0.2, seed: int = 0, background: int = 0
) -> np.ndarray:
    """Make accurate labels OSM-like: objects shifted by up to ``shift`` px, dropped with probability ``drop``.

    Each object (connected component of a foreground class) moves by its own random offset.
    Unlabelled pixels (255) stay unlabelled; background fills where objects moved away.
    """
    rng = np.random.default_rng(seed)
    out = np.where(labels == IGNORE, IGNORE, background).astype(np.uint8)
    h, w = labels.shape
    for cls in np.unique(labels):
        if cls in (background, IGNORE):
            continue
        comps, n = ndimage.label(labels == cls)
        for i, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None or rng.random() < drop:
                continue
            dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
            ys, xs = np.nonzero(comps[sl] == i)
            ys, xs = ys + sl[0].start + dy, xs + sl[1].start + dx
            keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            ys, xs = ys[keep], xs[keep]
            sel = out[ys, xs] != IGNORE
            out[ys[sel], xs[sel]] = cls
    return out


def coarse_like(labels: np.ndarray, k: int, *, sigma: float = 2.5, stride: int = 4) -> np.ndarray:
    """A stand-in for a coarse CNN's probabilities (K, H, W), made from labels.

    One-hot labels are averaged on a ``stride`` times coarser grid (the coarse CNN decides classes
    on such a grid), upsampled, blurred by ``sigma`` px and mixed with 15 % uniform: objects are
    found, their outlines soft and blocky. Used by tests and benchmarks that need a coarse map
    without training a CNN; unlabelled pixels count as no class.
    """
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(k)])
    h, w = labels.shape
    small = onehot[:, : h - h % stride, : w - w % stride]
    small = small.reshape(k, h // stride, stride, w // stride, stride).mean((2, 4))
    up = np.repeat(np.repeat(small, stride, 1), stride, 2)
    up = np.pad(up, ((0, 0), (0, h - up.shape[1]), (0, w - up.shape[2])), mode="edge")
    p = 0.85 * ndimage.gaussian_filter(up, (0, sigma, sigma)) + 0.15 / k
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def __getattr__(name: str) -> CRS:
    """``DEMO_CRS`` (a rasterio CRS), made on first use so importing this module needs no rasterio."""
    if name == "DEMO_CRS":
        from rasterio.crs import CRS

        return CRS.from_epsg(DEMO_EPSG)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
