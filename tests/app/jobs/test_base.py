"""What every kind of job shares: how it writes its status, is cancelled and ends."""

import pytest

from refiner.app import jobs
from refiner.app.jobs import crf, scene
from refiner.app.workspace import Workspace
from refiner.core.atomic import read_json
from tests.helpers import make_workspace

FILES = ("test.json", "test.cancel")


def _run(ws, body) -> jobs.JobState:
    status = jobs.JobState(id="j", state="running")
    with jobs.job_run(ws, status, FILES) as run:
        body(run)
    return status


@pytest.mark.parametrize(
    ("error", "state", "message"),
    [
        (None, "finished", "done"),
        (jobs.Cancelled("stopped; nothing kept"), "cancelled", "stopped; nothing kept"),
        (jobs.Cancelled(), "cancelled", "cancelled"),
        (ValueError("the labels are empty — paint some"), "failed", "the labels are empty — paint some"),
    ],
)
def test_a_job_ends_the_same_way_whatever_happens(tmp_path, error, state, message):
    ws = make_workspace(tmp_path, with_rnn=False)

    def body(run):
        run.save(force=True)
        assert read_json(ws.path / "jobs" / FILES[0])["state"] == "running"
        jobs.request_cancel(ws, FILES[1])
        assert run.cancelled()
        if error is not None:
            raise error
        run.status.state, run.status.message = "finished", "done"

    status = _run(ws, body)
    assert (status.state, status.message) == (state, message)
    saved = read_json(ws.path / "jobs" / FILES[0])
    assert (saved["state"], saved["message"]) == (state, message)  # the final status is on disk ...
    assert not (ws.path / "jobs" / FILES[1]).exists()  # ... and the cancel request is gone


def test_status_writes_are_throttled_unless_forced(tmp_path):
    ws = make_workspace(tmp_path, with_rnn=False)

    def body(run):
        run.save()
        run.status.message = "second"
        run.save()  # within 0.5 s of the first: not written
        assert read_json(ws.path / "jobs" / FILES[0])["message"] == ""
        run.save(force=True)
        assert read_json(ws.path / "jobs" / FILES[0])["message"] == "second"

    _run(ws, body)


def test_every_kind_of_job_is_cancelled_only_in_a_writable_workspace(tmp_path):
    ws = make_workspace(tmp_path, with_rnn=False)
    viewer = Workspace(ws.path, readonly="shared with you to view")
    for cancel in (jobs.request_cancel, crf.request_crf_cancel, scene.request_scene_cancel):
        with pytest.raises(ValueError, match="read-only"):
            cancel(viewer)
        cancel(ws)
    names = {"train.cancel", crf.CRF_CANCEL, scene.SCENE_CANCEL}
    assert {p.name for p in (ws.path / "jobs").iterdir()} >= names
