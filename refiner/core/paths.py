"""Where Refiner's shipped files are and where it writes by default: every such path, in one place.

Refiner runs from a source checkout (the repository: ``assets/`` beside ``refiner/``) or from
an installed wheel, which carries the same files inside the package as ``refiner/assets`` (the
build maps the repository's ``assets/`` there: ``pyproject.toml``). :data:`ASSETS` is the one
that applies, so the engine never needs to know how it was installed.

Defaults that are written to never point into an installed package (site-packages may be
read-only and is shared): in a checkout they stay in the repository as they always were, else
they go to the per-user data folder (``$XDG_DATA_HOME/refiner``, ``~/.local/share/refiner``).
The environment variables that override them are read where each path is used
(``$REFINER_PRETRAINED``, ``$REFINER_WORKSPACES``, ``$REFINER_DATA``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The ``refiner`` package folder.
PACKAGE = Path(__file__).resolve().parents[1]
#: The repository when running from a source checkout (``pyproject.toml`` beside the package;
#: an editable install is one too), else None (an installed wheel).
CHECKOUT: Path | None = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else None
#: The shipped files: ``assets/`` in the repository, ``refiner/assets`` in an installed wheel.
ASSETS = CHECKOUT / "assets" if CHECKOUT is not None else PACKAGE / "assets"
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
    """Workspaces' default root: ``workspaces/`` in the checkout, else in :func:`user_data_dir`."""
    return (CHECKOUT if CHECKOUT is not None else user_data_dir()) / "workspaces"


def default_data() -> Path:
    """The shared real data's default folder: ``../shared/data`` beside the checkout, else
    ``data/`` in :func:`user_data_dir` (an installed package has no neighbours to look in)."""
    return CHECKOUT.parent / "shared" / "data" if CHECKOUT is not None else user_data_dir() / "data"
