"""The coarse classifier: fully convolutional networks from image to class scores.

``CoarseConfig.arch`` picks the design:

- ``"mnih"``, the paper's (Sec. III): a fully convolutional version of Mnih's aerial network,
  ``64 conv 12x12 /4 -> 128 conv 3x3 -> 128 conv 3x3 -> K conv 9x9 -> deconvolution x4``, ReLU
  on the hidden layers. The first convolution's stride of 4 is what makes the output blurry: the
  classes are decided on a grid four times coarser than the image, then upsampled.
- ``"skip_context"`` (:mod:`refiner.models.coarse_skip`): a light encoder-decoder of about the
  same cost per pixel, with a dilated context block at 1/4 and skip connections from 1/2 and
  full resolution, measured against the paper's under the same time budget (issue #21).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Output pixels the paper's network needs on each side of a window for its prediction there to
#: be exact. 12x12/4, 3x3 and 3x3 at /4, 9x9 at /4, the 8x8 deconvolution: generous upper bound
#: of the receptive-field radius, a multiple of the stride. Other designs: ``CoarseConfig.halo``.
COARSE_HALO = 64
#: The designs, and each one's halo (an upper bound of its receptive-field radius, a multiple of 4).
ARCH_HALO = {"mnih": COARSE_HALO, "skip_context": 96}


@dataclass(frozen=True)
class CoarseConfig:
    """Architecture of the coarse CNN (defaults are the paper's)."""

    num_classes: int
    in_channels: int = 3
    stride: int = 4
    arch: str = "mnih"  # one of ARCH_HALO's keys (see the module's docstring)
    #: Per-class offsets added to the output scores, chosen on validation tiles after training
    #: (:func:`refiner.recipes.pretrain.calibrate_class_bias`): argmax IoU of thin, rare classes such as
    #: roads is very sensitive to the prior a partial-label network ends with. None = no offset.
    class_bias: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCH_HALO:
            raise ValueError(f"unknown coarse architecture {self.arch!r}: one of {', '.join(ARCH_HALO)}")
        if self.stride != 4:
            raise ValueError(f"the coarse networks work at stride 4, not {self.stride}")
        if self.class_bias is not None:
            bias = tuple(float(b) for b in self.class_bias)
            if len(bias) != self.num_classes:
                raise ValueError(f"class_bias has {len(bias)} values for {self.num_classes} classes")
            object.__setattr__(self, "class_bias", bias)

    @property
    def halo(self) -> int:
        """Pixels of context each side of a window for an exact prediction there (a multiple of the stride)."""
        return ARCH_HALO[self.arch]

    def to_dict(self) -> dict[str, Any]:
        """The architecture as JSON, kept in the model's ``config.json``."""
        return asdict(self)


#: The parts of a coarse network that fine-tuning on a tile can train
#: (:mod:`refiner.train.adapt_coarse`): "head" its last layers, "top2" a few more before them,
#: "all" every layer. Each design says where its parts begin (:meth:`CoarseNet.split`).
TRAINABLE_PARTS = ("head", "top2", "all")


@dataclass(frozen=True)
class CoarseSplit:
    """A coarse network cut in two, so that fine-tuning runs the frozen part once and caches it.

    ``top(trunk(x))`` is ``net.scores(x)`` (before the class offsets) for an image ``x`` whose
    sides are multiples of the stride. ``top``'s modules are the network's own, so training them
    trains the network. ``trunk``'s outputs lie on grids ``strides`` times coarser than the
    image; ``reach`` (pixels, a multiple of 4) bounds how far ``top`` looks from a pixel, so its
    scores on a crop of the cached features are exact that far inside the crop.
    """

    trunk: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    top: nn.Module
    strides: tuple[int, ...]
    reach: int


class _Whole(nn.Module):
    """The whole network as the trainable top of a split ("all": nothing is frozen)."""

    def __init__(self, net: CoarseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.net.scores(feats[0])


class _OnCache(nn.Module):
    """Layers that run on a split's one cached feature map (a design with a single trunk output)."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.layers(feats[0])


def whole_split(net: CoarseNet) -> CoarseSplit:
    """The split that trains every layer: the trunk is the image itself."""
    return CoarseSplit(lambda x: (x,), _Whole(net), (1,), net.cfg.halo)


def check_part(part: str) -> None:
    """Refuse a trainable part that is not one of :data:`TRAINABLE_PARTS`."""
    if part not in TRAINABLE_PARTS:
        raise ValueError(f"layers {part!r} is not one of {', '.join(TRAINABLE_PARTS)}")


def _bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """Weights that make a transposed convolution a bilinear upsampler (FCN's initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    w = torch.zeros(channels, channels, size, size)
    for c in range(channels):
        w[c, c] = filt
    return w


class CoarseNet(nn.Module, abc.ABC):
    """What every coarse design shares: any image size, class offsets, scores at full resolution."""

    cfg: CoarseConfig

    @abc.abstractmethod
    def scores(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K, H, W) of an image whose sides are multiples of the stride.

        The hook each design overrides (``CoarseCNN``, ``SkipContextCNN``); the base class only
        pads, crops and adds the class offsets around it.
        """

    @abc.abstractmethod
    def split(self, part: str) -> CoarseSplit:
        """The network cut before its trainable ``part`` (one of :data:`TRAINABLE_PARTS`).

        The second hook each design overrides: only the design knows its layers.
        """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K, H, W) at full resolution for a normalised ``image`` (B, C, H, W) of any size."""
        h, w = image.shape[-2:]
        s = self.cfg.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:  # any size works: pad to a multiple of the stride, crop back after
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
        scores = self.scores(image)[..., :h, :w]
        if self.cfg.class_bias is not None:
            scores = scores + scores.new_tensor(self.cfg.class_bias)[:, None, None]
        return scores


class CoarseCNN(CoarseNet):
    """The paper's Mnih-style FCN: image (B, C, H, W) in [0, 1] -> class scores (B, K, H, W)."""

    def __init__(self, cfg: CoarseConfig) -> None:
        super().__init__()
        if cfg.arch != "mnih":
            raise ValueError(f"CoarseCNN is the paper's design; build {cfg.arch!r} with refiner.models.build_coarse")
        self.cfg = cfg
        s = cfg.stride
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 64, 12, stride=s, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, cfg.num_classes, 9, padding=4),
        )
        # x4 "deconvolution", initialised to bilinear upsampling and learned from there.
        self.upsample = nn.ConvTranspose2d(
            cfg.num_classes, cfg.num_classes, 2 * s, stride=s, padding=s // 2, bias=False
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.upsample.weight.copy_(_bilinear_kernel(cfg.num_classes, 2 * s))

    def scores(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores of an image whose sides are multiples of the stride."""
        return self.upsample(self.features(image))

    def split(self, part: str) -> CoarseSplit:
        """The trainable "head" is the 9x9 classifier and the deconvolution; "top2" adds the 3x3 before."""
        check_part(part)
        if part == "all":
            return whole_split(self)
        start = {"head": 6, "top2": 4}[part]
        frozen = self.features[:start]
        # the 9x9 and one 3x3 at /4 and the deconvolution reach under 8 cells of 4 px
        return CoarseSplit(
            lambda x: (frozen(x),), _OnCache(nn.Sequential(self.features[start:], self.upsample)), (4,), 32
        )
