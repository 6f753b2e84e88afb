"""What every page shares: finding the user's workspace, the sidebar, error display, images.

The current workspace is remembered three ways, so neither a page switch, a browser refresh nor
a server restart loses it: the session state, the ``?ws=`` query parameter, and a
``.last_workspace`` file in the workspace root. With none of them, the demo opens.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from refiner import viz
from refiner.painting import View, make_view
from refiner.workspace import (
    DEMO_NAME,
    Workspace,
    atomic_write_json,
    default_root,
    list_workspaces,
    open_or_create_demo,
    read_json,
)

LOG = logging.getLogger("refiner.app")
LAST = ".last_workspace"


def root() -> Path:
    r = default_root()
    r.mkdir(parents=True, exist_ok=True)
    return r


def remember(name: str) -> None:
    st.session_state["ws"] = name
    st.query_params["ws"] = name
    with contextlib.suppress(OSError):
        (root() / LAST).write_text(name)


def current() -> Workspace:
    """The user's workspace (the demo, created on first start, when there is none)."""
    r = root()
    names = list_workspaces(r)
    for candidate in (
        st.session_state.get("ws"),
        st.query_params.get("ws"),
        (r / LAST).read_text().strip() if (r / LAST).is_file() else None,
    ):
        if candidate and candidate in names:
            remember(candidate)
            return Workspace.open(r, candidate)
    with st.spinner("Creating the demo workspace (first start)..."):
        ws = open_or_create_demo(r)
    remember(ws.name)
    return ws


def page(title: str, icon: str = "🛰️") -> Workspace:
    """Page setup: config, sidebar with the workspace switcher; returns the workspace."""
    st.set_page_config(page_title=f"Refiner · {title}", page_icon=icon, layout="wide")
    with guard():
        ws = current()
    sidebar(ws)
    st.title(title)
    return ws


def sidebar(ws: Workspace) -> None:
    names = list_workspaces(root())
    with st.sidebar:
        st.caption("Workspace")
        choice = st.selectbox("Workspace", names, index=names.index(ws.name), label_visibility="collapsed")
        if choice != ws.name:
            remember(choice)
            st.rerun()
        s = ws.settings.get("source", {})
        st.caption(f"{s.get('height')}×{s.get('width')} px · {', '.join(ws.classes.names)}")
        if ws.name == DEMO_NAME:
            st.caption("The embedded demo: a synthetic scene with a pretrained coarse CNN and RNN.")
        compute_setting(ws)


def compute_setting(ws: Workspace) -> None:
    """Where training jobs run, read-only: the operator sets it (``$REFINER_SCHEDULER``), never a browser."""
    from refiner.jobs import scheduler_setting

    current = scheduler_setting(ws)
    with st.expander("Compute", expanded=False):
        st.caption(
            f"Training runs on the Dask cluster at `{current}` (set by the server's operator)."
            if current
            else "Training runs on this machine. The server's operator can set a Dask cluster (REFINER_SCHEDULER)."
        )


@contextlib.contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show errors as ``st.error`` with what to do, never as a traceback, then stop the page."""
    try:
        yield
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        LOG.info("user-facing error: %s", exc)
        st.error(f"{what + ': ' if what else ''}{exc}")
        st.stop()
    except Exception as exc:  # anything else is a bug: log it in full, tell the user briefly
        LOG.error("unexpected error\n%s", traceback.format_exc())
        st.error(
            f"{what + ': ' if what else ''}something went wrong ({type(exc).__name__}: {exc}). "
            "The details are in the server log."
        )
        st.stop()


def job_label(state: str, running: str) -> str:
    """The progress-bar text for a background job in ``state`` (``running``: what it is doing)."""
    return {
        "queued": "Starting…",
        "running": running,
        "finished": "Finished",
        "cancelled": "Cancelled",
        "failed": "Failed",
        "interrupted": "Interrupted",
    }[state]


MIME = {".tif": "image/tiff", ".gpkg": "application/geopackage+sqlite3"}


def download(path: Path, prefix: str, key: str, label: str = "") -> None:
    """A download button for a file the app wrote, offered as ``<prefix>_<file name>``."""
    st.download_button(
        label or f"Download {path.name}",
        path.read_bytes(),
        file_name=f"{prefix}_{path.name}",
        mime=MIME.get(path.suffix, "application/octet-stream"),
        key=key,
    )


def size(path: Path) -> str:
    """A file's size for a download button: KiB or MiB."""
    n = path.stat().st_size
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{max(1, round(n / 2**10))} KiB"


def to_png(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(rgb))


ZOOMS = [1, 2, 4, 8]
VIEW_FILE = "view.json"


def restore_view(ws: Workspace, page: str, defaults: dict[str, Any], options: dict[str, list] | None = None) -> None:
    """Give the view widgets of ``page`` (zoom, pan, brush, layers: widget key -> default) their
    remembered values: this session's, else those saved in the workspace (``view.json``, so a
    reload or a restart keeps them), else ``defaults``. ``options`` lists the values a
    choice widget allows (a saved value no longer offered falls back to the default)."""
    saved = read_json(ws.path / VIEW_FILE, {}).get(page, {})
    for k, default in defaults.items():
        if k in st.session_state:
            continue
        v = saved.get(k, default)
        allowed = (options or {}).get(k)
        ok = v in allowed if allowed is not None else isinstance(v, type(default)) or (
            isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool)
        )
        st.session_state[k] = v if ok else default


def save_view(ws: Workspace, page: str, keys: list[str]) -> None:
    """Store the current values of ``keys`` as ``page``'s view in the workspace (when they changed)."""
    path = ws.path / VIEW_FILE
    views = read_json(path, {})
    now = {k: st.session_state[k] for k in keys if k in st.session_state}
    if views.get(page) != now:
        views[page] = now
        with contextlib.suppress(OSError):
            atomic_write_json(path, views)


def view_keys(key: str) -> list[str]:
    return [f"{key}_zoom", f"{key}_cy", f"{key}_cx"]


def view_controls(shape: tuple[int, int], key: str, max_canvas: int = 640, ws: Workspace | None = None) -> View:
    """Zoom and pan for a tile larger than the screen (shared by pages through ``key``); with
    ``ws``, remembered in the workspace across reloads (see :func:`restore_view`)."""
    zk, yk, xk = view_keys(key)
    if ws is not None:
        restore_view(ws, key, {zk: 1, yk: 0.5, xk: 0.5}, {zk: ZOOMS})
    for k, default in ((zk, 1), (yk, 0.5), (xk, 0.5)):
        st.session_state.setdefault(k, default)
    c1, c2, c3 = st.columns(3)
    zoom = c1.select_slider("Zoom", options=ZOOMS, key=zk)
    cy = c2.slider("Pan ↓ (rows)", 0.0, 1.0, step=0.05, key=yk, disabled=zoom == 1)
    cx = c3.slider("Pan → (columns)", 0.0, 1.0, step=0.05, key=xk, disabled=zoom == 1)
    if ws is not None:
        save_view(ws, key, [zk, yk, xk])
    return make_view(shape, zoom, (cy, cx), max_canvas)


_BUSY_POOL: list[Any] = []


def run_busy(what: str, fn: Callable[[], Any], stop_key: str, on_stop: Callable[[], None] | None = None) -> Any:
    """Run ``fn`` (engine work, no Streamlit calls) under a visible busy box with elapsed time
    and a Stop button. Stop frees the page at once (``on_stop`` then turns off what asked for
    the work, so the next run does not start it again); the work itself finishes in the
    background, and the engine's caches keep its result for next time."""
    from concurrent.futures import ThreadPoolExecutor

    if not _BUSY_POOL:
        _BUSY_POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="refiner-busy"))
    future = _BUSY_POOL[0].submit(fn)
    t0 = time.monotonic()
    try:
        return future.result(timeout=0.3)  # quick work: no box at all
    except FuturesTimeout:
        pass
    box = st.status(f"{what}…", state="running", expanded=True)
    with box:
        st.button("Stop", key=stop_key, on_click=on_stop, help="Stop waiting for this; the page stays usable")
    while not future.done():
        time.sleep(0.25)
        box.update(label=f"{what}… {time.monotonic() - t0:.0f} s")  # a rerun (Stop) interrupts here
    box.update(label=f"{what}: done in {time.monotonic() - t0:.0f} s", state="complete", expanded=False)
    return future.result()


def show(rgb: np.ndarray, caption: str = "", view: View | None = None, width: int | None = None) -> None:
    """An (H, W, 3) picture, cropped to ``view`` and enlarged crisply when zoomed in."""
    if view is not None:
        rgb = rgb[view.slices]
        factor = max(1, int(view.scale))
        if factor > 1:
            rgb = viz.upscale(rgb, factor)
    st.image(to_png(rgb), caption=caption, width=width or "stretch")
