"""A pytest plugin (loaded by ``tests/conftest.py``): real-data tests that skipped are never silent.

Tests on real imagery skip when ``../shared/data`` is not beside the project, and a skip is one
``s`` among hundreds of dots. This names every such skip in a section of the summary, and in CI
(``CI`` set, as ``.ci/run`` runs) it fails the run when the data is there and they skipped anyway:
a moved folder or a renamed tile must not turn the real-data floors off unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The real imagery beside the project (the same folder as ``tests.helpers.SHARED_DATA``).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_skipped: list[tuple[str, str]] = []  # (test id, reason) of every real-data skip of this run


def in_ci() -> bool:
    """True where ``CI`` is set to anything but an empty string, ``0`` or ``false``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """Why ``report`` skipped, when the reason is missing real data ("" for anything else)."""
    if not report.skipped:
        return ""
    longrepr = report.longrepr
    reason = (str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
    return reason if ("shared/data" in reason or "shared data" in reason) else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if reason := skip_reason(report):
        _skipped.append((report.nodeid, reason))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if reason := skip_reason(report):  # a module that skips as a whole
        _skipped.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's TerminalReporter)
    if not _skipped:
        return
    fail = in_ci() and SHARED_DATA.is_dir()
    terminalreporter.write_sep("=", f"{len(_skipped)} real-data test(s) skipped", red=fail, yellow=not fail)
    for nodeid, reason in _skipped:
        terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")
    if fail:
        terminalreporter.write_line(
            f"CI has the real data ({SHARED_DATA}) but these tests skipped: the run fails. "
            "Check the paths in their skip conditions against the data folder.",
            red=True,
        )
    else:
        terminalreporter.write_line(f"(put the real data at {SHARED_DATA} to run them)")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _skipped and in_ci() and SHARED_DATA.is_dir() and session.exitstatus == 0:
        session.exitstatus = 1
