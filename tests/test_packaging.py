"""What ``pip install .`` ships, read from ``pyproject.toml`` (``make install-check`` installs it for real)."""

from __future__ import annotations

import tomllib

from refiner import cli
from tests.helpers import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PROJECT["tool"]["setuptools"]


def test_every_sub_package_is_listed_and_nothing_else():
    """The packages are named one by one (the assets mapping rules out discovery): a new folder must be added."""
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "refiner").rglob("__init__.py")}
    assert set(SETUPTOOLS["packages"]) == on_disk | {"refiner.assets"}


def test_the_assets_the_c_kernel_and_the_typed_marker_are_package_data():
    assert SETUPTOOLS["package-dir"] == {"refiner.assets": "assets"}
    assert SETUPTOOLS["package-data"]["refiner"] == ["py.typed"]  # PEP 561
    assert (REPO / "refiner" / "py.typed").is_file()
    assert SETUPTOOLS["package-data"]["refiner.models"] == ["rnn_step.c"]
    assert (REPO / "refiner" / "models" / "rnn_step.c").is_file()
    assert SETUPTOOLS["package-data"]["refiner.assets"] == ["**/*"]
    assert SETUPTOOLS["include-package-data"] is False  # only what is listed here goes in


def test_the_dependencies_are_requirements_txt():
    assert "dependencies" in PROJECT["project"]["dynamic"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    pins = [ln for ln in (REPO / "requirements.txt").read_text().splitlines() if ln.strip()]
    assert all(ln.startswith("#") or "==" in ln for ln in pins), "every requirement is pinned, comments aside"


def test_the_console_script_is_the_cli_main():
    assert PROJECT["project"]["scripts"] == {"refiner": "refiner.cli:main"}
    assert callable(cli.main)
