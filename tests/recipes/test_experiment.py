import numpy as np
from PIL import Image

from refiner.core.classes import IGNORE
from refiner.recipes.experiment import ExperimentConfig, _prepare


def test_nodata_white_leaves_mosaic_edges_unlabelled(tmp_path):
    """massachusetts_roads_extra tiles are up to 87 % white no-data with mask 0 there: not background."""
    rgb = np.full((32, 32, 3), 90, np.uint8)
    rgb[:, 20:] = 255  # the mosaic's edge
    mask = np.zeros((32, 32), np.uint8)
    mask[5:8, :] = 255  # a road running into the white
    Image.fromarray(rgb).save(tmp_path / "t.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    raw = {
        "classes": ["background", "road"], "label_values": [0, 255], "resolution": 1.0,
        "coarse": {"images": ["t.png"], "labels": ["m.png"]}, "enhance": {"images": ["t.png"], "labels": ["m.png"]},
        "test": {"images": ["t.png"], "labels": ["m.png"]},
    }  # fmt: skip
    cfg = ExperimentConfig.from_dict(raw, tmp_path)
    assert not cfg.test.nodata_white
    assert (_prepare(tmp_path / "t.png", tmp_path / "m.png", cfg).labels[:, 20:] != IGNORE).all()
    cfg = ExperimentConfig.from_dict({**raw, "test": {**raw["test"], "nodata_white": True}}, tmp_path)
    assert cfg.test.nodata_white and not cfg.enhance.nodata_white
    prep = _prepare(tmp_path / "t.png", tmp_path / "m.png", cfg, nodata_white=cfg.test.nodata_white)
    assert (prep.labels[:, 20:] == IGNORE).all() and (prep.work_labels[:, 20:] == IGNORE).all()
    assert (prep.labels[5:8, :20] == 1).all() and (prep.labels[10:, :20] == 0).all()
