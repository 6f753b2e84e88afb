"""Which shipped model fits a workspace: tiny fixture models written in code, never the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refiner.core.classes import ClassSpec
from refiner.data.tile import Tile
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.pretrained import catalogue, coarse_probs_for, pick_coarse, pick_rnn, rnn_for
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, save_model

THREE = ClassSpec(("background", "building", "road"))
ROADS = ClassSpec(("background", "road"), (0, 255))


def write_fixture_model(root: Path, name: str, kind: str, classes: ClassSpec, resolution: float = 1.0) -> Path:
    """A tiny untrained model folder with a card, as assets/pretrained holds them."""
    torch.manual_seed(0)
    k = len(classes)
    if kind == "coarse":
        net: torch.nn.Module = CoarseCNN(CoarseConfig(num_classes=k))
    else:
        net = RefinerRNN(RNNConfig(num_classes=k, iterations=2))
    folder = save_model(ModelBundle(kind, net, classes, resolution), root / name)
    card = {"kind": kind, "classes": list(classes.names), "resolution_m": resolution, "test": {"mean_iou": 0.61}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture()
def shipped(tmp_path):
    write_fixture_model(tmp_path, "coarse_1m", "coarse", THREE)
    write_fixture_model(tmp_path, "rnn_1m", "rnn", THREE)
    (tmp_path / "notes").mkdir()  # a folder without a model is not in the catalogue
    return tmp_path


def test_catalogue_reads_the_cards(shipped):
    models = {m.name: m for m in catalogue(shipped)}
    assert set(models) == {"coarse_1m", "rnn_1m"}
    assert models["coarse_1m"].kind == "coarse" and models["coarse_1m"].resolution == 1.0
    assert models["rnn_1m"].classes.names == THREE.names
    assert "test mean IoU 0.610" in models["coarse_1m"].summary()


def test_the_same_classes_fit_and_in_any_spelling(shipped):
    pick = pick_coarse(ClassSpec(("Background", "Buildings", "Roads")), 1.0, root=shipped)
    assert pick.model.name == "coarse_1m" and "the same classes" in pick.reason
    assert pick.merge == ((0,), (1,), (2,))


def test_a_road_workspace_merges_building_into_background(shipped):
    pick = pick_coarse(ROADS, 0.3, root=shipped)
    assert pick.model.name == "coarse_1m"
    assert "building merged into background" in pick.reason and "resampled to its 1 m" in pick.reason
    probs = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 0.2), np.full((2, 2), 0.3)])
    out = pick.adapt(probs)
    assert out.shape == (2, 2, 2) and np.allclose(out[0], 0.7) and np.allclose(out[1], 0.3)


def test_an_exact_model_is_preferred_to_a_merge(shipped):
    write_fixture_model(shipped, "coarse_road_1m", "coarse", ClassSpec(("background", "road")))
    assert pick_coarse(ROADS, 1.0, root=shipped).model.name == "coarse_road_1m"
    assert pick_coarse(THREE, 1.0, root=shipped).model.name == "coarse_1m"


def test_what_does_not_fit_says_why(shipped, tmp_path):
    water = pick_coarse(ClassSpec(("background", "water")), 1.0, root=shipped)
    assert water.model is None and "does not know water" in water.reason
    no_bg = pick_coarse(ClassSpec(("other", "road", "building")), 1.0, root=shipped)
    assert no_bg.model is None and "does not know other" in no_bg.reason
    sentinel = pick_coarse(THREE, 10.0, root=shipped)
    assert sentinel.model is None and "10.00 m/px" in sentinel.reason
    assert pick_rnn(THREE, 1.0, root=shipped).model.name == "rnn_1m"
    water_rnn = pick_rnn(ClassSpec(("background", "water")), 1.0, root=shipped)
    assert water_rnn.model is None and "does not know water" in water_rnn.reason
    empty = pick_coarse(THREE, 1.0, root=tmp_path / "nothing")
    assert empty.model is None and "none is installed" in empty.reason


def test_unknown_resolution_is_taken_as_the_models(shipped):
    pick = pick_coarse(THREE, None, root=shipped)
    assert pick.model is not None and "taken to be 1 m" in pick.reason


def test_coarse_probs_for_a_picture_with_a_stated_pixel_size(shipped):
    """A 0.5 m picture without georeferencing is resampled to 1 m and back onto its own grid."""
    rng = np.random.default_rng(0)
    image = rng.random((3, 40, 48), dtype=np.float32)
    tile = Tile(image, np.ones((40, 48), bool), pixel_size=0.5)
    pick = pick_coarse(ROADS, tile.resolution, root=shipped)
    probs = coarse_probs_for(pick, tile)
    assert probs.shape == (2, 40, 48) and np.allclose(probs.sum(0), 1, atol=1e-4)
    # the same picture at the model's resolution is not resampled: a different (finer) map
    same = coarse_probs_for(pick, Tile(image, np.ones((40, 48), bool), pixel_size=1.0))
    assert not np.allclose(probs, same, atol=1e-3)
    with pytest.raises(ValueError, match="does not know water"):
        coarse_probs_for(pick_coarse(ClassSpec(("background", "water")), 1.0, root=shipped), tile)


def test_a_road_workspace_fine_tunes_a_2_class_rnn_derived_from_the_3_class_one(shipped):
    """It was told "Training from scratch: no shipped RNN fits the classes background, road"."""
    pick = pick_rnn(ROADS, 1.0, root=shipped)
    assert pick.model is not None and pick.model.name == "rnn_1m"
    assert "building (background here) dropped" in pick.reason
    bundle = rnn_for(pick.model, ROADS)
    assert bundle.classes == ROADS and bundle.net.cfg.num_classes == 2 and bundle.info["derived_from"] == "rnn_1m"
    three = rnn_for(pick.model, THREE)  # the shipped model's own classes: itself
    torch.manual_seed(1)
    u = torch.randn(1, 3, 12, 12)
    image = torch.randn(1, 3, 12, 12)
    blk3, blk2 = three.net.blocks[0], bundle.net.blocks[0]
    with torch.no_grad():  # background and road are updated exactly as by the 3-class RNN
        two = blk2.step(u[:, [0, 2]], blk2.image_features(image))
        torch.testing.assert_close(two, blk3.step(u, blk3.image_features(image))[:, [0, 2]])
    with pytest.raises(ValueError, match="does not know water"):
        rnn_for(pick.model, ClassSpec(("background", "water")))
