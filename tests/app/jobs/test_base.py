"""What every kind of job shares: how it writes its status, is cancelled and ends."""

import time
import types

import pytest

from refiner.app import jobs
from refiner.app.jobs import base
from refiner.core.atomic import read_json
from tests.helpers import make_workspace

FILES = ("test.json", "test.cancel")


def _run(ws, body) -> jobs.JobState:
    """Run ``body`` as a job; a failed assertion in it fails the test (job_run would report it as a failed job)."""
    status, failed = jobs.JobState(id="j", state="running"), []

    def checked(run):
        try:
            body(run)
        except AssertionError as exc:
            failed.append(exc)
            raise

    with jobs.job_run(ws, status, FILES) as run:
        checked(run)
    if failed:
        raise failed[0]
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


def test_status_writes_are_throttled_unless_forced(tmp_path, monkeypatch):
    """At most one write per 0.5 s of the job's clock, whatever the machine's speed: the clock is ours."""
    ws = make_workspace(tmp_path, with_rnn=False)
    clock = [1000.0]
    monkeypatch.setattr(base, "time", types.SimpleNamespace(time=lambda: clock[0], sleep=time.sleep))

    def saved() -> str:
        return read_json(ws.path / "jobs" / FILES[0])["message"]

    # JobRun itself, not job_run: job_run reports a failed assertion in its body as a failed job
    run = jobs.JobRun(ws, jobs.JobState(id="j", state="running"), FILES, every=0.5)
    run.save()
    assert saved() == ""
    run.status.message = "second"
    clock[0] += 0.4
    run.save()  # 0.4 s after the first write: not written
    assert saved() == ""
    run.save(force=True)
    assert saved() == "second"
    run.status.message = "third"
    clock[0] += 0.4
    run.save()  # 0.4 s after the forced write: not written
    assert saved() == "second"
    clock[0] += 0.2
    run.save()  # 0.6 s after it: written
    assert saved() == "third"


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
