"""Thirty people on one Refiner server: isolation, errors and page latency.

    timeout 900 python benchmarks/sessions_30.py [--sessions 30] [--concurrency 30] [--json out.json]

One ``streamlit run app.py`` (tools/browser.py) on a fresh workspaces root whose demo
template is built first (as the first visitor of a real server would); then one Chromium
(Debian's) with ``--sessions`` Playwright contexts, ``--concurrency`` of them at a time. Each
context is a person who has never been there: opens the Label page (a new session, its own copy
of the demo), paints one road stroke at a place of its own, refreshes, and, once everybody has
painted, refreshes again. Recorded:

- **isolation**: each page shows only its own workspace (the sidebar's list holds "demo" alone), its
  road count after the refresh is the one its own stroke gave (no one else's stroke added), and on
  disk each session's labels differ from the template only near its own stroke;
- **errors**: Streamlit exceptions on a page, failed or timed-out steps;
- **latency** (wall clock, seconds): first open (new session: demo copy + first run), a
  stroke (mouse up to the new count on the page), a refresh; p50 / p95 / max over sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from refiner.app import sessions  # noqa: E402
from refiner.app.workspace import Workspace  # noqa: E402
from refiner.core.classes import IGNORE  # noqa: E402
from tools.browser import CHROMIUM, CHROMIUM_ARGS, ROAD_COUNT_CHANGED, streamlit_server  # noqa: E402

STEPS, DX, DY = 8, 6, 2  # the stroke: 8 moves of (+6, -2) screen px, as tools/browser.paint_stroke


async def settle(page) -> None:
    await page.wait_for_timeout(300)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=600_000, polling=200
    )
    await page.wait_for_timeout(300)


async def metrics(page) -> dict[str, str]:
    labels = await page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = await page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {a.strip(): b.strip() for a, b in zip(labels, values, strict=False)}


async def loaded(page) -> None:
    await page.wait_for_selector('[data-testid="stMetricValue"]', timeout=600_000)
    await settle(page)


def where(i: int, n: int) -> tuple[float, float]:
    """Each session's own stroke start (fractions of the canvas): two columns, rows apart."""
    rows = (n + 1) // 2
    return 0.1 + 0.45 * (i % 2), 0.08 + 0.86 * (i // 2) / max(1, rows - 1)


async def person(browser, url: str, i: int, n: int, gate: asyncio.Semaphore, out: dict) -> None:
    rec = out.setdefault(i, {"errors": []})
    async with gate:
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1100})
        page = await ctx.new_page()
        page.set_default_timeout(600_000)
        try:
            t = time.perf_counter()
            await page.goto(f"{url}/Label")
            await loaded(page)
            rec["open_s"] = time.perf_counter() - t
            rec["token"] = re.search(r"session=([^&]+)", page.url).group(1)
            before = (await metrics(page))["road"]
            await page.get_by_text(re.compile(r"^road \(#")).click()
            await page.get_by_text(re.compile(r"^Brush: road,")).wait_for()  # the canvas has the road colour
            await settle(page)
            box = await page.locator("canvas").last.bounding_box()
            fx, fy = where(i, n)
            x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
            rec["stroke_px"] = (fx, fy, box["width"], box["height"])
            await page.mouse.move(x, y)
            await page.mouse.down()
            for k in range(1, STEPS + 1):
                await page.mouse.move(x + DX * k, y - DY * k)
            t = time.perf_counter()
            await page.mouse.up()
            await page.wait_for_function(
                ROAD_COUNT_CHANGED,
                arg=[before],
                timeout=600_000,
            )
            rec["stroke_s"] = time.perf_counter() - t
            await settle(page)
            rec["road_after_stroke"] = (await metrics(page))["road"]
            t = time.perf_counter()
            await page.reload()
            await loaded(page)
            rec["refresh_s"] = time.perf_counter() - t
            rec["road_after_refresh"] = (await metrics(page))["road"]
            await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()  # the workspace list
            rec["workspaces"] = [o.strip() for o in await page.locator('[role="option"]').all_inner_texts()]
            await page.keyboard.press("Escape")
            rec["exceptions"] = await page.locator('[data-testid="stException"]').count()
            rec["page"], rec["ctx"] = page, ctx
        except Exception as exc:  # a failed step is a result: counted, not raised
            rec["errors"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            await ctx.close()


async def final_check(rec: dict) -> None:
    """After everybody painted: a last refresh shows still only one's own stroke."""
    page = rec.pop("page", None)
    if page is None:
        return
    try:
        t = time.perf_counter()
        await page.reload()
        await loaded(page)
        rec["final_refresh_s"] = time.perf_counter() - t
        rec["road_final"] = (await metrics(page))["road"]
        rec["exceptions"] += await page.locator('[data-testid="stException"]').count()
    except Exception as exc:
        rec["errors"].append(f"final: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await rec.pop("ctx").close()


def disk_isolation(root: Path, recs: dict) -> list[str]:
    """Each session's labels differ from the template only around its own stroke."""
    template = Workspace(root / sessions.TEMPLATES / "demo").labels()
    problems = []
    for i, rec in recs.items():
        if "stroke_px" not in rec:  # it failed before painting: counted under errors
            continue
        s = sessions.Session(root, sessions.browser_key(rec["token"]))
        if s.names() != ["demo"]:
            problems.append(f"session {i}: workspaces {s.names()}")
            continue
        changed = np.argwhere(s.open("demo").labels() != template)
        fx, fy, w, h = rec["stroke_px"]
        scale = template.shape[1] / w  # tile px per canvas px (zoom 1: the whole tile)
        x0, y0 = fx * w * scale, fy * h * scale
        x1, y1 = x0 + STEPS * DX * scale, y0 - STEPS * DY * scale
        margin = 40 * scale  # the brush (16 screen px) and a little
        inside = (
            (changed[:, 1] >= x0 - margin) & (changed[:, 1] <= x1 + margin)
            & (changed[:, 0] >= y1 - margin) & (changed[:, 0] <= y0 + margin)
        )  # fmt: skip
        if len(changed) == 0 or not inside.all():
            problems.append(f"session {i}: {len(changed)} changed px, {int((~inside).sum())} away from its stroke")
        if not (s.open("demo").labels()[tuple(changed.T)] != IGNORE).all():
            problems.append(f"session {i}: pixels unlabelled that were labelled")
    return problems


def pct(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2)}  # fmt: skip


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    root = Path(tempfile.mkdtemp(prefix="refiner-sessions-"))
    t = time.perf_counter()
    sessions.template(root, "demo")  # the first visitor of a server builds it; not timed per session
    build_s = time.perf_counter() - t
    recs: dict = {}
    with streamlit_server(root, timeout=300) as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            gate = asyncio.Semaphore(args.concurrency)
            t = time.perf_counter()
            await asyncio.gather(*(person(browser, url, i, args.sessions, gate, recs) for i in range(args.sessions)))
            await asyncio.gather(*(final_check(r) for r in recs.values()))
            wall = time.perf_counter() - t
            await browser.close()
    leaks = [
        i for i, r in recs.items()
        if "road_final" in r and not (r["road_after_stroke"] == r["road_after_refresh"] == r["road_final"])
    ]  # fmt: skip
    foreign = [i for i, r in recs.items() if r.get("workspaces") != ["demo"]]
    disk = disk_isolation(root, recs)
    errors = [f"session {i}: {e}" for i, r in recs.items() for e in r["errors"]]
    errors += [f"session {i}: {r['exceptions']} exception(s) on a page" for i, r in recs.items() if r.get("exceptions")]
    completed = sum("road_final" in r for r in recs.values())
    return {
        "machine": machine(),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "completed": completed,
        "template_build_s": round(build_s, 1),
        "wall_s": round(wall, 1),
        "isolation": {
            "ok": not leaks and not foreign and not disk and completed == args.sessions,
            "count_changed_by_others": leaks,
            "saw_other_workspaces": foreign,
            "disk": disk,
        },
        "errors": errors,
        "latency_s": {
            "first_open": pct([r["open_s"] for r in recs.values() if "open_s" in r]),
            "stroke": pct([r["stroke_s"] for r in recs.values() if "stroke_s" in r]),
            "refresh": pct([r[k] for r in recs.values() for k in ("refresh_s", "final_refresh_s") if k in r]),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=30, help="contexts working at the same time")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
