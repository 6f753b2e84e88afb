"""The Train page's model history through AppTest: every RNN listed, the kept checkpoint said
plainly, an earlier one restored."""

from __future__ import annotations

import hashlib

import torch
from streamlit.testing.v1 import AppTest

from refiner.app import model_history
from refiner.data.synthetic import DEMO_CLASSES
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle
from tests.helpers import REPO


def _weights(ws) -> str:
    return hashlib.sha256((ws.model_dir("rnn") / "model.safetensors").read_bytes()).hexdigest()


def test_the_train_page_lists_every_rnn_and_restores_an_earlier_one(app_ws):
    original = _weights(app_ws)
    torch.manual_seed(1)
    bundle = ModelBundle("rnn", RefinerRNN(RNNConfig(num_classes=3, iterations=2)), DEMO_CLASSES, 1.0)
    bundle.info = {"trained_steps": 300}
    val = [
        {"step": 100, "mean_iou": 0.61, "iou": [0.7, 0.5, 0.63]},
        {"step": 200, "mean_iou": 0.74, "iou": [0.8, 0.66, 0.76]},
        {"step": 300, "mean_iou": 0.69, "iou": [0.78, 0.6, 0.69]},
    ]
    model_history.save_trained(app_ws, bundle, started_from="a new RNN (from scratch)", val=val, stopped="finished")
    at = AppTest.from_file(str(REPO / "pages" / "2_Train.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    rows = _history(at)
    assert list(rows["RNN"]) == ["RNN 2", "the RNN the workspace had"] and list(rows[""]) == ["current", ""]
    assert list(rows["kept step"])[0] == "200" and list(rows["held-out mean IoU"])[0] == "0.740"
    said = " ".join(i.value for i in at.info)
    assert "weights of step 200" in said and "not those of its last step (300)" in said
    # starting a new RNN says the current one is kept
    at.radio(key="start_from").set_value("a new RNN (from scratch)").run()
    assert any("stays in the model history" in c.value for c in at.caption)
    at.button(key="restore_rnn").click().run()
    assert not at.exception and _weights(app_ws) == original
    assert "is the current RNN again" in at.success[0].value
    assert list(_history(at)[""]) == ["", "current"]


def _history(at):
    """The model-history table (the page also shows score tables)."""
    tables = [t.value for t in at.table if "kept step" in t.value.columns]
    assert len(tables) == 1, [list(t.value.columns) for t in at.table]
    return tables[0]
