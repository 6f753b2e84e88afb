"""Development tools the tests, scripts and benchmarks share; never shipped (not in the wheel).

A script or benchmark may import these, where it must never import ``tests``: ``browser`` starts
the app with ``streamlit run`` and drives it in Chromium (Playwright), as the browser tests,
``scripts/screenshots.py`` and ``benchmarks/sessions_30.py`` do.
"""
