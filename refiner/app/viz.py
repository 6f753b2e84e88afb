"""Pictures and charts of tiles, label maps, probabilities, learned filters and training runs.

Arrays in, ``uint8`` RGB(A) images or plotly figures out; no UI code, so the app, notebooks and
reports draw the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch

from refiner.core.classes import IGNORE, ClassSpec

if TYPE_CHECKING:
    from refiner.models.rnn import RefinerRNN
    from refiner.models.store import ModelBundle

#: Viridis at 9 stops (perceptually uniform, readable by colour-blind people).
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float32,
)
#: Diverging blue-white-red for signed filter weights and responses.
_DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], dtype=np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Engine image (C, H, W) in [0, 1] -> (H, W, 3) uint8 (grey images are repeated)."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def colorize(class_map: np.ndarray, classes: ClassSpec, *, alpha: int = 255) -> np.ndarray:
    """Class indices (H, W) -> RGBA (H, W, 4) in the classes' colours; unlabelled is transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for i, c in enumerate(classes.colors):
        lut[i] = (*c, alpha)
    lut[IGNORE] = (0, 0, 0, 0)
    return lut[np.asarray(class_map, np.uint8)]


def blend(rgb: np.ndarray, rgba: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Draw ``rgba`` over ``rgb`` (both H, W) at ``opacity`` x its own alpha -> (H, W, 3) uint8."""
    a = (rgba[..., 3:4].astype(np.float32) / 255.0) * float(opacity)
    out = rgb.astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a
    return (out + 0.5).astype(np.uint8)


def outline(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) with the edges of the labelled regions of ``labels`` (H, W, same grid) drawn.

    Black where the picture is light and white where it is dark, so every class's outline shows
    on any imagery, whatever its own colour.
    """
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    d = lab[1:] != lab[:-1]  # between rows: mark the labelled side(s) of each change
    edge[1:] |= d & (lab[1:] != IGNORE)
    edge[:-1] |= d & (lab[:-1] != IGNORE)
    d = lab[:, 1:] != lab[:, :-1]
    edge[:, 1:] |= d & (lab[:, 1:] != IGNORE)
    edge[:, :-1] |= d & (lab[:, :-1] != IGNORE)
    out = rgb.copy()
    light = rgb[..., :3].astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32) > 127
    out[edge & light] = 0
    out[edge & ~light] = 255
    return out


def _ramp(values: np.ndarray, stops: np.ndarray) -> np.ndarray:
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(np.int64), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f + 0.5).astype(np.uint8)


def heat(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Values (H, W) -> viridis RGB (H, W, 3) uint8, ``vmin``..``vmax`` spread over the ramp."""
    span = vmax - vmin if vmax > vmin else 1.0
    return _ramp((np.asarray(values, np.float32) - vmin) / span, _VIRIDIS)


def signed(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Signed values -> blue (negative) / white (0) / red (positive) RGB, symmetric about 0."""
    v = np.asarray(values, np.float32)
    s = scale if scale else float(np.abs(v).max()) or 1.0
    return _ramp(v / (2 * s) + 0.5, _DIVERGING)


#: :func:`heat` of 0/255, 1/255, …, 255/255: the colour of a probability stored in 8 bits, looked up.
_VIRIDIS_8 = _ramp(np.arange(256, dtype=np.float32) / 255, _VIRIDIS)


def probability_overlay(rgb: np.ndarray, prob: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """A class's fuzzy probability map as a heat map drawn over the image.

    ``prob`` (H, W): in [0, 1], or uint8 holding probability × 255 (coloured by a table
    look-up, as :func:`heat` colours value / 255).
    """
    colours = _VIRIDIS_8[prob] if prob.dtype == np.uint8 else heat(prob)
    rgba = np.concatenate([colours, np.full((*prob.shape, 1), 255, np.uint8)], axis=-1)
    return blend(rgb, rgba, opacity)


def disagreement(maps: Sequence[np.ndarray]) -> np.ndarray:
    """How many distinct classes the maps (H, W each) give a pixel, minus one: 0 = all agree."""
    stack = np.stack([np.asarray(m) for m in maps])
    distinct = np.ones(stack.shape[1:], np.int64)
    for i in range(1, len(stack)):
        distinct += np.all(stack[i] != stack[:i], axis=0)
    return (distinct - 1).astype(np.uint8)


def disagreement_image(maps: Sequence[np.ndarray], rgb: np.ndarray | None = None) -> np.ndarray:
    """Disagreement as a picture: white where all maps agree, orange where two differ, red where all do.

    With ``rgb``, the dimmed image shows instead of white where the maps agree.
    """
    d = disagreement(maps)
    colours = np.array([[255, 255, 255, 0], [250, 150, 30, 255], [200, 20, 30, 255]], np.uint8)
    rgba = colours[np.minimum(d, 2)]
    base = (rgb * 0.5 + 127).astype(np.uint8) if rgb is not None else np.full((*d.shape, 3), 255, np.uint8)
    return blend(base, rgba, 1.0)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, for showing 5x5 kernels and small crops crisply."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def downscale_to(image: np.ndarray, max_side: int) -> np.ndarray:
    """Stride-subsample (H, W, ...) so its longer side is at most ``max_side`` (for previews)."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
    return image[::step, ::step]


# --------------------------------------------------------------------------- learned filters


def map_kernels(net: RefinerRNN, block: int = 0) -> np.ndarray:
    """The learned ``M_i`` (filters on the heat maps): (n, k, k)."""
    return net.blocks[block].map_filters.weight.detach().cpu().numpy()[:, 0]


def image_kernels(net: RefinerRNN, block: int = 0) -> np.ndarray:
    """The learned ``N_j`` (filters on the image): (n, C, k, k)."""
    return net.blocks[block].image_filters.weight.detach().cpu().numpy()


def kernel_image(kernel: np.ndarray, size: int = 60) -> np.ndarray:
    """One kernel as a small picture: (k, k) signed -> blue/white/red; (C, k, k) -> RGB.

    Each filter is stretched to the full range, the way the paper's Fig. 11 shows them.
    """
    if kernel.ndim == 2:
        img = signed(kernel)
    else:
        rgb = kernel[:3] if kernel.shape[0] >= 3 else np.repeat(kernel[:1], 3, axis=0)
        lo, hi = float(rgb.min()), float(rgb.max())
        img = ((rgb - lo) / (hi - lo if hi > lo else 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return upscale(img, max(1, size // img.shape[0]))


def filter_response(
    bundle: ModelBundle[RefinerRNN],
    image: np.ndarray,
    probs: np.ndarray,
    kind: str,
    index: int,
    class_index: int = 0,
    block: int = 0,
) -> np.ndarray:
    """Response (H, W) of one learned filter on the tile (Fig. 11 of the paper).

    ``kind="map"``: ``M_index * u_0`` on the coarse score map of ``class_index``;
    ``kind="image"``: ``N_index * I`` on the normalised image.
    """
    from refiner.models.rnn import probs_to_scores

    blk = bundle.net.blocks[block]
    dev = next(bundle.net.parameters()).device
    with torch.no_grad():
        if kind == "map":
            u = probs_to_scores(torch.from_numpy(np.ascontiguousarray(probs))[None].to(dev))
            w = blk.map_filters.weight[index : index + 1]
            x = torch.nn.functional.pad(u[:, class_index : class_index + 1], (2, 2, 2, 2), mode="replicate")
            return torch.nn.functional.conv2d(x, w)[0, 0].cpu().numpy()
        if kind == "image":
            x = bundle.normalise(torch.from_numpy(np.ascontiguousarray(image))[None].to(dev))
            w = blk.image_filters.weight[index : index + 1]
            r = w.shape[-1] // 2
            x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
            return torch.nn.functional.conv2d(x, w)[0, 0].cpu().numpy()
    raise ValueError(f"kind must be 'map' or 'image', not {kind!r}")


# --------------------------------------------------------------------------- plotly figures


def _layout(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    """Title, size, margins and template; a title's parenthesised part goes on a smaller second line.

    The chart toolbar (plotly's modebar) sits at the top right: a one-line title as long as
    "Scores along the iterations (held-out painted regions)" ran under it in a half-width column.
    The top margin leaves both lines room above the plot.
    """
    head, _, rest = title.partition(" (")
    text = f"{head}<br><sup>{rest.rstrip(')')}</sup>" if rest else title
    fig.update_layout(
        title={"text": text, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
        height=height + (20 if rest else 0),
        margin={"l": 40, "r": 10, "t": 70 if rest else 45, "b": 40},
        template="plotly_white",
    )
    return fig


def loss_figure(
    loss: Sequence[tuple[int, float]],
    val: Sequence[dict] = (),
    classes: ClassSpec | None = None,
    *,
    earlier_loss: Sequence[tuple[int, float]] = (),
    earlier_val: Sequence[dict] = (),
    start_step: int = 0,
    best_step: int | None = None,
) -> go.Figure:
    """Training loss per step and the held-out mean IoU on a second axis.

    Steps count over the model's life: a continued run goes on from ``start_step`` (marked),
    beside the earlier runs' curves (grey); ``best_step`` marks the weights that were kept.
    """
    fig = go.Figure()
    for points, name, style in ((earlier_loss, "loss, earlier runs", {"color": "#aaaaaa"}),
                                (loss, "training loss", {})):  # fmt: skip
        if points:
            steps, values = zip(*points, strict=True)
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name, line=style))
    for scores, name, style in ((earlier_val, "held-out mean IoU, earlier", {"color": "#bbbbbb", "dash": "dot"}),
                                (val, "held-out mean IoU", {})):  # fmt: skip
        if scores:
            fig.add_trace(
                go.Scatter(
                    x=[v["step"] for v in scores],
                    y=[v["mean_iou"] for v in scores],
                    mode="lines+markers",
                    name=name,
                    yaxis="y2",
                    line=style,
                )  # fmt: skip
            )
    if start_step:
        fig.add_vline(x=start_step, line={"dash": "dash", "color": "#888888"}, annotation_text="continued")
    if best_step is not None:
        fig.add_vline(x=best_step, line={"dash": "dot", "color": "#2ca02c"}, annotation_text="kept (best held-out)",
                      annotation_position="bottom left")  # fmt: skip
    fig.update_layout(
        xaxis_title="step (of the model's training)",
        yaxis={"title": "cross-entropy"},
        yaxis2={"title": "mean IoU", "overlaying": "y", "side": "right", "range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
    )
    return _layout(fig, "Training")


def iteration_figure(
    scores: Sequence, classes: ClassSpec, *, t: int | None = None, title: str = "held-out labels"
) -> go.Figure:
    """Overall accuracy and IoU of each class against the iteration t (the paper's Fig. 7b).

    A dotted line marks the coarse map's (t = 0) mean IoU, the baseline refinement must beat;
    a vertical line marks the iteration ``t`` shown beside the chart.
    """
    ts = list(range(len(scores)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ts, y=[s.overall_accuracy for s in scores], mode="lines+markers", name="accuracy"))
    fig.add_trace(
        go.Scatter(x=ts, y=[s.mean_iou for s in scores], mode="lines+markers", name="mean IoU", line={"dash": "dash"})
    )
    for k, name in enumerate(classes.names):
        colour = "rgb({},{},{})".format(*classes.colors[k])
        fig.add_trace(
            go.Scatter(
                x=ts, y=[s.iou[k] for s in scores], mode="lines+markers", name=f"IoU {name}", line={"color": colour}
            )
        )
    if scores:
        fig.add_hline(
            y=scores[0].mean_iou, line={"dash": "dot", "color": "#666666"},
            annotation_text=f"t = 0 (coarse) mean IoU {scores[0].mean_iou:.3f}", annotation_position="bottom right",
        )  # fmt: skip
    if t is not None:
        fig.add_vline(x=t, line={"color": "#d62728", "width": 2}, annotation_text=f"t = {t}")
    fig.update_layout(xaxis={"title": "iteration t", "dtick": 1}, yaxis={"title": "score", "range": [0, 1]})
    return _layout(fig, f"Scores along the iterations ({title})")


def kernel_figure(kernel: np.ndarray, title: str = "") -> go.Figure:
    """A 2-D kernel as a plotly heat map with its values on hover."""
    s = float(np.abs(kernel).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=kernel[::-1], colorscale="RdBu_r", zmin=-s, zmax=s))
    fig.update_layout(yaxis={"scaleanchor": "x", "showticklabels": False}, xaxis={"showticklabels": False})
    return _layout(fig, title, height=260)


def flux_figure(x: np.ndarray, curves: dict[str, np.ndarray], title: str = "") -> go.Figure:
    """Flux curves against the neighbour difference (a PDE's exact flux beside the ReLU one)."""
    fig = go.Figure()
    for i, (name, y) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, line={"dash": "dash" if i else "solid"}))
    fig.update_layout(
        xaxis_title="neighbour difference ∇_d u", yaxis_title="flux", legend={"orientation": "h", "y": -0.3}
    )
    return _layout(fig, title, height=300)


def heat_rgba(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Values (H, W) as a viridis RGBA layer whose opacity grows with the value (low = clear)."""
    v = np.clip((np.asarray(values, np.float32) - vmin) / (vmax - vmin if vmax > vmin else 1.0), 0, 1)
    return np.concatenate([heat(v), (v[..., None] * 255 + 0.5).astype(np.uint8)], axis=-1)
