"""Class names are text in a real browser: a class named like a Markdown image makes no viewer's
browser fetch anything (issue #23 saw 16 requests from the brush list, legend and sidebar)."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlencode

import pytest

from refiner.core.classes import ClassSpec
from refiner.data.synthetic import make_scene
from tests.helpers import TOKEN, session
from tools.browser import free_port, require_chromium, settle

require_chromium(demo_assets=False)

sync_api = pytest.importorskip("playwright.sync_api")


class _Count(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        _Count.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_markdown_class_name_fetches_nothing(url, page, workspaces):
    port = free_port()
    listener = http.server.HTTPServer(("127.0.0.1", port), _Count)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        evil = f"![t](http://127.0.0.1:{port}/md.png)"
        classes = ClassSpec(("background", evil, f"<img src=http://127.0.0.1:{port}/h.png>"), (0, 1, 2))
        session(workspaces).create("evil", make_scene(64, seed=1).tile(), classes)
        page.goto(f"{url}/Label?{urlencode({'session': TOKEN, 'ws': 'evil'})}")
        page.wait_for_selector('[data-testid="stMetricValue"]', timeout=180_000)
        settle(page)
        # the name is on the page as its own characters (brush list, legend, counts, sidebar)
        page.get_by_text(f"127.0.0.1:{port}/md.png", exact=False).first.wait_for(timeout=60_000)
        assert page.get_by_text(f"![t](http://127.0.0.1:{port}/md.png)", exact=False).count() >= 3
        assert page.locator(f"img[src*='{port}']").count() == 0
        assert _Count.hits == []
    finally:
        listener.shutdown()
