import json

import pytest
import torch

from refiner.core.classes import ClassSpec
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, load_model, save_model


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    classes = ClassSpec(("background", "road"), (0, 255))
    net = RefinerRNN(RNNConfig(2, variant="class_agnostic", iterations=3))
    bundle = ModelBundle(
        "rnn",
        net,
        classes,
        1.0,
        (0.1, 0.2, 0.3),
        (0.4, 0.5, 0.6),
        {"trained_steps": 7},
        optimizer_state={"blocks.0.hidden.weight": torch.ones(3)},
    )
    save_model(bundle, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
    ]
    back = load_model(tmp_path / "m", expect="rnn")
    assert back.classes == classes and back.resolution == 1.0 and back.mean == (0.1, 0.2, 0.3)
    assert back.net.cfg == net.cfg and back.info["trained_steps"] == 7
    for (n, a), (_, b) in zip(net.state_dict().items(), back.net.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    torch.testing.assert_close(back.optimizer_state["blocks.0.hidden.weight"], torch.ones(3))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"]["variant"] == "class_agnostic"
    assert config["normalisation"]["std"] == [0.4, 0.5, 0.6]


def test_loading_checks_kind_and_folder(tmp_path):
    save_model(ModelBundle("coarse", CoarseCNN(CoarseConfig(2)), ClassSpec(("a", "b"))), tmp_path / "c")
    with pytest.raises(ValueError, match="coarse model, but a rnn model is needed"):
        load_model(tmp_path / "c", expect="rnn")
    with pytest.raises(FileNotFoundError, match="not a Refiner model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "c")


def test_no_pickle_anywhere(tmp_path):
    save_model(ModelBundle("coarse", CoarseCNN(CoarseConfig(2)), ClassSpec(("a", "b"))), tmp_path / "c")
    for f in (tmp_path / "c").iterdir():
        assert not f.read_bytes().startswith(b"\x80")  # pickle protocol marker
