"""The CUDA backend: fused inference, bf16 training and GPU-trained models used on a CPU.

Marked ``gpu`` and skipped without a CUDA device (CI has none); ``benchmarks/gpu_run.py`` runs
them on the device machine first. That machine's Python has torch and numpy but no rasterio or
streamlit, so this module imports only ``refiner.models``, ``refiner.train`` and the label
helpers of ``refiner.data.synthetic`` (all rasterio-free at import; ``refiner.models.inference`` is not, it
reads rasters), and builds its fixtures in code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refiner.core.classes import ClassSpec
from refiner.core.metrics import evaluate
from refiner.data.synthetic import coarse_like, degrade_labels
from refiner.models.fused import FusedRNN
from refiner.models.rnn import VARIANTS, RefinerRNN, RNNConfig
from refiner.models.store import load_model, save_model
from refiner.train.losses import segmentation_loss
from refiner.train.rnn import RNNTrainConfig, train_rnn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU tests run on the device machine"),
]


@pytest.fixture
def exact_fp32():
    """Plain fp32 on CUDA: cuDNN convolutions use TF32 by default (10-bit mantissa), off here."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _random_net(variant: str, k: int = 3, iterations: int = 4) -> RefinerRNN:
    torch.manual_seed(1)
    net = RefinerRNN(RNNConfig(k, variant=variant, iterations=iterations)).eval()
    with torch.no_grad():  # non-zero biases too, so every term of the fold is exercised
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _inputs(k: int = 3, h: int = 100, w: int = 90, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g), torch.softmax(3 * torch.randn(1, k, h, w, generator=g), 1)


def _scene(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roads as bright diagonal bands on noisy ground; coarse map: shifted, blocky, blurred labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    labels = (((xx + yy) % 40) < 7).astype(np.uint8)
    image = 0.3 + 0.4 * labels[None] + 0.08 * rng.standard_normal((3, n, n))
    probs = coarse_like(degrade_labels(labels, shift=3, drop=0.0, seed=1), 2, sigma=3.0)
    return image.astype(np.float32), probs, labels


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block", [0, 32])
def test_fused_inference_on_cuda_equals_the_cpu_reference(variant, block, exact_fp32):
    net = _random_net(variant)
    image, probs = _inputs()
    with torch.no_grad():
        ref = net(image, probs, reference=True)
    out = FusedRNN(net.to("cuda"))(image.cuda(), probs.cuda(), block=block)
    assert len(out) == len(ref)
    for a, b in zip(out, ref, strict=True):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=5e-5)


def test_a_bf16_autocast_training_step_lowers_the_loss():
    """The step ``train_rnn`` takes on CUDA: the forward under bf16 autocast, AdaGrad, fp32 weights."""
    image, probs, labels = _scene(96)
    net = RefinerRNN(RNNConfig(2)).cuda().train()
    x, p = torch.from_numpy(image)[None].cuda(), torch.from_numpy(probs)[None].cuda()
    y = torch.from_numpy(labels)[None].long().cuda()
    opt = torch.optim.Adagrad(net.parameters(), lr=0.01)
    seen: list[torch.dtype] = []
    net.blocks[0].image_filters.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = []
    for _ in range(6):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            u = net(x, p)[-1]
            loss = segmentation_loss(u, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert seen and set(seen) == {torch.bfloat16}  # autocast really ran the convolutions in bf16
    assert all(q.dtype == torch.float32 for q in net.parameters())
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_model_trained_on_gpu_loads_and_refines_on_cpu_like_on_the_gpu(tmp_path, exact_fp32):
    image, probs, labels = _scene()
    classes = ClassSpec.parse("background,road")
    cfg = RNNTrainConfig(steps=120, eval_every=40, eval_seconds=None)
    res = train_rnn(image, probs, labels, classes, cfg, device="cuda")
    gpu_net = res.bundle.net
    assert next(gpu_net.parameters()).device.type == "cuda"
    assert res.bundle.info["trained_steps"] == 120
    save_model(res.bundle, tmp_path / "m")
    loaded = load_model(tmp_path / "m", expect="rnn", device="cpu")
    for (n, a), (_, b) in zip(gpu_net.state_dict().items(), loaded.net.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b), n  # the saved weights are the GPU's, bit for bit
    x = res.bundle.normalise(torch.from_numpy(image)[None])
    p = torch.from_numpy(probs)[None]
    on_gpu = FusedRNN(gpu_net)(x.cuda(), p.cuda(), keep_all=False)[-1].cpu()
    on_cpu = FusedRNN(loaded.net)(x, p, keep_all=False)[-1]
    torch.testing.assert_close(on_cpu, on_gpu, rtol=1e-4, atol=1e-4)
    assert (on_cpu.argmax(1) == on_gpu.argmax(1)).float().mean() > 0.999
    # and training on the GPU learnt something: the refined map beats the coarse one
    refined = evaluate(on_cpu[0].argmax(0).numpy().astype(np.uint8), labels, 2).mean_iou
    coarse = evaluate(probs.argmax(0).astype(np.uint8), labels, 2).mean_iou
    assert refined > coarse
