"""What every page shares: finding the user's workspace, the sidebar, error display, images.

The current workspace is remembered three ways, so neither a page switch, a browser refresh nor
a server restart loses it: the session state, the ``?ws=`` query parameter, and a
``.last_workspace`` file in the workspace root. With none of them, the demo opens.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from refiner import viz
from refiner.painting import View, make_view
from refiner.workspace import DEMO_NAME, Workspace, default_root, list_workspaces, open_or_create_demo

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


def view_controls(shape: tuple[int, int], key: str, max_canvas: int = 640) -> View:
    """Zoom and pan for a tile larger than the screen (shared by pages through ``key``)."""
    c1, c2, c3 = st.columns(3)
    zoom = c1.select_slider(
        "Zoom", options=[1, 2, 4, 8], value=st.session_state.get(f"{key}_zoom", 1), key=f"{key}_zoom"
    )
    cy = c2.slider("Pan ↓ (rows)", 0.0, 1.0, 0.5, 0.05, key=f"{key}_cy", disabled=zoom == 1)
    cx = c3.slider("Pan → (columns)", 0.0, 1.0, 0.5, 0.05, key=f"{key}_cx", disabled=zoom == 1)
    return make_view(shape, zoom, (cy, cx), max_canvas)


def show(rgb: np.ndarray, caption: str = "", view: View | None = None, width: int | None = None) -> None:
    """An (H, W, 3) picture, cropped to ``view`` and enlarged crisply when zoomed in."""
    if view is not None:
        rgb = rgb[view.slices]
        factor = max(1, int(view.scale))
        if factor > 1:
            rgb = viz.upscale(rgb, factor)
    st.image(to_png(rgb), caption=caption, width=width or "stretch")
