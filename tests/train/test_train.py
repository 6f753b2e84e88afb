from dataclasses import replace

import numpy as np
import pytest
import torch

from refiner.core.classes import IGNORE
from refiner.core.metrics import evaluate
from refiner.models.inference import refine
from refiner.models.store import load_model
from refiner.train.losses import segmentation_loss
from refiner.train.rnn import RNNTrainConfig, train_rnn
from refiner.train.sampling import NoLabelsError, PatchSampler, check_labels, restrict_to_window, split_holdout
from tests.helpers import coarse_probs_from_labels


def test_unlabelled_pixels_contribute_no_gradient():
    scores = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[0, :4] = IGNORE
    segmentation_loss(scores, labels).backward()
    grad = scores.grad.abs().sum(1)
    assert (grad[labels == IGNORE] == 0).all()
    assert (grad[labels != IGNORE] > 0).all()


def test_patches_are_drawn_around_a_small_painted_patch():
    labels = np.full((200, 200), IGNORE, np.uint8)
    labels[180:195, 5:20] = 1  # a few hundred pixels in a corner
    image = np.random.default_rng(0).random((3, 200, 200)).astype(np.float32)
    sampler = PatchSampler([image], labels, 32, 10, seed=0)
    (x,), y = sampler.sample(64)
    assert x.shape == (64, 3, 52, 52) and y.shape == (64, 32, 32)
    assert ((y != IGNORE).reshape(64, -1).sum(1) > 0).all()


def test_patch_sampler_pads_images_smaller_than_a_patch():
    labels = np.zeros((10, 12), np.uint8)
    sampler = PatchSampler([np.zeros((3, 10, 12), np.float32)], labels, 16, 4, augment=False)
    (x,), y = sampler.sample(3)
    assert x.shape == (3, 3, 24, 24) and (y[:, 10:] == IGNORE).all() and (y[:, :10, :12] == 0).all()


def test_holdout_keeps_whole_regions_a_guard_band_away_from_training_pixels():
    from scipy import ndimage

    labels = np.full((128, 128), IGNORE, np.uint8)
    labels[:64, :64] = 0  # a painted box
    labels[100:104, 10:120] = 1  # a stroke
    train, val = split_holdout(labels, 0.25, guard=8, seed=0)
    held, kept = val != IGNORE, train != IGNORE
    assert held.any() and kept.any() and not (held & kept).any()
    assert (val[held] == labels[held]).all() and (train[kept] == labels[kept]).all()
    # no training pixel within the guard band of a held-out one
    assert ndimage.distance_transform_cdt(~held, metric="chessboard")[kept].min() > 8
    # whole regions: each held-out piece is a full cell (16 px = 2 x guard) of a stroke or box
    pieces, n = ndimage.label(held)
    assert all((pieces == i).sum() >= 4 * 16 for i in range(1, n + 1))
    # about a quarter of the labelled pixels, as whole units
    assert 0.1 < held.sum() / (labels != IGNORE).sum() < 0.4


def test_holdout_without_room_for_two_regions_holds_nothing_back():
    labels = np.full((40, 40), IGNORE, np.uint8)
    labels[:10, :10] = 1
    train, val = split_holdout(labels, 0.2, guard=8, seed=0)  # one 16 px cell: one region
    assert (val == IGNORE).all() and np.array_equal(train, labels)


def test_label_checks():
    with pytest.raises(NoLabelsError, match="no labelled pixel"):
        check_labels(np.full((4, 4), IGNORE, np.uint8), 2)
    with pytest.raises(ValueError, match="class index 3"):
        check_labels(np.full((4, 4), 3, np.uint8), 2)


@pytest.mark.slow
def test_training_raises_miou_over_the_degraded_coarse_map(scene, scene_b):
    """Fine-tuned on one synthetic scene, the RNN sharpens the blurry coarse map of another."""
    k = 3
    probs_a = coarse_probs_from_labels(scene.osm, k)
    probs_b = coarse_probs_from_labels(scene_b.osm, k)
    result = train_rnn(scene.image, probs_a, scene.truth, scene.classes, RNNTrainConfig(steps=250, eval_every=50))
    before = evaluate(probs_b.argmax(0), scene_b.truth, k).mean_iou
    ref = refine(result.bundle, scene_b.tile(), probs_b, keep_all=True)
    after = evaluate(ref.class_map(), scene_b.truth, k).mean_iou
    assert after > before + 0.05, (before, after)
    assert len(ref.probs) == 6
    assert result.best_val is not None and len(result.history) >= 1


def test_cancel_checkpoint_and_continue(scene, tmp_path):
    probs = coarse_probs_from_labels(scene.osm, 3)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 12

    res = train_rnn(
        scene.image,
        probs,
        scene.truth,
        scene.classes,
        RNNTrainConfig(steps=100, eval_every=5, checkpoint_every=4),
        should_stop=stop,
        checkpoint_dir=tmp_path / "rnn",
    )
    assert res.stopped == "cancelled" and res.bundle.info["trained_steps"] == 12
    saved = load_model(tmp_path / "rnn", expect="rnn")
    assert saved.optimizer_state  # AdaGrad accumulators travel with the checkpoint
    # a checkpoint says it is one, and at which step; the result it came from does not
    assert saved.info["stopped"] == "checkpoint" and saved.info["checkpoint_step"] == 12
    assert "checkpoint_step" not in res.bundle.info
    more = train_rnn(scene.image, probs, scene.truth, scene.classes, RNNTrainConfig(steps=5), init=saved)
    assert more.bundle.info["trained_steps"] == 17


def test_early_stopping_and_time_budget(scene):
    probs = coarse_probs_from_labels(scene.osm, 3)
    res = train_rnn(
        scene.image, probs, scene.truth, scene.classes, RNNTrainConfig(steps=10_000, eval_every=1, patience=3, lr=1e-9)
    )
    assert res.stopped == "early_stopping" and res.bundle.info["trained_steps"] < 50
    res = train_rnn(scene.image, probs, scene.truth, scene.classes, RNNTrainConfig(steps=10_000, max_seconds=1.0))
    assert res.stopped == "time_budget"


def test_eval_every_0_validates_by_the_clock_and_at_the_end_only(scene):
    """``eval_every=0`` used to divide by zero; it now means no validation by step count."""
    probs = coarse_probs_from_labels(scene.osm, 3)
    cfg = RNNTrainConfig(steps=6, batch_size=2, patch_size=24, eval_every=0, eval_seconds=None)
    res = train_rnn(scene.image, probs, scene.truth, scene.classes, cfg)
    validated = [p.step for p in res.history if p.val is not None]
    assert res.stopped == "finished" and validated[-1] == 6 and 1 not in validated


def test_training_rejects_mismatched_inputs(scene):
    probs = coarse_probs_from_labels(scene.osm, 3)
    with pytest.raises(ValueError, match="same size"):
        train_rnn(scene.image, probs, scene.truth[:50], scene.classes)
    with pytest.raises(ValueError, match="2 bands but there are 3 classes"):
        train_rnn(scene.image, probs[:2], scene.truth, scene.classes)
    with pytest.raises(NoLabelsError):
        train_rnn(scene.image, probs, np.full_like(scene.truth, IGNORE), scene.classes)


def test_restrict_to_window_keeps_only_the_window():
    labels = np.arange(30, dtype=np.uint8).reshape(5, 6)
    out = restrict_to_window(labels, (1, 2, 2, 3))
    assert (out[1:3, 2:5] == labels[1:3, 2:5]).all() and (out != IGNORE).sum() == 6
    with pytest.raises(ValueError, match="does not fit"):
        restrict_to_window(labels, (4, 0, 2, 2))


# --------------------------------------------------------------------------- partial labels, sampling, schedule

from refiner.models.coarse import CoarseCNN, CoarseConfig  # noqa: E402
from refiner.train.coarse import CoarseTrainConfig, CoarseTrainResult, train_coarse  # noqa: E402
from refiner.train.loop import lr_at  # noqa: E402
from refiner.train.losses import NOT_BUILDING, NOT_ROAD, allowed_table, partial_label_loss, partial_mean_iou  # noqa: E402
from refiner.train.rnn import finetune_from_pretrained  # noqa: E402
from refiner.train.sampling import jitter  # noqa: E402

PARTIAL = {NOT_ROAD: (0, 1), NOT_BUILDING: (0, 2)}  # classes background, building, road


def test_partial_label_loss_exact_values_on_a_toy_example():
    # pixel 1: p = (0.5, 0.25, 0.25), "not road" -> -log(0.75); pixel 2: same p, road -> -log(0.25)
    # pixel 3: unlabelled, left out of the mean
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))[None, :, None, None].expand(1, 3, 1, 3).clone()
    labels = torch.tensor([[[NOT_ROAD, 2, IGNORE]]])
    loss = partial_label_loss(logits, labels, allowed_table(3, PARTIAL))
    assert loss.item() == pytest.approx((-np.log(0.75) - np.log(0.25)) / 2, rel=1e-6)
    # "not building" on p = (0.1, 0.7, 0.2): -log(0.3)
    logits = torch.log(torch.tensor([0.1, 0.7, 0.2]))[None, :, None, None].clone()
    loss = partial_label_loss(logits, torch.tensor([[[NOT_BUILDING]]]), allowed_table(3, PARTIAL))
    assert loss.item() == pytest.approx(-np.log(0.3), rel=1e-6)


def test_partial_label_loss_is_cross_entropy_on_full_labels_and_ignores_unlabelled():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 5))
    labels[0, :2] = IGNORE
    loss = partial_label_loss(scores, labels, allowed_table(3, PARTIAL))
    assert loss.item() == pytest.approx(segmentation_loss(scores, labels).item(), rel=1e-6)
    loss.backward()
    assert (scores.grad.abs().sum(1)[labels == IGNORE] == 0).all()


def test_not_road_pixels_do_not_push_building_against_background():
    """On a road-only tile, moving mass between background and building changes nothing."""
    a = torch.log(torch.tensor([0.6, 0.2, 0.2]))[None, :, None, None]
    b = torch.log(torch.tensor([0.2, 0.6, 0.2]))[None, :, None, None]
    lab, table = torch.tensor([[[NOT_ROAD]]]), allowed_table(3, PARTIAL)
    assert partial_label_loss(a, lab, table).item() == pytest.approx(partial_label_loss(b, lab, table).item())


def test_allowed_table_rejects_codes_that_collide_with_classes_or_ignore():
    with pytest.raises(ValueError, match="partial-label code"):
        allowed_table(3, {2: (0, 1)})
    with pytest.raises(ValueError, match="partial-label code"):
        allowed_table(3, {255: (0, 1)})


def test_partial_mean_iou_counts_not_road_as_right_for_background_and_building():
    labels = np.array([[NOT_ROAD, NOT_ROAD, 2, 2]], np.uint8)
    pred = np.array([[1, 0, 2, 0]], np.uint8)
    # "not road": pred in {0, 1} at 3 pixels, 2 of them labelled not-road -> 2/3; road: 1/2
    assert partial_mean_iou(pred, labels, allowed_table(3, PARTIAL)) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_balanced_sampler_centres_half_the_patches_on_a_rare_class():
    labels = np.zeros((200, 200), np.uint8)
    labels[100:102, :] = 1  # 1 % of the pixels
    image = np.zeros((3, 200, 200), np.uint8)
    centre_hits = []
    for balance in (False, True):
        s = PatchSampler([image], labels, 1, 0, seed=0, augment=False, balance=balance)
        _, lab = s.sample(2000)
        centre_hits.append(lab.mean())
    assert centre_hits[0] < 0.05
    assert 0.4 < centre_hits[1] < 0.6


def test_focus_centres_the_given_share_of_patches_on_the_hard_pixels_and_nothing_else_changes():
    labels = np.zeros((200, 200), np.uint8)
    image = np.arange(200 * 200, dtype=np.float32).reshape(1, 200, 200)  # each pixel's value is its index
    focus = np.zeros((200, 200), bool)
    focus[50:52, 60:62] = True  # 4 pixels of 40,000
    plain = PatchSampler([image], labels, 1, 0, seed=3, augment=False)
    off = PatchSampler([image], labels, 1, 0, seed=3, augment=False, focus=focus, focus_share=0.0)
    assert np.array_equal(plain.sample(50)[0][0], off.sample(50)[0][0])  # off: the same patches as before
    on = PatchSampler([image], labels, 1, 0, seed=3, augment=False, focus=focus, focus_share=0.5)
    (x,), _ = on.sample(4000)
    hit = np.isin(x.ravel(), np.flatnonzero(focus.ravel()))
    assert 0.45 < hit.mean() < 0.55
    with pytest.raises(ValueError, match="focus_share"):
        PatchSampler([image], labels, 1, 0, focus=focus, focus_share=1.5)
    with pytest.raises(ValueError, match="differ in size"):
        PatchSampler([image], labels, 1, 0, focus=focus[:10], focus_share=0.5)


def test_a_patch_fine_tune_centres_its_focus_share_on_the_coarse_maps_errors(scene, monkeypatch):
    """``RNNTrainConfig.focus`` reaches the patch sampler of :func:`train_rnn` with the hard pixels
    of its training labels (issue #27's first lever); off, the sampler gets no focus map."""
    import refiner.train.rnn as rnn_module
    from refiner.train.sampling import hard_pixels

    seen = []

    class Spy(PatchSampler):
        def __init__(self, arrays, labels, *args, **kwargs):
            seen.append((labels.copy(), kwargs.get("focus"), kwargs.get("focus_share", 0.0)))
            super().__init__(arrays, labels, *args, **kwargs)

    monkeypatch.setattr(rnn_module, "PatchSampler", Spy)
    probs = coarse_probs_from_labels(scene.osm, 3)
    cfg = RNNTrainConfig(steps=2, batch_size=2, patch_size=24, eval_every=0, eval_seconds=None)
    train_rnn(scene.image, probs, scene.truth, scene.classes, replace(cfg, focus=0.5))
    train_rnn(scene.image, probs, scene.truth, scene.classes, cfg)
    (labels, focus, share), (_, off, off_share) = seen
    assert share == 0.5 and off is None and off_share == 0.0
    assert focus.any() and not focus[labels == IGNORE].any()  # hard pixels of the training labels only
    assert np.array_equal(focus, hard_pixels(probs, labels, allowed_table(3, None).numpy()))
    with pytest.raises(ValueError, match="focus 1.5 is not a share"):
        train_rnn(scene.image, probs, scene.truth, scene.classes, replace(cfg, focus=1.5))


def test_hard_pixels_are_where_the_coarse_map_is_wrong_or_unsure_on_labelled_pixels():
    from refiner.train.sampling import hard_pixels

    probs = np.zeros((3, 1, 6), np.float32)
    probs[:, 0, 0] = (0.9, 0.05, 0.05)  # right: background, labelled background
    probs[:, 0, 1] = (0.9, 0.05, 0.05)  # wrong: background, labelled road
    probs[:, 0, 2] = (0.45, 0.15, 0.40)  # unsure: background by 0.05
    probs[:, 0, 3] = (0.05, 0.9, 0.05)  # "not road" and building: right
    probs[:, 0, 4] = (0.05, 0.05, 0.9)  # "not road" and road: wrong
    probs[:, 0, 5] = (0.05, 0.05, 0.9)  # unlabelled: never hard
    labels = np.array([[0, 2, 0, NOT_ROAD, NOT_ROAD, IGNORE]], np.uint8)
    allowed = allowed_table(3, {NOT_ROAD: (0, 1)}).numpy()
    expect = [False, True, True, False, True, False]
    assert hard_pixels(probs, labels, allowed).tolist() == [expect]
    as_bytes = np.round(probs * 255).astype(np.uint8)  # the pretrained recipe keeps uint8 probabilities
    assert hard_pixels(as_bytes, labels, allowed).tolist() == [expect]
    with pytest.raises(ValueError, match="differ in size"):
        hard_pixels(probs, labels[:, :3], allowed)


def test_sampler_keeps_uint8_images_and_a_centre_stride():
    labels = np.zeros((64, 64), np.uint8)
    s = PatchSampler([np.zeros((3, 64, 64), np.uint8)], labels, 16, 4, stride=4)
    assert s.ys.size == 16 * 16 and (s.ys % 4 == 0).all()
    (x,), _ = s.sample(3)
    assert x.dtype == np.uint8 and x.shape == (3, 3, 24, 24)


def test_jitter_changes_brightness_and_contrast_within_range():
    x = torch.rand(64, 3, 8, 8)
    assert torch.equal(jitter(x, 0.0), x)
    y = jitter(x, 0.4, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1
    means = (y - x).mean(dim=(1, 2, 3)).abs()
    assert means.max() > 0.02  # brightness moved
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert ratio.min() < 0.9 and ratio.max() > 1.1  # contrast moved both ways


def test_lr_schedule_warms_up_then_decays_to_one_percent():
    assert lr_at(5, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.05)
    assert lr_at(10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.1)
    assert lr_at(100, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.001)
    assert lr_at(55, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert lr_at(50, 100, 0.1) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        lr_at(50, 100, 0.1, "step")


def _toy_partial_tiles():
    rng = np.random.default_rng(0)
    img = rng.random((3, 48, 48)).astype(np.float32)
    road = np.full((48, 48), NOT_ROAD, np.uint8)
    road[20:26] = 2
    building = np.full((48, 48), NOT_BUILDING, np.uint8)
    building[5:15, 5:15] = 1
    return [img, img.copy()], [road, building]


def test_train_coarse_returns_the_checkpoint_that_validated_best():
    from refiner.core.classes import ClassSpec

    images, labels = _toy_partial_tiles()
    classes = ClassSpec(("background", "building", "road"))
    snaps, scores = [], iter([0.1, 0.9, 0.2])

    def validate(bundle):
        snaps.append({k: v.clone() for k, v in bundle.net.state_dict().items()})
        return next(scores)

    cfg = CoarseTrainConfig(steps=6, batch_size=2, output_size=16, context=8, eval_every=2, balance=True,
                            jitter=0.2, schedule="cosine", warmup=1)  # fmt: skip
    res = CoarseTrainResult(None)
    bundle = train_coarse(images, labels, classes, cfg, partial=PARTIAL, validate=validate, result=res)
    assert res.best_step == 4 and res.best_val == 0.9 and len(res.history) == 3
    for k, v in bundle.net.state_dict().items():
        assert torch.equal(v, snaps[1][k])
    assert not torch.equal(snaps[1]["features.0.weight"], snaps[2]["features.0.weight"])


@pytest.mark.slow
def test_train_coarse_learns_a_synthetic_scene_it_has_not_seen():
    """300 steps on one synthetic scene's truth (about 15 s on one core): on another scene, mean IoU
    at least 0.7 and every class at least 0.6 (0.83, 0.77 and 0.78 measured), where the untrained
    network scores under 0.35."""
    from refiner.core.classes import ClassSpec
    from refiner.data.synthetic import make_scene
    from refiner.models.inference import predict_coarse
    from refiner.models.store import ModelBundle

    train, held_out = make_scene(256, seed=1), make_scene(128, seed=2)
    classes = ClassSpec(("background", "building", "road"))
    cfg = CoarseTrainConfig(steps=300, batch_size=4, output_size=16, context=16, balance=True)
    bundle = train_coarse([train.image], [train.truth], classes, cfg, device="cpu")
    scores = evaluate(predict_coarse(bundle, held_out.tile(), device="cpu").argmax(0), held_out.truth, 3)
    torch.manual_seed(cfg.seed)  # the network training started from
    start = ModelBundle("coarse", CoarseCNN(CoarseConfig(3)), classes, 1.0, bundle.mean, bundle.std)
    before = evaluate(predict_coarse(start, held_out.tile(), device="cpu").argmax(0), held_out.truth, 3)
    assert before.mean_iou < 0.35, before.mean_iou
    assert scores.mean_iou >= 0.7 and min(scores.iou) >= 0.6, (scores.mean_iou, scores.iou)


def test_train_coarse_rejects_unknown_label_codes():
    from refiner.core.classes import ClassSpec

    images, labels = _toy_partial_tiles()
    labels[0][0, 0] = 77
    with pytest.raises(ValueError, match="77"):
        train_coarse(images, labels, ClassSpec(("background", "building", "road")),
                     CoarseTrainConfig(steps=1, batch_size=2, output_size=16, context=8), partial=PARTIAL)  # fmt: skip


def test_train_coarse_counts_only_the_steps_that_ran():
    """A cancelled run's model says how many steps it trained: none when cancelled before the first."""
    from refiner.core.classes import ClassSpec

    images, labels = _toy_partial_tiles()
    classes = ClassSpec(("background", "building", "road"))
    cfg = CoarseTrainConfig(steps=10, batch_size=2, output_size=16, context=8)
    calls = iter(range(100))
    reports = []
    bundle = train_coarse(images, labels, classes, cfg, partial=PARTIAL, should_stop=lambda: next(calls) >= 3,
                          progress=reports.append)  # fmt: skip
    assert bundle.info["trained_steps"] == 3 and reports == []  # reports come every 10 steps
    before = {k: v.clone() for k, v in bundle.net.state_dict().items()}
    again = train_coarse(images, labels, classes, cfg, partial=PARTIAL, should_stop=lambda: True, init=bundle)
    assert again.info["trained_steps"] == 3 and again.info["init_steps"] == 3
    assert all(torch.equal(v, before[k]) for k, v in again.net.state_dict().items())


def test_training_refuses_zero_steps_and_a_coarse_start_for_the_rnn():
    """Zero steps would save an untrained model as trained: every loop refuses it before any work."""
    from refiner.core.classes import ClassSpec
    from refiner.train.rnn import train_rnn_tiles

    images, labels = _toy_partial_tiles()
    classes = ClassSpec(("background", "building", "road"))
    with pytest.raises(ValueError, match="steps 0 is below 1"):
        train_coarse(images, labels, classes, CoarseTrainConfig(steps=0), partial=PARTIAL)
    probs = [np.full((3, 48, 48), 1 / 3, np.float32)] * 2
    with pytest.raises(ValueError, match="steps 0 is below 1"):
        train_rnn_tiles(images, probs, labels, classes, RNNTrainConfig(steps=0), partial=PARTIAL)
    with pytest.raises(ValueError, match="batch size 0 is below 1"):
        train_rnn_tiles(images, probs, labels, classes, RNNTrainConfig(batch_size=0), partial=PARTIAL)
    with pytest.raises(ValueError, match="focus -0.5 is not a share"):
        train_rnn_tiles(images, probs, labels, classes, RNNTrainConfig(steps=1, focus=-0.5), partial=PARTIAL)
    # focus on the coarse map's errors: uniform probabilities are unsure everywhere, so it trains as usual
    cfg = RNNTrainConfig(steps=2, batch_size=2, patch_size=16, focus=0.5)
    res = train_rnn_tiles(images, probs, labels, classes, cfg, partial=PARTIAL)
    assert res.bundle.info["trained_steps"] == 2 and np.isfinite(res.history[-1].loss)
    from refiner.models.store import ModelBundle

    coarse = ModelBundle("coarse", CoarseCNN(CoarseConfig(3)), classes)
    truth = np.zeros((48, 48), np.uint8)
    with pytest.raises(ValueError, match="from an RNN model, not a coarse one"):
        train_rnn(images[0], probs[0], truth, classes, RNNTrainConfig(steps=1), init=coarse)


def test_finetune_from_pretrained_leaves_the_start_model_and_the_anchor_holds_weights():
    from dataclasses import replace

    from refiner.core.classes import ClassSpec
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle
    from refiner.train.rnn import FINETUNE_DEFAULTS

    torch.manual_seed(0)
    classes = ClassSpec(("background", "road"))
    init = ModelBundle("rnn", RefinerRNN(RNNConfig(2, iterations=2)).eval(), classes, resolution=1.0)
    before = {k: v.clone() for k, v in init.net.state_dict().items()}
    rng = np.random.default_rng(0)
    image = rng.random((3, 64, 64)).astype(np.float32)
    truth = np.zeros((64, 64), np.uint8)
    truth[30:36] = 1
    probs = coarse_probs_from_labels(truth, 2, sigma=3.0)
    drift = {}
    for anchor in (0.0, 10.0):
        cfg = replace(FINETUNE_DEFAULTS, steps=15, patience=0, eval_every=5, anchor=anchor, lr=0.05)
        res = finetune_from_pretrained(image, probs, truth, init, cfg)
        assert res.bundle is not init
        w = res.bundle.net.state_dict()
        drift[anchor] = sum(float((w[k] - before[k]).pow(2).sum()) for k in before)
    for k, v in init.net.state_dict().items():
        assert torch.equal(v, before[k])
    assert drift[10.0] < drift[0.0] * 0.5, drift
    with pytest.raises(ValueError, match="RNN"):
        finetune_from_pretrained(image, probs, truth, ModelBundle("coarse", CoarseCNN(CoarseConfig(2)), classes))


def test_distillation_keeps_a_finetune_close_to_its_start_where_the_patch_says_nothing():
    """A patch painted all road pulls an undistilled fine-tune towards road everywhere; the KL
    pull towards the start's probabilities (``distill``) keeps the rest of the tile near them."""
    from dataclasses import replace

    from refiner.core.classes import ClassSpec
    from refiner.data.tile import Tile
    from refiner.models.inference import refine
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle
    from refiner.train.rnn import FINETUNE_DEFAULTS

    torch.manual_seed(0)
    classes = ClassSpec(("background", "road"))
    init = ModelBundle("rnn", RefinerRNN(RNNConfig(2, iterations=2)).eval(), classes, resolution=1.0)
    rng = np.random.default_rng(0)
    image = rng.random((3, 64, 64)).astype(np.float32)
    truth = np.zeros((64, 64), np.uint8)
    truth[30:36] = 1
    probs = coarse_probs_from_labels(truth, 2, sigma=3.0)
    painted = np.full((64, 64), 255, np.uint8)
    painted[:24, :24] = 1  # a patch that says "road" only
    tile = Tile(image=image, valid=np.ones((64, 64), bool))
    start = refine(init, tile, probs).final
    drift = {}
    for distill in (0.0, 50.0):
        cfg = replace(FINETUNE_DEFAULTS, steps=20, patience=0, eval_every=10**6, holdout=0.0, anchor=0.0,
                      lr=0.05, distill=distill)  # fmt: skip
        res = finetune_from_pretrained(image, probs, painted, init, cfg)
        drift[distill] = float(np.abs(refine(res.bundle, tile, probs).final - start)[:, 32:, 32:].mean())
    assert drift[50.0] < 0.5 * drift[0.0], drift


def test_every_iteration_scores_the_mean_of_each_iterations_loss(scene):
    """``every_iteration``: the loss is the mean over u_1 .. u_T, so no iteration may drift (issue #27)."""
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.train.losses import allowed_table
    from refiner.train.rnn import _Objective

    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(num_classes=3, iterations=3))
    x, p = torch.rand(2, 3, 40, 40), torch.softmax(torch.rand(2, 3, 40, 40), 1)
    halo = net.cfg.halo
    y = torch.randint(0, 3, (2, 40 - 2 * halo, 40 - 2 * halo))
    cfg = RNNTrainConfig(patch_size=40 - 2 * halo)
    final = _Objective(net, cfg, allowed_table(3, None), False, False)(x, p, y)
    every = _Objective(net, RNNTrainConfig(patch_size=cfg.patch_size, every_iteration=True),
                       allowed_table(3, None), False, False)(x, p, y)  # fmt: skip
    maps = net(x, p)
    per_t = [segmentation_loss(m[..., halo:-halo, halo:-halo], y) for m in maps[1:]]
    torch.testing.assert_close(final, per_t[-1])
    torch.testing.assert_close(every, torch.stack(per_t).mean())
    assert not torch.isclose(every, final)


def test_unroll_jitter_draws_every_count_around_the_rnns_own_and_caps_a_non_recurrent_one():
    from refiner.models.rnn import RNNConfig
    from refiner.train.rnn import _unroll

    gen = torch.Generator().manual_seed(0)
    for variant, expect in (("class_specific", {3, 4, 5, 6, 7}), ("non_recurrent", {3, 4, 5})):
        arch = RNNConfig(num_classes=3, iterations=5, variant=variant)
        assert {_unroll(arch, RNNTrainConfig(unroll_jitter=2), gen) for _ in range(200)} == expect
    assert {_unroll(RNNConfig(3, iterations=2), RNNTrainConfig(unroll_jitter=4), gen) for _ in range(100)} == set(
        range(1, 7)
    )  # never below one iteration
    assert _unroll(RNNConfig(3), RNNTrainConfig(), gen) is None


def test_unroll_jitter_scores_the_map_after_the_drawn_count_in_both_trainers(scene, monkeypatch):
    """The objective and the pretrained recipe's loop unroll what ``_unroll`` drew; a negative value is refused."""
    import refiner.train.rnn as rnn_module
    from refiner.models.rnn import RefinerRNN

    counts = []
    forward = RefinerRNN.forward

    def spy(self, image, probs, iterations=None, **kw):  # noqa: ANN001, ANN202
        maps = forward(self, image, probs, iterations, **kw)
        if self.training:
            counts.append(len(maps) - 1)
        return maps

    monkeypatch.setattr(RefinerRNN, "forward", spy)
    probs = coarse_probs_from_labels(scene.osm, 3)
    cfg = RNNTrainConfig(steps=12, batch_size=2, patch_size=24, holdout=0.0, unroll_jitter=2)
    train_rnn(scene.image, probs, scene.truth, scene.classes, cfg)
    assert set(counts) <= {3, 4, 5, 6, 7} and len(set(counts)) > 1, counts
    counts.clear()
    image8 = np.round(scene.image * 255).astype(np.uint8)
    rnn_module.train_rnn_tiles([image8], [np.round(probs * 255).astype(np.uint8)], [scene.truth], scene.classes, cfg)
    assert set(counts) <= {3, 4, 5, 6, 7} and len(set(counts)) > 1, counts
    with pytest.raises(ValueError, match="unroll_jitter -1 is negative"):
        train_rnn(scene.image, probs, scene.truth, scene.classes, replace(cfg, unroll_jitter=-1))


def test_compact_holdout_is_one_piece_and_leaves_more_to_train_on():
    """Scattered held-out cells cost a guard band each: on a dense window the compact split keeps far more (#27)."""
    from scipy import ndimage

    labels = np.full((260, 260), IGNORE, np.uint8)
    labels[30:230, 30:230] = np.random.default_rng(0).integers(0, 2, (200, 200))  # a fully painted window
    for seed in (0, 1):
        scattered, _ = split_holdout(labels, 0.2, guard=8, seed=seed)
        train, val = split_holdout(labels, 0.2, guard=8, seed=seed, compact=True)
        held, kept = val != IGNORE, train != IGNORE
        assert ndimage.label(held, structure=np.ones((3, 3), bool))[1] == 1  # one piece
        assert ndimage.distance_transform_cdt(~held, metric="chessboard")[kept].min() > 8  # same guard
        assert 0.1 < held.sum() / (labels != IGNORE).sum() < 0.3
        assert kept.sum() > 1.3 * (scattered != IGNORE).sum(), seed


def test_identity_start_refines_to_the_coarse_map_until_trained(scene):
    """``identity_start``: a new RNN starts from du = 0, so before any learning it returns its input map."""
    probs = coarse_probs_from_labels(scene.osm, 3)
    cfg = RNNTrainConfig(steps=1, batch_size=2, patch_size=24, lr=0.0, holdout=0.0)
    out = {}
    for start in (False, True):
        res = train_rnn(scene.image, probs, scene.truth, scene.classes, replace(cfg, identity_start=start))
        out[start] = refine(res.bundle, scene.tile(), probs).final
    np.testing.assert_allclose(out[True], probs, atol=1e-5)
    assert np.abs(out[False] - probs).max() > 1e-2


def test_a_pull_on_a_new_rnn_starts_it_as_the_coarse_map(scene):
    """``distill`` without ``identity_start`` pulled towards nothing (no start to pull to): it was silently
    plain training. A new RNN with a pull now starts from du = 0, so the pull has the coarse map to keep."""
    probs = coarse_probs_from_labels(scene.osm, 3)
    cfg = RNNTrainConfig(steps=1, batch_size=2, patch_size=24, lr=0.0, holdout=0.0)
    untrained = {d: refine(train_rnn(scene.image, probs, scene.truth, scene.classes, replace(cfg, distill=d)).bundle,
                           scene.tile(), probs).final for d in (0.0, 3.0)}  # fmt: skip
    np.testing.assert_allclose(untrained[3.0], probs, atol=1e-5)
    assert np.abs(untrained[0.0] - probs).max() > 1e-2  # Glorot's start without a pull, as the paper's
    drift = {}
    run = replace(cfg, lr=0.05, steps=20)
    wrong = np.where(scene.truth == IGNORE, IGNORE, (scene.truth + 1) % 3).astype(np.uint8)
    for distill in (0.0, 50.0):
        res = train_rnn(scene.image, probs, wrong, scene.classes, replace(run, distill=distill, identity_start=True))
        drift[distill] = float(np.abs(refine(res.bundle, scene.tile(), probs).final - probs).mean())
    pulled = train_rnn(scene.image, probs, wrong, scene.classes, replace(run, distill=50.0))  # no identity_start
    assert float(np.abs(refine(pulled.bundle, scene.tile(), probs).final - probs).mean()) == pytest.approx(
        drift[50.0], rel=1e-5
    )  # the same run as with identity_start: the pull is on
    assert drift[50.0] < 0.5 * drift[0.0], drift


def test_identity_start_is_a_candidate_and_the_pull_keeps_a_new_rnn_near_the_coarse_map(scene):
    """From ``du = 0`` the start competes on the held-out regions, and ``distill`` pulls towards the coarse map."""
    probs = coarse_probs_from_labels(scene.osm, 3)
    wrong = np.where(scene.truth == IGNORE, IGNORE, (scene.truth + 1) % 3).astype(np.uint8)  # every label wrong
    wrong[:, 80:] = IGNORE
    right = np.full_like(scene.truth, IGNORE)
    right[:, 100:] = scene.truth[:, 100:]  # held out: the true labels
    cfg = RNNTrainConfig(steps=20, batch_size=2, patch_size=24, eval_every=5, eval_seconds=None, identity_start=True)
    res = train_rnn(scene.image, probs, wrong, scene.classes, cfg, val_labels=right)
    assert res.bundle.info["best_step"] == 0  # learning the wrong labels only lost held-out IoU: the start is kept
    np.testing.assert_allclose(refine(res.bundle, scene.tile(), probs).final, probs, atol=1e-5)
    drift = {}
    for distill in (0.0, 50.0):
        run = replace(cfg, holdout=0.0, lr=0.05, distill=distill)
        out = refine(train_rnn(scene.image, probs, wrong, scene.classes, run).bundle, scene.tile(), probs).final
        drift[distill] = float(np.abs(out - probs).mean())
    assert drift[50.0] < 0.5 * drift[0.0], drift
