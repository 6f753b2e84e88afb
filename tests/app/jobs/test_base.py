"""What every kind of job shares: how it writes its status, is cancelled and ends."""

import pytest

from refiner.app import jobs
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
        (jobs.jobs_dir(ws) / FILES[1]).touch()
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


def test_kinds_are_declared_once_and_named_in_messages(tmp_path, monkeypatch):
    assert set(jobs.KINDS) == {"train", "crf", "scene", "adapt"}
    assert {k.files for k in jobs.KINDS.values()} == {
        ("train.json", "train.cancel"), ("crf.json", "crf.cancel"), ("scene.json", "scene.cancel"),
        ("adapt.json", "adapt.cancel")}  # fmt: skip
    with pytest.raises(ValueError, match="already a job kind called 'crf'"):
        jobs.JobKind("crf", "another search", jobs.JobState, lambda *a: {}, interrupted="")
    crf = jobs.KINDS["crf"]
    monkeypatch.setitem(jobs.KINDS, "crf", crf)  # restored after the test
    again = jobs.JobKind("crf", crf.what, crf.status, crf.run, interrupted=crf.interrupted)
    assert jobs.KINDS["crf"] is again  # its module imported again (Streamlit reloads edited modules)
    ws = make_workspace(tmp_path, with_rnn=False)
    for kind in jobs.KINDS.values():
        jobs.write_status(ws, kind.status(id="j", state="running"), kind.files[0])
        assert jobs.active_job(ws) == kind.what  # what the one-job-per-session message says
        (ws.path / "jobs" / kind.files[0]).unlink()
    jobs.write_status(ws, jobs.JobState(id="j", state="running"), "other.json")
    assert jobs.active_job(ws) == "other job"  # a kind this version does not know
