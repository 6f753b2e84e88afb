"""Dask distributed backend: scene windows as tasks across workers, fine-tuning on a GPU worker.

Local by default: nothing here is used unless a scheduler is given (``--scheduler ADDRESS`` on
the CLI, ``scheduler=`` in :mod:`refiner.scale.scene`, the app's Dask setting, which runs training
jobs through :class:`DaskBackend`). Workers need the model folder and the input
rasters at the same paths (a shared file system or object-store URLs GDAL can read): each window
task reads its own inputs and loads the model once per worker process. The driver writes the
outputs, in window order, keeping only a bounded number of windows in flight, so its memory
stays flat and the files are byte for byte those of a local run.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from refiner.core.windows import WindowSpec

if TYPE_CHECKING:
    from dask.distributed import Client, Future

#: Where work runs: ``None`` here, ``"local"`` (a cluster on this machine), a scheduler address
#: (``tcp://host:8786``) or a ``dask.distributed.Client`` the caller owns.
Scheduler: TypeAlias = "str | Client | None"

#: ``scheduler`` value that starts a :class:`dask.distributed.LocalCluster` on this machine.
LOCAL = "local"


#: Address schemes a Dask scheduler listens on.
SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def check_address(address: str) -> str:
    """``address`` stripped, if it names a scheduler (``tcp://host:8786``, ``local``, or empty for none)."""
    address = address.strip()
    if address and address != LOCAL and not (address.startswith(SCHEMES) and len(address.split("://", 1)[1]) > 0):
        raise ValueError(
            f"{address!r} is not a Dask scheduler address: use the form tcp://host:8786 (as printed by "
            "`dask scheduler`), 'local' for a cluster on this machine, or leave it empty to run here"
        )
    return address


def get_client(scheduler: Scheduler) -> Client:
    """A ``dask.distributed.Client`` for a scheduler address, ``"local"``, or an existing client."""
    from dask.distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    address = check_address(scheduler) if isinstance(scheduler, str) else ""
    if not address:
        raise ValueError(f"expected a Dask scheduler address like tcp://host:8786 (or 'local'), got {scheduler!r}")
    if address == LOCAL:  # the client owns this cluster: closing it shuts the workers down
        return Client(processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        return Client(address, timeout="10s")
    except OSError as exc:
        raise OSError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc


_CLIENTS: dict[str, Client] = {}


def shared_client(scheduler: str) -> Client:
    """A client for ``scheduler`` kept for this process's lifetime (the app reuses it across reruns)."""
    client = _CLIENTS.get(scheduler)
    if client is None or client.status not in ("running", "connecting"):
        client = _CLIENTS[scheduler] = get_client(scheduler)
    return client


def close_shared_clients() -> None:
    """Close the clients :func:`shared_client` kept (a test's or a shutting-down app's cleanup)."""
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


def _in_flight(client: Client) -> int:
    threads = sum(client.nthreads().values()) or 1
    return 2 * threads


def map_windows(
    scheduler: Scheduler,
    run_window: Callable[[Any, WindowSpec], dict[str, np.ndarray]],
    task: Any,
    windows: list[WindowSpec],
    *,
    max_in_flight: int | None = None,
) -> Iterator[tuple[WindowSpec, dict[str, np.ndarray]]]:
    """``run_window(task, window)`` for every window on the cluster; results yielded in window order.

    At most ``max_in_flight`` windows (default: twice the cluster's threads) are submitted at once,
    so the driver's memory stays flat whatever the scene's size. ``task`` and ``run_window`` must
    pickle (:func:`refiner.scale.scene.run_window` with its :class:`~refiner.scale.scene.SceneTask`).
    """
    client = get_client(scheduler)
    own = client is not scheduler
    try:
        limit = max_in_flight or _in_flight(client)
        pending: deque = deque()
        todo = iter(windows)
        for win in todo:
            pending.append((win, client.submit(run_window, task, win, pure=False)))
            if len(pending) >= limit:
                break
        while pending:
            win, fut = pending.popleft()
            res = fut.result()
            fut.release()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, client.submit(run_window, task, nxt, pure=False)))
            yield win, res
    finally:
        if own:
            client.close()


def has_gpu_workers(client: Client) -> bool:
    """Whether any worker declares a ``GPU`` resource (``dask worker ... --resources GPU=1``)."""
    info = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) >= 1 for w in info.values())


def run_on_gpu_worker(
    scheduler: Scheduler, fn: Callable[..., Any], *args: Any, log: Callable[[str], None] | None = None, **kwargs: Any
) -> Any:
    """Run ``fn(*args, **kwargs)`` on a worker with a ``GPU`` resource, or any worker if none has one.

    Used for fine-tuning: the training arrays travel with the task, the trained bundle comes back.
    """
    client = get_client(scheduler)
    own = client is not scheduler
    try:
        backend = DaskBackend(client)
        if not backend.gpu:
            msg = "no Dask worker declares a GPU resource (--resources GPU=1): training on a CPU worker"
            (log or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
        return backend.submit(fn, *args, **kwargs).future.result()
    finally:
        if own:
            client.close()


class _FutureHandle:
    def __init__(self, future: Future) -> None:
        self.future = future  # held so Dask keeps the task: a released future is cancelled

    def done(self) -> bool:
        return self.future.done()


class DaskBackend:
    """A :class:`refiner.app.jobs.base.Backend` that runs jobs on a Dask cluster, on a GPU worker when there is one.

    Jobs report through their workspace folder, so workers must see it at the same path (a shared
    file system). ``gpu`` says whether a worker declares a ``GPU`` resource; without one the job
    runs on any worker (on its CPU).
    """

    def __init__(self, scheduler: str | Client) -> None:
        self.client = scheduler if not isinstance(scheduler, str) else shared_client(scheduler)
        self.gpu = has_gpu_workers(self.client)

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> _FutureHandle:
        """Start ``fn(*args, **kwargs)`` on the cluster, on a GPU worker when there is one, without waiting."""
        extra = {"resources": {"GPU": 1}} if self.gpu else {}
        return _FutureHandle(self.client.submit(fn, *args, pure=False, **extra, **kwargs))
