"""Score tables: every row's mean over the same classes, named; a one-class reference scored against the rest."""

import numpy as np

from refiner.app import reference, results
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES


def test_the_table_says_which_classes_every_mean_covers():
    truth = np.array([[0, 0, 2, 2], [0, 0, 2, IGNORE]], np.uint8)
    maps = {"RNN": np.array([[0, 1, 2, 2], [0, 0, 2, 0]], np.uint8), "CRF": np.array([[0, 0, 2, 0]] * 2, np.uint8)}
    rows = results.score_table(maps, truth, DEMO_CLASSES.names)
    for row in rows:  # was: RNN building 0.0 in a mean over 3 classes, CRF building blank in a mean over 2
        assert row["IoU building"] == results.NOT_LABELLED
        assert "mean IoU (background, road)" in row
    assert rows[0]["mean IoU (background, road)"] == round((3 / 4 + 1) / 2, 4)


def test_a_road_only_reference_scores_road_against_the_rest(tmp_path, scene):
    ws = Workspace.create(tmp_path, "w", scene.tile(), DEMO_CLASSES)
    road = (scene.truth == 2).astype(np.uint8) * 255  # a 0/255 road mask of the tile
    reference.attach_mask(ws, road, None, {0: 0, 255: 2}, "roads.png")
    ev = results.reference_eval(ws)
    assert ev is not None and ev.one_vs_rest and "road is scored against the rest" in ev.description
    (row,) = results.score_table({"truth": scene.truth}, ev.labels, DEMO_CLASSES.names, one_vs_rest=ev.one_vs_rest)
    assert row["mean IoU (background, road)"] == 1.0 and row["IoU building"] == results.NOT_LABELLED
