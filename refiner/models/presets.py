"""The paper's PDEs as hand-set refinement RNNs (Sec. II: the RNN generalises them).

Each preset is an ordinary :class:`~refiner.models.rnn.RefinerRNN` whose weights are set by
hand instead of learned, so it runs through the same inference (``FusedRNN``,
:func:`refiner.models.inference.refine`), the same iteration slider and the same Compare table:

- **heat** (Eq. 1), ``du/dt = Δu``: ``M_0`` is the 5-point Laplacian; the MLP passes it through
  as ``dt * (relu(Δu) - relu(-Δu)) = dt * Δu``. Exact (float rounding only).
- **perona_malik** (Eq. 2 on the class map), ``du/dt = div(g(|∇u|) ∇u)``, ``g(s) = 1/(1+(s/κ)²)``,
  discretised as in Perona & Malik (1990): ``u += dt * Σ_d φ(∇_d u)`` over the four neighbour
  differences ``∇_d u = u(x+d) - u(x)`` (``M_0..M_3``), flux ``φ(x) = g(|x|) x``. ``φ`` is
  one-dimensional, so 8 ReLU units per direction (4 directions x 8 = the MLP's 32) make an odd
  piecewise-linear ``φ̂`` with knots ``±κ t_j``; its largest error is
  :data:`PM_FLUX_ERROR` ``x κ`` for every ``x`` (12 % of the peak flux ``κ/2``).
- **image_guided** (Eq. 2 with ``g`` of the *image*), ``du/dt = div(g(|∇I|) ∇u)``: the class maps
  diffuse except across image edges. ``∇_d I`` (grey, the mean of the bands) comes from
  ``N_0..N_3``. The flux ``g(|∇_d I|) ∇_d u`` is a product of two features, which one ReLU layer
  cannot form exactly: 8 units per direction, symmetric so the flux stays antisymmetric
  (conservative) and even in ``∇I``, are fitted by least squares on ``|∇u| <= 10``,
  ``|∇I| <= 1``; :func:`image_guided_fit` returns the fit's largest error on that box
  (about 0.8 on fluxes up to 10 for κ = 0.1; see ``tests/models/test_presets.py``).

Replicate padding gives zero flux through the tile border (Neumann), as in the finite-difference
references the tests compare against. Explicit steps are stable for ``dt <= 0.25``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from refiner.core.classes import ClassSpec
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle

PRESETS: tuple[str, ...] = ("heat", "perona_malik", "image_guided")
TITLES = {"heat": "Heat equation", "perona_malik": "Perona–Malik", "image_guided": "Image-guided diffusion"}

#: Knots (in units of κ) and slopes of the piecewise-linear Perona–Malik flux, found by a
#: minimax fit of ``φ_1(z) = z / (1 + z²)`` on ``0 <= z <= 10⁵`` (Nelder–Mead from 30 starts)
#: with the last slope forced to 0, so the tail is flat and never anti-diffusive.
PM_KNOTS = (0.0, 0.63937, 8.00029, 8.21856)
PM_SLOPES = (0.72161, -0.77133, -0.11265, 0.16237)
#: Largest ``|φ̂(x) - φ(x)|`` over all ``x``, in units of κ (measured on a dense grid in the tests).
PM_FLUX_ERROR = 0.060
#: Box on which the image-guided flux is fitted: score differences and grey-level differences.
FIT_DU, FIT_DI = 10.0, 1.0
MAX_STABLE_DT = 0.25

#: Neighbour offsets (row, col) of the four directions: east, west, south, north.
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def difference_kernel(d: tuple[int, int], size: int = 5) -> np.ndarray:
    """``u(x + d) - u(x)`` as a ``size`` x ``size`` correlation kernel."""
    k = np.zeros((size, size), np.float32)
    c = size // 2
    k[c + d[0], c + d[1]] += 1
    k[c, c] -= 1
    return k


def laplacian_kernel(size: int = 5) -> np.ndarray:
    """The 5-point Laplacian ``Σ_d (u(x+d) - u(x))`` in a ``size`` x ``size`` kernel."""
    return sum((difference_kernel(d, size) for d in DIRECTIONS), np.zeros((size, size), np.float32))


def pm_flux(x: np.ndarray, kappa: float) -> np.ndarray:
    """The exact Perona–Malik flux ``g(|x|) x`` with ``g(s) = 1/(1+(s/κ)²)``."""
    return x / (1 + (x / kappa) ** 2)


def pm_flux_pl(x: np.ndarray, kappa: float) -> np.ndarray:
    """The flux the preset's ReLU units compute: odd, piecewise linear with knots ``±κ t_j``."""
    x = np.asarray(x, np.float64)
    return sum(
        (
            a * (np.maximum(x - kappa * t, 0) - np.maximum(-x - kappa * t, 0))
            for t, a in zip(PM_KNOTS, PM_SLOPES, strict=True)
        ),
        np.zeros_like(x),  # the start of the sum, so it is an array even to the type checker
    )


@dataclass(frozen=True)
class FluxFit:
    """8 ReLU units ``relu(A x + B y / κ + C)`` with output weights ``V`` approximating ``x g(|y|)``.

    x: score difference, y: grey-level difference; ``max_error`` on the fit box.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    V: np.ndarray
    kappa: float
    max_error: float
    rms_error: float

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The fitted flux at score differences ``x`` and grey-level differences ``y`` (broadcast together)."""
        x, y = np.asarray(x, np.float64)[..., None], np.asarray(y, np.float64)[..., None]
        return (np.maximum(self.A * x + self.B * y / self.kappa + self.C, 0) * self.V).sum(-1)


def _expand(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # two families (a, b, c, v), each in 4 sign patterns: odd in (x, y) together (conservative
    # flux) and even in y (an edge stops diffusion whichever way the image steps)
    a, b, c, v = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    return torch.cat([a, a, -a, -a]), torch.cat([b, -b, -b, b]), torch.cat([c, c, c, c]), torch.cat([v, v, -v, -v])


@lru_cache(maxsize=32)
def image_guided_fit(kappa: float) -> FluxFit:
    """Least-squares fit of the image-guided flux for conductance ``kappa`` (cached; ~0.3 s).

    Deterministic: fixed start (the best of 6 random starts at κ = 0.1), float64 L-BFGS on a
    101 x 101 grid of the box ``|x| <= FIT_DU``, ``|y| <= FIT_DI``.
    """
    if kappa <= 0:
        raise ValueError("the conductance κ must be positive")
    x = torch.linspace(-FIT_DU, FIT_DU, 101, dtype=torch.float64)
    y = torch.linspace(-FIT_DI, FIT_DI, 101, dtype=torch.float64)
    xx, yy = torch.meshgrid(x, y, indexing="ij")
    target = xx / (1 + (yy / kappa) ** 2)
    p = torch.tensor([[-0.202, 1.113, -2.049, 1.12], [-0.134, -2.001, 1.399, -1.801]], dtype=torch.float64)
    p.requires_grad_(True)

    def pred() -> torch.Tensor:
        a, b, c, v = _expand(p)
        return (torch.relu(xx[..., None] * a + yy[..., None] * b / kappa + c) * v).sum(-1)

    opt = torch.optim.LBFGS(
        [p], max_iter=1000, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((pred() - target) ** 2).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        err = (pred() - target).abs()
        a, b, c, v = (t.numpy().copy() for t in _expand(p.detach()))
    return FluxFit(a, b, c, v, float(kappa), float(err.max()), float(err.pow(2).mean().sqrt()))


def _check(dt: float, iterations: int) -> None:
    if not 0 < dt <= MAX_STABLE_DT:
        raise ValueError(f"the time step dt must be in (0, {MAX_STABLE_DT}] for explicit steps to be stable, not {dt}")
    if iterations < 1:
        raise ValueError("iterations must be at least 1")


def _blank(num_classes: int, in_channels: int, iterations: int) -> RefinerRNN:
    net = RefinerRNN(RNNConfig(num_classes=num_classes, in_channels=in_channels, iterations=iterations))
    with torch.no_grad():
        for t in net.parameters():
            t.zero_()
    return net.eval()


def _set_mlp(net: RefinerRNN, hidden_w: np.ndarray, hidden_b: np.ndarray, out_w: np.ndarray) -> None:
    """The same MLP for every class: ``hidden_w`` (32, 64), ``hidden_b`` (32,), ``out_w`` (32,)."""
    blk = net.blocks[0]
    k = net.cfg.num_classes
    with torch.no_grad():
        blk.hidden.weight.copy_(torch.from_numpy(np.tile(hidden_w, (k, 1))).float()[..., None, None])
        blk.hidden.bias.copy_(torch.from_numpy(np.tile(hidden_b, k)).float())
        blk.output.weight.copy_(torch.from_numpy(np.tile(out_w, (k, 1))).float()[..., None, None])


def heat_rnn(num_classes: int, in_channels: int = 3, *, dt: float = 0.2, iterations: int = 10) -> RefinerRNN:
    """Isotropic heat flow ``u += dt Δu`` on every class map (exact)."""
    _check(dt, iterations)
    net = _blank(num_classes, in_channels, iterations)
    cfg = net.cfg
    with torch.no_grad():
        net.blocks[0].map_filters.weight[0, 0] = torch.from_numpy(laplacian_kernel(cfg.kernel_size))
    w = np.zeros((cfg.hidden, cfg.map_filters + cfg.image_filters), np.float64)
    w[0, 0], w[1, 0] = 1.0, -1.0
    out = np.zeros(cfg.hidden)
    out[0], out[1] = dt, -dt
    _set_mlp(net, w, np.zeros(cfg.hidden), out)
    return net


def _set_difference_filters(net: RefinerRNN, image: bool) -> None:
    cfg = net.cfg
    with torch.no_grad():
        for i, d in enumerate(DIRECTIONS):
            k = torch.from_numpy(difference_kernel(d, cfg.kernel_size))
            net.blocks[0].map_filters.weight[i, 0] = k
            if image:  # grey-level difference: the mean of the bands' differences
                net.blocks[0].image_filters.weight[i] = k / cfg.in_channels


def perona_malik_rnn(
    num_classes: int, in_channels: int = 3, *, dt: float = 0.2, kappa: float = 1.0, iterations: int = 10
) -> RefinerRNN:
    """Perona–Malik edge-stopping diffusion of the class maps (flux within ``PM_FLUX_ERROR * κ``)."""
    _check(dt, iterations)
    if kappa <= 0:
        raise ValueError("the conductance κ must be positive")
    net = _blank(num_classes, in_channels, iterations)
    _set_difference_filters(net, image=False)
    cfg = net.cfg
    w = np.zeros((cfg.hidden, cfg.map_filters + cfg.image_filters))
    b, out = np.zeros(cfg.hidden), np.zeros(cfg.hidden)
    for d in range(len(DIRECTIONS)):
        for j, (t, a) in enumerate(zip(PM_KNOTS, PM_SLOPES, strict=True)):
            u = 8 * d + 2 * j
            w[u, d], b[u], out[u] = 1.0, -kappa * t, dt * a  # relu(x - κ t_j)
            w[u + 1, d], b[u + 1], out[u + 1] = -1.0, -kappa * t, -dt * a  # -relu(-x - κ t_j)
    _set_mlp(net, w, b, out)
    return net


def image_guided_rnn(
    num_classes: int, in_channels: int = 3, *, dt: float = 0.2, kappa: float = 0.1, iterations: int = 10
) -> RefinerRNN:
    """Class maps diffuse except across image edges: ``div(g(|∇I|) ∇u)`` with the fitted flux.

    The flux is :func:`image_guided_fit`'s; ``kappa`` is in grey levels of the image scaled to [0, 1].
    """
    _check(dt, iterations)
    fit = image_guided_fit(float(kappa))
    net = _blank(num_classes, in_channels, iterations)
    _set_difference_filters(net, image=True)
    cfg = net.cfg
    w = np.zeros((cfg.hidden, cfg.map_filters + cfg.image_filters))
    b, out = np.zeros(cfg.hidden), np.zeros(cfg.hidden)
    for d in range(len(DIRECTIONS)):
        for j in range(8):
            u = 8 * d + j
            w[u, d] = fit.A[j]
            w[u, cfg.map_filters + d] = fit.B[j] / fit.kappa
            b[u], out[u] = fit.C[j], dt * fit.V[j]
    _set_mlp(net, w, b, out)
    return net


def preset_rnn(name: str, num_classes: int, in_channels: int = 3, **params: float) -> RefinerRNN:
    """The preset ``name`` (one of :data:`PRESETS`) with ``dt``, ``kappa``, ``iterations``."""
    kw: dict[str, Any] = dict(params)  # floats, but ``iterations`` as an int
    if "iterations" in kw:
        kw["iterations"] = int(kw["iterations"])
    if name == "heat":
        kw.pop("kappa", None)
        return heat_rnn(num_classes, in_channels, **kw)
    if name == "perona_malik":
        return perona_malik_rnn(num_classes, in_channels, **kw)
    if name == "image_guided":
        return image_guided_rnn(num_classes, in_channels, **kw)
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


def preset_bundle(name: str, classes: ClassSpec, in_channels: int = 3, **params: float) -> ModelBundle[RefinerRNN]:
    """A preset as a model bundle for :func:`refiner.models.inference.refine`.

    It works on the tile's own grid, on the image scaled to [0, 1] (mean 0, std 1: κ is in those
    grey levels).
    """
    net = preset_rnn(name, len(classes), in_channels, **params)
    return ModelBundle(
        "rnn", net, classes, None, (0.0,) * in_channels, (1.0,) * in_channels, {"preset": name, "params": params}
    )


def preset_terms(name: str, kernel_size: int = 5) -> list[tuple[str, str, np.ndarray]]:
    """What a teacher shows: (LaTeX of a term, which filter implements it, the kernel)."""
    if name == "heat":
        return [(r"\Delta u", "M_0 (Laplacian)", laplacian_kernel(kernel_size))]
    names = ("east", "west", "south", "north")
    terms = [
        (rf"\nabla_{{{n[0].upper()}}} u", f"M_{i} ({n} difference)", difference_kernel(d, kernel_size))
        for i, (n, d) in enumerate(zip(names, DIRECTIONS, strict=True))
    ]
    if name == "image_guided":
        terms += [
            (rf"\nabla_{{{n[0].upper()}}} I", f"N_{i} ({n} grey-level difference)", difference_kernel(d, kernel_size))
            for i, (n, d) in enumerate(zip(names, DIRECTIONS, strict=True))
        ]
    return terms


#: The equations, continuous and as the preset computes them.
EQUATIONS = {
    "heat": (r"\frac{\partial u_k}{\partial t} = \operatorname{div}(\nabla u_k) = \Delta u_k",
             r"u_k \leftarrow u_k + \delta t\,\big(\mathrm{relu}(M_0 * u_k) - \mathrm{relu}(-M_0 * u_k)\big)"),
    "perona_malik": (r"\frac{\partial u_k}{\partial t} = \operatorname{div}\big(g(|\nabla u_k|)\,\nabla u_k\big),"
                     r"\quad g(s) = \frac{1}{1 + (s/\kappa)^2}",
                     r"u_k \leftarrow u_k + \delta t \sum_{d} \hat\varphi(M_d * u_k),"
                     r"\quad \hat\varphi(x) = \sum_{j} a_j\big(\mathrm{relu}(x - \kappa t_j)"
                     r" - \mathrm{relu}(-x - \kappa t_j)\big)"),
    "image_guided": (r"\frac{\partial u_k}{\partial t} = \operatorname{div}\big(g(|\nabla I|)\,\nabla u_k\big)",
                     r"u_k \leftarrow u_k + \delta t \sum_{d} \sum_{j=1}^{8} v_j\,"
                     r"\mathrm{relu}\big(a_j\, M_d * u_k + \tfrac{b_j}{\kappa}\, N_d * I + c_j\big)"),
}  # fmt: skip


# --------------------------------------------------------------------------- learned vs preset


def operator_bank(kernel_size: int = 5) -> dict[str, np.ndarray]:
    """The derivative stencils a learned ``M_i`` is compared with (Fig. 11 of the paper)."""
    c = kernel_size // 2
    dx, dy = np.zeros((kernel_size, kernel_size), np.float32), np.zeros((kernel_size, kernel_size), np.float32)
    dx[c, c + 1], dx[c, c - 1] = 0.5, -0.5
    dy[c + 1, c], dy[c - 1, c] = 0.5, -0.5
    return {"Laplacian": laplacian_kernel(kernel_size), "∂/∂x (central)": dx, "∂/∂y (central)": dy}


@dataclass(frozen=True)
class FilterMatch:
    """How closely one learned map filter ``M_index`` matches a derivative operator."""

    operator: str
    index: int  # the learned filter M_index
    correlation: float  # |cosine| between the zero-mean kernels
    span_residual: float  # ||op - proj(op onto span of all learned M)|| / ||op||
    #: The same onto the span of the ``top`` filters matched (this one and those ranked above it
    #: and after it): 32 learned 5x5 filters span all 25 dimensions, so ``span_residual`` is 0 for
    #: every operator and said nothing; what a few similar filters leave out does.
    top_residual: float = float("nan")


def match_filters(learned: np.ndarray, top: int = 3, kernel_size: int = 5) -> dict[str, list[FilterMatch]]:
    """For each derivative operator, the learned filters (n, k, k) most correlated with it.

    The MLP can flip a filter's sign, so the ranking uses |cosine|. ``span_residual`` says how
    well the whole learned bank can express the operator (0 = exactly a combination of them; always
    0 once the bank has as many independent filters as a kernel has weights), ``top_residual`` how
    well the ``top`` filters listed can (0 = those few together are the operator).
    """
    flat = learned.reshape(len(learned), -1).astype(np.float64)
    out = {}
    for name, op in operator_bank(kernel_size).items():
        o = op.reshape(-1).astype(np.float64)
        cos = []
        for f in flat:
            fc, oc = f - f.mean(), o - o.mean()
            den = np.linalg.norm(fc) * np.linalg.norm(oc)
            cos.append(abs(float(fc @ oc / den)) if den > 0 else 0.0)
        coef, *_ = np.linalg.lstsq(flat.T, o, rcond=None)
        resid = float(np.linalg.norm(flat.T @ coef - o) / np.linalg.norm(o))
        order = np.argsort(cos)[::-1][:top]
        few, *_ = np.linalg.lstsq(flat[order].T, o, rcond=None)
        few_resid = float(np.linalg.norm(flat[order].T @ few - o) / np.linalg.norm(o))
        out[name] = [FilterMatch(name, int(i), cos[i], resid, few_resid) for i in order]
    return out
