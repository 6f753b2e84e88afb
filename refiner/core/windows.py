"""Exact windowed inference: process a large raster window by window with a halo.

A network whose output at a pixel depends only on inputs within ``halo`` pixels (its receptive
field) gives exactly the same result when run on a window padded by ``halo`` real pixels as on
the whole image; at the scene's borders the window's edge *is* the scene's edge, so the same
padding rule applies. ``align`` keeps window origins on a multiple of a network's stride (the
coarse CNN's first layer has stride 4), which exactness also needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    """A core window (written to the output) and the padded window read from the inputs."""

    row: int
    col: int
    height: int
    width: int
    read_row: int
    read_col: int
    read_height: int
    read_width: int

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Where the core lies inside the padded (read) window."""
        r, c = self.row - self.read_row, self.col - self.read_col
        return slice(r, r + self.height), slice(c, c + self.width)

    @property
    def core(self) -> tuple[slice, slice]:
        """The core window's rows and columns in the whole raster: where its output goes."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    @property
    def read(self) -> tuple[slice, slice]:
        """The padded window's rows and columns in the whole raster: what is read from the inputs."""
        return slice(self.read_row, self.read_row + self.read_height), slice(
            self.read_col, self.read_col + self.read_width
        )


def iter_windows(
    height: int, width: int, size: int | tuple[int, int], halo: int, align: int = 1, *, fixed: bool = False
) -> Iterator[WindowSpec]:
    """Cover a ``height`` x ``width`` raster with ``size`` windows padded by ``halo``.

    ``size`` is a side, or (rows, columns) for rectangular windows. ``fixed`` makes every read
    window ``size + 2 * halo`` (clipped to the raster) by growing partial and border windows
    inwards: more context never changes an exact result, and one input shape lets compiled
    kernels and caches be reused.
    """
    size_r, size_c = (size, size) if isinstance(size, int) else size
    if size_r % align or size_c % align or halo % align:
        raise ValueError(f"window size {size} and halo {halo} must be multiples of {align}")
    for r in range(0, height, size_r):
        for c in range(0, width, size_c):
            h, w = min(size_r, height - r), min(size_c, width - c)
            r0, c0 = max(0, r - halo), max(0, c - halo)
            r1, c1 = min(height, r + h + halo), min(width, c + w + halo)
            if fixed:
                r0, r1 = _grow(r0, r1, size_r + 2 * halo, height, align)
                c0, c1 = _grow(c0, c1, size_c + 2 * halo, width, align)
            yield WindowSpec(r, c, h, w, r0, c0, r1 - r0, c1 - c0)


def even_windows(height: int, width: int, most: int) -> tuple[int, int]:
    """Window (rows, columns) splitting a raster into as few windows of at most ``most`` as possible, evenly.

    With ``fixed`` windows the last one in a row or column would otherwise grow inwards over its
    neighbour: 5000 px in windows of 1132 computes 5 x 1132 = 5660 px per line, 1000-px windows 5000.
    """
    return even_size(height, most), even_size(width, most)


def even_size(length: int, most: int) -> int:
    """The side that splits ``length`` into as few pieces of at most ``most`` as possible, evenly.

    1500 px with blocks of at most 288 gives six blocks of 250, not five of 288 and one of 60
    (which, grown to full size, would compute 15 % of the pixels twice).
    """
    return -(-length // -(-length // most))


def _grow(lo: int, hi: int, full: int, limit: int, align: int) -> tuple[int, int]:
    """Extend ``[lo, hi)`` to ``full`` pixels inside ``[0, limit)``, keeping ``lo`` aligned."""
    if limit <= full:
        return 0, limit
    hi = max(hi, min(limit, lo + full))
    lo = min(lo, max(0, hi - full))
    lo -= lo % align
    return lo, hi


def run_windowed(
    fn: Callable[[list[np.ndarray]], np.ndarray],
    inputs: list[np.ndarray],
    out_channels: int,
    *,
    size: int,
    halo: int,
    align: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Apply ``fn`` (arrays (C, h, w) -> (out_channels, h, w)) window by window, in memory."""
    h, w = inputs[0].shape[-2:]
    out = np.empty((out_channels, h, w), np.float32)
    wins = list(iter_windows(h, w, size, halo, align))
    for i, win in enumerate(wins):
        res = fn([a[(..., *win.read)] for a in inputs])
        out[(slice(None), *win.core)] = res[(slice(None), *win.core_in_read)]
        if progress:
            progress(i + 1, len(wins))
    return out
