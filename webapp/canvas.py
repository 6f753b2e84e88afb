"""The Label page's drawing canvas: every stroke merged exactly once, one undo, visible strokes.

Strokes were lost when the page remounted the canvas after each one (a new key to clear it):
a stroke drawn while that rerun was in flight went to the canvas being thrown away. Now a
canvas keeps its key while the view stays, and each run first merges the strokes that any of
this session's canvases reported since the last run, by their index in the canvas's object
list (:func:`merge_reported`), before anything is drawn. A rerun that is interrupted or
superseded loses nothing: the next run finds the same objects and the same count of those
already merged. Each stroke is its own change on the workspace's undo stack.

The canvas's own toolbar (undo, redo, reset, edit) is hidden: its undo would only remove a
stroke from the screen, never from the saved labels, beside the app's Undo. Strokes get a thin
black-and-white halo, so every brush shows on dark and light imagery.
"""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from refiner.app.painting import View, apply_objects, canvas_objects
from refiner.app.workspace import Workspace

#: Session-state entry: canvas key -> {"ws": folder, "view": [row, col, h, w, scale], "applied": n}
#: (the folder, not the name: two workspaces of one session, its own and a shared one, may share a name).
RECORDS = "label_canvases"
EPOCH = "canvas_epoch"
_NAME = "streamlit-drawable-canvas.streamlit_drawable_canvas"
#: No toolbar; a halo around the strokes (the fabric canvases hold only strokes, the picture is
#: on ``dc-background-canvas``): a crisp white pixel on every side (two diagonal shadows, each
#: drawn over the other) and a soft black one. Three passes: the six of before (four white, two
#: black) cost 250 ms of a browser's CPU per frame of the canvas without a GPU, 2.2 s per stroke
#: (issue 22, item 9); these three, 40 ms.
_CSS = """
.dc-toolbar { display: none !important; }
.dc-container canvas:not(.dc-background-canvas) {
  filter: drop-shadow(1px 1px 0 #fff) drop-shadow(-1px -1px 0 #fff) drop-shadow(0 0 1px #000);
}
"""


@st.cache_resource
def _component() -> Any:
    """The drawable canvas, registered again with the CSS above (its shadow DOM keeps page CSS out)."""
    import streamlit_drawable_canvas as sdc

    css = "".join(p.read_text() for p in (Path(sdc.__file__).parent / "frontend" / "build").glob("index-*.css"))
    log = logging.getLogger("streamlit.components.v2.component_registry")
    level = log.level
    log.setLevel(logging.ERROR)  # "already registered, overwriting": that is the point
    try:
        return st.components.v2.component(
            _NAME, js="index-*.js", css=css + _CSS, html='<div class="canvas-root"></div>', isolate_styles=True
        )
    finally:
        log.setLevel(level)


def bump() -> None:
    """A fresh, empty canvas on the next run (after Undo or an import: the background shows the labels)."""
    st.session_state[EPOCH] = st.session_state.get(EPOCH, 0) + 1


def key_for(ws: Workspace, view: View) -> str:
    """The canvas widget's key: new for another workspace, view or epoch, so no strokes carry over."""
    where = f"{ws.path.parent.name[:8]}_{ws.name}"  # the owner's folder too: names repeat across sessions
    return f"canvas_{where}_{st.session_state.get(EPOCH, 0)}_{view.row}_{view.col}_{view.height}_{view.width}"


def merge_reported(ws: Workspace) -> int:
    """Merge the strokes this session's canvases reported and no run has merged yet; how many.

    In order, each as one change (one undo step).
    """
    records: dict[str, dict] = st.session_state.setdefault(RECORDS, {})
    merged = 0
    for key, rec in list(records.items()):
        if key not in st.session_state:  # that canvas is gone and nothing is pending on it
            if key != st.session_state.get(f"{RECORDS}_last"):
                records.pop(key, None)
            continue
        objects = canvas_objects(st.session_state[key])
        new = objects[rec["applied"] :]
        if not new:
            rec["applied"] = len(objects)
            continue
        target = ws if rec["ws"] == str(ws.path) else _open(Path(rec["ws"]))
        if target is not None:
            view, classes = View(*rec["view"]), target.classes
            try:
                for i, obj in enumerate(new, start=rec["applied"]):
                    target.edit_labels(lambda now, o=obj, v=view, c=classes: apply_objects(now, [o], v, c))
                    rec["applied"] = i + 1  # counted once written: an interrupted run redoes only the rest
                    merged += 1
            except OSError as exc:  # kept: the next run tries the strokes not written yet again
                st.warning(unsaved(exc, len(objects) - rec["applied"]))
                continue
        rec["applied"] = len(objects)
    return merged


def unsaved(exc: OSError, pending: int) -> str:
    """Why strokes could not be saved, without the server's paths, and that they are kept."""
    why = (
        "the server's disk is full"
        if exc.errno == errno.ENOSPC
        else "the workspace is read-only on the server (its folder cannot be written)"
    )
    return (
        f"{pending} stroke(s) not saved yet: {why}. They are kept in this page and saved as soon as the workspace "
        "can be written again — keep this tab open and ask the server's operator."
    )


def _open(folder: Path) -> Workspace | None:
    """A workspace this session drew on before (a folder it was given by :mod:`refiner.app.sessions`)."""
    if not (folder / "workspace.json").is_file():
        return None  # deleted meanwhile: nothing to paint on
    return Workspace(folder)


def background_jpeg(rgb: np.ndarray) -> bytes:
    """The canvas's picture (H, W, 3) uint8 as a JPEG of quality 90 without chroma subsampling.

    Handed to the canvas as bytes: given a PIL image it encodes an RGBA PNG, 150 ms and 1 MB
    for 640² of aerial imagery on every rerun, sent base64 to the browser (issue 22, item 9);
    this is a few ms and under a third of the bytes (290 KiB), the label colours and their
    one-pixel outlines kept sharp (no chroma subsampling).
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=90, subsampling=0)
    return buf.getvalue()


def draw(ws: Workspace, view: View, background: np.ndarray, stroke_color: str, stroke_width: int) -> str:
    """The canvas over ``background`` (H, W, 3 uint8, already at the canvas's size); returns its key."""
    import streamlit_drawable_canvas as sdc
    from streamlit_drawable_canvas import st_canvas

    sdc.out = _component()
    key = key_for(ws, view)
    records: dict[str, dict] = st.session_state.setdefault(RECORDS, {})
    spec = [view.row, view.col, view.height, view.width, view.scale]
    records.setdefault(key, {"ws": str(ws.path), "view": spec, "applied": 0})
    st.session_state[f"{RECORDS}_last"] = key
    ch, cw = view.canvas_size
    st_canvas(
        stroke_width=stroke_width,
        stroke_color=stroke_color,
        background_image=background_jpeg(background),
        height=ch,
        width=cw,
        drawing_mode="freedraw",
        key=key,
    )
    return key
