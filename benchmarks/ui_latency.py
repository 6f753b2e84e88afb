"""How long a person waits on the Label and Iterations pages of a 1500² tile, in real Chromium.

    timeout 900 python benchmarks/ui_latency.py [--repeats 20] [--tile 12] [--json out.json]

One ``streamlit run app.py`` (tools/browser.py) on a fresh workspaces root holding one session's
workspace: a whole 1500 × 1500 px Massachusetts Roads tile (1 m), its coarse map from the shipped
coarse CNN, the shipped RNN as the workspace's RNN, and the real demo's painted boxes. The
refinement is cached once before the clock starts (the pages cache it on first use anyway).
Then Debian's Chromium (one Playwright page, 1400 × 1100) measures, ``--repeats`` times each:

- **stroke** (Label page): from the mouse-up of a road stroke to the page showing it registered:
  the road count changed, and the run that saved it ended (its page-end marker,
  :func:`webapp.common.end_of_run`). ``stroke_count_s`` is the count alone;
- **slider step** (Iterations page): from an arrow-key press on the focused "Iteration t" slider
  to both pictures of the new t drawn (their captions name it, the images loaded) and the run
  ended. The steps go down from t = T to 0 and up again.

With ``--only finetune`` (its own JSON), the Train page's "Fine-tune the RNN only" of issue 22:
a workspace of a 1024 × 1024 px window of the same tile (the painted boxes, the shipped coarse
map, no RNN yet, so the page starts from the shipped RNN), "Start training" clicked with the
page's defaults (its 60 s budget), timed to the page showing the finished run and the new
RNN's scores (the refinement of the tile included), and the job's own seconds.

Every wait is on a condition in the page (no fixed sleeps). p50 / p95 / max in seconds, the
machine and its load average go into the JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import ROADS, machine  # noqa: E402
from refiner.app import sessions  # noqa: E402
from refiner.app.workspace import Workspace  # noqa: E402
from tools.browser import _RUN_ENDED as RUN_ENDED  # noqa: E402  (polled every 20 ms here: it is the clock)
from tools.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    ROAD_COUNT_CHANGED,
    metrics,
    settle,
    streamlit_server,
    watch_reruns,
)

NAME = "tile1500"
#: Notes when the page last sent the server something (a rerun request): splits a latency into
#: the browser's part before the request (the canvas's debounce, the slider's) and the rest.
_NOTE_SENDS = """
(() => {
  if (window.__refinerSends) return;
  window.__refinerSends = [];
  window.__refinerRecv = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    window.__refinerSends.push(performance.now());
    return send.call(this, data);
  };
  const Plain = window.WebSocket;
  window.WebSocket = class extends Plain {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => window.__refinerRecv.push(
        [performance.now(), e.data.byteLength ?? e.data.size ?? e.data.length ?? 0]));
    }
  };
})();
"""
#: Seconds from ``t0`` (performance.now()) to the first and the last message from the server, and KiB received.
_RECEIVED = """
(t0) => {
  const r = window.__refinerRecv;
  if (!r.length) return [0, 0, 0];
  return [(r[0][0] - t0) / 1000, (r[r.length - 1][0] - t0) / 1000, r.reduce((a, x) => a + x[1], 0) / 1024];
}
"""
#: True once the picture captions name iteration ``t`` and every picture on the page has loaded.
_SHOWN = """
(t) => {
  const caps = [...document.querySelectorAll('[data-testid="stImageCaption"], [data-testid="caption"]')]
    .map(e => e.innerText);
  const want = [`class map at t = ${t}`, `at t = ${t} (dark`];
  if (!want.every(w => caps.some(c => c.includes(w)))) return false;
  const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
  return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0);
}
"""


def make_workspace(root: Path, tile_name: str = "12", size: int = 1500, rnn: bool = True) -> tuple[str, Workspace]:
    """A session (its token) owning a workspace of a Massachusetts tile's top-left ``size``² px, with coarse map.

    With the shipped RNN as its RNN (``rnn``), else none yet.
    """
    from refiner.app.demos import REAL_DEMOS
    from refiner.app.pretrained import coarse_into_workspace
    from refiner.app.uploads import load_tile
    from refiner.core.classes import IGNORE
    from refiner.models.pretrained import pretrained_root

    demo = REAL_DEMOS["real-roads"]
    token = sessions.issue_session(root)
    sess = sessions.Session(root, sessions.browser_key(token))
    tile = load_tile(ROADS / "images" / f"{tile_name}.jpg", window=(0, 0, size, size), name=f"{tile_name}.jpg")
    tile.pixel_size = 1.0
    ws = sess.create(NAME, tile, demo.classes, source={"kind": "benchmark", "name": f"Massachusetts {tile_name}"})
    coarse_into_workspace(ws)
    if rnn:
        ws.install_model(pretrained_root() / "rnn_1m", "rnn")
    from PIL import Image

    labels = np.full(tile.shape, IGNORE, np.uint8)
    r, c, h, w = demo.window
    labels[r : r + h, c : c + w] = np.asarray(Image.open(demo.labels_file))
    ws.write_labels(labels, undo=False)
    return token, ws


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this run's processes: the Streamlit server, Chromium, the rest.

    Per step, divided by the steps, it says what a step costs whatever else runs on the machine
    (wall clock on a busy machine is mostly waiting for a core).
    """
    import psutil

    out = {"server": 0.0, "browser": 0.0, "other": 0.0}
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
            name = " ".join(proc.cmdline()[:4]) + proc.name()
        except psutil.Error:
            continue
        kind = "server" if "streamlit" in name else "browser" if "chrom" in name.lower() else "other"
        out[kind] += times.user + times.system
    return out


def cpu_per_step(before: dict[str, float], after: dict[str, float], steps: int) -> dict[str, float]:
    """CPU seconds per step of each kind of process, between two :func:`cpu_seconds`."""
    return {k: round((after[k] - before[k]) / steps, 3) for k in before}


def pct(values: list[float]) -> dict:
    """n, p50, p95, max (seconds, 3 decimals)."""
    a = np.asarray(values, float)
    return {
        "n": len(a),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
    }


def strokes(page, url: str, token: str, repeats: int) -> dict:
    """Paint ``repeats`` road strokes on the Label page; seconds from mouse-up to the count and to the run's end."""
    page.goto(f"{url}/Label?session={token}&ws={NAME}")
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=600_000)
    settle(page, 600_000)
    page.get_by_text(re.compile(r"^road \(#")).click()
    page.get_by_text(re.compile(r"^Brush: road,")).wait_for(timeout=600_000)
    settle(page, 600_000)
    count, done, sent, recv = [], [], [], []
    cpu0 = cpu_seconds()
    for i in range(repeats):
        box = page.locator("canvas").last.bounding_box()
        x = box["x"] + box["width"] * (0.08 + 0.8 * (i % 4) / 4)
        y = box["y"] + box["height"] * (0.06 + 0.88 * (i // 4) / max(1, (repeats - 1) // 4))
        before = metrics(page)["road"]
        page.mouse.move(x, y)
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(x + 6 * k, y - 2 * k)
        t0 = page.evaluate("() => { window.__refinerSends = []; window.__refinerRecv = []; return performance.now(); }")
        t = time.perf_counter()
        page.mouse.up()
        page.wait_for_function(
            ROAD_COUNT_CHANGED,
            arg=[before],
            timeout=600_000,
            polling=20,
        )
        count.append(time.perf_counter() - t)
        page.wait_for_function(RUN_ENDED, timeout=600_000, polling=20)
        done.append(time.perf_counter() - t)
        sent.append((page.evaluate("() => window.__refinerSends[0]") - t0) / 1000)
        recv.append(page.evaluate(_RECEIVED, t0))
        settle(page, 600_000)  # nothing left running before the next stroke
    return {
        "stroke_cpu_s": cpu_per_step(cpu0, cpu_seconds(), repeats),
        "stroke_count_s": pct(count),
        "stroke_s": pct(done),
        "stroke_request_s": pct(sent),
        "stroke_first_reply_s": pct([r[0] for r in recv]),
        "stroke_last_reply_s": pct([r[1] for r in recv]),
        "stroke_reply_kib": pct([r[2] for r in recv]),
        "stroke_raw_s": [round(v, 3) for v in done],
    }


def slider_steps(page, url: str, token: str, repeats: int) -> dict:
    """Step the Iterations page's "Iteration t" slider with the arrow keys ``repeats`` times."""
    page.goto(f"{url}/Iterations?session={token}&ws={NAME}")
    page.wait_for_selector('[data-testid="stImage"] img', timeout=600_000)
    settle(page, 600_000)
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").locator('input[type="range"]')
    top, t_now = int(thumb.get_attribute("max")), int(thumb.input_value())
    thumb.focus()
    times, sent, recv, direction = [], [], [], -1
    cpu0 = cpu_seconds()
    for _ in range(repeats):
        if t_now + direction < 0 or t_now + direction > top:
            direction = -direction
        t_now += direction
        t0 = page.evaluate("() => { window.__refinerSends = []; window.__refinerRecv = []; return performance.now(); }")
        t = time.perf_counter()
        page.keyboard.press("ArrowLeft" if direction < 0 else "ArrowRight")
        page.wait_for_function(_SHOWN, arg=t_now, timeout=600_000, polling=20)
        page.wait_for_function(RUN_ENDED, timeout=600_000, polling=20)
        times.append(time.perf_counter() - t)
        sent.append((page.evaluate("() => window.__refinerSends[0]") - t0) / 1000)
        recv.append(page.evaluate(_RECEIVED, t0))
        settle(page, 600_000)
        if not thumb.evaluate("e => e === document.activeElement"):
            thumb.focus()
    return {
        "slider_cpu_s": cpu_per_step(cpu0, cpu_seconds(), repeats),
        "slider_s": pct(times),
        "slider_request_s": pct(sent),
        "slider_first_reply_s": pct([r[0] for r in recv]),
        "slider_last_reply_s": pct([r[1] for r in recv]),
        "slider_reply_kib": pct([r[2] for r in recv]),
        "slider_raw_s": [round(v, 3) for v in times],
        "iterations": top,
    }


def finetune(page, url: str, token: str, ws: Workspace) -> dict:
    """Click the Train page's "Start training" (its defaults); seconds to the finished run and the new RNN's scores."""
    from refiner.app import jobs

    page.goto(f"{url}/Train?session={token}&ws={NAME}")
    page.get_by_role("button", name="Start training").wait_for(timeout=600_000)
    settle(page, 600_000)
    start = page.get_by_text(re.compile(r"^the pretrained RNN ")).first.inner_text()
    t = time.perf_counter()
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("The current RNN's scores").wait_for(timeout=900_000)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=stDataFrame], [data-testid=stTable]').length > 0",
        timeout=900_000,
        polling=100,
    )
    settle(page, 900_000)
    total = time.perf_counter() - t
    status = jobs.TRAINING.read(ws)
    assert status is not None and status.state == "finished", status
    return {
        "finetune_tile": list(ws.shape),
        "finetune_start_from": start,
        "finetune_end_to_end_s": round(total, 1),
        "finetune_job_s": round(status.updated - status.started, 1),
        "finetune_steps": status.step,
        "finetune_message": status.message,
        "finetune_best_val": status.best_val,
        "max_seconds": jobs.TrainParams().max_seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tile", default="12", help="Massachusetts Roads tile (images/<tile>.jpg, 1500 × 1500 px)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/ui_latency.json"))
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile (kept in the JSON)")
    ap.add_argument("--only", choices=["stroke", "slider", "finetune"], help="measure one (finetune: only on request)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from refiner.app import results

    root = Path(tempfile.mkdtemp(prefix="refiner-ui-latency-"))
    t = time.perf_counter()
    if args.only == "finetune":
        token, ws = make_workspace(root, args.tile, size=1024, rnn=False)
    else:
        token, ws = make_workspace(root, args.tile)
        results.refinement(ws)  # cached in the workspace, as the first visit of the Iterations page would
    setup_s = time.perf_counter() - t
    out: dict = {"machine_start": machine(), "tile": f"massachusetts_roads/images/{args.tile}.jpg", "shape": ws.shape}
    out["setup_s"] = round(setup_s, 1)
    out["note"] = args.note
    with streamlit_server(root, timeout=300) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(600_000)
        watch_reruns(page)
        page.add_init_script(_NOTE_SENDS)
        if args.only in (None, "stroke"):
            out.update(strokes(page, url, token, args.repeats))
        if args.only in (None, "slider"):
            out.update(slider_steps(page, url, token, args.repeats))
        if args.only == "finetune":
            out.update(finetune(page, url, token, ws))
        out["exceptions"] = page.locator('[data-testid="stException"]').count()
        browser.close()
    out["machine_end"] = machine()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("raw_s")}, indent=1))


if __name__ == "__main__":
    main()
