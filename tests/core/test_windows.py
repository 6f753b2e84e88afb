"""Window plans: cores tile the raster once; reads hold the core plus its halo; fixed reads have one size."""

import numpy as np
import pytest

from refiner.core.windows import even_size, even_windows, iter_windows, run_windowed


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize(
    ("h", "w", "size", "halo", "align"),
    [
        (157, 203, 64, 10, 1),
        (130, 70, 32, 64, 4),
        (20, 30, 64, 5, 1),
        (157, 203, (40, 70), 6, 1),
        (128, 72, (48, 16), 8, 4),
    ],
)
def test_windows_cover_once_and_read_their_halo(h, w, size, halo, align, fixed):
    covered = np.zeros((h, w), int)
    shapes = set()
    for win in iter_windows(h, w, size, halo, align, fixed=fixed):
        covered[win.core] += 1
        assert win.read_row <= max(0, win.row - halo) and win.read_col <= max(0, win.col - halo)
        assert win.read_row + win.read_height >= min(h, win.row + win.height + halo)
        assert win.read_col + win.read_width >= min(w, win.col + win.width + halo)
        assert win.read_row % align == 0 and win.read_col % align == 0
        assert win.read_row >= 0 and win.read_row + win.read_height <= h
        assert win.read_col >= 0 and win.read_col + win.read_width <= w
        shapes.add((win.read_height, win.read_width))
    assert (covered == 1).all()
    if fixed:
        assert len(shapes) == 1


@pytest.mark.parametrize(("length", "most"), [(1500, 288), (1500, 1500), (1501, 250), (7, 64), (1000, 256)])
def test_even_size_uses_the_fewest_blocks_and_no_sliver(length, most):
    side = even_size(length, most)
    n = -(-length // side)
    assert side <= most and n == -(-length // most)  # as few blocks as the largest side needs
    assert length - (n - 1) * side > side - n  # the last block is nearly full, not a sliver


def test_even_windows_cover_a_scene_without_windows_growing_over_their_neighbours():
    size = even_windows(5000, 20000, 1132)
    assert size == (1000, 1112)
    reads = [w.read_height * w.read_width for w in iter_windows(5000, 20000, size, 10, fixed=True)]
    assert len(reads) == 5 * 18 and sum(reads) < 1.05 * 5000 * 20000  # vs 1.13x with 1132-px windows


def test_run_windowed_with_a_local_operator_is_exact():
    rng = np.random.default_rng(0)
    a = rng.random((2, 75, 61)).astype(np.float32)

    def blur(arrays):  # 3x3 box filter with edge replication: receptive field 1 px
        x = np.pad(arrays[0], ((0, 0), (1, 1), (1, 1)), mode="edge")
        return sum(x[:, i : i + arrays[0].shape[1], j : j + arrays[0].shape[2]] for i in range(3) for j in range(3))

    whole = blur([a])
    np.testing.assert_allclose(run_windowed(blur, [a], 2, size=16, halo=1), whole, rtol=1e-6)
