"""Resumable coarse training: a stopped and continued run ends exactly where an unbroken one does."""

import numpy as np
import pytest
import torch

from refiner.core.classes import ClassSpec
from refiner.train.coarse import CoarseTrainConfig, CoarseTrainResult, train_coarse
from refiner.train.losses import NOT_BUILDING, NOT_ROAD

PARTIAL = {NOT_ROAD: (0, 1), NOT_BUILDING: (0, 2)}
CLASSES = ClassSpec(("background", "building", "road"))
# every random draw the loop makes is on: balanced centres, augmentation, jitter, a warm-up and cosine
CFG = CoarseTrainConfig(steps=8, batch_size=3, output_size=16, context=8, eval_every=2, balance=True,
                        jitter=0.2, schedule="cosine", warmup=2)  # fmt: skip


def _tiles():
    rng = np.random.default_rng(0)
    images = [rng.random((3, 40, 40)).astype(np.float32) for _ in range(3)]
    road = np.full((40, 40), NOT_ROAD, np.uint8)
    road[18:24] = 2
    building = np.full((40, 40), NOT_BUILDING, np.uint8)
    building[5:15, 5:15] = 1
    both = np.zeros((40, 40), np.uint8)
    both[:, 30:34] = 2
    both[2:8, 2:8] = 1
    return images, [road, building, both]


def _validate(bundle):
    """A score that depends on the weights, so which checkpoint is best depends on the run."""
    return float(bundle.net.features[0].weight.detach().sum())


def _monitor(bundle):
    return {"test_weight_norm": float(bundle.net.features[0].weight.detach().norm())}


def _run(path, cfg=CFG, stop_after=None):
    images, labels = _tiles()
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return stop_after is not None and calls["n"] > stop_after

    res = CoarseTrainResult(None)
    bundle = train_coarse(images, labels, CLASSES, cfg, partial=PARTIAL, validate=_validate, result=res,
                          checkpoint=path, should_stop=should_stop, monitor=_monitor, device="cpu")  # fmt: skip
    return bundle, res


def _without_seconds(history):
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "cpu_seconds", "train_cpu_seconds")} for row in history
    ]


def test_a_stopped_and_resumed_run_ends_with_the_model_of_an_unbroken_one(tmp_path):
    whole, whole_res = _run(tmp_path / "whole.pt")
    part, part_res = _run(tmp_path / "broken.pt", stop_after=3)
    assert not part_res.finished and part.info["trained_steps"] == 3
    assert [r["step"] for r in part_res.history] == [2]
    part, part_res = _run(tmp_path / "broken.pt", stop_after=2)  # a second sitting, stopped again
    assert not part_res.finished and part.info["trained_steps"] == 5
    resumed, resumed_res = _run(tmp_path / "broken.pt")
    assert resumed_res.finished and whole_res.finished
    assert resumed.info["trained_steps"] == whole.info["trained_steps"] == 8
    for name, value in whole.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[name]), name
    # the learning curve is carried over, not restarted: every row, the monitored scores included
    assert _without_seconds(resumed_res.history) == _without_seconds(whole_res.history)
    assert [r["step"] for r in resumed_res.history] == [2, 4, 6, 8]
    assert "test_weight_norm" in resumed_res.history[-1]
    cpu = [r["cpu_seconds"] for r in resumed_res.history]
    assert cpu == sorted(cpu) and cpu[0] > 0  # CPU time carried over the sittings, not restarted
    assert all(0 < r["train_cpu_seconds"] < r["cpu_seconds"] for r in resumed_res.history)
    assert (resumed_res.best_step, resumed_res.best_val) == (whole_res.best_step, whole_res.best_val)


def test_a_finished_run_is_not_trained_again(tmp_path):
    first, _ = _run(tmp_path / "run.pt")
    again, res = _run(tmp_path / "run.pt")
    assert res.finished and len(res.history) == 4
    for name, value in first.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[name]), name


def test_a_checkpoint_of_other_settings_is_refused_and_says_what_differs(tmp_path):
    _run(tmp_path / "run.pt", stop_after=2)
    other = CoarseTrainConfig(**{**CFG.__dict__, "lr": 0.5})
    with pytest.raises(ValueError, match="another run.*config"):
        _run(tmp_path / "run.pt", cfg=other)


def test_a_damaged_checkpoint_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it to start over"):
        _run(path)
