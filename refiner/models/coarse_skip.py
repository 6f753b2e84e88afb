"""A stronger coarse design at about the paper's cost: context at 1/4, detail from skip connections.

The paper's network decides every class on a grid four times coarser than the image and
upsamples it, so a 7 m road or a small house is drawn from 4 x 4 m cells. This design (``arch =
"skip_context"``) widens the context with a dilated block at 1/4 and brings the detail back
through a skip from the 1/2 layers and a last convolution that sees the image itself, as U-Net
and DeepLab v3+ do, with widths cut so it trains on a CPU:

    1/2   32: conv 3x3 /2, conv 3x3                         -> skip
    1/4   64: conv 3x3 /2, conv 3x3, three residual 3x3 convs dilated 2, 4, 8 (context)
    1/2   32: x2 bilinear, concatenated with the skip, conv 3x3
    full   K: x2 bilinear, concatenated with the image, conv 3x3 (the scores)

A pixel costs about 21 k multiply-adds against the paper's 17 k, but small-channel layers run
slower on a CPU: a training step of 16 patches of 128 x 128 px takes about 1.9 times the
paper's (0.77 against 0.42 s on one Zen 2 core), which is why the two are compared at equal
training *time* (docs/results.md). Batch normalisation after every hidden convolution (a fixed
affine map in eval mode, so tiled prediction stays exact). Receptive-field radius about 74 px:
``CoarseConfig.halo`` 96.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refiner.models.coarse import CoarseConfig, CoarseNet, CoarseSplit, check_part, whole_split


def _conv(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (same size, or halved by ``stride`` 2), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


class _Decoder(nn.Module):
    """The layers after the 1/4 encoder (optionally the context block too), on cached features."""

    def __init__(self, net: SkipContextCNN, with_context: bool) -> None:
        super().__init__()
        self.context = net.context if with_context else nn.Identity()
        self.dec_half, self.classify = net.dec_half, net.classify

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        quarter, f1, image = feats
        return _decode(self.context(quarter), f1, image, self.dec_half, self.classify)


def _decode(
    f2: torch.Tensor, f1: torch.Tensor, image: torch.Tensor, dec_half: nn.Module, classify: nn.Module
) -> torch.Tensor:
    """Class scores from the context at 1/4, the skip at 1/2 and the image (the decoder)."""
    up = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
    d1 = dec_half(torch.cat([up, f1], 1))
    up = F.interpolate(d1, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return classify(torch.cat([up, image], 1))


class SkipContextCNN(CoarseNet):
    """Encoder-decoder FCN: image (B, C, H, W) -> class scores (B, K, H, W); see the module docstring."""

    def __init__(self, cfg: CoarseConfig, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        if cfg.arch != "skip_context":
            raise ValueError(f"SkipContextCNN builds arch 'skip_context', not {cfg.arch!r}")
        self.cfg = cfg
        w1, w2 = widths
        self.enc_half = nn.Sequential(_conv(cfg.in_channels, w1, stride=2), _conv(w1, w1))
        self.enc_quarter = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.context = nn.Sequential(*[_Residual(_conv(w2, w2, dilation=d)) for d in (2, 4, 8)])
        self.dec_half = _conv(w2 + w1, w1)
        self.classify = nn.Conv2d(w1 + cfg.in_channels, cfg.num_classes, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def scores(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores of an image whose sides are multiples of 4."""
        f1 = self.enc_half(image)
        return _decode(self.context(self.enc_quarter(f1)), f1, image, self.dec_half, self.classify)

    def split(self, part: str) -> CoarseSplit:
        """The trainable "head" is the decoder (the 3x3 at 1/2, the last 3x3); "top2" adds the context block."""
        check_part(part)
        if part == "all":
            return whole_split(self)
        with_context = part == "top2"

        def trunk(image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            f1 = self.enc_half(image)
            quarter = self.enc_quarter(f1)
            return (quarter if with_context else self.context(quarter), f1, image)

        # the decoder reaches 1 cell at 1/4, 2 at 1/2 and 1 px (under 16 px); the context block's
        # three dilated 3x3 convolutions add 2 + 4 + 8 cells at 1/4
        return CoarseSplit(trunk, _Decoder(self, with_context), (4, 2, 1), 16 + (56 if with_context else 0))
