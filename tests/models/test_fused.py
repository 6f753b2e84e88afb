"""The inference-only fused RNN equals the paper's equations (Eqs. 5-8) to float rounding."""

import shutil

import pytest
import torch

from refiner.models import fused as fused_module
from refiner.models import native
from refiner.models.fused import (
    CPU_FEATURE_BYTES,
    NATIVE_FEATURE_BYTES,
    FusedRNN,
    cpu_block,
    feature_budget,
    fused,
    scene_window,
)
from refiner.models.rnn import VARIANTS, RefinerRNN, RNNConfig

#: The three ways an iteration runs on a CPU: the native kernel, torch ops with a compiled tail, eager torch ops.
PATHS = {"native": {}, "compiled": {"native": False}, "eager": {"native": False, "compile": False}}


def _inputs(b=1, k=3, h=45, w=38, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, h, w, generator=g)
    probs = torch.softmax(3 * torch.randn(b, k, h, w, generator=g), 1)
    return image, probs


def _random_net(variant: str, k: int = 3, iterations: int = 4, **arch) -> RefinerRNN:
    torch.manual_seed(1)
    net = RefinerRNN(RNNConfig(k, variant=variant, iterations=iterations, **arch)).eval()
    with torch.no_grad():  # non-zero biases too, so every term of the fold is exercised
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(
    ("variant", "block", "path"),
    [(v, b, p) for v in VARIANTS for b in (0, 16, 32) for p in ("native", "eager")]
    + [("class_specific", 32, "compiled"), ("class_agnostic", 0, "compiled"), ("non_recurrent", 32, "compiled")],
)
def test_fused_inference_equals_the_reference_equations(variant, block, path):
    """Blocks of 32 px on 100 x 90: interior blocks, borders, corners and a last block overhanging the edge."""
    net = _random_net(variant)
    image, probs = _inputs(k=3, h=100, w=90) if block == 32 else _inputs(k=3)
    with torch.no_grad():
        ref = net(image, probs, reference=True)
    out = FusedRNN(net, **PATHS[path])(image, probs, block=block)
    assert len(out) == len(ref) == net.cfg.iterations + 1
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a.contiguous(), b, rtol=1e-4, atol=2e-5)
    last = FusedRNN(net, **PATHS[path])(image, probs, keep_all=False, block=block)
    assert len(last) == 1
    torch.testing.assert_close(last[0].contiguous(), ref[-1], rtol=1e-4, atol=2e-5)


needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the native kernel cannot be built")


@needs_cc
def test_the_native_kernel_builds_where_a_c_compiler_is_present():
    assert native.load(5) is not None and native.load(3) is not None


@needs_cc
@pytest.mark.parametrize(
    ("variant", "arch", "shape"),
    [
        ("class_specific", {"kernel_size": 3}, (2, 4, 41, 53)),  # another filter size, batch of 2, 4 classes
        ("class_specific", {"hidden": 12}, (1, 2, 37, 70)),  # hidden units not a multiple of the kernel's 8
        ("class_agnostic", {"hidden": 20, "kernel_size": 3}, (1, 3, 30, 33)),
        ("non_recurrent", {}, (2, 2, 44, 29)),
    ],
)
def test_the_native_kernel_equals_the_reference_for_other_architectures(variant, arch, shape, monkeypatch):
    b, k, h, w = shape
    net = _random_net(variant, k=k, iterations=3, **arch)
    image, probs = _inputs(b=b, k=k, h=h, w=w)
    with torch.no_grad():
        ref = net(image, probs, reference=True)
    steps = []
    run_step = native.run_step
    monkeypatch.setattr(native, "run_step", lambda *a: steps.append(1) or run_step(*a))
    out = FusedRNN(net)(image, probs, block=0)
    assert len(steps) == b * 3  # every iteration of every image went through the kernel
    for a, r in zip(out, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("path", ["native", "compiled", "eager"])
def test_inference_gives_the_same_bits_whatever_the_thread_count(path):
    """Dask workers and the local run may use other thread counts: the class maps must still match byte for byte.

    Odd counts matter: on a 2-core AMD EPYC (AVX2) MKL's GEMM rounded the folded filters
    differently with 3 threads than with 1 or 2 (see ``rnn._fixed_order_matmul``).
    """
    if path == "native" and shutil.which("cc") is None:
        pytest.skip("no C compiler: the native kernel cannot be built")
    net = _random_net("class_specific")
    image, probs = _inputs(h=120, w=75)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            outs.append(FusedRNN(net, **PATHS[path])(image, probs, block=0))
    finally:
        torch.set_num_threads(before)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other, strict=True))


def test_the_folded_filters_are_the_same_whatever_the_thread_count():
    """The fold ``A^M M`` feeds every iteration, so it must not depend on how a GEMM splits its work."""
    net = _random_net("class_specific", k=4)
    before = torch.get_num_threads()
    try:
        folds = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            with torch.no_grad():
                folds.append(net.blocks[0].folded()[0])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(folds[0], f) for f in folds[1:])
    blk = net.blocks[0]
    a = blk.hidden.weight.view(4, 32, 64)[:, :, :32].double()
    exact = (a @ blk.map_filters.weight.view(32, -1).double()).reshape(folds[0].shape)
    torch.testing.assert_close(folds[0].double(), exact, rtol=1e-6, atol=1e-7)  # one float32 rounding


def test_kernels_are_cached_where_they_can_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_CACHE", str(tmp_path / "cache"))
    assert native.cache_dir() == tmp_path / "cache" / "native" and native.cache_dir().is_dir()
    (tmp_path / "ro").write_text("a file, so no folder can be made below it")
    monkeypatch.setenv("REFINER_CACHE", str(tmp_path / "ro"))
    fallback = native.cache_dir()
    assert fallback.is_dir() and not fallback.is_relative_to(tmp_path)


def test_without_a_working_compiler_inference_warns_once_and_uses_the_torch_ops(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_CACHE", str(tmp_path))  # no kernel built before
    monkeypatch.setenv("CC", "false" if shutil.which("false") else "no-such-compiler")  # always fails
    monkeypatch.setattr(native, "_LIBS", {})
    net = _random_net("class_agnostic", iterations=2)
    image, probs = _inputs(h=40, w=40)
    with pytest.warns(UserWarning, match="native RNN kernel unavailable"):
        out = FusedRNN(net)(image, probs, block=0)[-1]
    with torch.no_grad():
        torch.testing.assert_close(out.contiguous(), net(image, probs, reference=True)[-1], rtol=1e-4, atol=2e-5)
    assert native.load(5) is None and not list(tmp_path.rglob("*.so"))  # no half-built files left
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # not even a program
    with pytest.warns(UserWarning, match="native RNN kernel unavailable"):
        assert native.load(5) is None
    assert not list(tmp_path.rglob("*.so"))


def test_narrow_inputs_and_refiner_native_0_use_the_torch_ops(monkeypatch):
    net = _random_net("class_specific", iterations=2)
    image, probs = _inputs(h=12, w=12)  # narrower than the kernel's 16-pixel vectors
    with torch.no_grad():
        ref = net(image, probs, reference=True)[-1]
    torch.testing.assert_close(FusedRNN(net)(image, probs, block=0)[-1], ref, rtol=1e-4, atol=2e-5)
    monkeypatch.setenv("REFINER_NATIVE", "0")
    assert native.load(5) is None


def test_fewer_iterations_and_the_non_recurrent_limit():
    net = _random_net("class_specific", iterations=3)
    image, probs = _inputs()
    with torch.no_grad():
        ref = net(image, probs, iterations=5, reference=True)
    out = FusedRNN(net, compile=False)(image, probs, iterations=5)
    torch.testing.assert_close(out[-1].contiguous(), ref[-1], rtol=1e-4, atol=2e-5)
    with pytest.raises(ValueError, match="non-recurrent"):
        FusedRNN(_random_net("non_recurrent", iterations=2), compile=False)(image, probs, iterations=3)


def test_the_cached_fold_follows_weight_updates():
    net = _random_net("class_specific")
    image, probs = _inputs()
    first = fused(net)
    assert fused(net) is first  # folded once, reused
    with torch.no_grad():
        net.blocks[0].hidden.bias.add_(1.0)
    again = fused(net)
    assert again is not first
    with torch.no_grad():
        ref = net(image, probs, reference=True)[-1]
    torch.testing.assert_close(again(image, probs, keep_all=False)[0].contiguous(), ref, rtol=1e-4, atol=2e-5)


def test_the_native_budget_is_capped_by_the_machines_caches(monkeypatch):
    """Where L3 + L2s hold less than the Xeon-measured budget (a 2-core EPYC: 17 MiB), blocks shrink to fit."""
    monkeypatch.setattr(fused_module, "_cache_bytes", lambda: 17 * 2**20)
    assert fused_module.native_budget() == 17 * 2**20 and cpu_block(96, budget=17 * 2**20) == 192
    monkeypatch.setattr(fused_module, "_cache_bytes", lambda: 64 * 2**20)
    assert fused_module.native_budget() == NATIVE_FEATURE_BYTES
    monkeypatch.setattr(fused_module, "_cache_bytes", lambda: None)  # unknown: the measured default
    assert fused_module.native_budget() == NATIVE_FEATURE_BYTES


def test_blocks_shrink_with_more_feature_maps_and_report_progress():
    sides = [cpu_block(k * 32) for k in (2, 3, 4, 6, 10, 200)]
    assert sides == sorted(sides, reverse=True) and sides[-1] == 64 and all(s % 32 == 0 for s in sides)
    for k, side in zip((2, 3, 4, 6), sides, strict=False):  # the largest that fits the cache budget
        assert 4 * k * 32 * (side + 20) ** 2 <= CPU_FEATURE_BYTES < 4 * k * 32 * (side + 52) ** 2
    assert cpu_block(96, budget=NATIVE_FEATURE_BYTES) == 256 > cpu_block(96) == 192  # K = 3, the native kernel
    assert feature_budget(RNNConfig(3), use_native=False) == CPU_FEATURE_BYTES
    net = _random_net("class_specific", iterations=2)
    image, probs = _inputs(h=45, w=38)
    seen: list[tuple[int, int]] = []
    FusedRNN(net, compile=False)(image, probs, block=16, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(i, 4) for i in range(1, 5)]  # sides are multiples of 32: 2 x 2 blocks, in order


def test_scene_windows_read_whole_blocks():
    for k, t in ((2, 5), (3, 5), (2, 2)):
        cfg = RNNConfig(k, iterations=t)
        halo = 2 * t
        window = scene_window(cfg)
        assert window > 512 and (window + 2 * halo) % cpu_block(k * 32, halo, feature_budget(cfg)) == 0


def test_compiled_kernels_keep_compiling_past_dynamos_default_limit_in_any_thread():
    """Dynamo's config is per thread (the app computes in Streamlit's threads); past its default of
    8 kernels it would silently fall back to eager code, 3x slower and with other rounding."""
    import threading

    from torch._dynamo.utils import counters

    net = _random_net("class_specific", iterations=1)
    fast = FusedRNN(net, native=False)
    fast(*_inputs(h=19, w=19), block=0)  # the first kernel, compiled in this thread
    sizes = range(20, 31)  # 11 more shapes, one kernel each, in another thread
    outs = {}
    thread = threading.Thread(target=lambda: outs.update({n: fast(*_inputs(h=n, w=n), block=0)[-1] for n in sizes}))
    thread.start()
    thread.join()
    assert sorted(outs) == list(sizes)
    assert not [k for k in counters["unimplemented"] if "recompile limit" in k.lower()]


@needs_cc
def test_a_kernel_is_built_under_a_temporary_name_and_renamed_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_CACHE", str(tmp_path))  # no kernel built before
    monkeypatch.setattr(native, "_LIBS", {})
    assert native.load(3) is not None
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].name.startswith("rnn_step_k3_") and built[0].suffix == ".so"  # no temporaries
