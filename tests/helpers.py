"""What the tests share, built in code: small workspaces, page runs, synthetic probabilities, data paths.

Fixtures stay in ``conftest.py`` files; plain functions and constants live here so a test imports
them by name (``from tests.helpers import make_workspace``) instead of reaching into a conftest.
Every page test is one browser session: :data:`TOKEN` in the page's ``?session=`` (what
:func:`run` passes), owning the workspaces :func:`make_workspace` makes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from refiner.app import sessions
from refiner.app.sessions import Session, browser_key
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES, coarse_like, make_scene
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, save_model

REPO = Path(__file__).resolve().parents[1]
#: The real imagery beside the project (``../shared/data``); tests that need it skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"
coarse_probs_from_labels = coarse_like  # the tests' name for it
TIMEOUT = 180
#: The tests' server secret: session keys are signed by the server (the browser tests' server
#: inherits it), so the test browser's fixed key below is one the server accepts.
os.environ.setdefault(sessions.SECRET_ENV, "refiner-tests-session-secret")
#: The test browser's session key (signed as the server would; a real browser gets a random one).
TOKEN = sessions.sign_session("test-session-token-0123456789abcdef")


def session(root: Path, token: str = TOKEN) -> Session:
    return Session(root, browser_key(token))


def run(page: str, token: str | None = TOKEN, **query: str) -> AppTest:
    """Run ``page`` as the browser with session ``token`` (None: a browser never seen before)."""
    at = AppTest.from_file(str(REPO / page), default_timeout=TIMEOUT)
    if token:
        at.query_params["session"] = token
    else:
        at.query_params.pop("session", None)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def make_workspace(root: Path, name: str = "t", size: int = 96, with_rnn: bool = True, token: str = TOKEN) -> Workspace:
    """A workspace of session ``token`` under the workspaces ``root``."""
    scene = make_scene(size, seed=5)
    ws = session(root, token).create(name, scene.tile(), DEMO_CLASSES, source={"kind": "test", "name": "test scene"})
    return _fill(ws, scene, with_rnn)


def make_template(folder: Path, name: str) -> Workspace:
    """A small stand-in for the demo template (the real builder runs the coarse CNN on 512^2 px)."""
    scene = make_scene(96, seed=5)
    ws = Workspace.create(folder, name, scene.tile(), DEMO_CLASSES, source={"kind": "demo", "name": "small demo"})
    return _fill(ws, scene, True)


def _fill(ws: Workspace, scene, with_rnn: bool) -> Workspace:
    size = scene.truth.shape[0]
    ws.write_coarse_probs(coarse_probs_from_labels(scene.truth, 3), {"source": "test"})
    labels = np.full(scene.truth.shape, IGNORE, np.uint8)
    labels[: size // 2, : size // 2] = scene.truth[: size // 2, : size // 2]
    ws.write_labels(labels, undo=False)
    if with_rnn:
        torch.manual_seed(0)
        save_model(
            ModelBundle("rnn", RefinerRNN(RNNConfig(num_classes=3, iterations=3)), DEMO_CLASSES, 1.0),
            ws.model_dir("rnn"),
        )
    return ws


def train_button(at: AppTest):
    """The Train page's "Start training" (the RNN form's submit button; "Adapt to this tile" comes first)."""
    return next(b for b in at.button if b.label == "Start training")
