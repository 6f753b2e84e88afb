"""Exact, inference-only RNN: frozen folded weights and a lean forward pass.

:class:`RefinerRNN`'s default path already folds the map filters into the MLP's first layer
(``A_k^M (M * u_k) = (A_k^M M) * u_k``) and computes the image half ``A^N (N * I) + b`` once.
:class:`FusedRNN` freezes those folded tensors once per model (not once per call), and runs
the iterations under ``torch.inference_mode`` with in-place updates, reused buffers and no
per-iteration softmax, on cache-sized blocks of the image. Every operation is the same
function of the same weights, so results equal ``RefinerRNN(..., reference=True)`` to float
rounding (``tests/models/test_fused.py``).

Why blocks: each iteration touches ``K * hidden`` feature maps per pixel (96 for K = 3), and on
a CPU those elementwise passes are memory bound; a 128x128 block's features stay in cache, a
whole tile's do not. Each block is computed with a halo of ``r * T`` pixels (``r`` = filter
radius), so the stitched result is exactly the whole-image one (:mod:`refiner.tiling`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from refiner.models.rnn import RefinerRNN, RNNConfig, probs_to_scores

#: Side of the blocks the CPU path works on (128 was fastest of 96-512 in noisy single-thread
#: measurements on a busy 2-core EPYC; see docs/scale.md). GPUs take the whole window at once.
CPU_BLOCK = 128


@dataclass(frozen=True)
class FoldedBlock:
    """One parameter set with the map filters folded into the MLP's first layer."""

    image_filters: torch.Tensor  # (F, C, k, k): N
    image_proj: torch.Tensor  # (G*hidden, F, 1, 1): A^N
    hidden_bias: torch.Tensor  # (G*hidden,): b
    filters: torch.Tensor  # (G*hidden, 1, k, k): A^M M, per class group
    out_w: torch.Tensor  # (G, hidden)
    out_b: torch.Tensor  # (G,)

    @property
    def groups(self) -> int:
        return int(self.out_w.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.out_w.shape[1])


class FusedRNN:
    """A frozen, exact, fast copy of a :class:`RefinerRNN` for inference (not differentiable).

    ``FusedRNN(net)(image, probs)`` returns the same ``[u_0, ..., u_T]`` as ``net(image, probs)``.
    """

    def __init__(self, net: RefinerRNN, *, dtype: torch.dtype = torch.float32, compile: bool = True) -> None:
        self.cfg: RNNConfig = net.cfg
        self.dtype = dtype
        self.compile = compile
        with torch.no_grad():
            self.blocks = [self._fold(b) for b in net.blocks]
        self.device = self.blocks[0].filters.device

    def _fold(self, blk) -> FoldedBlock:
        filters, proj, out_w, out_b = blk.folded()
        d = self.dtype
        return FoldedBlock(
            image_filters=blk.image_filters.weight.detach().to(d).contiguous(memory_format=torch.channels_last),
            image_proj=proj.detach().to(d).contiguous(),
            hidden_bias=blk.hidden.bias.detach().to(d).contiguous(),
            filters=filters.detach().to(d).contiguous(memory_format=torch.channels_last),
            out_w=out_w.detach().to(d).contiguous(),
            out_b=out_b.detach().to(d).contiguous(),
        )

    def to(self, device: str | torch.device) -> FusedRNN:
        device = torch.device(device)
        self.blocks = [
            FoldedBlock(*(getattr(b, f).to(device) for f in FoldedBlock.__dataclass_fields__)) for b in self.blocks
        ]
        self.device = device
        return self

    @property
    def halo(self) -> int:
        return self.cfg.halo

    def block(self, t: int) -> FoldedBlock:
        return self.blocks[t if len(self.blocks) > 1 else 0]

    def _check(self, iterations: int | None) -> int:
        t_max = self.cfg.iterations if iterations is None else iterations
        if t_max > self.cfg.iterations and self.cfg.variant == "non_recurrent":
            raise ValueError("a non-recurrent RNN cannot run more iterations than it was built with")
        return t_max

    def __call__(
        self,
        image: torch.Tensor,
        probs: torch.Tensor,
        iterations: int | None = None,
        *,
        keep_all: bool = True,
        block: int | None = None,
    ) -> list[torch.Tensor]:
        """Score maps ``[u_0, ..., u_T]`` (only ``[u_T]`` unless ``keep_all``) for (B, C, H, W) inputs.

        ``block`` (pixels) computes the result in blocks of that side with an exact halo;
        default: :data:`CPU_BLOCK` on a CPU, the whole input elsewhere; 0 = whole input.
        """
        t_max = self._check(iterations)
        if block is None:
            block = CPU_BLOCK if image.device.type == "cpu" else 0
        h, w = image.shape[-2:]
        with torch.inference_mode():
            image, probs = image.to(self.dtype), probs.to(self.dtype)
            if not block or (h <= block and w <= block):
                return self._forward(image, probs, t_max, keep_all)
            from refiner.tiling import iter_windows

            n_out = t_max + 1 if keep_all else 1
            b, k = probs.shape[:2]
            outs = [torch.empty(b, k, h, w, dtype=self.dtype, device=probs.device) for _ in range(n_out)]
            halo = (self.cfg.kernel_size // 2) * t_max
            # fixed-size reads (edge windows grow inwards): one shape, so one compiled kernel
            for win in iter_windows(h, w, block, halo, fixed=True):
                rs, cs = win.read
                maps = self._forward(image[..., rs, cs], probs[..., rs, cs], t_max, keep_all)
                cr, cc = win.core_in_read
                for o, m in zip(outs, maps, strict=True):
                    o[..., win.core[0], win.core[1]] = m[..., cr, cc]
            return outs

    def _forward(self, image: torch.Tensor, probs: torch.Tensor, t_max: int, keep_all: bool) -> list[torch.Tensor]:
        r = self.cfg.kernel_size // 2
        b, k, h, w = probs.shape
        cl = torch.channels_last  # oneDNN's fast layout for these convolutions (~10x NCHW here)
        tail = _tail_fn(self.compile and image.device.type == "cpu")
        u = probs_to_scores(probs).contiguous(memory_format=cl)
        maps = [u] if keep_all else []
        terms: dict[int, torch.Tensor] = {}
        for t in range(t_max):
            idx = t if len(self.blocks) > 1 else 0
            fb = self.blocks[idx]
            if idx not in terms:  # the image half of the hidden layer, once per parameter set
                img = F.pad(image, (r, r, r, r), mode="replicate").contiguous(memory_format=cl)
                feats = F.conv2d(img, fb.image_filters).contiguous(memory_format=cl)  # (B, F, H, W)
                proj = fb.image_proj.flatten(1).t()  # (F, G*hidden)
                flat = torch.addmm(fb.hidden_bias, feats.permute(0, 2, 3, 1).reshape(-1, proj.shape[0]), proj)
                terms[idx] = flat.view(b, h, w, -1).permute(0, 3, 1, 2)  # channels-last (B, G*hidden, H, W)
            term = terms[idx]
            padded = F.pad(u, (r, r, r, r), mode="replicate").contiguous(memory_format=cl)
            if fb.groups == 1:  # class-agnostic: one filter bank for every class map
                pre = torch.cat([F.conv2d(padded[:, i : i + 1], fb.filters) for i in range(k)], 1)
                if term.shape[1] != pre.shape[1]:
                    term = terms[idx] = term.repeat(1, k, 1, 1).contiguous(memory_format=cl)
                out_w, out_b = fb.out_w.expand(k, fb.hidden), fb.out_b.expand(k)
            else:
                pre = F.conv2d(padded, fb.filters, groups=k)
                out_w, out_b = fb.out_w, fb.out_b
            u = tail(pre, term, u, out_w.contiguous(), out_b.contiguous())
            if keep_all or t == t_max - 1:
                maps.append(u)
        if not maps:  # t_max == 0
            maps.append(u)
        return maps


def _tail(pre: torch.Tensor, term: torch.Tensor, u: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor):
    """``u + f_out(relu(pre + term))``: the memory-bound part of an iteration, in one pass when compiled."""
    b, kh, h, w = pre.shape
    k = u.shape[1]
    hidden = (pre + term).relu_()
    du = (hidden.view(b, k, kh // k, h, w) * out_w.view(1, k, kh // k, 1, 1)).sum(2)
    return u + du + out_b.view(1, k, 1, 1)


def _eager_tail(pre: torch.Tensor, term: torch.Tensor, u: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor):
    """:func:`_tail` without a compiler: the output layer as one GEMM on channels-last rows.

    (A strided multiply-and-sum over the hidden units is ~10x slower in eager mode.)
    """
    b, kh, h, w = pre.shape
    k = u.shape[1]
    hidden = pre.add_(term).relu_().permute(0, 2, 3, 1).reshape(-1, kh)  # a view when channels-last
    block = torch.block_diag(*out_w.unbind(0)).t()  # (K*hidden, K): class k reads its own units
    du = torch.addmm(out_b, hidden, block).view(b, h, w, k).permute(0, 3, 1, 2)
    return u + du


_COMPILED: dict[str, object] = {}


def _tail_fn(compile: bool):
    """The tail, compiled by TorchInductor into one fused loop when possible (else eager).

    Compiling needs a C++ compiler; when it fails (or ``REFINER_COMPILE=0``) the eager version
    runs, which computes the same values about 3x slower on a CPU.
    """
    if not compile or os.environ.get("REFINER_COMPILE", "1") == "0" or _COMPILED.get("failed"):
        return _eager_tail
    if "fn" not in _COMPILED:
        # static shapes: a kernel per input shape (blocks have one fixed shape), so a given shape
        # gives the same bits in every process, whatever shapes that process saw before
        _COMPILED["fn"] = torch.compile(_tail, dynamic=False)

    def run(*args):
        try:
            return _COMPILED["fn"](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler problem: fall back, same maths
            warnings.warn(f"torch.compile unavailable ({type(exc).__name__}); using eager inference", stacklevel=2)
            _COMPILED["failed"] = True
            return _eager_tail(*args)

    return run


def fused(net: RefinerRNN) -> FusedRNN:
    """The :class:`FusedRNN` of ``net`` on its device (cached on the module; refolded if weights change)."""
    key = tuple((p.data_ptr(), p._version) for p in net.parameters())
    cache = getattr(net, "_fused_cache", None)
    if cache is None or cache[0] != key:
        fr = FusedRNN(net)
        object.__setattr__(net, "_fused_cache", (key, fr))
        return fr
    return cache[1]
