"""The pretrained-model recipe: the written split, tiles at 1 m with partial labels and no-data."""

import numpy as np
import pytest
from PIL import Image

from refiner.core.classes import IGNORE
from refiner.recipes.pretrain import load_split, load_tile, scores_2x2, task_confusion
from refiner.train.losses import NOT_BUILDING, NOT_ROAD

SPLIT = """
[sets.roads]
root = "roads"
label_map = {{ 0 = "not_road", 255 = "road" }}
resolution = {res}
tasks = ["road"]
nodata_white = true
train = ["a"]
val = []
test = [{test}]
"""


def _write_set(tmp_path, res=1.0, test='"b"'):
    (tmp_path / "roads" / "images").mkdir(parents=True)
    (tmp_path / "roads" / "masks").mkdir(parents=True)
    img = np.full((40, 40, 3), 90, np.uint8)
    img[:, :10] = 255  # a white no-data band at the mosaic edge
    mask = np.zeros((40, 40), np.uint8)
    mask[20:23] = 255
    for name in ("a", "b"):
        Image.fromarray(img).save(tmp_path / "roads" / "images" / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / "roads" / "masks" / f"{name}.png")
    (tmp_path / "split.toml").write_text(SPLIT.format(res=res, test=test))
    return tmp_path / "split.toml"


def test_road_tiles_get_partial_labels_and_white_is_no_data(tmp_path):
    sets = load_split(_write_set(tmp_path))
    d = load_tile(sets["roads"], "a")
    assert d.image.dtype == np.uint8 and d.image.shape == (3, 40, 40)
    assert (d.labels[:, :10] == IGNORE).all()  # white: no-data, not background
    assert (d.labels[20:23, 10:] == 2).all()  # road
    assert (d.labels[:20, 10:] == NOT_ROAD).all()  # 0 on a road-only tile: "not road"
    assert NOT_BUILDING not in d.labels


def test_pictures_are_resampled_to_1m_by_the_sets_stated_pixel_size(tmp_path):
    sets = load_split(_write_set(tmp_path, res=0.5))
    d = load_tile(sets["roads"], "a")
    assert d.image.shape == (3, 20, 20) and d.labels.shape == (20, 20)
    assert (d.labels[:, :5] == IGNORE).all()


def test_a_test_tile_listed_for_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="test tiles also used"):
        load_split(_write_set(tmp_path, test='"a"'))


def test_pictures_are_resampled_as_the_engine_resamples_a_picture_of_that_pixel_size(tmp_path):
    """The recipe's tiles go through data.resample like a user's picture with a stated pixel size."""
    from dataclasses import replace

    from refiner.data.read import read_image
    from refiner.data.resample import to_working

    sets = load_split(_write_set(tmp_path, res=0.3))
    d = load_tile(sets["roads"], "a")
    picture = read_image(tmp_path / "roads" / "images" / "a.png")
    raw = np.asarray(Image.open(tmp_path / "roads" / "masks" / "a.png"))
    labels = np.where(raw == 255, 2, NOT_ROAD).astype(np.uint8)
    labels[:, :10] = IGNORE  # the white band
    work = to_working(replace(picture, pixel_size=0.3), 1.0, labels=[labels])
    assert d.image.shape == (3, 12, 12)  # 40 px at 0.3 m
    np.testing.assert_array_equal(d.image, np.round(work.tile.image * 255).astype(np.uint8))
    np.testing.assert_array_equal(d.labels, work.labels[0])
    assert set(np.unique(d.labels)) == {IGNORE, NOT_ROAD, 2}  # majority vote keeps the 1 m road


def test_task_scores_count_building_predictions_as_not_road():
    from refiner.recipes.pretrain import TileData

    labels = np.array([[NOT_ROAD, NOT_ROAD, 2, 2]], np.uint8)
    d = TileData("s", "t", np.zeros((3, 1, 4), np.uint8), labels, ("road",))
    probs = np.zeros((3, 1, 4), np.float32)
    probs[[1, 0, 2, 0], 0, [0, 1, 2, 3]] = 1  # building, background, road, background
    cm = task_confusion(probs, d, "road")
    assert cm.tolist() == [[2, 0], [1, 1]]
    s = scores_2x2(cm)
    assert s["iou"] == pytest.approx(0.5) and s["iou_other"] == pytest.approx(2 / 3)
    assert s["mean_iou"] == pytest.approx(7 / 12) and s["overall_accuracy"] == pytest.approx(3 / 4)
    d.labels[0, 3] = IGNORE  # unlabelled pixels are not scored (the missed road pixel)
    assert task_confusion(probs, d, "road").tolist() == [[2, 0], [0, 1]]


def _road_tile(labels):
    from refiner.recipes.pretrain import TileData

    return TileData("s", "t", np.zeros((3, *labels.shape), np.uint8), labels, ("road",))


def test_best_offsets_find_the_road_prior_that_argmax_misses():
    """A map whose road scores sit just under background everywhere on the road: no road at
    offset 0, the whole road (and nothing else) once road is shifted up."""
    from refiner.recipes.pretrain import best_offsets

    labels = np.full((10, 10), NOT_ROAD, np.uint8)
    labels[4:6] = 2
    logp = np.zeros((3, 10, 10), np.float32)
    logp[1] = -5.0  # building never wins
    logp[2] = -3.0  # road far below background off the road ...
    logp[2, 4:6] = -0.4  # ... and just below it on the road
    tile = _road_tile(labels)
    value, bias = best_offsets([logp], [tile], grid=np.arange(0.0, 1.01, 0.5))
    assert bias[0] == 0.0 and bias[2] == 0.5
    assert value == pytest.approx(1.0)
    assert best_offsets([logp], [tile], grid=np.array([0.0]))[0] == pytest.approx(0.4)  # road IoU 0, other 0.8


def test_coarse_class_bias_is_added_to_the_scores_and_survives_save_and_load(tmp_path):
    import dataclasses

    import torch

    from refiner.core.classes import ClassSpec
    from refiner.models.coarse import CoarseCNN, CoarseConfig
    from refiner.models.store import ModelBundle, load_model, save_model

    torch.manual_seed(0)
    net = CoarseCNN(CoarseConfig(3)).eval()
    x = torch.rand(1, 3, 32, 32)
    plain = net(x)
    net.cfg = dataclasses.replace(net.cfg, class_bias=(0.0, 1.0, 1.5))
    torch.testing.assert_close(net(x) - plain, torch.tensor([0.0, 1.0, 1.5])[None, :, None, None].expand_as(plain))
    save_model(ModelBundle("coarse", net, ClassSpec(("background", "building", "road")), 1.0), tmp_path / "m")
    loaded = load_model(tmp_path / "m", expect="coarse")
    assert loaded.net.cfg.class_bias == (0.0, 1.0, 1.5)
    torch.testing.assert_close(loaded.net(x), net(x))
    with pytest.raises(ValueError, match="class_bias"):
        CoarseConfig(3, class_bias=(0.0, 1.0))


def test_calibrating_an_rnn_moves_each_class_bias_by_its_offset_over_t():
    """The offsets go into the class MLPs' output biases (beta / T each), and the calibrated
    model finds the road an identity refiner leaves under background."""
    import copy

    import torch

    from refiner.core.classes import ClassSpec
    from refiner.models.inference import refine
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle
    from refiner.recipes.pretrain import calibrate_rnn_bias, score_probs

    torch.manual_seed(0)
    labels = np.full((24, 24), NOT_ROAD, np.uint8)
    labels[10:14] = 2
    probs = np.full((3, 24, 24), 0.05, np.float32)
    probs[0] = 0.9
    probs[:, 10:14] = np.array([0.55, 0.05, 0.4], np.float32)[:, None, None]  # road under background
    tile = _road_tile(labels)
    net = RefinerRNN(RNNConfig(3, iterations=2)).eval()
    with torch.no_grad():  # an identity refiner (du = bias): its map is the coarse one
        net.blocks[0].output.weight.zero_()
    bundle = ModelBundle("rnn", net, ClassSpec(("background", "building", "road")), 1.0)
    before = copy.deepcopy(bundle)
    beta = calibrate_rnn_bias(bundle, [tile], [probs])
    t = bundle.net.cfg.iterations
    shift = bundle.net.blocks[0].output.bias.detach() - before.net.blocks[0].output.bias.detach()
    torch.testing.assert_close(shift, torch.tensor(beta) / t)
    assert beta[2] > 0  # roads were under-predicted

    def value(b):
        res = score_probs([(refine(b, tile.tile(), probs).final, tile)])
        return res["road"]["iou"]

    assert value(bundle) >= value(before)
    assert value(bundle) > 0.9


def test_the_model_card_is_written_whole_beside_the_model(tmp_path):
    import json

    from refiner.recipes.pretrain import _card

    roles = {"train": ["a"], "val": [], "test": ["b"]}
    score = {"overall_accuracy": 0.9, "iou_other": 0.8, "iou": 0.5, "mean_iou": 0.65, "pixels": 100}
    card = {"title": "Pretrained rnn model", "summary": "s", "kind": "rnn", "classes": ["background", "road"],
            "resolution_m": 1.0, "steps": 3, "training_seconds": 1.0, "machine": "m", "torch_threads": 1, "seed": 0,
            "rebuild": "python -m refiner pretrain x.toml", "best_step": 2, "best_val": 0.5, "split_file": "split.toml",
            "data": {"roads": roles}, "test_scores": {"road": score}}  # fmt: skip
    _card(tmp_path, card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "card.md"]  # no temporaries left
    assert json.loads((tmp_path / "card.json").read_text()) == card
    md = (tmp_path / "card.md").read_text()
    assert md.startswith("# Pretrained rnn model\n") and "| roads | 1 | 0 | b |" in md
    assert md.endswith("cite the sources).\n")
    assert "- note:" not in md
    _card(tmp_path, {**card, "note": "trained over two sittings"})  # how this run differs from a rebuild
    assert "- note: trained over two sittings\n" in (tmp_path / "card.md").read_text()


def test_an_rnn_card_says_its_scores_beside_the_coarse_maps_it_refines(tmp_path):
    """rnn_1m's card line read as coarse_1m's repeated (road IoU 0.31, building IoU 0.29 in both)."""
    import json

    from refiner.core.classes import ClassSpec
    from refiner.models.pretrained import catalogue
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle, save_model
    from refiner.recipes.pretrain import _card

    own = {"overall_accuracy": 0.89, "iou_other": 0.88, "iou": 0.311, "mean_iou": 0.595, "pixels": 100}
    base = {**own, "iou": 0.307}
    net, two = RefinerRNN(RNNConfig(num_classes=2)), ClassSpec(("background", "road"))
    folder = save_model(ModelBundle("rnn", net, two, 1.0), tmp_path / "rnn_1m")
    card = {"title": "Pretrained rnn model", "summary": "s", "kind": "rnn", "classes": ["background", "road"],
            "resolution_m": 1.0, "steps": 3, "training_seconds": 1.0, "machine": "m", "torch_threads": 1, "seed": 0,
            "rebuild": "r", "best_step": 2, "best_val": 0.5, "split_file": "split.toml", "data": {},
            "test_scores": {"road": own},
            "baseline": {"model": "coarse_1m", "test_scores": {"road": base}}}  # fmt: skip
    _card(folder, card)
    assert "The coarse map it refines (coarse_1m)" in (folder / "card.md").read_text()
    (shipped,) = catalogue(tmp_path)
    assert shipped.test_scores() == "road IoU 0.311 (its coarse map 0.307)"
    assert json.loads((folder / "card.json").read_text())["baseline"]["test_scores"]["road"]["iou"] == 0.307


def test_an_rnn_card_says_how_its_patches_were_drawn():
    """The shipped card's line on its start and patch centres was written by hand and lost on a rebuild."""
    from refiner.recipes.pretrain import _rnn_patches

    assert _rnn_patches({}) == "Glorot's start; centres balanced over label values"
    words = _rnn_patches({"identity_start": True, "balance": False, "focus": 0.25})
    assert words == ("du = 0 at the start (`identity_start`); centres uniform over the labelled pixels; "
                     "25% centred where the coarse map is wrong or unsure (`focus`)")  # fmt: skip


RECIPE = """
kind = "coarse"
split = "split.toml"
out = "{out}/model"
checkpoint = "{out}/checkpoint.pt"
checkpoint_every = 2
seed = 0
val_crop = 40
shares = {{ road = 1.0 }}
summary = "s"

[train]
steps = 6
batch_size = 2
output_size = 16
context = 8
eval_every = 2
balance = true
jitter = 0.2
"""


def _resumable_recipes(tmp_path, *outs):
    """A split with a train, a validation and a test tile, and a resumable recipe per output folder."""
    split = _write_set(tmp_path)
    split.write_text(split.read_text().replace("val = []", 'val = ["a"]'))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    for name in ("a", "b"):
        Image.fromarray(img).save(tmp_path / "roads" / "images" / f"{name}.png")
    for out in outs:
        (tmp_path / f"{out}.toml").write_text(RECIPE.format(out=out))
    return [tmp_path / f"{out}.toml" for out in outs]


def test_a_resumable_recipe_stops_keeps_its_curve_and_continues_to_the_same_model(tmp_path):
    """The long runs of issue #21: stopped, the state and the learning curve stay; run again, they go on."""
    import json

    from refiner.models.store import load_model
    from refiner.recipes.pretrain import run_pretrain

    unbroken, recipe = _resumable_recipes(tmp_path, "whole", "broken")
    whole = run_pretrain(unbroken)
    calls = []
    assert run_pretrain(recipe, should_stop=lambda: len(calls.append(1) or calls) > 3) is None
    curve = [json.loads(line) for line in (tmp_path / "broken" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [2]
    # the test tile is scored for the curve (at the offsets chosen on validation), never for selection
    assert {"val", "val_road_iou", "test_road_iou", "test_road_miou", "offsets", "cpu_seconds"} <= set(curve[0])
    assert not (tmp_path / "broken" / "model").exists()  # no model until the run is finished
    folder = run_pretrain(recipe)
    assert folder == tmp_path / "broken" / "model" and whole is not None
    curve = [json.loads(line) for line in (tmp_path / "broken" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [2, 4, 6]
    a, b = load_model(whole), load_model(folder)
    for name, value in a.net.state_dict().items():
        assert np.array_equal(value.numpy(), b.net.state_dict()[name].numpy()), name
    card = json.loads((folder / "card.json").read_text())
    assert card["steps"] == 6 and card["test_scores"]["road"]["pixels"] > 0


def test_rescoring_a_card_brings_back_what_the_model_scores_today(tmp_path):
    """Cards went stale when inference changed (mirrored edges); rescoring rewrites them, weights untouched."""
    import json

    from refiner.recipes.pretrain import rescore_card, run_pretrain

    (recipe,) = _resumable_recipes(tmp_path, "m")
    folder = run_pretrain(recipe)
    card = json.loads((folder / "card.json").read_text())
    true_scores = card["test_scores"]
    weights = (folder / "model.safetensors").read_bytes()
    stale = {task: {**s, "iou": 0.123} for task, s in true_scores.items()}
    old = {k: v for k, v in card.items() if k != "test_scores_by_set"}  # a card from before the per-set rows
    (folder / "card.json").write_text(json.dumps({**old, "test_scores": stale}))
    md = (folder / "card.md").read_text()
    head, section = md.split("## Test scores", 1)
    (folder / "card.md").write_text(head + "Written by hand.\n\n## Test scores" + section.split("Per data set")[0])
    again = rescore_card(folder)
    assert again["test_scores"] == true_scores and "rescored" in again
    assert again["test_scores_by_set"] == card["test_scores_by_set"]
    text = (folder / "card.md").read_text()
    assert "test scores recomputed" in text and "Written by hand." in text
    assert "Per data set" in text and f"| roads | road | {true_scores['road']['iou']:.3f} |" in text
    assert text.count("## Test scores") == 1 and text.rstrip().endswith("(research use; cite the sources).")
    assert (folder / "model.safetensors").read_bytes() == weights


def test_scores_by_set_pool_each_sets_tiles_apart():
    """The pooled building row is mostly one big tile; per set, a small set's score shows."""
    from refiner.recipes.pretrain import TileData, score_by_set, score_probs

    def tile(set_name, n, right):  # n x n px, half building; ``right``: the map says so
        labels = np.zeros((n, n), np.uint8)
        labels[:, : n // 2] = 1
        probs = np.zeros((3, n, n), np.float32)
        probs[1 if right else 0, :, : n // 2] = 1
        probs[0, :, n // 2 :] = 1
        return probs, TileData(set_name, f"{set_name}{n}", np.zeros((3, n, n), np.uint8), labels, ("building",))

    items = [tile("big", 40, True), tile("small", 8, False), tile("small", 6, False)]
    by_set = score_by_set(items)
    assert set(by_set) == {"big", "small"}
    assert by_set["big"]["building"]["iou"] == 1.0 and by_set["small"]["building"]["iou"] == 0.0
    assert by_set["small"] == score_probs(items[1:])
    assert 0.9 < score_probs(items)["building"]["iou"] < 1.0  # pooled, the small set hardly shows


RNN_RECIPE = """
kind = "rnn"
split = "split.toml"
coarse = "m/model"
out = "r/model"
seed = 0
val_crop = 20
calibrate = true
identity_start = true
shares = { road = 1.0 }
summary = "s"

[train]
steps = 4
batch_size = 2
patch_size = 16
eval_every = 2
"""


def test_both_recipes_calibrate_on_the_whole_validation_tiles_not_their_crops(tmp_path, monkeypatch):
    """The RNN's offsets were chosen on the 400^2 crops that select checkpoints, the coarse model's
    on the whole tiles: 14x fewer road pixels for the RNN's (its road offset cost the test tiles)."""
    import refiner.recipes.pretrain as pretrain

    shapes: dict[str, list] = {"coarse": [], "rnn": []}
    for kind, name in (("coarse", "calibrate_class_bias"), ("rnn", "calibrate_rnn_bias")):
        real = getattr(pretrain, name)

        def spy(bundle, val, *rest, _real=real, _kind=kind, **kw):
            shapes[_kind].extend(d.labels.shape for d in val)
            return _real(bundle, val, *rest, **kw)

        monkeypatch.setattr(pretrain, name, spy)
    (recipe,) = _resumable_recipes(tmp_path, "m")
    recipe.write_text(recipe.read_text().replace('summary = "s"', 'summary = "s"\ncalibrate = true'))
    assert pretrain.run_pretrain(recipe) is not None
    (tmp_path / "r.toml").write_text(RNN_RECIPE)
    assert pretrain.run_pretrain(tmp_path / "r.toml") == tmp_path / "r" / "model"
    assert shapes == {"coarse": [(40, 40)], "rnn": [(40, 40)]}  # the validation tile whole; val_crop is 40 / 20
    rnn_md = (tmp_path / "r" / "model" / "card.md").read_text()
    assert "| set | task | IoU class | mean IoU | pixels | coarse map: IoU class / mean IoU |" in rnn_md
