"""Applying trained models to tiles: coarse probabilities and refined maps at every iteration.

Networks work at their training resolution (1 m in the paper): a georeferenced tile at another
resolution is resampled to it, and outputs are upsampled back to the tile's grid bilinearly.
Large tiles are processed window by window with a halo (:mod:`refiner.core.windows`), which gives
exactly the whole-image result at bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from refiner.core.classes import check_compatible
from refiner.core.device import pick_device
from refiner.core.windows import run_windowed
from refiner.data.resample import probs_to_grid, to_working, to_working_resolution
from refiner.data.tile import Tile, grid_of
from refiner.models.coarse import CoarseNet
from refiner.models.fused import fused
from refiner.models.rnn import RefinerRNN
from refiner.models.store import ModelBundle

WINDOW = 512
#: Mirrored image pixels added around a tile before the coarse CNN, cropped off after. Its edge
#: pixels otherwise get the zero padding of every convolution and a x4 deconvolution missing
#: its outer terms (the bilinear kernel's 0.625 + 0.375 of the row beyond the edge): the class
#: scores shrink towards zero there and the softmax towards uniform, so the outer ~8 px of a
#: Massachusetts tile were a third road (0.36 on the edge column, 0.07 inside; 13 % road
#: pixels in the left 10 columns against 3 % truth). 32 px cover the network's receptive-field
#: radius (about 36 px) where it matters; a multiple of the stride keeps the grid aligned.
EDGE_PAD = 32

#: The 8 symmetries of the square as (quarter turns, then a left-right flip or not). Aerial views
#: have no "up" and the coarse CNN trained on all 8 (``PatchSampler``'s augmentation), yet a
#: convolution network is not exactly invariant to them: averaging its 8 answers (test-time
#: augmentation, ``predict_coarse(tta=True)``) raised test IoU by about a point for roads and
#: buildings (docs/results.md). Written here rather than taken from ``ttach``: that wraps a
#: network's forward, and these passes must each be the exact windowed, mirror-padded pass.
SYMMETRIES: tuple[tuple[int, bool], ...] = tuple((k, f) for k in range(4) for f in (False, True))


def turn(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``a`` (..., H, W) turned by ``k`` quarter turns, then flipped left-right if ``flip``."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def unturn(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`turn`: ``unturn(turn(a, k, f), k, f)`` is ``a``."""
    a = a[..., ::-1] if flip else a
    return np.rot90(a, -k, axes=(-2, -1))


def mirror_edges(image: np.ndarray, pad: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``image`` (C, H, W) with ``pad`` pixels mirrored on every side, and where the original lies in it.

    Reflection (the edge pixel not repeated) for tiles larger than ``pad``; smaller ones repeat
    their edge pixels instead.
    """
    h, w = image.shape[-2:]
    if pad <= 0:
        return image, (slice(0, h), slice(0, w))
    width = ((0, 0), (pad, pad), (pad, pad))
    out = np.pad(image, width, mode="reflect") if min(h, w) > pad else np.pad(image, width, mode="edge")
    return out, (slice(pad, pad + h), slice(pad, pad + w))


def _as_tensor(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None].to(dev)


def _view_progress(progress: Callable[[int, int], None], i: int, n: int) -> Callable[[int, int], None]:
    """``progress`` for pass ``i`` of ``n``: windows counted over all the passes."""
    return lambda done, total: progress(i * total + done, n * total)


def predict_coarse(
    bundle: ModelBundle[CoarseNet],
    tile: Tile,
    *,
    device: str | torch.device | None = None,
    window: int = WINDOW,
    progress: Callable[[int, int], None] | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities (K, H, W) of the coarse CNN on the tile's own grid.

    The tile is resampled to the model's resolution, predicted window by window with a halo (the
    result equals one whole-tile pass), and the probabilities brought back bilinearly. With
    ``tta`` the tile is predicted in its 8 turns and flips (:data:`SYMMETRIES`) and the 8
    probability maps, turned back, are averaged: 8 times the work, about a point of IoU more.

    Args:
        bundle: a coarse CNN (``load_model(..., expect="coarse")``).
        tile: the image to classify.
        device: where to run (default: cuda, else mps, else cpu).
        window: the side in pixels of the windows it runs on.
        progress: called with (windows done, windows in all).
        tta: average over the tile's 8 turns and flips (test-time augmentation).

    Returns:
        Probabilities float32 (K, H, W) on the tile's grid.

    Raises:
        ValueError: the model is not a coarse CNN, or the image has another number of bands.

    Example:
        ```python
        probs = refiner.predict_coarse(refiner.load_model("models/coarse"), refiner.read_image("tile.tif"))
        ```
    """
    if bundle.kind != "coarse":
        raise ValueError("predict needs a coarse CNN model")
    dev = pick_device(device)
    net = bundle.net.to(dev).eval()
    work = to_working_resolution(tile, bundle.resolution)
    if work.image.shape[0] != net.cfg.in_channels:
        raise ValueError(f"the model expects {net.cfg.in_channels} bands, the image has {work.image.shape[0]}")

    @torch.no_grad()
    def fn(arrays: list[np.ndarray]) -> np.ndarray:
        scores = net(bundle.normalise(_as_tensor(arrays[0], dev)))
        return torch.softmax(scores, 1)[0].float().cpu().numpy()

    image, pad = mirror_edges(work.image, EDGE_PAD)

    def one_pass(view: np.ndarray, step: Callable[[int, int], None] | None) -> np.ndarray:
        k = len(bundle.classes)
        return run_windowed(fn, [view], k, size=window, halo=net.cfg.halo, align=net.cfg.stride, progress=step)

    if not tta:
        probs = one_pass(image, progress)[(slice(None), *pad)]
    else:
        # a turned view's stride grid starts at another corner: padding the far sides to a multiple
        # of the stride puts every corner on one grid, so a scene's windows stitch exactly
        s = net.cfg.stride
        image = np.pad(image, ((0, 0), (0, -image.shape[1] % s), (0, -image.shape[2] % s)), mode="edge")
        total = np.zeros((len(bundle.classes), *image.shape[-2:]), np.float32)
        for i, (k, flip) in enumerate(SYMMETRIES):
            step = None if progress is None else _view_progress(progress, i, len(SYMMETRIES))
            total += unturn(one_pass(np.ascontiguousarray(turn(image, k, flip)), step), k, flip)
        probs = total[(slice(None), *pad)] / np.float32(len(SYMMETRIES))
    if work is not tile:  # resampled, so both grids are known
        src, dst = work.georef, grid_of(tile)
        assert src is not None and dst is not None
        probs = probs_to_grid(probs, src, dst, tile.shape)
    return probs


@dataclass
class Refinement:
    """Probabilities after each iteration: ``probs[0]`` is the input, ``probs[-1]`` the result.

    Attributes:
        probs: the (K, H, W) float32 maps :func:`refine` kept (every iteration with ``keep_all``).

    Example:
        ```python
        refined = refiner.refine(rnn, tile, probs, keep_all=True)
        for t, p in enumerate(refined.probs):
            print(t, refiner.evaluate(p.argmax(0), truth, len(rnn.classes)).mean_iou)
        class_map = refined.class_map()  # argmax of the last
        ```
    """

    probs: list[np.ndarray]

    @property
    def final(self) -> np.ndarray:
        """The refined probabilities (K, H, W), after the last iteration."""
        return self.probs[-1]

    def class_map(self, t: int = -1) -> np.ndarray:
        """Class indices (H, W) after iteration ``t`` (default: the last)."""
        return self.probs[t].argmax(0).astype(np.uint8)


def refine(
    bundle: ModelBundle[RefinerRNN],
    tile: Tile,
    probs: np.ndarray,
    *,
    iterations: int | None = None,
    keep_all: bool = False,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Refinement:
    """Run the RNN on coarse ``probs`` (K, H, W) over ``tile``; every iteration when ``keep_all``.

    The tile goes to :class:`~refiner.models.fused.FusedRNN` whole: it works in cache-sized
    blocks with exact halos itself, so memory beyond the inputs and outputs stays bounded
    (scenes larger than memory go through :mod:`refiner.scale.scene` instead).

    Args:
        bundle: a refinement RNN (``load_model(..., expect="rnn")``).
        tile: the image the probabilities are of.
        probs: probabilities (K, H, W) on the tile's grid, from any model.
        iterations: how many iterations to run (default: the RNN's own T).
        keep_all: keep every iteration's probabilities, not only the last.
        device: where to run (default: cuda, else mps, else cpu).
        progress: called with (iterations done, iterations in all).

    Returns:
        The probabilities after each kept iteration (:class:`Refinement`).

    Raises:
        ValueError: the model is not an RNN, the probabilities have another number of classes than
            the model, or they and the image differ in size.

    Example:
        ```python
        refined = refiner.refine(rnn, tile, probs)
        refiner.write_class_map("map.tif", refined.class_map(), tile.georef, rnn.classes)
        ```
    """
    if bundle.kind != "rnn":
        raise ValueError("refine needs an RNN model (from `finetune`)")
    todo = "give probabilities with one band per class of the model"
    check_compatible(probs.shape[0], bundle.classes, "the probability map", "the model", todo)
    if probs.shape[1:] != tile.shape:
        raise ValueError(f"probabilities {probs.shape[1:]} and image {tile.shape} differ in size")
    dev = pick_device(device)
    net = bundle.net.to(dev).eval()
    t_max = net.cfg.iterations if iterations is None else iterations
    working = to_working(tile, bundle.resolution, probs)
    work, work_probs = working.tile, working.probs
    assert work_probs is not None  # given, so on the working grid too
    fast = fused(net)  # exact fused inference (refiner.models.fused), folded once per model
    with torch.inference_mode():
        image = bundle.normalise(_as_tensor(work.image.astype(np.float32, copy=False), dev))
        probs_t = _as_tensor(work_probs.astype(np.float32, copy=False), dev)
        us = fast(image, probs_t, iterations=t_max, keep_all=keep_all, progress=progress)
        del image, probs_t
        maps = [torch.softmax(u.float(), 1)[0].cpu().numpy() for u in us]
    if work is not tile:  # resampled, so both grids are known
        src, dst = work.georef, grid_of(tile)
        assert src is not None and dst is not None
        maps = [probs_to_grid(m, src, dst, tile.shape) for m in maps]
    return Refinement(maps)
