import numpy as np
import torch

from refiner.models.coarse import COARSE_HALO, CoarseCNN, CoarseConfig


def test_architecture_is_the_papers_fcn():
    net = CoarseCNN(CoarseConfig(3))
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (64, (12, 12), (4, 4)),
        (128, (3, 3), (1, 1)),
        (128, (3, 3), (1, 1)),
        (3, (9, 9), (1, 1)),
    ]
    assert net.upsample.stride == (4, 4)


def test_output_has_input_size_for_any_size():
    net = CoarseCNN(CoarseConfig(2)).eval()
    for h, w in [(64, 64), (67, 53), (13, 9)]:
        assert net(torch.rand(1, 3, h, w)).shape == (1, 2, h, w)


def test_deconvolution_starts_as_bilinear_upsampling():
    net = CoarseCNN(CoarseConfig(2)).eval()
    coarse = torch.rand(1, 2, 8, 8)
    up = net.upsample(coarse)
    assert up.shape[-2:] == (32, 32)
    # interior of a bilinear upsampling of a constant map is that constant
    const = net.upsample(torch.ones(1, 2, 8, 8))
    np.testing.assert_allclose(const[..., 4:-4, 4:-4].detach().numpy(), 1.0, atol=1e-6)


def test_halo_covers_the_receptive_field():
    net = CoarseCNN(CoarseConfig(2)).eval()
    x = torch.rand(1, 3, 256, 256)
    y = net(x)
    x2 = x.clone()
    x2[..., :, 128 + COARSE_HALO :] = torch.rand_like(x2[..., :, 128 + COARSE_HALO :])
    # changing pixels beyond the halo must not change the output left of column 128
    torch.testing.assert_close(net(x2)[..., :128], y[..., :128])
