"""Temporal blocking (``native.run_steps``) and blocks shared between threads (``native.share``) change no bits."""

import shutil
import threading

import pytest
import torch

from refiner.models import native
from refiner.models.fused import FusedRNN, _replicate_edges
from refiner.models.rnn import VARIANTS, RefinerRNN, RNNConfig

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the native kernel cannot be built")


def _random_net(variant: str, k: int = 3, iterations: int = 4, **arch) -> RefinerRNN:
    torch.manual_seed(1)
    net = RefinerRNN(RNNConfig(k, variant=variant, iterations=iterations, **arch)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _inputs(k=3, h=100, w=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g), torch.softmax(3 * torch.randn(1, k, h, w, generator=g), 1)


@pytest.mark.parametrize(("variant", "kernel_size"), [(v, 5) for v in VARIANTS] + [("class_specific", 3)])
@pytest.mark.parametrize("band", [1, 3, 8, 1000])
def test_all_steps_band_by_band_equal_one_step_at_a_time(variant, kernel_size, band):
    """Same bits as run_step + the edge refill per step, with scene edges inside the block on every side."""
    steps, k = 4, 3
    fast = FusedRNN(_random_net(variant, k=k, iterations=steps, kernel_size=kernel_size))
    lib = native.load(kernel_size)
    r = kernel_size // 2
    g = torch.Generator().manual_seed(2)
    u = torch.randn(k, 61, 75, generator=g)
    blocks = [fast._params(t)[1] for t in range(steps)]
    # features of one image per parameter set (the non-recurrent variant's 4), covering the first step's region
    images = {
        id(b): (torch.randn(32, 75 - 2 * r, 61 - 2 * r, generator=g).transpose(1, 2), b.image_proj.flatten(1))
        for b in blocks
    }
    order = list(images)
    which = [order.index(id(b)) for b in blocks]
    edges = [[max(0, e - r * (t + 1)) for e in (9, 13, 7, 11)] for t in range(steps)]
    expected, v = [], u
    for t, b in enumerate(blocks):
        term = native.image_term_rows(*images[id(b)])
        v = native.run_step(lib, v, term, r * t, b.hidden_bias, b.filters, b.out_w, b.out_b)
        _replicate_edges(v, edges[t])
        expected.append(v)
    params = [(b.hidden_bias, b.filters, b.out_w, b.out_b) for b in blocks]
    got = native.run_steps(lib, u, [images[j] for j in order], which, params, edges, band=band)
    assert len(got) == steps
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("variant", VARIANTS)
def test_blocks_shared_between_threads_give_the_same_bits_as_one_thread(variant, monkeypatch):
    """3 x 3 blocks of 32 px (edges, corners, an overhanging last block): threads take whole blocks."""
    net = _random_net(variant)
    image, probs = _inputs(h=90, w=90)
    shared = []
    share = native.share
    monkeypatch.setattr(native, "share", lambda *a: shared.append(a[1]) or share(*a))
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 4, 5):
            torch.set_num_threads(threads)
            outs.append(FusedRNN(net)(image, probs, block=32))
    finally:
        torch.set_num_threads(before)
    assert shared == [9, 9, 9]  # 2-4 threads share the 9 blocks; 5 would idle (under 2 blocks each): split each step
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other, strict=True))


def test_shared_blocks_report_progress_in_order_on_the_callers_thread_and_raise_errors(monkeypatch):
    net = _random_net("class_specific", iterations=2)
    image, probs = _inputs(h=128, w=128)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        FusedRNN(net)(image, probs, block=32, progress=lambda d, n: seen.append((d, n, threading.get_ident())))
        assert [(d, n) for d, n, _ in seen] == [(i, 16) for i in range(1, 17)]
        assert {ident for *_, ident in seen} == {threading.get_ident()}

        calls = []
        run_steps = native.run_steps

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("block 3 failed")
            return run_steps(*args, **kwargs)

        monkeypatch.setattr(native, "run_steps", failing)
        with pytest.raises(RuntimeError, match="block 3 failed"):
            FusedRNN(net)(image, probs, block=32)
        assert len(calls) < 16  # the threads stopped taking blocks
    finally:
        torch.set_num_threads(before)
