"""The teaching and guidance features in a real browser: the Learn page, a PDE preset on the
Iterations page, and the where-to-label-next layer on the Label page (one server, the demo)."""

from __future__ import annotations

import pytest

from tools.browser import (
    metrics,
    open_page,
    require_chromium,
    settle,
)

require_chromium()

sync_api = pytest.importorskip("playwright.sync_api")


def table_text(page) -> str:
    return page.locator('[data-testid="stTable"]').first.inner_text()


def test_the_learn_page_runs_a_preset_beside_the_learned_rnn(page, url):
    open_page(page, url, "Learn", wait_for='[data-testid="stTable"]')
    assert page.locator(".katex").count() >= 3  # the equations and the term are typeset
    text = table_text(page)
    assert "Heat equation, t = 10" in text and "learned RNN, t = 5" in text
    shown = metrics(page)
    assert "Laplacian: left out by these 3" in shown  # was "span residual", 0.0 % for every operator
    assert any(v != "0.0%" for k, v in shown.items() if "left out" in k)
    page.get_by_text("Perona–Malik", exact=True).click()
    page.get_by_text("Perona–Malik, t = 10", exact=True).wait_for()
    settle(page)
    assert page.locator(".js-plotly-plot").count() == 1  # exact flux beside the ReLU flux
    assert "M_3 (north difference)" in page.locator("body").inner_text()
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Iteration t").get_by_role("slider")
    slider.focus()
    slider.press("Home")
    page.get_by_text("Perona–Malik at t = 0", exact=True).wait_for()
    page.get_by_text("Perona–Malik, t = 0", exact=True).wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_preset_runs_on_the_iterations_page(page, url):
    open_page(page, url, "Iterations")
    assert "Accuracy at t = 5" in metrics(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").click()
    page.get_by_role("option", name="Perona–Malik (preset)").click()
    page.get_by_text("Showing Perona–Malik preset").wait_for()
    page.locator('[data-testid="stMetricLabel"]').filter(has_text="Accuracy at t = 10").wait_for()
    settle(page)
    assert "kappa = 1" in page.get_by_text("Showing Perona–Malik preset").inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_the_label_page_shows_where_to_label_next(page, url):
    open_page(page, url, "Label")
    page.get_by_text("Show where to label next").click()
    hint = page.get_by_text("Suggested boxes (magenta)")
    hint.wait_for(timeout=180_000)
    settle(page)
    assert hint.inner_text().count("rows ") == 5
    assert page.locator("canvas").count() >= 1  # the canvas is redrawn with the layer
    assert page.locator('[data-testid="stException"]').count() == 0
