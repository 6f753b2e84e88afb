"""What the pages keep in memory between reruns: arrays read from a workspace's files or made from them.

A stroke on the Label page and a step of the Iterations page's slider each rerun the whole
page; every rerun read the tile from disk again, loaded every refinement iteration from its
``.npz``, took argmaxes and scored all iterations, and coloured whole 1500² tiles, only to show
a picture of 480–640 screen pixels (issue 22, item 9). Now the pages take those arrays from
here and draw only the view they show.

One server holds many sessions, so the cache is shared, and never by accident:

- every key holds the workspace's **folder**: another workspace (another session's copy of the
  same demo included) never gets an entry, whoever asks;
- and a **stamp** of the files the value was made from (:func:`file_stamp`: inode, change time
  and size, which every atomic rewrite changes; or the results' own stamps of models and
  probabilities): a value is never served after its files changed;
- values are read-only arrays, so no page can change what another page is shown;
- the whole cache holds at most ``$REFINER_MEMO_MB`` (512 by default) of arrays, least
  recently used first out.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from refiner.app import results, viz
from refiner.app.painting import View
from refiner.app.workspace import COARSE_PROBS, TILE, Workspace
from refiner.core.metrics import Scores


def file_stamp(path: Path) -> str:
    """Changes whenever ``path`` is rewritten (inode, ctime, size; atomic writes rename a new file in); "" if absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ""
    return f"{st.st_ino}:{st.st_ctime_ns}:{st.st_mtime_ns}:{st.st_size}"


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, IterationStack):
        return value.maps.nbytes + value.probs.nbytes
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 1024


class Memo:
    """A thread-safe map key -> value of at most ``budget`` bytes, the least recently used dropped first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value under ``key``, made by ``make()`` (outside the lock) when it is not here."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()
        size = _nbytes(value)
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(n for _, n in self._items.values()) > self.budget:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


MEMO = Memo(int(float(os.environ.get("REFINER_MEMO_MB", "512")) * 2**20))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def tile_rgb(ws: Workspace) -> np.ndarray:
    """The tile as (H, W, 3) uint8 RGB (:func:`refiner.app.viz.to_rgb`), read once per version of ``tile.tif``."""
    key = ("tile_rgb", str(ws.path), file_stamp(ws.path / TILE))
    return MEMO.get(key, lambda: _frozen(viz.to_rgb(ws.tile().image)))


def tile_in_view(ws: Workspace, view: View) -> np.ndarray:
    """:func:`tile_rgb` cropped and reduced to ``view`` (:func:`webapp.common.in_view`, smooth), once per view."""
    from webapp.common import DETAIL, in_view

    key = ("tile_in_view", str(ws.path), file_stamp(ws.path / TILE), view, DETAIL)
    return MEMO.get(key, lambda: _frozen(np.ascontiguousarray(in_view(tile_rgb(ws), view, smooth=True))))


def coarse_map(ws: Workspace) -> np.ndarray:
    """The coarse map's class per pixel (H, W) uint8, read once per version of ``coarse_probs.tif``."""
    key = ("coarse_map", str(ws.path), file_stamp(ws.path / COARSE_PROBS))
    return MEMO.get(key, lambda: _frozen(ws.coarse_probs().argmax(0).astype(np.uint8)))


@dataclass(frozen=True)
class IterationStack:
    """A refinement's iterations as the pages show them: class maps and probabilities in 8 bits.

    ``maps`` (T + 1, H, W) uint8: the class of each pixel at t = 0..T; ``probs`` (T + 1, K, H, W)
    uint8: each class's probability × 255, rounded (what a picture of it can show).
    """

    maps: np.ndarray
    probs: np.ndarray
    #: the model and :func:`refiner.app.results.refinement_stamp`: what it was made from
    stamp: str

    @property
    def iterations(self) -> int:
        """T: the last iteration."""
        return len(self.maps) - 1

    @classmethod
    def from_probs(cls, probs: list[np.ndarray], stamp: str) -> IterationStack:
        """From the probabilities (K, H, W) float at t = 0..T."""
        maps = np.stack([p.argmax(0).astype(np.uint8) for p in probs])
        eight = np.stack([(np.clip(p, 0, 1) * 255 + 0.5).astype(np.uint8) for p in probs])
        return cls(_frozen(maps), _frozen(eight), stamp)


def iterations(ws: Workspace, model: str = "learned", params: dict | None = None) -> IterationStack:
    """``model``'s refinement of the workspace (:func:`refiner.app.results.model_refinement`), once per stamp.

    Computed (or loaded from the workspace's ``results/``) only when its model, coarse map or
    parameters changed since it was last shown.
    """
    params = dict(params or {})
    stamp = f"{model}:{results.refinement_stamp(ws, model, **params)}"
    key = ("iterations", str(ws.path), stamp)
    return MEMO.get(key, lambda: IterationStack.from_probs(results.model_refinement(ws, model, **params), stamp))


def digest(a: np.ndarray) -> str:
    """A digest of an array's every byte, shape and type (labels differing in one pixel differ)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def iteration_figure(ws: Workspace, stack: IterationStack, ev: results.EvalLabels, t: int) -> go.Figure:
    """The scores chart of ``stack`` on ``ev`` marking iteration ``t`` (:func:`refiner.app.viz.iteration_figure`), once.

    Building a plotly figure took a quarter of a slider step's rerun; each t's is made once per
    refinement and labels (Streamlit only reads it).
    """
    key = ("iteration_figure", str(ws.path), stack.stamp, digest(ev.labels), ev.one_vs_rest, ev.title, t)
    scores = iteration_scores(ws, stack, ev.labels, one_vs_rest=ev.one_vs_rest)
    return MEMO.get(key, lambda: viz.iteration_figure(scores, ws.classes, t=t, title=ev.title.lower()))


def iteration_scores(ws: Workspace, stack: IterationStack, truth: np.ndarray, *, one_vs_rest: bool = False) -> list:
    """Scores of every iteration of ``stack`` against ``truth`` (:func:`refiner.app.results.map_scores`), once each."""
    key = ("scores", str(ws.path), stack.stamp, digest(truth), one_vs_rest)
    k = stack.probs.shape[1]
    made: list[Scores] = MEMO.get(key, lambda: results.map_scores(stack.maps, truth, k, one_vs_rest=one_vs_rest))
    return made
