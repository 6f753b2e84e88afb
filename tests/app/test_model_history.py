import hashlib
from dataclasses import asdict

import pytest

from refiner.app import jobs, model_history
from tests.helpers import make_workspace


def _weights(ws) -> str:
    return hashlib.sha256((ws.model_dir("rnn") / "model.safetensors").read_bytes()).hexdigest()


def _train(ws, **kw) -> dict:
    params = jobs.TrainParams(steps=4, batch_size=2, patch_size=16, eval_every=2, checkpoint_every=2, **kw)
    out = jobs.run_training(str(ws.path), "j", asdict(params))
    assert out["state"] == "finished", out["message"]
    return out


def test_a_new_rnn_keeps_the_previous_one_and_any_can_be_restored(tmp_path):
    ws = make_workspace(tmp_path)
    original = _weights(ws)
    _train(ws, resume=False)  # "a new RNN (from scratch)"
    first = _weights(ws)
    assert first != original
    kept = model_history.entries(ws)
    assert [e.started_from for e in kept] == ["a new RNN (from scratch)", "kept as it was"]
    now = model_history.current(ws)
    assert now.id == kept[0].id and now.steps == 4 and 1 <= now.best_step <= 4 and now.last_step == 4
    assert now.held_out_mean_iou is not None and len(now.held_out_iou) == 3
    # back to the workspace's first RNN; the one it replaces stays kept
    back = model_history.restore(ws, kept[1].id)
    assert _weights(ws) == original and model_history.current(ws).id == back.id
    assert len(model_history.entries(ws)) == 2
    # continuing training starts from the restored RNN, not from the last run's checkpoint
    out = _train(ws, resume=True)
    assert out["params"]["started_from"] == "the workspace's RNN (continued)"
    assert model_history.current(ws).steps == 4  # the restored one had 0 steps
    assert [e.steps for e in model_history.entries(ws)] == [4, 4, 0]  # all three kept


def test_only_a_listed_rnn_can_be_restored(tmp_path):
    ws = make_workspace(tmp_path)
    with pytest.raises(ValueError, match="not in this workspace's history"):
        model_history.restore(ws, "../../elsewhere")
    assert model_history.keep_current(ws).name == "the RNN the workspace had"
    assert len(model_history.entries(ws)) == 1 and model_history.keep_current(ws).id == model_history.entries(ws)[0].id


def test_a_copy_into_the_history_is_whole_or_not_at_all(tmp_path, monkeypatch):
    import errno
    import shutil

    ws = make_workspace(tmp_path)
    history = ws.path / "models" / "history"

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_history, "atomic_write_json", full_disk)  # the copy is made, its entry fails
    with pytest.raises(OSError):
        model_history.keep_current(ws)
    monkeypatch.undo()
    assert [p.name for p in history.iterdir()] == [".lock"]  # no half entry, no temporary
    # one killed mid-write (kill -9) leaves a hidden temporary: never listed, never restorable
    killed = history / ".00000000000000000001.999999.abc.tmp"
    shutil.copytree(ws.model_dir("rnn"), killed)
    (killed / "entry.json").write_text('{"id": "00000000000000000001", "name": "half", "created": 1.0}')
    assert model_history.entries(ws) == []
    kept = model_history.keep_current(ws)
    assert [e.id for e in model_history.entries(ws)] == [kept.id] and (history / kept.id / "entry.json").is_file()


def test_the_kept_weights_are_described_without_contradiction():
    """It said "the weights of step 1300 ..., not those of its last step (1300)"."""
    from refiner.app.model_history import Entry

    last = Entry("a", "rnn a", 0.0, best_step=1300, last_step=1300, held_out_mean_iou=0.8).kept_weights()
    assert "step 1300, the last of its run" in last and "not those" not in last
    earlier = Entry("b", "rnn b", 0.0, best_step=200, last_step=300, held_out_mean_iou=0.7).kept_weights()
    assert "step 200" in earlier and "not those of its last step (300)" in earlier
