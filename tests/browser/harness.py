"""Start the real app with ``streamlit run`` and drive it with Playwright and Debian's Chromium.

Used by the browser tests and by ``scripts/screenshots.py``. ``playwright install`` is never
needed: the browser is ``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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


def settle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished running the script (no 'Running...' indicator)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout, polling=200
    )
    page.wait_for_timeout(300)


def stroke(page, x: float, y: float, dx: float, dy: float, moves: int = 15) -> None:
    """Paint one stroke with the mouse from (x, y), ``moves`` steps of (dx, dy) page pixels."""
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, moves + 1):
        page.mouse.move(x + dx * k, y + dy * k)
    page.mouse.up()


def metrics(page) -> dict[str, str]:
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {lab.strip(): val.strip() for lab, val in zip(labels, values, strict=False)}


def open_page(page, url: str, name: str = "", wait_for: str = '[data-testid="stMetricValue"]') -> None:
    page.goto(f"{url}/{name}")
    page.wait_for_selector(wait_for, timeout=180_000)
    settle(page)
