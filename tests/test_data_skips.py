"""Real-data skips are named in the summary, and CI fails when it has the data and they skip anyway."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.data_skips import SHARED_DATA
from tests.helpers import REPO

MODULE = """
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="the Inria Austin tiles are not in ../shared/data")
def test_on_real_tiles():
    pass

def test_skips_for_another_reason():
    pytest.skip("no GPU")
"""


def _pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_mod.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(REPO)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.data_skips", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data to play CI with the data")
def test_ci_with_the_data_fails_when_real_data_tests_skip(tmp_path):
    done = _pytest(tmp_path, "true")
    assert done.returncode == 1, done.stdout
    assert "1 real-data test(s) skipped" in done.stdout
    assert "test_mod.py::test_on_real_tiles: the Inria Austin tiles are not in ../shared/data" in done.stdout
    assert "CI has the real data" in done.stdout and "no GPU" not in done.stdout.split("real-data test(s)")[1]


def test_outside_ci_the_skips_are_named_but_do_not_fail(tmp_path):
    for ci in (None, "false"):
        done = _pytest(tmp_path, ci)
        assert done.returncode == 0, done.stdout
        assert "1 real-data test(s) skipped" in done.stdout
        assert "SKIPPED test_mod.py::test_on_real_tiles" in done.stdout
