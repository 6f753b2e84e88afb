"""Exact, inference-only RNN: frozen folded weights and a lean forward pass.

:class:`RefinerRNN`'s default path already folds the map filters into the MLP's first layer
(``A_k^M (M * u_k) = (A_k^M M) * u_k``) and computes the image half ``A^N (N * I) + b`` once.
:class:`FusedRNN` freezes those folded tensors once per model (not once per call), and runs
the iterations under ``torch.inference_mode`` with in-place updates, reused buffers and no
per-iteration softmax, on cache-sized blocks of the image. Every operation is the same
function of the same weights, so results equal ``RefinerRNN(..., reference=True)`` to float
rounding (``tests/models/test_fused.py``).

On a CPU each iteration runs in a native kernel (:mod:`refiner.models.native`) that keeps a
pixel's hidden units in registers; without a C compiler, in torch ops (a grouped convolution and
a compiled tail), which compute the same values more slowly. With the kernel, torch's threads
take whole blocks (two or more per thread; fewer: each step's rows are split between them), and
a block's iterations run band by band on its thread (:func:`native.run_steps`), so a tile costs
one join between threads, not one per step, and a busy neighbour on the server slows refinement
by no more than its share of the cores (issue 25, ``benchmarks/rnn_contention.py``).

Why blocks: each iteration touches ``K * hidden`` feature maps per pixel (96 for K = 3), and on
a CPU those passes are memory bound; a 256x256 block's features stay in cache, a whole tile's
do not. Each block is computed with a halo of ``r * T`` pixels (``r`` = filter radius), so the
stitched result is exactly the whole-image one (:mod:`refiner.core.windows`). Bigger blocks waste less
on halos until their features fall out of the cache (see :func:`cpu_block`), and each step only
computes the region later steps still need (for a 256 px core and T = 5, 1.06x the core's
pixels per step on average, against 1.16x if every step covered the whole padded block).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from refiner.core.windows import even_size
from refiner.models import native
from refiner.models.rnn import IterationParams, RefinerRNN, RNNConfig, probs_to_scores

#: Bytes of one set of hidden features a CPU block may hold (``K * hidden`` fp32 maps over the
#: block and its halo) with the torch ops, which keep two such sets (pre-activations and image
#: term). Measured on a quiet 2-core EPYC with 32 MiB of L3: time per pixel falls as blocks grow
#: (less halo), then jumps 1.5-2x once a block's features pass ~28 MB (K = 2 at a 320 px side,
#: K = 3 at 256 px). 20 MiB keeps clear of that cliff; a 2-core Xeon (2 MiB L2 a core) agreed
#: (``benchmarks/rnn_profile.py --torch-ops``: 192 px best, 256 px 2.2x slower).
CPU_FEATURE_BYTES = 20 * 2**20

#: The same for the native kernel (:mod:`refiner.models.native`), which keeps only the image
#: term: on the 2-core Xeon, K = 3 ran best at 256 px (29 MB of term), 1.6x slower at 320 px
#: (``benchmarks/rnn_profile.py``).
NATIVE_FEATURE_BYTES = 28 * 2**20


@functools.cache
def _cache_bytes() -> int | None:
    """Last-level cache plus all L2s of this machine (Linux sysfs), or None where unknown."""
    sizes: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        except (OSError, ValueError):
            continue
        if level >= 2:
            sizes[level] = max(sizes.get(level, 0), size)
    if 3 not in sizes:
        return None
    return sizes[3] + sizes.get(2, 0) * (os.cpu_count() or 1)


def native_budget() -> int:
    """:data:`NATIVE_FEATURE_BYTES`, less where the machine's caches are smaller.

    On a 2-core AMD EPYC (Zen 2, 16 MiB L3, 2 x 512 KiB L2) a 256 px block's image term (29 MB
    for K = 3) streams from memory every step: 192 px blocks (17 MB) ran 0.557 s/Mpx against
    0.601 at 256 (``benchmarks/rnn_profile.py --blocks 128 160 192 256``). So the budget is
    capped at L3 + the L2s (17 MiB there: 192 px); the Xeon's larger cache keeps 28 MiB.
    """
    cache = _cache_bytes()
    return NATIVE_FEATURE_BYTES if cache is None else min(NATIVE_FEATURE_BYTES, cache)


#: Default block side on a GPU: K = 3 keeps a few sets of 96 hidden maps of 4096^2 alive, ~20 GB
#: in fp32, within an H100/H200; whole 16k^2 inputs would need hundreds of GB. Not yet measured
#: on a GPU (issue 15): ``benchmarks/gpu_run.py`` compares block sizes there.
GPU_BLOCK = 4096


def cpu_block(feature_maps: int, halo: int = 10, budget: int = CPU_FEATURE_BYTES) -> int:
    """Block side (a multiple of 32, at least 64) whose features fit ``budget`` bytes.

    ``feature_maps`` = K * hidden; with the torch ops' budget K = 2 gets 256 px, K = 3 192 px,
    more classes less. GPUs use :data:`GPU_BLOCK` instead.
    """
    side = int((budget / (4 * feature_maps)) ** 0.5) - 2 * halo
    return max(64, side // 32 * 32)


def feature_budget(cfg: RNNConfig, use_native: bool = True) -> int:
    """:func:`native_budget` where the native kernel runs for ``cfg``, else :data:`CPU_FEATURE_BYTES`."""
    return native_budget() if use_native and native.load(cfg.kernel_size) is not None else CPU_FEATURE_BYTES


def scene_window(cfg: RNNConfig, iterations: int | None = None, blocks: int = 4) -> int:
    """A scene window whose read (window + 2 halos) is exactly ``blocks`` x ``blocks`` CPU blocks.

    Any window is exact; this one wastes nothing on partial blocks (K = 2, T = 5: 1004 px,
    read as 1024 = 4 x 256). Memory per window stays in the tens of megabytes.
    """
    halo = (cfg.kernel_size // 2) * (cfg.iterations if iterations is None else iterations)
    return blocks * cpu_block(cfg.num_classes * cfg.hidden, halo, feature_budget(cfg)) - 2 * halo


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
        """Class groups G of the MLP: one per class, or 1 for the class-agnostic variant."""
        return int(self.out_w.shape[0])

    @property
    def hidden(self) -> int:
        """Hidden units of each group's MLP."""
        return int(self.out_w.shape[1])


class FusedRNN:
    """A frozen, exact, fast copy of a :class:`RefinerRNN` for inference (not differentiable).

    ``FusedRNN(net)(image, probs)`` returns the same ``[u_0, ..., u_T]`` as ``net(image, probs)``.
    """

    def __init__(
        self, net: RefinerRNN, *, dtype: torch.dtype = torch.float32, compile: bool = True, native: bool = True
    ) -> None:
        self.cfg: RNNConfig = net.cfg
        self.dtype = dtype
        self.compile = compile
        self.native = native
        with torch.no_grad():
            self.blocks = [self._fold(b) for b in net.blocks]
        self.device = self.blocks[0].filters.device

    def _fold(self, blk: IterationParams) -> FoldedBlock:
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
        """Move the folded weights to ``device``; returns self, as ``nn.Module.to`` does."""
        device = torch.device(device)
        self.blocks = [
            FoldedBlock(*(getattr(b, f).to(device) for f in FoldedBlock.__dataclass_fields__)) for b in self.blocks
        ]
        self.device = device
        return self

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
        progress: Callable[[int, int], None] | None = None,
    ) -> list[torch.Tensor]:
        """Score maps ``[u_0, ..., u_T]`` (only ``[u_T]`` unless ``keep_all``) for (B, C, H, W) inputs.

        ``block`` (pixels) computes the result in blocks of at most that side with an exact halo;
        default: :func:`cpu_block` on a CPU, :data:`GPU_BLOCK` elsewhere; 0 = whole input.
        ``progress(done, total)`` is called after each block.
        """
        t_max = self._check(iterations)
        halo = (self.cfg.kernel_size // 2) * t_max
        h, w = image.shape[-2:]
        lib = self._native_kernel(image.device)
        if block is None and image.device.type == "cpu":
            budget = native_budget() if lib is not None else CPU_FEATURE_BYTES
            block = cpu_block(probs.shape[1] * self.cfg.hidden, halo, budget)
        elif block is None:  # GPUs: big blocks, but K * hidden fp32 maps of a whole 16k^2 scene need ~100 GB
            block = GPU_BLOCK
        block = block or 0
        # block sides: the fewest blocks, of even size rounded up to a multiple of 32, so a few
        # shapes (and compiled kernels) serve every image; 0 = the input as one block
        bh, bw = (_ceil_to(even_size(h, block), 32), _ceil_to(even_size(w, block), 32)) if block else (h, w)
        if lib is not None and bw < lib.lanes:  # narrower than one of its vectors: the torch ops
            lib = None
        n_out = t_max + 1 if keep_all else 1
        b, k = probs.shape[:2]
        cores = [(r, c) for r in range(0, h, bh) for c in range(0, w, bw)]
        threads = torch.get_num_threads()
        # enough blocks to keep every thread busy: threads take whole blocks (see native.share),
        # and each runs a block's steps in one call (native.run_steps), as one thread alone does;
        # fewer blocks: each step's rows are split between the threads
        by_blocks = lib is not None and lib.openmp and threads > 1 and 2 * threads <= len(cores)
        banded = by_blocks or threads == 1
        with torch.inference_mode():
            image, probs = image.to(self.dtype), probs.to(self.dtype)
            outs = [torch.empty(b, k, h, w, dtype=self.dtype, device=probs.device) for _ in range(n_out)]

            def one(i: int) -> None:
                r, c = cores[i]
                rows, cols = slice(r, min(h, r + bh)), slice(c, min(w, c + bw))
                img, edges = _read_block(image, rows, cols, (bh, bw), halo)
                block_probs = _read_block(probs, rows, cols, (bh, bw), halo)[0]
                if lib is not None:
                    maps = self._forward_native(lib, img, block_probs, t_max, edges, banded=banded)
                else:
                    maps = self._forward(img, block_probs, t_max, edges)
                for o, m in zip(outs, maps if keep_all else maps[-1:], strict=True):
                    off = (m.shape[-2] - bh) // 2  # u_t covers the core plus r * (T - t) on each side
                    o[..., rows, cols] = m[..., off : off + rows.stop - r, off : off + cols.stop - c]

            if by_blocks:
                assert lib is not None
                self._share_blocks(lib, one, len(cores), threads, progress)
            else:
                for i in range(len(cores)):
                    one(i)
                    if progress:
                        progress(i + 1, len(cores))
        return outs

    @staticmethod
    def _share_blocks(
        lib: native.NativeLib,
        one: Callable[[int], None],
        n: int,
        threads: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """``one(i)`` for every block, the blocks shared between ``threads`` (:func:`native.share`).

        ``progress`` sees every count from 1 to ``n`` in order, as in the serial loop, but only
        on the caller's thread (the app's widgets live there): counts other threads reached are
        reported when the caller finishes a block, or at the end.
        """
        caller = threading.get_ident()
        lock = threading.Lock()
        done = [0, 0]  # blocks finished, blocks reported

        def report() -> None:
            while progress and done[1] < done[0]:
                done[1] += 1
                progress(done[1], n)

        def run(i: int) -> None:
            with torch.inference_mode():  # thread-local: the other threads start outside it
                one(i)
            with lock:
                done[0] += 1
            if threading.get_ident() == caller:
                report()

        native.share(lib, n, run, threads)
        report()

    def _forward(
        self, image: torch.Tensor, probs: torch.Tensor, t_max: int, edges: tuple[int, int, int, int]
    ) -> list[torch.Tensor]:
        """``[u_0, ..., u_T]`` on a block read with its halo; ``u_t`` loses ``r`` pixels a side per step.

        Every step is a valid convolution: it computes only the region later steps still need, and
        needs no padding, because :func:`_read_block` has extended the input past the scene's
        borders (by ``edges`` pixels: top, bottom, left, right) by replication, and each step
        renews that extension (:func:`_replicate_edges`).
        """
        r = self.cfg.kernel_size // 2
        b, k = probs.shape[:2]
        cl = torch.channels_last  # oneDNN's fast layout for these convolutions (~10x NCHW here)
        tail = _tail_fn(self.compile and image.device.type == "cpu")
        u = probs_to_scores(probs).contiguous(memory_format=cl)
        maps = [u]
        terms: dict[int, torch.Tensor] = {}
        for t in range(t_max):
            idx, fb = self._params(t)
            if idx not in terms:  # the image half of the hidden layer, on the first step's region, once
                feats = F.conv2d(image.contiguous(memory_format=cl), fb.image_filters).contiguous(memory_format=cl)
                h1, w1 = feats.shape[-2:]
                proj = fb.image_proj.flatten(1).t()  # (F, G*hidden)
                flat = torch.addmm(fb.hidden_bias, feats.permute(0, 2, 3, 1).reshape(-1, proj.shape[0]), proj)
                terms[idx] = flat.view(b, h1, w1, -1).permute(0, 3, 1, 2)  # channels-last (B, G*hidden, h1, w1)
            if fb.groups == 1:  # class-agnostic: one filter bank for every class map
                pre = torch.cat([F.conv2d(u[:, i : i + 1], fb.filters) for i in range(k)], 1)
                if terms[idx].shape[1] != pre.shape[1]:
                    terms[idx] = terms[idx].repeat(1, k, 1, 1).contiguous(memory_format=cl)
                out_w, out_b = fb.out_w.expand(k, fb.hidden), fb.out_b.expand(k)
            else:
                pre = F.conv2d(u, fb.filters, groups=k)
                out_w, out_b = fb.out_w, fb.out_b
            h, w = pre.shape[-2:]
            term = terms[idx][..., r * t : r * t + h, r * t : r * t + w]
            u = tail(pre, term, u[..., r : r + h, r : r + w], out_w.contiguous(), out_b.contiguous())
            _replicate_edges(u, [max(0, e - r * (t + 1)) for e in edges])
            maps.append(u)
        return maps

    def _params(self, t: int) -> tuple[int, FoldedBlock]:
        """Which parameter set step ``t`` uses: its own (non-recurrent variant) or the shared one."""
        idx = t if len(self.blocks) > 1 else 0
        return idx, self.blocks[idx]

    def _native_kernel(self, device: torch.device) -> native.NativeLib | None:
        """The native step kernel (:mod:`refiner.models.native`) for fp32 on a CPU, else None."""
        if not self.native or device.type != "cpu" or self.dtype != torch.float32:
            return None
        return native.load(self.cfg.kernel_size)

    def _forward_native(
        self,
        lib: native.NativeLib,
        image: torch.Tensor,
        probs: torch.Tensor,
        t_max: int,
        edges: tuple[int, int, int, int],
        banded: bool = False,
    ) -> list[torch.Tensor]:
        """:meth:`_forward` with each iteration in the native kernel (same maths, other rounding order).

        ``banded``: the image term and all iterations band by band on this thread
        (:func:`native.run_steps`, temporal blocking); else the whole term, then one call a step,
        its rows split over torch's threads. Same bits.
        """
        r = self.cfg.kernel_size // 2
        per_image = []
        for i in range(probs.shape[0]):
            u = probs_to_scores(probs[i : i + 1])[0].contiguous()
            steps = [self._params(t) for t in range(t_max)]
            step_edges = [[max(0, e - r * (t + 1)) for e in edges] for t in range(t_max)]
            images: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for idx, fb in steps:
                if idx not in images:  # the image features on the first step's region, once per parameter set
                    img = image[i : i + 1].contiguous(memory_format=torch.channels_last)
                    images[idx] = (F.conv2d(img, fb.image_filters)[0], fb.image_proj.flatten(1))
            if banded:
                order = list(images)
                params = [(fb.hidden_bias, fb.filters, fb.out_w, fb.out_b) for _, fb in steps]
                which = [order.index(idx) for idx, _ in steps]
                maps = [u, *native.run_steps(lib, u, [images[j] for j in order], which, params, step_edges)]
            else:
                terms = {idx: native.image_term_rows(*images[idx]) for idx in images}
                maps = [u]
                for t, (idx, fb) in enumerate(steps):
                    u = native.run_step(lib, u, terms[idx], r * t, fb.hidden_bias, fb.filters, fb.out_w, fb.out_b)
                    _replicate_edges(u, step_edges[t])
                    maps.append(u)
            per_image.append(maps)
        if len(per_image) == 1:
            return [m[None] for m in per_image[0]]
        return [torch.stack(ts) for ts in zip(*per_image, strict=True)]


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _read_block(
    x: torch.Tensor, rows: slice, cols: slice, size: tuple[int, int], halo: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """``x`` over a ``size`` block starting at ``rows``/``cols``, plus ``halo``, replicated past the edges.

    Also returns how many pixels were added past each edge (top, bottom, left, right): the
    reference's replicate padding at the scene's borders, and the last blocks' overhang.
    """
    h, w = x.shape[-2:]
    r0, r1 = rows.start - halo, rows.start + size[0] + halo
    c0, c1 = cols.start - halo, cols.start + size[1] + halo
    edges = (max(0, -r0), max(0, r1 - h), max(0, -c0), max(0, c1 - w))
    block = x[..., max(0, r0) : min(h, r1), max(0, c0) : min(w, c1)]
    if any(edges):
        block = F.pad(block, (edges[2], edges[3], edges[0], edges[1]), mode="replicate")
    return block, edges


def _replicate_edges(u: torch.Tensor, edges: list[int]) -> None:
    """Refill the rows/columns of ``u`` that lie past the scene's edges with the edge values.

    That is what the reference's replicate padding feeds the next step, so the block stays exact.
    """
    top, bottom, left, right = edges
    h, w = u.shape[-2:]
    if top:
        u[..., :top, :] = u[..., top : top + 1, :]
    if bottom:
        u[..., h - bottom :, :] = u[..., h - bottom - 1 : h - bottom, :]
    if left:
        u[..., :, :left] = u[..., :, left : left + 1]
    if right:
        u[..., :, w - right :] = u[..., :, w - right - 1 : w - right]


def _tail(
    pre: torch.Tensor, term: torch.Tensor, u: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor
) -> torch.Tensor:
    """``u + f_out(relu(pre + term))``: the memory-bound part of an iteration, in one pass when compiled."""
    b, kh, h, w = pre.shape
    k = u.shape[1]
    hidden = (pre + term).relu_()
    du = (hidden.view(b, k, kh // k, h, w) * out_w.view(1, k, kh // k, 1, 1)).sum(2)
    return u + du + out_b.view(1, k, 1, 1)


def _eager_tail(
    pre: torch.Tensor, term: torch.Tensor, u: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor
) -> torch.Tensor:
    """:func:`_tail` without a compiler: the output layer as one GEMM on channels-last rows.

    (A strided multiply-and-sum over the hidden units is ~10x slower in eager mode.)
    """
    b, kh, h, w = pre.shape
    k = u.shape[1]
    hidden = pre.add_(term).relu_().permute(0, 2, 3, 1).reshape(-1, kh)  # a view when channels-last
    block = torch.block_diag(*out_w.unbind(0)).t()  # (K*hidden, K): class k reads its own units
    du = torch.addmm(out_b, hidden, block).view(b, h, w, k).permute(0, 3, 1, 2)
    return u + du


_COMPILED: dict[str, Any] = {}  # "fn": the compiled tail; "failed": True once compiling failed


#: Compiled tail kernels one process may keep (block shapes x steps x models seen).
RECOMPILE_LIMIT = 256


def _compile_limits() -> AbstractContextManager[None]:
    """Dynamo's recompile limit raised to :data:`RECOMPILE_LIMIT` for this thread, for a ``with`` block."""
    import torch._dynamo

    return torch._dynamo.config.patch(
        recompile_limit=RECOMPILE_LIMIT,
        accumulated_recompile_limit=max(torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT),
    )


TailFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _tail_fn(compile: bool) -> TailFn:
    """The tail, compiled by TorchInductor into one fused loop when possible (else eager).

    Compiling needs a C++ compiler; when it fails (or ``REFINER_COMPILE=0``) the eager version
    runs, which computes the same values about 3x slower on a CPU.
    """
    if not compile or os.environ.get("REFINER_COMPILE", "1") == "0" or _COMPILED.get("failed"):
        return _eager_tail
    if "fn" not in _COMPILED:
        # Static shapes: a kernel per input shape, so a given shape gives the same bits in every
        # process, whatever shapes that process saw before; ~1.5-2x faster than a dynamic-shape
        # kernel here. Block sides are multiples of 32 and each of the T steps has its own
        # shape, so a few models and tile sizes need more than dynamo's default 8 kernels per
        # function: past the limit it would silently run eager (other bits, 3x slower). Dynamo's
        # config is per thread (the app computes in Streamlit's script threads), so the limit is
        # raised around each call (:func:`_compile_limits`), not once globally.
        _COMPILED["fn"] = torch.compile(_tail, dynamic=False)

    def run(*args: torch.Tensor) -> torch.Tensor:
        try:
            with _compile_limits():
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
