import numpy as np
import pytest
import torch

from refiner.classes import IGNORE
from refiner.inference import refine
from refiner.metrics import evaluate
from refiner.models.io import load_model
from refiner.train import (
    NoLabelsError,
    PatchSampler,
    RNNTrainConfig,
    check_labels,
    restrict_to_window,
    segmentation_loss,
    split_holdout,
    train_rnn,
)
from tests.conftest import coarse_probs_from_labels


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


def test_holdout_split_is_by_blocks_and_disjoint():
    labels = np.zeros((64, 64), np.uint8)
    train, val = split_holdout(labels, 0.25, block=16, seed=0)
    assert ((train != IGNORE) ^ (val != IGNORE)).all()
    assert (val != IGNORE).sum() == 4 * 256  # 4 of the 16 blocks
    blocks = (val != IGNORE).reshape(4, 16, 4, 16).any((1, 3))
    assert blocks.sum() == 4


def test_label_checks():
    with pytest.raises(NoLabelsError, match="no labelled pixel"):
        check_labels(np.full((4, 4), IGNORE, np.uint8), 2)
    with pytest.raises(ValueError, match="class index 3"):
        check_labels(np.full((4, 4), 3, np.uint8), 2)


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
        RNNTrainConfig(steps=100, eval_every=5),
        should_stop=stop,
        checkpoint_dir=tmp_path / "rnn",
    )
    assert res.stopped == "cancelled" and res.bundle.info["trained_steps"] == 12
    saved = load_model(tmp_path / "rnn", expect="rnn")
    assert saved.optimizer_state  # AdaGrad accumulators travel with the checkpoint
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
