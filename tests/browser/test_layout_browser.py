"""What a person sees at common window widths: swatches beside their names, chart titles clear of the toolbar.

One server and one page (as one user: the demo copy), like the other browser modules.
"""

from __future__ import annotations

import pytest

from tools.browser import open_page, require_chromium, settle

require_chromium()

sync_api = pytest.importorskip("playwright.sync_api")

WIDTHS = (900, 1000, 1100, 1200, 1300, 1400)

#: Vertical gap (px) between each brush swatch and the first letter of its name; 0 = the same line.
SWATCH_GAPS = """() => {
  const out = [];
  for (const sw of document.querySelectorAll('span[style*="inline-block"][style*="0.9em"]')) {
    let node = sw.nextSibling;
    while (node && node.nodeType === 3 && !node.textContent.replace(/\\u00a0/g, ' ').trim()) node = node.nextSibling;
    if (!node || node.nodeType !== 3) continue;
    const text = node.textContent, start = text.search(/\\S/);
    const r = document.createRange();
    r.setStart(node, start); r.setEnd(node, start + 1);
    const a = sw.getBoundingClientRect(), b = r.getBoundingClientRect();
    out.push(Math.abs((a.top + a.bottom) / 2 - (b.top + b.bottom) / 2));
  }
  return out;
}"""


def test_every_brush_swatch_stays_beside_its_name(page, url):
    """On Label the road swatch wrapped to the end of one line, its name to the next."""
    open_page(page, url, "Label")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(300)
        gaps = page.evaluate(SWATCH_GAPS)
        assert len(gaps) >= 4, gaps  # background, building, road, eraser
        assert max(gaps) < 6, (width, gaps)


OVERLAP = """() => {
  const out = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const title = plot.querySelector('.gtitle'), bar = plot.querySelector('.modebar');
    if (!title || !bar) continue;
    const t = title.getBoundingClientRect(), m = bar.getBoundingClientRect();
    const x = Math.min(t.right, m.right) - Math.max(t.left, m.left);
    const y = Math.min(t.bottom, m.bottom) - Math.max(t.top, m.top);
    out.push(x > 0 && y > 0 ? x * y : 0);
  }
  return out;
}"""


def test_chart_titles_are_clear_of_the_chart_toolbar(page, url):
    """On Iterations the toolbar (plotly's modebar) covered the end of the chart title."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_page(page, url, "Iterations")
    page.locator(".js-plotly-plot").first.wait_for()
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        settle(page)
        page.locator(".js-plotly-plot").first.hover()  # the toolbar shows on hover
        page.wait_for_timeout(300)
        overlaps = page.evaluate(OVERLAP)
        assert overlaps and max(overlaps) == 0, (width, overlaps)
