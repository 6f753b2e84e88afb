"""Fixtures for the app tests: a small workspace made in code (no dependence on the demo assets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from refiner.classes import IGNORE
from refiner.models.io import ModelBundle, save_model
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.synthetic import DEMO_CLASSES, make_scene
from refiner.workspace import Workspace
from tests.conftest import coarse_probs_from_labels

REPO = Path(__file__).resolve().parents[2]


def make_workspace(root: Path, name: str = "t", size: int = 96, with_rnn: bool = True) -> Workspace:
    scene = make_scene(size, seed=5)
    ws = Workspace.create(root, name, scene.tile(), DEMO_CLASSES, source={"kind": "test", "name": "test scene"})
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
    (root / ".last_workspace").write_text(name)
    return ws


@pytest.fixture()
def app_ws(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    return make_workspace(tmp_path)
