"""Turning brush strokes on a canvas into labels on the tile's grid.

The canvas shows a *view window* of the tile scaled to the screen. Strokes come back as an RGBA
picture of the canvas (transparent where nothing was painted). Each brush paints in its class's
colour; the eraser paints in :data:`ERASER`, which means "unlabelled". Stroke edges are
antialiased, so a pixel's class is the brush colour nearest to its colour, and only pixels at
least half opaque count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refiner.classes import IGNORE, ClassSpec

ERASER = (255, 0, 255)
#: Marks pixels no stroke touched (never stored; IGNORE means "erase").
UNPAINTED = 254
ALPHA_MIN = 128


@dataclass(frozen=True)
class View:
    """A window of the tile (row, col, height, width) shown at ``scale`` screen pixels per pixel."""

    row: int
    col: int
    height: int
    width: int
    scale: float

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(height, width) of the canvas in screen pixels."""
        return max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale))


def make_view(shape: tuple[int, int], zoom: float, center: tuple[float, float], max_canvas: int = 640) -> View:
    """The view of a tile of ``shape`` at ``zoom`` (1 = the whole tile fits ``max_canvas``) centred
    near ``center`` (fractions of height and width), clipped to the tile."""
    h, w = shape
    fit = max_canvas / max(h, w)
    scale = fit * max(1.0, float(zoom))
    vh, vw = min(h, max(1, int(max_canvas / scale))), min(w, max(1, int(max_canvas / scale)))
    r = int(round(center[0] * h - vh / 2))
    c = int(round(center[1] * w - vw / 2))
    r, c = min(max(0, r), h - vh), min(max(0, c), w - vw)
    return View(r, c, vh, vw, scale)


def brush_colors(classes: ClassSpec) -> list[tuple[int, int, int]]:
    """Colours of the brushes: one per class, then the eraser."""
    return [tuple(c) for c in classes.colors] + [ERASER]


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def decode_strokes(rgba: np.ndarray, classes: ClassSpec) -> np.ndarray:
    """Canvas RGBA (h, w, 4) -> class index per canvas pixel; IGNORE where erased, UNPAINTED
    where no stroke is."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] < 4:
        raise ValueError("strokes must be an RGBA image")
    palette = np.asarray(brush_colors(classes), np.int32)  # (K+1, 3)
    painted = rgba[..., 3] >= ALPHA_MIN
    out = np.full(rgba.shape[:2], UNPAINTED, np.uint8)
    if not painted.any():
        return out
    rgb = rgba[..., :3][painted].astype(np.int32)
    nearest = ((rgb[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)
    codes = np.arange(len(palette), dtype=np.uint8)
    codes[-1] = IGNORE
    out[painted] = codes[nearest]
    return out


def resize_nearest(codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sample ``codes`` at the centres of a ``shape`` grid covering the same area."""
    h, w = codes.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return codes[rows[:, None], cols[None, :]]


def apply_strokes(labels: np.ndarray, rgba: np.ndarray, view: View, classes: ClassSpec) -> tuple[np.ndarray, int]:
    """New labels with the canvas strokes of ``view`` merged in; also how many pixels changed."""
    codes = resize_nearest(decode_strokes(rgba, classes), (view.height, view.width))
    out = labels.copy()
    window = out[view.slices]
    hit = codes != UNPAINTED
    window[hit] = codes[hit]
    return out, int((out != labels).sum())
