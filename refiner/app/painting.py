"""Turning brush strokes on a canvas into labels on the tile's grid.

The canvas shows a *view window* of the tile scaled to the screen. Each brush paints in its
class's brush colour (:func:`brush_colors`); the eraser paints in :data:`ERASER`, which means
"unlabelled". Strokes come back two ways:

- as the canvas's object list (Fabric.js ``Path`` objects, in the order they were drawn):
  :func:`apply_objects` rasterises each one onto the tile's grid. Keyed by its index in the
  list, a stroke is applied exactly once however many reruns report it, and strokes drawn
  while the app was still saving the previous one are simply the next indices (none is lost);
- as an RGBA picture of the canvas (:func:`apply_strokes`): stroke edges are antialiased, so a
  pixel's class is the brush colour nearest to its colour, and only pixels at least half
  opaque count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from refiner.core.classes import IGNORE, ClassSpec

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
        """The view's rows and columns in the tile."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(height, width) of the canvas in screen pixels."""
        return max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale))


def make_view(shape: tuple[int, int], zoom: float, center: tuple[float, float], max_canvas: int = 640) -> View:
    """The view of a tile of ``shape`` at ``zoom`` centred near ``center``, clipped to the tile.

    ``zoom`` 1 fits the whole tile in ``max_canvas``; ``center`` is in fractions of height and width.
    """
    h, w = shape
    fit = max_canvas / max(h, w)
    scale = fit * max(1.0, float(zoom))
    vh, vw = min(h, max(1, int(max_canvas / scale))), min(w, max(1, int(max_canvas / scale)))
    r = int(round(center[0] * h - vh / 2))
    c = int(round(center[1] * w - vw / 2))
    r, c = min(max(0, r), h - vh), min(max(0, c), w - vw)
    return View(r, c, vh, vw, scale)


#: Brush colours darker than this (relative luminance, 0..1) are lifted towards grey, so a stroke
#: of a dark class (the demo's background is #282828) still shows on asphalt and forest.
MIN_LUMINANCE = 0.3


def luminance(rgb: Sequence[int]) -> float:
    """Relative luminance (Rec. 709 weights on 0..1 values, no gamma)."""
    r, g, b = (float(v) / 255 for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def visible_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    """``rgb`` mixed with white just enough to reach :data:`MIN_LUMINANCE` (unchanged if bright)."""
    lum = luminance(rgb)
    if lum >= MIN_LUMINANCE:
        r, g, b = (int(v) for v in rgb[:3])
        return r, g, b
    t = (MIN_LUMINANCE - lum) / (1.0 - lum)
    r, g, b = (int(round(v + (255 - v) * t)) for v in rgb[:3])
    return r, g, b


def brush_colors(classes: ClassSpec) -> list[tuple[int, int, int]]:
    """Colours of the brushes on the canvas: one per class (dark ones lifted), then the eraser.

    Dark colours are lifted by :func:`visible_color`; distinct colours stay distinct: a lifted
    colour that would meet another brush's is kept as it was.
    """
    out: list[tuple[int, int, int]] = []
    for c in classes.colors:
        lifted = visible_color(c)
        out.append(c if lifted in out or lifted in classes.colors else lifted)
    return out + [ERASER]


def hex_color(rgb: tuple[int, int, int]) -> str:
    """``#rrggbb`` for an RGB triple, as the canvas and Streamlit take colours."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def decode_strokes(rgba: np.ndarray, classes: ClassSpec) -> np.ndarray:
    """Canvas RGBA (h, w, 4) -> class index per canvas pixel; IGNORE where erased, UNPAINTED elsewhere."""
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
    """Sample ``codes`` (H, W, ...) at the centres of a ``shape`` grid covering the same area."""
    h, w = codes.shape[:2]
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


# --------------------------------------------------------------------------- canvas objects


def parse_hex(color: str) -> tuple[int, int, int] | None:
    """``#rrggbb`` (or ``#rgb``) as RGB; None for anything else."""
    c = str(color).strip().lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    if len(c) != 6:
        return None
    try:
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError:
        return None


def stroke_code(color: str, classes: ClassSpec) -> int | None:
    """The class index a brush colour paints (IGNORE for the eraser); None if no brush has it."""
    rgb = parse_hex(color)
    palette = brush_colors(classes)
    if rgb is None or rgb not in palette:
        return None
    i = palette.index(rgb)
    return IGNORE if i == len(palette) - 1 else i


def _polyline(path: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    """The points of a Fabric.js path (M, L and Q commands; quadratic curves sampled)."""
    pts: list[tuple[float, float]] = []
    for cmd in path:
        op, args = str(cmd[0]).upper(), [float(v) for v in cmd[1:]]
        if op in ("M", "L") and len(args) >= 2:
            pts.append((args[0], args[1]))
        elif op == "Q" and len(args) >= 4 and pts:
            (x0, y0), (cx, cy), (x1, y1) = pts[-1], args[0:2], args[2:4]
            for t in (0.25, 0.5, 0.75, 1.0):
                a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
                pts.append((a * x0 + b * cx + c * x1, a * y0 + b * cy + c * y1))
    return pts


def rasterize_stroke(obj: dict, view: View) -> np.ndarray | None:
    """The view pixels (view.height, view.width) a freehand canvas stroke covers, as a bool mask.

    None for an object that is not a freehand path. Drawn as round-capped lines of the stroke's
    width, straight on the tile's grid (a thin stroke at any zoom still marks the pixels it crosses).
    """
    if str(obj.get("type", "")).lower() != "path" or not obj.get("path"):
        return None
    ch, cw = view.canvas_size
    sy, sx = ch / view.height, cw / view.width
    pts = [(x / sx - 0.5, y / sy - 0.5) for x, y in _polyline(obj["path"])]
    if not pts:
        return None
    width = max(1.0, float(obj.get("strokeWidth", 1)) / ((sx + sy) / 2))
    img = Image.new("1", (view.width, view.height), 0)
    draw = ImageDraw.Draw(img)
    r = width / 2
    if len(pts) > 1:
        draw.line(pts, fill=1, width=max(1, int(round(width))))
    for x, y in pts if width > 2 else pts[:1] + pts[-1:]:  # round caps and joins
        draw.ellipse((x - r + 0.5, y - r + 0.5, x + r - 0.5, y + r - 0.5), fill=1)
    return np.asarray(img, dtype=bool)


def canvas_objects(state: Any) -> list[dict]:
    """The object list of the canvas's last report (its session-state value), or []."""
    try:
        objects = state["drawing"]["raw"]["objects"]
    except (KeyError, TypeError):
        return []
    return [o for o in objects if isinstance(o, dict)] if isinstance(objects, list) else []


def apply_objects(labels: np.ndarray, objects: Sequence[dict], view: View, classes: ClassSpec) -> np.ndarray:
    """New labels with the canvas strokes ``objects`` of ``view`` painted in, in order.

    A later stroke paints over an earlier one; objects of no brush's colour are skipped.
    """
    out = labels.copy()
    window = out[view.slices]
    for obj in objects:
        code = stroke_code(str(obj.get("stroke", "")), classes)
        mask = rasterize_stroke(obj, view) if code is not None else None
        if mask is not None:
            window[mask[: window.shape[0], : window.shape[1]]] = code
    return out
