"""A native CPU kernel for one fused RNN iteration (``rnn_step.c``), built on first use.

Why our own kernel: oneDNN's grouped convolution and TorchInductor's fused tail each run well,
but between them every iteration writes and re-reads ``K * hidden`` pre-activation maps (384
bytes a pixel for K = 3), more than a core's L2 holds, so the step is bound by cache traffic.
``rnn_step.c`` keeps a pixel's hidden units in registers through filter, ReLU and output layer
(measured on a 2-core Xeon: ~2x faster per iteration than the torch ops, K = 3). No library
provides that fusion: Inductor's own code for it measured slower than the torch ops.

The kernel is plain C with compiler vector extensions, compiled with the machine's C compiler
(``cc``; the one torch.compile needs too) for the host CPU, once per source and flags, into a
per-user cache; when there is no compiler or ``REFINER_NATIVE=0``, :func:`load` returns None
and callers use the torch ops, which compute the same values.

Two ways to use it (issue 25). :func:`run_steps` runs all iterations of one block on one
thread, band by band, the image term computed a band at a time just ahead of its use (temporal
blocking: it is read T times from the core's cache instead of from memory); :func:`share` hands
whole blocks to ``torch.get_num_threads()`` threads, each taking the next one when free, with
one join at the end. On a shared server that matters most: split inside each step, as
:func:`run_step` is, the threads meet at every step of every block, so a thread that loses its
core to a neighbour stalls the others (one CPU-bound neighbour made refinement 5x slower).
:func:`run_step` (one step, its rows split between the threads) stays for inputs of fewer
blocks than two per thread. All give the same bits.

Threads: built with ``-fopenmp``, the kernel links ``libgomp.so.1``, which the loader resolves to
the copy torch has already loaded, so the kernel runs on torch's OpenMP threads. Separate threads
were ~1.5x slower: torch's threads keep spinning for a while after each torch op and took the
cores from them. Without OpenMP (a compiler lacking it) blocks are not shared and a step's rows
are split over Python threads (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from refiner.core.atomic import commit, temp_beside

SOURCE = Path(__file__).with_name("rnn_step.c")
_LOCK = threading.Lock()


class NativeLib(ctypes.CDLL):
    """The loaded kernel library, with what it reported about its build when loaded."""

    openmp: bool  # built with OpenMP: it splits a step's rows over torch's threads itself
    lanes: int  # pixels per vector: narrower outputs need the torch ops


_LIBS: dict[int, NativeLib | None] = {}
_POOL: list[ThreadPoolExecutor] = []


_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
_ARGTYPES = (_P, _I, _I, _I, _P, _L, _L, _L, _I, _I, _P, _L, _P, _L, _P, _L, _P, _L, _I, _P, _I, _I, _I)
_STEPS_ARGTYPES = (_I, _P, _I, _I, _I, _P, _L, _L, _L, _P, _I, _P, _L, _P, _L, _P, _L, _P, _L, _I, _P, _I, _P)
_WORK = ctypes.CFUNCTYPE(None, ctypes.c_int)

#: Rows of a band in :func:`run_steps` (image term computed, first step advanced): on the 2-core
#: AMD EPYC of issue 25, bands of 2-16 rows ran alike (+-5 %), one row 10 % slower, and a whole
#: 256 px block at a time (no temporal blocking) 2x slower (``benchmarks/rnn_profile.py --bands``).
BAND = 8


def cache_dir() -> Path:
    """Where built kernels live: ``$REFINER_CACHE/native`` or ``~/.cache/refiner/native``.

    Falls back to a per-user folder in the temporary directory when that one cannot be created
    (a read-only home in a container, say).
    """
    root = os.environ.get("REFINER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refiner")
    folder = Path(root) / "native"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"refiner-{uid}" / "native"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cpu_id() -> str:
    """What the ``-march=native`` build depends on: CPU model and instruction-set flags (Linux), else the platform.

    Part of the cache key, so a home directory shared between unlike machines never hands one a
    kernel built for another's instructions.
    """
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        return "|".join(sorted({ln for ln in info if ln.startswith(("model name", "flags", "Features", "CPU part"))}))
    except OSError:
        return platform.platform() + platform.processor()


def _compile(kernel_size: int) -> Path:
    """Build the kernel for ``kernel_size`` (cached by source, flags and machine); raises on failure."""
    cc = shlex.split(os.environ.get("CC", "cc"))  # a compiler, possibly with flags ("cc -m32")
    flags = ["-O3", "-shared", "-fPIC", f"-DKS={kernel_size}"]
    source = SOURCE.read_bytes()
    folder = cache_dir()
    options: tuple[list[str], ...] = (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])
    for arch in [[*a, "-fopenmp"] for a in options] + list(options):
        build = " ".join([*cc, *flags, *arch, platform.machine(), _cpu_id()])
        key = hashlib.sha256(source + build.encode()).hexdigest()[:16]
        target = folder / f"rnn_step_k{kernel_size}_{key}.so"
        if target.exists():
            return target
        tmp = temp_beside(target, ".so")
        try:
            done = subprocess.run([*cc, *flags, *arch, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True)
            if done.returncode == 0:
                commit(tmp, target)  # atomic: concurrent builders (Dask workers) never see half a file
                return target
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(done.stderr.strip()[-500:] or f"{' '.join(cc)} failed")


def load(kernel_size: int) -> NativeLib | None:
    """The compiled kernel for ``kernel_size`` x ``kernel_size`` filters, or None if unavailable.

    Unavailable: ``REFINER_NATIVE=0``, an even kernel size, or no working C compiler (warned once).
    """
    if os.environ.get("REFINER_NATIVE", "1") == "0" or kernel_size % 2 == 0:
        return None
    with _LOCK:
        if kernel_size not in _LIBS:
            try:
                lib = NativeLib(str(_compile(kernel_size)))
                lib.rnn_step.argtypes = _ARGTYPES
                lib.rnn_step.restype = None
                lib.rnn_steps.argtypes = _STEPS_ARGTYPES
                lib.rnn_steps.restype = None
                lib.rnn_parallel.argtypes = (_WORK, _I)
                lib.rnn_parallel.restype = None
                lib.openmp = bool(lib.rnn_step_openmp())
                lib.lanes = int(lib.rnn_step_lanes())  # pixels per vector: narrower outputs need the torch ops
                _LIBS[kernel_size] = lib
            except (OSError, RuntimeError) as exc:
                warnings.warn(f"native RNN kernel unavailable ({exc}); using torch ops", stacklevel=2)
                _LIBS[kernel_size] = None
        return _LIBS[kernel_size]


def _pool() -> ThreadPoolExecutor:
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="refiner-rnn"))
        return _POOL[0]


def run_step(
    lib: NativeLib,
    u: torch.Tensor,
    term: torch.Tensor,
    offset: int,
    hidden_bias: torch.Tensor,
    filters: torch.Tensor,
    out_w: torch.Tensor,
    out_b: torch.Tensor,
) -> torch.Tensor:
    """One iteration ``u + f_out(relu(filters * u + term + hidden_bias))`` on a (K, H, W) float32 block.

    ``term``: the image features' projection, (H', G * hidden, W') row-interleaved
    (:func:`image_term_rows`), read from row and column ``offset``; ``hidden_bias``
    (G * hidden,), ``filters`` (G * hidden, 1, k, k), ``out_w`` (G, hidden), ``out_b`` (G,),
    with G = K or 1 (shared by all classes).
    Returns (K, H - 2r, W - 2r).
    """
    k, rows, cols = u.shape
    ks = filters.shape[-1]
    g, hidden = out_w.shape
    shared = g != k  # the class-agnostic variant: one parameter set for every class
    out = torch.empty(k, rows - ks + 1, cols - ks + 1, dtype=torch.float32)
    tr, tc = term.shape[0], term.shape[2]
    args = (
        u.data_ptr(), k, rows, cols,
        term.data_ptr(), term.shape[1] * tc, tc, 0 if shared else hidden * tc, offset, offset,
        hidden_bias.data_ptr(), 0 if shared else hidden,
        filters.data_ptr(), 0 if shared else hidden * ks * ks,
        out_w.data_ptr(), 0 if shared else hidden,
        out_b.data_ptr(), 0 if shared else 1,
        hidden, out.data_ptr(),
    )  # fmt: skip
    if not (u.is_contiguous() and term.is_contiguous() and tr >= out.shape[1] + offset and out.shape[2] >= lib.lanes):
        raise ValueError(f"run_step needs contiguous inputs, a term covering the output and >= {lib.lanes} columns")
    n = max(1, min(torch.get_num_threads(), out.shape[1] // 8))
    if n == 1 or lib.openmp:
        lib.rnn_step(*args, 0, out.shape[1], n)
    else:
        cuts = [out.shape[1] * i // n for i in range(n + 1)]
        list(_pool().map(lambda a, b: lib.rnn_step(*args, a, b, 1), cuts[:-1], cuts[1:]))
    return out


def run_steps(
    lib: NativeLib,
    u: torch.Tensor,
    images: list[tuple[torch.Tensor, torch.Tensor]],
    which: list[int],
    params: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    edges: list[list[int]],
    band: int | None = None,
) -> list[torch.Tensor]:
    """All iterations over a (K, H, W) float32 block, band by band on the calling thread: ``[u_1, ..., u_T]``.

    The same values, bit for bit, as :func:`image_term_rows` and then :func:`run_step` once per
    step with the edges refilled after each (``fused._replicate_edges``), but in bands of
    ``band`` rows (default :data:`BAND`): the image term of a band is computed, then each step
    computes the rows it can, following the one before down the block a few rows behind. So a
    band's term is written and read T times while it is in the core's cache (temporal
    blocking), where step by step the whole block's term went to memory and came back T times.

    ``images``: (features (F, H', W'), projection (G * hidden, F)) pairs, each giving one term
    (:func:`image_term_rows`, computed here); step ``t`` (0-based) reads term ``which[t]`` from
    row and column ``r * t``, uses ``params[t]`` = (hidden_bias, filters, out_w, out_b) as in
    :func:`run_step`, and refills ``edges[t]`` (top, bottom, left, right) pixels of its output
    from the rows and columns inside them.
    """
    k, rows, cols = u.shape
    steps = len(params)
    band = band or BAND
    ks = params[0][1].shape[-1]
    r = ks // 2
    g, hidden = params[0][2].shape
    shared = g != k
    tr, tc = images[0][0].shape[1:]
    if not (
        u.is_contiguous()
        and all(f.shape == images[0][0].shape for f, _ in images)
        and tr >= rows - 2 * r
        and cols - 2 * r * steps >= lib.lanes
        and 0 < steps == len(which)
    ):
        raise ValueError(f"run_steps needs a contiguous u, features covering the outputs and >= {lib.lanes} columns")
    terms = [torch.empty(tr, proj.shape[0], tc, dtype=torch.float32) for _, proj in images]
    outs = [u] + [torch.empty(k, rows - 2 * r * t, cols - 2 * r * t, dtype=torch.float32) for t in range(1, steps + 1)]
    ptrs = lambda ts: (ctypes.c_void_p * len(ts))(*(x.data_ptr() for x in ts))  # noqa: E731
    ints = lambda xs: (ctypes.c_int * len(xs))(*xs)  # noqa: E731
    bias, filters, out_w, out_b = ([p[i] for p in params] for i in range(4))
    done = ints([0] * (steps + 1))
    fixed = (
        steps, ptrs(outs), k, rows, cols,
        ptrs([terms[i] for i in which]), terms[0].shape[1] * tc, tc, 0 if shared else hidden * tc,
        ints([r * t for t in range(steps)]),
    )  # fmt: skip
    rest = (
        ptrs(bias), 0 if shared else hidden, ptrs(filters), 0 if shared else hidden * ks * ks,
        ptrs(out_w), 0 if shared else hidden, ptrs(out_b), 0 if shared else 1,
        hidden, ints([e for es in edges for e in es]), band, done,
    )  # fmt: skip
    for a in range(0, tr, band):
        b = min(tr, a + band)
        for (feats, proj), term in zip(images, terms, strict=True):
            image_term_rows(feats[:, a:b], proj, out=term[a:b])
        lib.rnn_steps(*fixed, b, *rest)
    return outs[1:]


def share(lib: NativeLib, tasks: int, run: Callable[[int], None], threads: int) -> None:
    """``run(i)`` for i = 0 .. tasks - 1, taken in order by ``threads`` of the process's OpenMP threads.

    Why (issue 25): split inside each step, every thread waits for the slowest at each of
    hundreds of joins a tile, so on a shared server one thread that lost its core slows them
    all; here each thread takes the next task when it is free, and they join once. The
    threads are torch's own (no extra threads competing for the cores), and torch's ops inside
    ``run`` see they are in a parallel region and run on the one thread. ``run`` is called on
    the caller's thread too, as thread 0; the first exception any task raised is raised here.
    """
    lock = threading.Lock()
    taken = [0]
    errors: list[BaseException] = []

    def work(_: int) -> None:
        while True:
            with lock:
                i = taken[0]
                if i >= tasks or errors:
                    return
                taken[0] = i + 1
            try:
                run(i)
            except BaseException as exc:  # noqa: BLE001 - a C callback must not raise: kept, raised below
                with lock:
                    errors.append(exc)

    callback = _WORK(work)
    lib.rnn_parallel(callback, threads)
    if errors:
        raise errors[0]


def image_term_rows(feats: torch.Tensor, proj: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``proj @ feats`` per pixel, laid out row-interleaved (H, G * hidden, W) for the kernel.

    ``feats`` (F, H, W) image features (any strides; channels-last is read without a copy),
    ``proj`` (G * hidden, F). One small GEMM per row writes the layout directly (the kernel adds
    the bias: adding it here cost a third more); a row's values do not depend on which rows are
    computed with it. ``out``: where to write them.
    """
    return torch.matmul(proj, feats.transpose(0, 1), out=out)  # (G*hidden, F) @ (H, F, W)
