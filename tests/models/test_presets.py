"""The hand-set PDE presets against direct finite-difference implementations of their equations.

The references below are written from the equations alone (numpy, edge padding = zero flux
through the border), independently of the RNN's filters and MLP.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refiner.core.classes import ClassSpec
from refiner.data.tile import Tile
from refiner.models import presets
from refiner.models.fused import FusedRNN
from refiner.models.inference import refine
from refiner.models.rnn import probs_to_scores

FLOAT_TOL = 1e-4  # float32 rounding of a few hundred operations on values up to ~10


def neighbour_differences(a: np.ndarray) -> list[np.ndarray]:
    """a(x + d) - a(x) for d = E, W, S, N on the last two axes, edge-padded."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    h, w = a.shape[-2:]
    c = p[..., 1 : h + 1, 1 : w + 1]
    return [
        p[..., 1 : h + 1, 2 : w + 2] - c,
        p[..., 1 : h + 1, 0:w] - c,
        p[..., 2 : h + 2, 1 : w + 1] - c,
        p[..., 0:h, 1 : w + 1] - c,
    ]


def heat_fd(u, dt):
    return u + dt * sum(neighbour_differences(u))


def pm_fd(u, dt, kappa):
    g = lambda s: 1 / (1 + (s / kappa) ** 2)  # noqa: E731
    return u + dt * sum(g(np.abs(d)) * d for d in neighbour_differences(u))


def image_guided_fd(u, image, dt, kappa):
    grey = image.mean(0)
    du = neighbour_differences(u)
    di = neighbour_differences(grey)
    return u + dt * sum(d / (1 + (e / kappa) ** 2) for d, e in zip(du, di, strict=True))


def fixture(k=3, size=20, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k) * 0.5, size=(size, size)).transpose(2, 0, 1).astype(np.float32)
    image = np.clip(rng.random((3, size, size)) * 0.3 + (np.arange(size) >= size // 2) * 0.6, 0, 1).astype(np.float32)
    return image, probs


def run(net, image, probs):
    with torch.no_grad():
        ref = net(torch.from_numpy(image)[None], torch.from_numpy(probs)[None], reference=True)
        fast = FusedRNN(net, compile=False)(torch.from_numpy(image)[None], torch.from_numpy(probs)[None])
    return [u[0].numpy().astype(np.float64) for u in ref], [u[0].numpy().astype(np.float64) for u in fast]


def test_heat_preset_is_the_heat_equation_exactly():
    image, probs = fixture()
    net = presets.heat_rnn(3, dt=0.2, iterations=6)
    ref, fast = run(net, image, probs)
    u = probs_to_scores(torch.from_numpy(probs)[None])[0].numpy().astype(np.float64)
    for t in range(1, 7):
        u = heat_fd(u, 0.2)
        assert np.abs(ref[t] - u).max() < FLOAT_TOL
        assert np.abs(fast[t] - u).max() < FLOAT_TOL
    # diffusion conserves each class's total score (zero flux through the border) and smooths
    assert abs(ref[-1].sum() - ref[0].sum()) < 1e-2
    assert ref[-1].std() < 0.5 * ref[0].std()


def test_perona_malik_flux_error_is_as_stated():
    x = np.linspace(-60, 60, 200_001)
    for kappa in (0.3, 1.0, 2.5):
        err = np.abs(presets.pm_flux_pl(x, kappa) - presets.pm_flux(x, kappa)).max()
        assert err <= presets.PM_FLUX_ERROR * kappa
        assert err > 0.8 * presets.PM_FLUX_ERROR * kappa  # the stated bound is tight, not padded


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0])
def test_perona_malik_preset_against_finite_differences(kappa):
    image, probs = fixture(seed=1)
    dt = 0.2
    net = presets.perona_malik_rnn(3, dt=dt, kappa=kappa, iterations=3)
    ref, fast = run(net, image, probs)
    u0 = ref[0]
    # the units compute exactly the piecewise-linear flux...
    pl = u0 + dt * sum(presets.pm_flux_pl(d, kappa) for d in neighbour_differences(u0))
    assert np.abs(ref[1] - pl).max() < FLOAT_TOL and np.abs(fast[1] - pl).max() < FLOAT_TOL
    # ...which is within 4 directions x dt x PM_FLUX_ERROR x κ of the exact equation per step
    bound = 4 * dt * presets.PM_FLUX_ERROR * kappa
    err = np.abs(ref[1] - pm_fd(u0, dt, kappa)).max()
    assert err <= bound + FLOAT_TOL
    # and over 3 steps the drift stays within 3 such bounds (explicit steps with dt <= 1/4 do
    # not amplify differences)
    u = u0
    for _ in range(3):
        u = pm_fd(u, dt, kappa)
    assert np.abs(ref[3] - u).max() <= 3 * bound + FLOAT_TOL


def test_perona_malik_keeps_edges_that_heat_blurs():
    """A step edge in u with a jump far above κ barely moves under Perona–Malik, but diffuses
    under heat flow: the point of edge-stopping."""
    probs = np.full((2, 16, 16), 0.02, np.float32)
    probs[0, :, :8] = probs[1, :, 8:] = 0.98
    image = np.zeros((3, 16, 16), np.float32)
    heat = presets.heat_rnn(2, dt=0.2, iterations=5)
    pm = presets.perona_malik_rnn(2, dt=0.2, kappa=0.5, iterations=5)
    (h, _), (p, _) = run(heat, image, probs), run(pm, image, probs)
    jump = lambda u: u[-1][0, 8, 7] - u[-1][0, 8, 8]  # noqa: E731
    assert jump(p) > 0.9 * jump([p[0]]) and jump(h) < 0.7 * jump([h[0]])


@pytest.mark.parametrize("kappa", [0.1, 0.3])
def test_image_guided_preset_against_finite_differences(kappa):
    image, probs = fixture(seed=2)
    dt = 0.2
    fit = presets.image_guided_fit(kappa)
    net = presets.image_guided_rnn(3, dt=dt, kappa=kappa, iterations=2)
    ref, fast = run(net, image, probs)
    u0 = ref[0]
    grey_d = neighbour_differences(image.astype(np.float64).mean(0))
    fitted = u0 + dt * sum(fit(d, e) for d, e in zip(neighbour_differences(u0), grey_d, strict=True))
    assert np.abs(ref[1] - fitted).max() < FLOAT_TOL and np.abs(fast[1] - fitted).max() < FLOAT_TOL
    # the fitted flux is within its measured error of the exact one on the fit box; the error
    # checked here is on the grid of the fit, the sample below lies between grid points
    x, y = np.meshgrid(np.linspace(-9.9, 9.9, 77), np.linspace(-0.99, 0.99, 53))
    off_grid = np.abs(fit(x, y) - x / (1 + (y / kappa) ** 2)).max()
    assert off_grid <= 1.05 * fit.max_error
    assert fit.max_error < 1.0 and fit.rms_error < 0.2  # on fluxes up to 10
    exact = image_guided_fd(u0, image.astype(np.float64), dt, kappa)
    assert np.abs(ref[1] - exact).max() <= 4 * dt * 1.05 * fit.max_error + FLOAT_TOL
    # on average within 4 directions x dt x the fit's RMS error, well under the worst case
    assert np.abs(ref[1] - exact).mean() < 4 * dt * fit.rms_error


def test_image_guided_diffusion_stops_at_the_image_edge():
    """Scores leak across a class border where the image is flat, not where it has an edge."""
    probs = np.full((2, 16, 16), 0.05, np.float32)
    probs[0, :, :8] = probs[1, :, 8:] = 0.95
    flat = np.full((3, 16, 16), 0.5, np.float32)
    edged = flat.copy()
    edged[:, :, 8:] = 0.9
    net = presets.image_guided_rnn(2, dt=0.2, kappa=0.1, iterations=8)
    (a, _), (b, _) = run(net, flat, probs), run(net, edged, probs)
    jump = lambda u: u[0, 8, 7] - u[0, 8, 8]  # noqa: E731
    assert jump(b[-1]) > 0.85 * jump(b[0])
    assert jump(a[-1]) < 0.6 * jump(a[0])


def test_presets_run_through_refine_and_check_their_parameters():
    image, probs = fixture(k=2, size=24)
    classes = ClassSpec(("background", "road"))
    bundle = presets.preset_bundle("perona_malik", classes, 3, dt=0.2, kappa=1.0, iterations=4)
    out = refine(bundle, Tile(image=image, valid=np.ones(image.shape[1:], bool)), probs, keep_all=True)
    assert len(out.probs) == 5 and np.allclose(out.probs[0], probs, atol=1e-3)
    ref, _ = run(bundle.net, image, probs)
    assert np.allclose(out.probs[-1], torch.softmax(torch.from_numpy(ref[-1]), 0).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="dt must be in"):
        presets.heat_rnn(2, dt=0.5)
    with pytest.raises(ValueError, match="κ must be positive"):
        presets.perona_malik_rnn(2, kappa=0)
    with pytest.raises(ValueError, match="unknown preset"):
        presets.preset_rnn("wave", 2)


def test_match_filters_finds_the_operator_hidden_among_noise():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(8, 5, 5)).astype(np.float32)
    bank[5] = -2 * presets.laplacian_kernel() + 0.01 * rng.normal(size=(5, 5))
    found = presets.match_filters(bank)
    assert found["Laplacian"][0].index == 5 and found["Laplacian"][0].correlation > 0.99
    assert found["Laplacian"][0].span_residual < 0.01 and found["Laplacian"][0].top_residual < 0.01


def test_the_residual_shown_is_not_zero_for_every_operator_of_a_full_bank():
    """32 filters span all 25 weights of a 5x5 kernel: the whole bank's residual was 0.0 % for every operator."""
    bank = np.random.default_rng(1).normal(size=(32, 5, 5)).astype(np.float32)
    found = presets.match_filters(bank)
    assert all(m[0].span_residual < 1e-6 for m in found.values())  # says nothing
    assert all(0.3 < m[0].top_residual < 1 for m in found.values())  # three random filters leave much out
    assert found["∂/∂x (central)"][0].correlation < 0.9
