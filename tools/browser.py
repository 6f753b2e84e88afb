"""Start the real app with ``streamlit run`` and drive it with Playwright and Debian's Chromium.

Used by the browser tests (``tests/browser``), ``scripts/screenshots.py`` and
``benchmarks/sessions_30.py``. ``playwright install`` is never needed: the browser is
``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("REFINER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def require_chromium(*, demo_assets: bool = True) -> None:
    """Skip the calling test module without Debian's Chromium (fail in CI, where `make test` installs it)."""
    import pytest

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: `make test` installs it with apt-get", pytrace=False)
        pytest.skip(f"{CHROMIUM} not found: install it with `apt-get install chromium`", allow_module_level=True)
    if demo_assets and not (REPO / "assets" / "demo" / "tile.tif").is_file():
        pytest.fail("the demo assets are missing: run scripts/make_demo_assets.py", pytrace=False)


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(workspaces: Path, *, port: int | None = None, timeout: float = 120) -> Iterator[str]:
    """Run ``streamlit run app.py`` on 127.0.0.1 with its own workspace root; yields its URL."""
    port = port or free_port()
    env = {
        **os.environ,
        "REFINER_WORKSPACES": str(workspaces),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log = open(workspaces / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true",
            "--server.address", "127.0.0.1",
            "--server.port", str(port),
            "--browser.gatherUsageStats", "false",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - t0 > timeout:
                raise RuntimeError(f"streamlit did not start: {(workspaces / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


#: Installed in every document the page opens: notes the number of the last finished run (the
#: hidden ``data-refiner-run`` element :func:`webapp.common.end_of_run` writes) whenever the page asks
#: the server for a rerun of the whole page (a BackMsg ``rerun_script``, field 11, without a
#: ``fragment_id``, field 5 of ClientState: a fragment's rerun does not run the page's end).
_WATCH_RERUNS = """
(() => {
  if (window.__refinerWatch) return;
  window.__refinerWatch = true;
  window.__refinerAskedAfter = -1;
  window.__refinerAsks = 0;  // rerun requests sent so far (expect_rerun waits for one more)
  const lastRun = () => Math.max(0, ...[...document.querySelectorAll('[data-refiner-run]')]
                                          .map(e => Number(e.getAttribute('data-refiner-run'))));
  const varint = (b, i) => { let v = 0, m = 1; for (;;) { const x = b[i++]; v += (x & 127) * m;
                                                          if (x < 128) return [v, i]; m *= 128; } };
  const field = (b, want) => {  // the bytes of length-delimited field `want`, or null
    for (let i = 0; i < b.length;) {
      let tag; [tag, i] = varint(b, i);
      const no = Math.floor(tag / 8), type = tag & 7;
      if (type === 0) { [, i] = varint(b, i); continue; }
      if (type === 1) { i += 8; continue; }
      if (type === 5) { i += 4; continue; }
      if (type !== 2) return null;
      let n; [n, i] = varint(b, i);
      if (no === want) return b.subarray(i, i + n);
      i += n;
    }
    return null;
  };
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      const b = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
      const rerun = b && field(b, 11);
      if (rerun && !(field(rerun, 5) || []).length) {
        window.__refinerAskedAfter = lastRun();
        window.__refinerAsks += 1;
      }
    } catch (e) { /* never break the app */ }
    return send.call(this, data);
  };
})();
"""

#: True once the run the page last asked for has ended: connected, not running, no status widget,
#: and a run-end marker newer than the one shown when the rerun was asked for (or an exception
#: shown: the test reads it).
_RUN_ENDED = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-connection-state') !== 'CONNECTED') return false;
  if (app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-testid="stException"]')) return true;
  const marks = [...document.querySelectorAll('[data-refiner-run]')]
    .filter(e => !e.closest('[data-stale="true"]'));
  if (!marks.length) return false;
  const run = Math.max(...marks.map(e => Number(e.getAttribute('data-refiner-run'))));
  return run > (window.__refinerAskedAfter ?? -1);
}
"""


def watch_reruns(page) -> None:
    """Make ``page`` note its rerun requests (:data:`_WATCH_RERUNS`), now and in every document it opens."""
    if not getattr(page, "_refiner_watching", False):
        page.add_init_script(_WATCH_RERUNS)
        page._refiner_watching = True
    page.evaluate(_WATCH_RERUNS)


def settle(page, timeout: float = 120_000) -> None:
    """Wait until the run the page last asked for has ended, even one the server has not started yet.

    Not only "no 'Running...' indicator right now": on a busy machine a click's run can start late.
    The page writes a numbered marker at the end of every run (:func:`webapp.common.end_of_run`);
    the page notes the marker's number whenever it asks for a rerun (:data:`_WATCH_RERUNS`), and
    this waits for a newer one, Streamlit not running and its status widget gone. No fixed sleeps.
    """
    watch_reruns(page)
    page.wait_for_function(_RUN_ENDED, timeout=timeout, polling=100)


@contextlib.contextmanager
def expect_rerun(page, timeout: float = 120_000) -> Iterator[None]:
    """Around an action that changes a widget: on leaving, wait until the page has asked for a rerun, and it ended.

    :func:`settle` alone cannot tell "not asked for yet" from "nothing to ask for": a widget may send
    its new value a moment after the key or click that changed it (the slider commits it in a later
    React task), and a ``settle`` that looks in between sees the last run ended and returns. Like
    Playwright's ``expect_*`` helpers, this counts the page's rerun requests before the action.
    """
    watch_reruns(page)
    asked = _asks(page)
    yield
    _wait_for_ask(page, asked, timeout)
    settle(page, timeout)


def _asks(page) -> int:
    """How many whole-page reruns the page has asked for (:data:`_WATCH_RERUNS` counts them)."""
    return page.evaluate("() => window.__refinerAsks")


def _wait_for_ask(page, asked: int, timeout: float) -> None:
    """Wait until the page has asked for more reruns than ``asked``."""
    page.wait_for_function("(n) => window.__refinerAsks > n", arg=asked, timeout=timeout, polling=50)


def click_for_rerun(page, target, *, tries: int = 3, wait: float = 15_000) -> None:
    """Click a button until the page asks the server for a rerun, then wait for that run's end.

    A click that lands while a rerun redraws the page can hit an element being replaced and be
    lost: a share button clicked just after a reload made no link in CI (no share was recorded).
    Each try waits for the page's rerun request (counted by :data:`_WATCH_RERUNS`), not a sleep.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    watch_reruns(page)
    for attempt in range(tries):
        asked = _asks(page)
        target.click()
        try:
            _wait_for_ask(page, asked, wait)
            break
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
    settle(page)


def stroke(page, x: float, y: float, dx: float, dy: float, moves: int = 15) -> None:
    """Paint one stroke with the mouse from (x, y), ``moves`` steps of (dx, dy) page pixels."""
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, moves + 1):
        page.mouse.move(x + dx * k, y + dy * k)
    page.mouse.up()


def metrics(page) -> dict[str, str]:
    """The page's metrics: label -> value, as shown."""
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {lab.strip(): val.strip() for lab, val in zip(labels, values, strict=False)}


def session_query(page) -> str:
    """The ``?session=…`` of the page's address (the browser's session key), or "" before the first visit."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    token = parse_qs(urlsplit(page.url).query).get("session")
    return "?" + urlencode({"session": token[0]}) if token else ""


def open_page(page, url: str, name: str = "", wait_for: str = '[data-testid="stMetricValue"]') -> None:
    """Go to page ``name`` as the same user: the session key of the address goes along (as a bookmark would)."""
    page.goto(f"{url}/{name}{session_query(page)}")
    page.wait_for_selector(wait_for, timeout=180_000)
    settle(page)


def metric_changed(page, name: str, before: str, timeout: float = 60_000) -> None:
    """Wait until the metric labelled ``name`` shows something other than ``before``."""
    page.wait_for_function(
        "([name, before]) => { const l = [...document.querySelectorAll('[data-testid=stMetricLabel]')];"
        " const v = [...document.querySelectorAll('[data-testid=stMetricValue]')];"
        " const i = l.findIndex(x => x.innerText.trim() === name);"
        " return i >= 0 && v[i] && v[i].innerText.trim() !== before; }",
        arg=[name, before],
        timeout=timeout,
    )
    settle(page)


def paint_stroke(page, brush: str = "road", where: tuple[float, float] = (0.7, 0.8), steps: int = 15) -> None:
    """Paint one stroke with ``brush`` on the Label page's canvas; returns once the counts show it."""
    before = metrics(page)[brush]
    page.get_by_text(re.compile(rf"^{re.escape(brush)} \(#")).click()
    # the rerun that gives the canvas the brush's colour may start late on a busy machine: wait for
    # the caption drawn after the canvas to name the brush
    page.get_by_text(re.compile(rf"^Brush: {re.escape(brush)},")).wait_for()
    settle(page)
    canvas = page.locator("canvas").last
    canvas.wait_for()
    box = canvas.bounding_box()
    stroke(page, box["x"] + box["width"] * where[0], box["y"] + box["height"] * where[1], 6, -2, steps)
    metric_changed(page, brush, before)


#: A page condition for ``wait_for_function(..., arg=[before])``: the Label page's "road" count
#: differs from ``before`` (a stroke was saved and counted), shared by the latency benchmarks.
ROAD_COUNT_CHANGED = (
    "([b]) => { const l = [...document.querySelectorAll('[data-testid=stMetricLabel]')];"
    " const v = [...document.querySelectorAll('[data-testid=stMetricValue]')];"
    " const i = l.findIndex(x => x.innerText.trim() === 'road');"
    " return i >= 0 && v[i] && v[i].innerText.trim() !== b; }"
)
