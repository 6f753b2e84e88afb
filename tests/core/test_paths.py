"""Where the shipped files are found: in the checkout as always, inside the package when installed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from refiner.core import paths
from tests.helpers import REPO


def test_a_checkout_uses_the_repository_assets_and_workspaces():
    assert paths.CHECKOUT == REPO
    assert paths.ASSETS == REPO / "assets"
    assert (paths.PRETRAINED, paths.DEMO, paths.REAL_DEMO) == (
        REPO / "assets" / "pretrained",
        REPO / "assets" / "demo",
        REPO / "assets" / "real_demo",
    )
    assert (paths.DEMO / "tile.tif").is_file()
    assert paths.default_workspaces() == REPO / "workspaces"
    assert paths.default_data() == REPO.parent / "shared" / "data"


def _installed_copy(site: Path):
    """``refiner/core/paths.py`` loaded from a site-packages-like folder (no pyproject.toml beside it)."""
    target = site / "refiner" / "core" / "paths.py"
    target.parent.mkdir(parents=True)
    shutil.copy(Path(paths.__file__), target)
    spec = importlib.util.spec_from_file_location("installed_paths", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_installed_package_reads_its_own_assets_and_writes_per_user(tmp_path, monkeypatch):
    installed = _installed_copy(tmp_path / "site-packages")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assets, pretrained = installed.ASSETS, installed.PRETRAINED
    assert installed.CHECKOUT is None
    assert assets == tmp_path / "site-packages" / "refiner" / "assets"
    assert pretrained == assets / "pretrained"
    assert installed.default_workspaces() == tmp_path / "share" / "refiner" / "workspaces"
    assert installed.default_data() == tmp_path / "share" / "refiner" / "data"


def test_without_xdg_the_user_folder_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.user_data_dir() == tmp_path / ".local" / "share" / "refiner"
