"""The refinement RNN of Maggiori et al. (2017), Eqs. 5-8.

One iteration computes, for every class map ``u_k``::

    features_k = [M_1 * u_k, ..., M_32 * u_k, N_1 * I, ..., N_32 * I]      (Eq. 7)
    du_k       = f_k(features_k)     f_k: 64 -> 32 (ReLU) -> 1 (linear)     (Eq. 6)
    u_k       <- u_k + du_k                                                 (Eq. 8)

The ``M_i`` (5x5) are shared by every class, the ``N_j`` (5x5) see the image and do not depend
on the iteration, so they are computed once. The per-class MLPs are grouped 1x1 convolutions.
Weights are shared across the ``T`` unrolled iterations (backpropagation through time), except
in the ``non_recurrent`` variant, where each iteration owns its parameters.

Two formulations of the same function live here. ``reference=True`` mirrors the equations one
to one. The default, *fused* one, uses that the MLP's first layer is linear in ``M_i * u_k``:
``A_k [M * u_k; N * I] + b_k = (A_k^M M) * u_k + (A_k^N (N * I) + b_k)``, so each iteration is
one 5x5 convolution per class with folded filters ``A_k^M M`` (32 outputs instead of 32 features
then a 64 -> 32 matrix), and the image half is computed once for all iterations. The folded
filters are computed from the parameters inside ``forward``, so training differentiates the
paper's parameters ``M``, ``N``, ``A``, ``b`` exactly; only the arithmetic is cheaper (about 3x).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

Variant = Literal["class_specific", "class_agnostic", "non_recurrent"]
VARIANTS: tuple[str, ...] = ("class_specific", "class_agnostic", "non_recurrent")

#: Probabilities are clipped here before taking logs, so a coarse map with exact zeros still
#: gives finite scores (log(1e-4) = -9.2).
PROB_FLOOR = 1e-4


@dataclass(frozen=True)
class RNNConfig:
    """Architecture of a refinement RNN (defaults are the paper's)."""

    num_classes: int
    in_channels: int = 3
    map_filters: int = 32
    image_filters: int = 32
    kernel_size: int = 5
    hidden: int = 32
    iterations: int = 5
    variant: str = "class_specific"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown RNN variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.num_classes < 2:
            raise ValueError("a refinement RNN needs at least 2 classes")
        if self.kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd so the maps stay aligned")
        if self.iterations < 1:
            raise ValueError("iterations must be at least 1")

    @property
    def halo(self) -> int:
        """Receptive-field radius in pixels: how far outside a window the result depends on."""
        # u_T(x) reads u_{T-1} within r, ... u_0 within r*T; the image features enter each step
        # pointwise, so I is read within r*(T-1) + r = r*T as well.
        return (self.kernel_size // 2) * self.iterations

    def to_dict(self) -> dict[str, Any]:
        """The architecture as JSON, kept in the model's ``config.json``."""
        return asdict(self)


def probs_to_scores(probs: torch.Tensor) -> torch.Tensor:
    """Turn class probabilities (B, K, H, W) into zero-centred score maps ``u_0``.

    ``softmax(log p - mean_k log p) == p``, so nothing is lost; centring keeps the scores small,
    which is what makes the Glorot-initialised RNN start close to the identity.
    """
    logp = torch.log(probs.clamp_min(PROB_FLOOR))
    return logp - logp.mean(dim=1, keepdim=True)


if TYPE_CHECKING:  # what the type checker sees where torch's types are looser than how they are built here

    class _BiasedConv2d(nn.Conv2d):
        """An ``nn.Conv2d`` built with a bias (torch types ``bias`` as optional)."""

        bias: torch.Tensor

    class _Blocks(nn.ModuleList):
        """``RefinerRNN.blocks``: an ``nn.ModuleList`` of :class:`IterationParams` (torch types items as ``Module``)."""

        @overload
        def __getitem__(self, idx: slice) -> _Blocks: ...
        @overload
        def __getitem__(self, idx: int) -> IterationParams: ...
        def __getitem__(self, idx: int | slice) -> Any: ...
        def __iter__(self) -> Iterator[IterationParams]: ...

else:  # at run time exactly the torch classes: same modules, repr and state_dict
    _BiasedConv2d, _Blocks = nn.Conv2d, nn.ModuleList


def _glorot(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class IterationParams(nn.Module):
    """The parameters of one iteration: map filters M, image filters N, the MLP(s)."""

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        k, p = cfg.kernel_size, cfg.kernel_size // 2
        self.cfg = cfg
        # M_i: one bank of filters shared by every class heat map (Eq. 7, no bias).
        self.map_filters = nn.Conv2d(1, cfg.map_filters, k, padding=p, padding_mode="replicate", bias=False)
        # N_j: filters on the image (Eq. 7, no bias).
        self.image_filters = nn.Conv2d(
            cfg.in_channels, cfg.image_filters, k, padding=p, padding_mode="replicate", bias=False
        )
        feats = cfg.map_filters + cfg.image_filters
        groups = 1 if cfg.variant == "class_agnostic" else cfg.num_classes
        # Per-class MLP f_k applied densely = grouped 1x1 convolutions (one group per class).
        self.hidden = _BiasedConv2d(feats * groups, cfg.hidden * groups, 1, groups=groups)
        self.output = _BiasedConv2d(cfg.hidden * groups, groups, 1, groups=groups)
        _glorot(self)

    @property
    def groups(self) -> int:
        """Class groups G of the MLP: one per class, or 1 for the class-agnostic variant (one shared MLP)."""
        return 1 if self.cfg.variant == "class_agnostic" else self.cfg.num_classes

    def folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused parameters: map filters folded into the MLP's first layer.

        Returns ``filters`` (G*hidden, 1, k, k), ``image_proj`` (G*hidden, image_filters, 1, 1),
        and the output layer's ``weight`` (G, hidden) and ``bias`` (G), G = groups.
        """
        cfg, g = self.cfg, self.groups
        a = self.hidden.weight.view(g, cfg.hidden, cfg.map_filters + cfg.image_filters)
        m = self.map_filters.weight.view(cfg.map_filters, -1)  # (32, k*k)
        filters = _fixed_order_matmul(a[:, :, : cfg.map_filters], m)
        filters = filters.reshape(g * cfg.hidden, 1, cfg.kernel_size, cfg.kernel_size)
        image_proj = a[:, :, cfg.map_filters :].reshape(g * cfg.hidden, cfg.image_filters, 1, 1)
        return filters, image_proj, self.output.weight.view(g, cfg.hidden), self.output.bias

    def image_term(self, image: torch.Tensor, image_proj: torch.Tensor) -> torch.Tensor:
        """``A^N (N * I) + b``: the iteration-independent half of the hidden layer, (B, G*hidden, H, W)."""
        return F.conv2d(self.image_features(image), image_proj, self.hidden.bias)

    def fused_step(
        self, u: torch.Tensor, image_term: torch.Tensor, filters: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor
    ) -> torch.Tensor:
        """``u + du`` computed with folded filters; equals :meth:`step` up to float rounding."""
        b, k, h, w = u.shape
        r = self.cfg.kernel_size // 2
        g, hid = out_w.shape
        padded = F.pad(u, (r, r, r, r), mode="replicate")
        if g == 1:  # class-agnostic: the same filters on every class map
            pre = F.conv2d(padded.reshape(b * k, 1, h + 2 * r, w + 2 * r), filters).view(b, k, hid, h, w)
            pre = pre + image_term.view(b, 1, hid, h, w)
        else:
            pre = F.conv2d(padded, filters, groups=k).view(b, k, hid, h, w) + image_term.view(b, k, hid, h, w)
        hidden = F.relu(pre).view(b, k * hid, h, w)
        du = F.conv2d(hidden, out_w.expand(k, hid).reshape(k, hid, 1, 1), out_b.expand(k), groups=k)
        return u + du

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """``N * I``: (B, C, H, W) -> (B, image_filters, H, W)."""
        return self.image_filters(image)

    def step(self, u: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        """One update ``u + du`` for score maps ``u`` (B, K, H, W)."""
        b, k, h, w = u.shape
        map_feats = self.map_filters(u.reshape(b * k, 1, h, w))  # (B*K, 32, H, W)
        img = image_feats.unsqueeze(1).expand(b, k, *image_feats.shape[1:])  # (B, K, 32, H, W)
        feats = torch.cat([map_feats.reshape(b, k, -1, h, w), img], dim=2)  # (B, K, 64, H, W)
        if self.cfg.variant == "class_agnostic":
            du = self.output(F.relu(self.hidden(feats.reshape(b * k, -1, h, w)))).reshape(b, k, h, w)
        else:
            du = self.output(F.relu(self.hidden(feats.reshape(b, -1, h, w))))
        return u + du


class RefinerRNN(nn.Module):
    """Iterative refinement of class score maps guided by the image.

    ``forward(image, probs)`` returns the score maps of every iteration, ``[u_0, ..., u_T]``;
    ``softmax`` of ``u_T`` is the refined probability map.
    """

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.iterations if cfg.variant == "non_recurrent" else 1
        self.blocks = _Blocks([IterationParams(cfg) for _ in range(n)])

    def keep_classes(self, keep: Sequence[int]) -> RefinerRNN:
        """A copy for fewer (or reordered) classes: class ``i`` of the copy is class ``keep[i]`` here.

        Every weight is the same; the class-specific MLPs of the classes not kept are dropped (the
        class-agnostic variant's one MLP serves any classes). A background/building/road RNN kept
        at (0, 2) refines background/road maps: what a 2-class target fine-tunes from, as the
        coarse CNN's building is merged into its background.
        """
        keep = [int(i) for i in keep]
        if len(keep) < 2 or len(set(keep)) != len(keep) or not all(0 <= i < self.cfg.num_classes for i in keep):
            raise ValueError(f"keep {keep}: at least two distinct classes of the {self.cfg.num_classes} of this RNN")
        out = RefinerRNN(replace(self.cfg, num_classes=len(keep)))
        state = self.state_dict()
        if self.cfg.variant != "class_agnostic":
            hid = self.cfg.hidden
            for name, value in list(state.items()):
                if name.endswith(("hidden.weight", "hidden.bias")):
                    state[name] = value.reshape(self.cfg.num_classes, hid, *value.shape[1:])[keep].reshape(
                        len(keep) * hid, *value.shape[1:]
                    )
                elif name.endswith(("output.weight", "output.bias")):
                    state[name] = value[keep]
        out.load_state_dict(state)
        return out

    def block(self, t: int) -> IterationParams:
        """The parameters of iteration ``t``: its own in the non-recurrent variant, else the shared set."""
        return self.blocks[t if len(self.blocks) > 1 else 0]

    def forward(
        self, image: torch.Tensor, probs: torch.Tensor, iterations: int | None = None, *, reference: bool = False
    ) -> list[torch.Tensor]:
        """Refine; ``image`` (B, C, H, W) normalised, ``probs`` (B, K, H, W) coarse probabilities.

        Returns the score maps ``[u_0, ..., u_T]``. ``reference=True`` evaluates Eqs. 5-8 literally
        (for tests); the default fused path computes the same values faster.
        """
        t_max = self.cfg.iterations if iterations is None else iterations
        if t_max > self.cfg.iterations and self.cfg.variant == "non_recurrent":
            raise ValueError("a non-recurrent RNN cannot run more iterations than it was built with")
        u = probs_to_scores(probs)
        maps = [u]
        if reference:
            shared_feats = self.blocks[0].image_features(image) if len(self.blocks) == 1 else None
            for t in range(t_max):
                blk = self.block(t)
                u = blk.step(u, shared_feats if shared_feats is not None else blk.image_features(image))
                maps.append(u)
            return maps
        prepared = {}
        for t in range(t_max):
            blk = self.block(t)
            if id(blk) not in prepared:  # fold once per parameter set, image term once too
                filters, proj, out_w, out_b = blk.folded()
                prepared[id(blk)] = (blk.image_term(image, proj), filters, out_w, out_b)
            u = blk.fused_step(u, *prepared[id(blk)])
            maps.append(u)
        return maps


def _fixed_order_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (..., n) x (n, m), summed over ``n`` in a fixed order in float64, rounded once.

    Why not ``a @ b``: MKL's GEMM splits its work by thread count and rounds differently with
    each split (seen on a 2-core AMD EPYC: 3 threads gave other folded filters than 1 or 2, so
    the class maps differed in the 4th digit). The folded filters feed every iteration, so
    inference promises the same bits whatever the thread count only if this fold is computed
    the same way everywhere: element-wise products summed one term at a time (no reduction
    kernel, nothing split between threads), in float64 so the single rounding to float32 at the
    end is the only one. The matrices are tiny (96 x 32 x 25 for K = 3), so this costs
    microseconds, and it stays differentiable for training.
    """
    if a.device.type == "cuda":  # one float64 GEMM: no CPU thread split there, and no loop of tiny launches
        return (a.double() @ b.double()).to(a.dtype)
    wide = torch.float32 if a.device.type == "mps" else torch.float64  # MPS has no float64
    acc = torch.zeros(*a.shape[:-1], b.shape[-1], dtype=wide, device=a.device)
    a64, b64 = a.to(wide), b.to(wide)
    for i in range(a.shape[-1]):
        acc = acc + a64[..., i : i + 1] * b64[i]
    return acc.to(a.dtype)
