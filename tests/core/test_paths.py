"""Where the shipped files are found: in the checkout as always, inside the package when installed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from refiner.core import paths
from tests.helpers import REPO


def test_a_checkout_uses_the_repository_assets_and_workspaces():
    assert not paths.INSTALLED
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


def _copy(root: Path, *, assets_inside: bool):
    """``refiner/core/paths.py`` loaded from a copy under ``root``, with the assets inside the package
    (as a wheel installs them) or not (a source tree without pyproject.toml, as the Docker image's /app)."""
    target = root / "refiner" / "core" / "paths.py"
    target.parent.mkdir(parents=True)
    shutil.copy(Path(paths.__file__), target)
    if assets_inside:
        (root / "refiner" / "assets" / "pretrained").mkdir(parents=True)
    spec = importlib.util.spec_from_file_location("copied_paths", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_installed_package_reads_its_own_assets_and_writes_per_user(tmp_path, monkeypatch):
    installed = _copy(tmp_path / "site-packages", assets_inside=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assets, pretrained = installed.ASSETS, installed.PRETRAINED
    assert installed.INSTALLED and installed.CHECKOUT is None
    assert assets == tmp_path / "site-packages" / "refiner" / "assets"
    assert pretrained == assets / "pretrained"
    assert installed.default_workspaces() == tmp_path / "share" / "refiner" / "workspaces"
    assert installed.default_data() == tmp_path / "share" / "refiner" / "data"


def test_a_copied_source_tree_is_a_checkout(tmp_path):
    """The Docker image copies refiner/ and assets/ into /app without pyproject.toml: still from source."""
    copied = _copy(tmp_path / "app", assets_inside=False)
    root, demo = copied.CHECKOUT, copied.DEMO
    assert not copied.INSTALLED
    assert root == tmp_path / "app"
    assert demo == tmp_path / "app" / "assets" / "demo"
    assert copied.default_data() == tmp_path / "shared" / "data"


def test_without_xdg_the_user_folder_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.user_data_dir() == tmp_path / ".local" / "share" / "refiner"
