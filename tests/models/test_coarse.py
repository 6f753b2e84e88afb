import numpy as np
import pytest
import torch

from refiner.models.coarse import COARSE_HALO, TRAINABLE_PARTS, CoarseCNN, CoarseConfig
from refiner.models.coarse_skip import SkipContextCNN
from refiner.models.designs import build_coarse


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


# --------------------------------------------------------------------------- the skip_context design


def _skip_net(num_classes=2):
    torch.manual_seed(0)
    net = build_coarse(CoarseConfig(num_classes, arch="skip_context"))
    for m in net.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_the_skip_context_design_sees_the_image_at_full_resolution_and_any_size():
    net = _skip_net(3)
    assert isinstance(net, SkipContextCNN) and net.cfg.halo == 96
    for h, w in [(64, 64), (67, 53), (13, 9)]:
        assert net(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)
    # a one-pixel change of the image changes the scores at that pixel (the paper's design decides
    # on 4 x 4 cells; this one's last layer sees the image itself)
    x = torch.rand(1, 3, 64, 64)
    x2 = x.clone()
    x2[..., 30, 30] += 1
    diff = (net(x2) - net(x)).abs().sum(1)[0]
    assert diff[30, 30] > 0 and diff[30, 30] >= diff[28, 28]


def test_the_skip_context_halo_covers_its_receptive_field():
    net = _skip_net()
    x = torch.rand(1, 3, 320, 320)
    y = net(x)
    x2 = x.clone()
    x2[..., :, 128 + net.cfg.halo :] = torch.rand_like(x2[..., :, 128 + net.cfg.halo :])
    torch.testing.assert_close(net(x2)[..., :128], y[..., :128])
    # and the halo is not far larger than needed: pixels just past 70 px do reach the output
    x3 = x.clone()
    x3[..., :, 128 + 60 :] = torch.rand_like(x3[..., :, 128 + 60 :])
    assert not torch.allclose(net(x3)[..., :128], y[..., :128])


def test_an_unknown_design_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="mnih, skip_context"):
        CoarseConfig(3, arch="resnet")
    with pytest.raises(ValueError, match="build_coarse"):
        CoarseCNN(CoarseConfig(3, arch="skip_context"))


@pytest.mark.parametrize("arch", ["mnih", "skip_context"])
@pytest.mark.parametrize("part", TRAINABLE_PARTS)
def test_each_split_computes_what_the_whole_network_does(arch, part):
    """Fine-tuning trains ``top`` on cached ``trunk`` outputs: together they must be the network."""
    torch.manual_seed(0)
    net = build_coarse(CoarseConfig(3, arch=arch)).eval()
    split = net.split(part)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats = split.trunk(x)
        assert [f.shape[-1] * s for f, s in zip(feats, split.strides, strict=True)] == [128] * len(feats)
        assert torch.allclose(split.top(feats), net.scores(x), atol=1e-5)
    assert split.reach % 4 == 0 and split.reach <= net.cfg.halo
    # the top's modules are the network's own: training them trains the network
    own = {id(p) for p in net.parameters()}
    assert {id(p) for p in split.top.parameters()} <= own and any(True for _ in split.top.parameters())


@pytest.mark.parametrize("arch", ["mnih", "skip_context"])
def test_a_split_reaches_no_further_than_it_says(arch):
    """A change of the cached features beyond ``reach`` leaves the top's scores at a pixel alone."""
    torch.manual_seed(1)
    net = build_coarse(CoarseConfig(2, arch=arch)).eval()
    split = net.split("head")
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        feats = split.trunk(x)
        base = split.top(feats)
        far = 96 + split.reach  # first pixel row beyond the reach of row 96
        moved = tuple(f.clone() for f in feats)
        for f, s in zip(moved, split.strides, strict=True):
            f[..., far // s :, :] += 5.0
        assert torch.allclose(split.top(moved)[..., :97, :], base[..., :97, :], atol=1e-5)


def test_an_unknown_trainable_part_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="head, top2, all"):
        CoarseCNN(CoarseConfig(2)).split("middle")


def test_a_coarse_design_without_its_hooks_cannot_be_built():
    """scores() and split() are the two hooks each design defines: leaving one out fails at construction."""
    from refiner.models.coarse import CoarseNet

    class ScoresOnly(CoarseNet):
        def scores(self, image):  # noqa: ANN001, ANN202
            return image

    with pytest.raises(TypeError, match="split"):
        ScoresOnly()
