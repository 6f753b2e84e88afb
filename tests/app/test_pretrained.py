"""The coarse map written into a workspace from its own uploaded CNN: the probabilities, where they
came from, and a model for other classes refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from refiner.app.pretrained import own_coarse_into_workspace
from refiner.core.classes import ClassSpec
from refiner.data.synthetic import DEMO_CLASSES
from refiner.models.inference import predict_coarse
from refiner.models.store import load_model
from tests.helpers import make_workspace
from tests.models.test_pretrained import write_fixture_model


@pytest.mark.parametrize("tta", [False, True])
def test_the_workspaces_own_coarse_cnn_writes_its_map_and_says_so(tmp_path, tta):
    ws = make_workspace(tmp_path / "ws", with_rnn=False)
    ws.install_model(write_fixture_model(tmp_path / "models", "mine", "coarse", DEMO_CLASSES), "coarse")
    own_coarse_into_workspace(ws, tta=tta)
    expected = predict_coarse(load_model(ws.model_dir("coarse"), expect="coarse"), ws.tile(), tta=tta)
    np.testing.assert_allclose(ws.coarse_probs(), expected, atol=1e-5)
    origin = ws.settings["coarse"]
    assert origin["tta"] is tta and origin["resolution"] == 1.0
    assert origin["source"] == "coarse CNN (coarse)" + (", 8 turns and flips averaged" if tta else "")


def test_a_coarse_cnn_for_other_classes_is_refused_and_the_map_kept(tmp_path):
    ws = make_workspace(tmp_path / "ws", with_rnn=False)
    before = ws.coarse_probs()
    water = ClassSpec(("background", "water", "road"))
    ws.install_model(write_fixture_model(tmp_path / "models", "water", "coarse", water), "coarse")
    with pytest.raises(ValueError, match="upload probabilities or a CNN trained for these classes"):
        own_coarse_into_workspace(ws)
    np.testing.assert_array_equal(ws.coarse_probs(), before)
    assert ws.settings["coarse"]["source"] == "test"
