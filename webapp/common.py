"""What every page shares: the user's session and workspace, the sidebar, error display, images.

Who may open what is decided in :mod:`refiner.app.sessions`; this module only carries the session
between page runs. The session is the ``?session=`` token in the page's address (kept there on
every page, so a refresh, a bookmark or a server restart finds the same workspaces), or the
signed-in user when the operator turned sign-in on (``REFINER_AUTH=1``). The current workspace
is ``?ws=<name>`` (one of the session's) or ``?share=<token>`` (a workspace shared by a link).
A session nobody has seen before gets its own copy of the demo.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from refiner.app import sessions
from refiner.app.demos import DEMO_NAME
from refiner.app.painting import View, make_view, resize_nearest
from refiner.app.uploads import MAX_PIXELS
from refiner.app.workspace import Workspace, default_root
from refiner.core.atomic import atomic_write_json, read_json
from refiner.data.read import max_read_pixels

LOG = logging.getLogger("refiner.app")
SESSION, WS, SHARE = "session", "ws", "share"


def root() -> Path:
    """The workspaces root (made if missing), cleaning up idle session workspaces at most hourly."""
    r = default_root()
    r.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        sessions.cleanup_if_due(r)  # idle session workspaces, at most hourly
    return r


def _auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def session() -> sessions.Session:
    """This browser's session: the signed-in user (``REFINER_AUTH=1``), else the URL's token."""
    if sessions.auth_required():
        if not _auth_configured():
            st.error(
                "Sign-in is turned on (REFINER_AUTH=1) but Streamlit's [auth] section is missing from "
                ".streamlit/secrets.toml: the operator must add it (see docs/security.md)."
            )
            stop()
        if not st.user.get("is_logged_in"):
            st.title("Refiner")
            st.write("This server asks you to sign in: your workspaces belong to your account.")
            if st.button("Sign in", key="login", type="primary"):
                st.login(sessions.auth_provider())
            stop()
        return sessions.Session(root(), sessions.user_key(st.user.to_dict()))
    token = st.session_state.get(SESSION) or st.query_params.get(SESSION)
    if not sessions.session_known(token, root()):  # only keys this server issued: no client-chosen session
        if token:
            st.warning(
                "The session key in this address was not made by this server, so a new session of your own was "
                "started. To show someone a workspace, use its Share link."
            )
        token = sessions.issue_session(root())
    st.session_state[SESSION] = token
    if st.query_params.get(SESSION) != token:  # page links drop it: put it back, so a refresh keeps it
        st.query_params[SESSION] = token
    return sessions.Session(root(), sessions.browser_key(token))


def remember(name: str) -> None:
    """Make the session's own workspace ``name`` the current one."""
    st.session_state[WS] = name
    st.session_state.pop(SHARE, None)
    st.query_params[WS] = name
    st.query_params.pop(SHARE, None)


def remember_share(token: str, label: str) -> None:
    """Make the workspace of share link ``token`` the current one (and list it in the sidebar)."""
    st.session_state[SHARE] = token
    st.session_state.setdefault("shares_seen", {})[token] = label
    st.query_params[SHARE] = token
    st.query_params.pop(WS, None)


def current(sess: sessions.Session) -> Workspace:
    """The workspace this session works on: a shared one, one of its own, or its copy of the demo."""
    share = st.query_params.get(SHARE) or st.session_state.get(SHARE)
    if share:
        try:
            ws = sess.open_shared(share)
        except ValueError as exc:
            st.query_params.pop(SHARE, None)
            st.session_state.pop(SHARE, None)
            st.session_state.get("shares_seen", {}).pop(share, None)
            st.warning(str(exc))
        else:
            remember_share(share, f"{ws.name} (shared{', read-only' if ws.readonly else ''})")
            return ws
    names = sess.names()
    for candidate in (st.session_state.get(WS), st.query_params.get(WS), sess.last_used()):
        if candidate and candidate in names:
            remember(candidate)
            return sess.open(candidate)
    with st.spinner("Making your copy of the demo workspace..."):
        ws = sess.open_template_copy(DEMO_NAME)
    remember(ws.name)
    return ws


def page(title: str, icon: str = "🛰️") -> Workspace:
    """Page setup: config, session, sidebar with the workspace switcher; returns the workspace."""
    st.set_page_config(page_title=f"Refiner · {title}", page_icon=icon, layout="wide")
    with guard():
        sess = session()
        ws = current(sess)
    st.session_state["_session_obj"] = sess
    sidebar(sess, ws)
    st.title(title)
    return ws


def this_session() -> sessions.Session:
    """The session :func:`page` found (for pages that start jobs or make workspaces)."""
    return st.session_state["_session_obj"]


def sidebar(sess: sessions.Session, ws: Workspace) -> None:
    """The sidebar: switch workspace (own or shared), what this one is, share links, account, compute."""
    seen = st.session_state.get("shares_seen", {})
    shared = st.session_state.get(SHARE)
    # own workspaces by name; shared ones as "share:<token>" (a name never holds ':')
    options = sess.names() + [f"{SHARE}:{t}" for t in seen]
    here = f"{SHARE}:{shared}" if shared else ws.name
    with st.sidebar:
        st.caption("Workspace")
        choice = st.selectbox(
            "Workspace",
            options,
            index=options.index(here) if here in options else 0,
            format_func=lambda o: seen.get(o.split(":", 1)[1], "shared") if o.startswith(f"{SHARE}:") else o,
            label_visibility="collapsed",
        )
        if choice != here:
            if choice.startswith(f"{SHARE}:"):
                token = choice.split(":", 1)[1]
                remember_share(token, seen[token])
            else:
                remember(choice)
            st.rerun()
        s = ws.settings.get("source", {})
        st.caption(f"{s.get('height')}×{s.get('width')} px · {class_list(ws.classes.names)}")
        if ws.readonly:
            st.caption(f"Read-only: {ws.readonly}.")
        elif shared:
            st.caption("Shared with you by a link: your changes are saved in its owner's workspace.")
        if s.get("kind") == "demo":
            st.caption("Your copy of the embedded demo: a synthetic scene with a pretrained coarse CNN and RNN.")
        if not shared:
            share_panel(sess, ws)
        account(sess)
        compute_setting(ws)


def share_panel(sess: sessions.Session, ws: Workspace) -> None:
    """Make a link that opens this workspace for someone else (read-only or editable), or stop sharing."""
    with st.expander("Share", expanded=False):
        st.caption("A link opens this workspace for whoever has it; a new link of a kind replaces the old one.")
        c1, c2 = st.columns(2)
        made = None
        if c1.button("Link to look", key="share_read"):
            made = ("read-only", sess.share(ws.name, "read"))
        if c2.button("Link to edit", key="share_edit"):
            made = ("editable", sess.share(ws.name, "edit"))
        if made:
            st.session_state[f"share_link_{ws.name}"] = made
        shown = st.session_state.get(f"share_link_{ws.name}")
        if shown and shown[1] and sessions.find_share(sess.root, shown[1]):
            st.caption(f"The {shown[0]} link (shown only now: copy it):")
            st.code(share_url(shown[1]), language=None)
        active = sess.shared_modes(ws.name)
        if active:
            st.caption("Working links: " + ", ".join({"read": "read-only", "edit": "editable"}[m] for m in active))
            if st.button("Stop sharing", key="unshare"):
                sess.unshare(ws.name)
                st.session_state.pop(f"share_link_{ws.name}", None)
                st.rerun()


def share_url(token: str) -> str:
    """The app's address with share ``token`` in place of the session (what a share link opens)."""
    base = ""
    with contextlib.suppress(Exception):
        base = (st.context.url or "").split("?")[0]
    return f"{base}?{SHARE}={token}"


def account(sess: sessions.Session) -> None:
    """Who owns this session's workspaces: the signed-in user (with Sign out), or this page's address."""
    if sessions.auth_required():
        st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}.")
        if st.button("Sign out", key="logout"):
            st.logout()
    else:
        st.caption(
            "Your workspaces belong to this page's address (its session key): bookmark it to come back. "
            "To show a workspace to someone, make a Share link; never give them your own address."
        )


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|~$:=\"'")
_HTML_SPECIAL = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def plain(text: object) -> str:
    """User text (class names, file names) as plain text inside Markdown, also where HTML is allowed.

    Every Markdown punctuation is backslash-escaped and ``<``, ``>``, ``&`` become entities, so a
    class named ``![t](http://host/x.png)`` shows those characters instead of an image each
    viewer's browser fetches, and ``<img …>`` or ``:red[…]`` are not markup either.
    """
    return "".join(_HTML_SPECIAL.get(c) or (f"\\{c}" if c in _MD_SPECIAL else c) for c in str(text))


def class_list(names: Sequence[str]) -> str:
    """Class names for a caption: each as :func:`plain` text, comma-separated."""
    return ", ".join(plain(n) for n in names)


def upload_limits(tile: bool = False) -> str:
    """What an upload may be, said next to the uploader (the server's Streamlit and Refiner limits)."""
    mb = st.get_option("server.maxUploadSize")
    pixels = min(MAX_PIXELS, max_read_pixels()) if tile else max_read_pixels()
    return f"Up to {mb} MB per file and {pixels / 1e6:.1f} megapixels (limits set by the server's operator)."


def compute_setting(ws: Workspace) -> None:
    """Where training jobs run, read-only: the operator sets it (``$REFINER_SCHEDULER``), never a browser."""
    from refiner.app.jobs.base import scheduler_setting

    current = scheduler_setting(ws)
    with st.expander("Compute", expanded=False):
        st.caption(
            f"Training runs on the Dask cluster at `{current}` (set by the server's operator)."
            if current
            else "Training runs on this machine. The server's operator can set a Dask cluster (REFINER_SCHEDULER)."
        )


#: The attribute of the hidden element written at the end of every page run, holding the run's
#: number in this session: what the browser tests (tests/browser/harness.py ``settle``) wait for.
RUN_END = "data-refiner-run"


def end_of_run() -> None:
    """Mark that this page run reached its end (or a deliberate stop) with a hidden, numbered element.

    A browser test cannot see from Streamlit alone that the run its click caused has ended: until
    the server starts it, the page looks finished. The number of the last run on the page tells it.
    """
    n = st.session_state.get("_refiner_runs", 0) + 1
    st.session_state["_refiner_runs"] = n
    st.html(f'<span {RUN_END}="{n}" style="display:none"></span>')


def stop() -> None:
    """``st.stop()`` after marking the run's end (:func:`end_of_run`): stopping is how this run ends."""
    end_of_run()
    st.stop()


@contextlib.contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show errors as ``st.error`` with what to do, never as a traceback, then stop the page."""
    try:
        yield
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        LOG.info("user-facing error: %s", exc)
        st.error(f"{what + ': ' if what else ''}{exc}")
        stop()
    except Exception as exc:  # anything else is a bug: log it in full, tell the user briefly
        LOG.error("unexpected error\n%s", traceback.format_exc())
        st.error(
            f"{what + ': ' if what else ''}something went wrong ({type(exc).__name__}: {exc}). "
            "The details are in the server log."
        )
        stop()


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
    """An (H, W, 3) uint8 array as a PIL image, as Streamlit and the canvas take it."""
    return Image.fromarray(np.ascontiguousarray(rgb))


ZOOMS = [1, 2, 4, 8]
VIEW_FILE = "view.json"


def restore_view(ws: Workspace, page: str, defaults: dict[str, Any], options: dict[str, list] | None = None) -> None:
    """Give the view widgets of ``page`` (zoom, pan, brush, layers) their remembered values.

    ``defaults`` maps widget key -> default. The values are this session's, else those saved in
    the workspace (``view.json``, so a reload or a restart keeps them), else ``defaults``.
    ``options`` lists the values a choice widget allows (a saved value no longer offered falls
    back to the default).
    """
    saved = read_json(ws.path / VIEW_FILE, {}).get(page, {})
    for k, default in defaults.items():
        if k in st.session_state:
            continue
        v = saved.get(k, default)
        allowed = (options or {}).get(k)
        ok = (
            v in allowed
            if allowed is not None
            else isinstance(v, type(default))
            or (isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool))
        )
        st.session_state[k] = v if ok else default


def save_view(ws: Workspace, page: str, keys: list[str]) -> None:
    """Store the current values of ``keys`` as ``page``'s view in the workspace, when they changed.

    Never in a workspace that is read-only here: a look-only guest does not move the owner's view.
    """
    if ws.readonly:
        return
    path = ws.path / VIEW_FILE
    views = read_json(path, {})
    now = {k: st.session_state[k] for k in keys if k in st.session_state}
    if views.get(page) != now:
        views[page] = now
        with contextlib.suppress(OSError):
            atomic_write_json(path, views)


def view_keys(key: str) -> list[str]:
    """The session-state keys of a view's zoom and centre (``restore_view`` and ``save_view`` take them)."""
    return [f"{key}_zoom", f"{key}_cy", f"{key}_cx"]


def view_controls(shape: tuple[int, int], key: str, max_canvas: int = 640, ws: Workspace | None = None) -> View:
    """Zoom and pan for a tile larger than the screen (shared by pages through ``key``).

    With ``ws``, remembered in the workspace across reloads (see :func:`restore_view`).
    """
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
    """Run ``fn`` (engine work, no Streamlit calls) under a busy box with elapsed time and a Stop button.

    Stop frees the page at once (``on_stop`` then turns off what asked for the work, so the next
    run does not start it again); the work itself finishes in the background, and the engine's
    caches keep its result for next time.
    """
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


#: Pictures of a view zoomed out are sent at up to this many times their size on the screen (sharp on
#: high-density screens and in full screen), never larger than the tile's pixels: a 1500² tile went
#: whole, and its encoding and transfer were most of a slider step's second (issue 22, item 9).
DETAIL = 2


def view_shape(view: View, detail: int = DETAIL) -> tuple[int, int]:
    """(height, width) of the picture of ``view`` a page sends: enlarged by whole pixels when zoomed in."""
    if view.scale >= 1:
        factor = int(view.scale)
        return view.height * factor, view.width * factor
    ch, cw = view.canvas_size
    return min(view.height, ch * detail), min(view.width, cw * detail)


def in_view(array: np.ndarray, view: View, *, smooth: bool = False, detail: int = DETAIL) -> np.ndarray:
    """``array`` (H, W[, C]) uint8 on the tile's grid, cropped to ``view`` at :func:`view_shape`.

    Nearest pixels (class maps, crisp when zoomed in), or ``smooth`` (bilinear: the photo and
    probabilities when zoomed out, without aliasing). Drawing overlays on these view-sized
    arrays, not on the whole tile, is what keeps a rerun short.
    """
    crop = array[view.slices]
    shape = view_shape(view, detail)
    if crop.shape[:2] == shape:
        return crop
    if smooth and view.scale < 1:
        return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(shape[::-1], Image.BILINEAR))
    return resize_nearest(crop, shape)


def show(rgb: np.ndarray, caption: str = "", view: View | None = None, width: int | None = None) -> None:
    """An (H, W, 3) picture, cropped to ``view`` (:func:`in_view`: enlarged crisply when zoomed in, else reduced)."""
    if view is not None:
        rgb = in_view(rgb, view, smooth=True)
    st.image(to_png(rgb), caption=caption, width=width or "stretch")
