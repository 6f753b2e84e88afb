"""Fixtures for the app tests: a small workspace made in code (no dependence on the demo assets).

Every app test is one browser session: :data:`TOKEN` in the page's ``?session=`` (what
:func:`run` passes), owning the workspaces :func:`make_workspace` makes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from refiner.app.sessions import Session, browser_key
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, save_model
from tests.conftest import coarse_probs_from_labels

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 180
#: The test browser's session key (any valid token; a real browser gets a random one).
TOKEN = "test-session-token-0123456789abcdef"


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


def make_workspace(
    root: Path, name: str = "t", size: int = 96, with_rnn: bool = True, token: str = TOKEN
) -> Workspace:
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


@pytest.fixture(autouse=True)
def _one_browser(monkeypatch):
    """Every ``AppTest.from_file`` of these tests starts as the browser of session :data:`TOKEN`."""
    made = AppTest.from_file.__func__

    def from_file(cls, *args, **kwargs):
        at = made(cls, *args, **kwargs)
        at.query_params["session"] = TOKEN
        return at

    monkeypatch.setattr(AppTest, "from_file", classmethod(from_file))


@pytest.fixture()
def app_ws(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    return make_workspace(tmp_path)
