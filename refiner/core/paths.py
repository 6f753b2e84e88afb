"""Where Refiner's shipped files are and where it writes by default: every such path, in one place.

Refiner runs from source (a checkout, an editable install, or a copy such as the Docker image's
``/app``: ``assets/`` beside ``refiner/``) or from an installed wheel, which carries the same
files inside the package as ``refiner/assets`` (the build maps the repository's ``assets/``
there: ``pyproject.toml``). :data:`ASSETS` is the one that applies, so the engine never needs to
know how it was installed.

Defaults that are written to never point into an installed package (site-packages may be
read-only and is shared): from source they stay in the repository as they always were, else
they go to the per-user data folder (``$XDG_DATA_HOME/refiner``, ``~/.local/share/refiner``).
The environment variables that override them are read where each path is used
(``$REFINER_PRETRAINED``, ``$REFINER_WORKSPACES``, ``$REFINER_DATA``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The ``refiner`` package folder.
PACKAGE = Path(__file__).resolve().parents[1]
#: Installed from a wheel: the shipped files are inside the package (a source tree has them beside it).
INSTALLED = (PACKAGE / "assets").is_dir()
#: The repository (or copy of it) holding the package when running from source, else None.
CHECKOUT: Path | None = None if INSTALLED else PACKAGE.parent
#: The shipped files: ``assets/`` in the repository, ``refiner/assets`` in an installed wheel.
ASSETS = PACKAGE / "assets" if INSTALLED else PACKAGE.parent / "assets"
#: The shipped real-data models (:mod:`refiner.models.pretrained`).
PRETRAINED = ASSETS / "pretrained"
#: The app's embedded demo: synthetic tile, truth, coarse CNN and RNN (``scripts/make_demo_assets.py``).
DEMO = ASSETS / "demo"
#: The real demos' painted labels (``scripts/make_real_demo_labels.py``).
REAL_DEMO = ASSETS / "real_demo"


def user_data_dir() -> Path:
    """The per-user folder for what Refiner writes outside a checkout (not created here)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "refiner"


def default_workspaces() -> Path:
    """Workspaces' default root: ``workspaces/`` in the source tree, else in :func:`user_data_dir`."""
    return (CHECKOUT if CHECKOUT is not None else user_data_dir()) / "workspaces"


def default_data() -> Path:
    """The shared real data's default folder.

    ``../shared/data`` beside the source tree, else ``data/`` in :func:`user_data_dir` (an
    installed package has no neighbours to look in).
    """
    return CHECKOUT.parent / "shared" / "data" if CHECKOUT is not None else user_data_dir() / "data"
