"""Sessions: who owns which workspace, share links, read-only templates, one job per session, idle clean-up."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from refiner.app import jobs, sessions
from refiner.app.workspace import Workspace, list_workspaces
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES, make_scene

TILE = make_scene(32, seed=2).tile()


def _tiny_demo(root, name):
    """A stand-in for the demo builder (the real one runs the coarse CNN on 512^2 px)."""
    ws = Workspace.create(root, name, TILE, DEMO_CLASSES, source={"kind": "demo", "name": "tiny demo"})
    labels = np.full(TILE.shape, IGNORE, np.uint8)
    labels[:8, :8] = 1
    ws.write_labels(labels, undo=False)
    return ws


@pytest.fixture()
def builds(monkeypatch):
    """The templates built (the demo builder is swapped for the tiny one)."""
    made = []

    def build(r, n):
        made.append(n)
        return _tiny_demo(r, n)

    monkeypatch.setattr(sessions, "_builders", lambda: {"demo": build})
    return made


@pytest.fixture()
def root(tmp_path, builds):
    return tmp_path / "workspaces"


def session(root, token: str | None = None) -> sessions.Session:
    return sessions.Session(root, sessions.browser_key(token or sessions.new_token()))


def paint(ws: Workspace, value: int = 2) -> None:
    ws.edit_labels(lambda now: np.where(np.arange(now.size).reshape(now.shape) % 7 == 0, value, now).astype(np.uint8))


def test_tokens_are_random_and_checked():
    a, b = sessions.new_token(), sessions.new_token()
    assert a != b and sessions.valid_token(a) and len(a) >= 32
    for bad in ("", "short", "a/b" * 10, "../" * 10, None, 123):
        assert not sessions.valid_token(bad)
    with pytest.raises(ValueError, match="session key is not valid"):
        sessions.browser_key("short")


def test_a_session_sees_and_opens_only_its_own_workspaces(root):
    alice, bob = session(root), session(root)
    alice.create("fields", TILE, DEMO_CLASSES)
    bob.create("fields", TILE, DEMO_CLASSES)  # the same name: each has their own
    bob.create("roads", TILE, DEMO_CLASSES)
    assert alice.names() == ["fields"] and bob.names() == ["fields", "roads"]
    assert alice.open("fields").path != bob.open("fields").path
    with pytest.raises(ValueError, match="you have no workspace called 'roads'"):
        alice.open("roads")
    # the ownership is on disk, in the workspace: a folder moved into alice's space is still bob's
    moved = alice.space / "roads"
    os.rename(bob.space / "roads", moved)
    assert "roads" not in alice.names()
    with pytest.raises(ValueError, match="no workspace called"):
        alice.open("roads")
    assert sessions.read_access(moved)["owner"] == bob.owner and bob.key not in (moved / "access.json").read_text()


@pytest.mark.parametrize("name", ["../evil", "/etc", "a/b", ".hidden", "..", "x" * 65, "a\\b", ""])
def test_typed_names_cannot_leave_the_session_space(root, name):
    s = session(root)
    with pytest.raises(ValueError, match="not a usable workspace name"):
        s.create(name, TILE, DEMO_CLASSES)
    with pytest.raises(ValueError):
        s.open(name)
    assert not (root / "evil").exists() and not (root.parent / "evil").exists()


def test_a_link_placed_in_a_session_space_is_not_followed(root, tmp_path):
    s = session(root)
    s.create("mine", TILE, DEMO_CLASSES)
    outside = Workspace.create(tmp_path / "elsewhere", "x", TILE, DEMO_CLASSES)
    (s.space / "link").symlink_to(outside.path)
    with pytest.raises(ValueError, match="not a usable workspace name"):
        s.open("link")


def test_the_demo_is_a_template_each_session_copies(root, builds):
    alice, bob = session(root), session(root)
    a, b = alice.open_template_copy("demo"), bob.open_template_copy("demo")
    assert builds == ["demo"]  # built once, then copied
    template = sessions.template(root, "demo")
    assert template.readonly and a.path != b.path != template.path
    paint(a)
    assert a.label_counts()["road"] > 0
    assert b.label_counts()["road"] == 0 and template.label_counts()["road"] == 0
    # nobody edits the template
    for change in (
        lambda: paint(template),
        lambda: template.write_labels(template.labels()),
        lambda: template.update_settings(crf={}),
        lambda: template.undo(),
        lambda: jobs.start_training(template, jobs.TrainParams(steps=1)),
    ):
        with pytest.raises(ValueError, match="read-only: it is a shipped template"):
            change()
    # opening the demo again gives the same copy, with its labels
    assert alice.open_template_copy("demo").label_counts()["road"] == a.label_counts()["road"]


def test_reset_replaces_only_the_sessions_own_copy(root):
    alice, bob = session(root), session(root)
    a, b = alice.open_template_copy("demo"), bob.open_template_copy("demo")
    paint(a, 2)
    paint(b, 1)
    bob_labels = b.labels()
    token = alice.share("demo", "read")
    fresh = alice.reset("demo")
    assert fresh.label_counts()["road"] == 0 and fresh.undo_depth() == 0
    assert np.array_equal(Workspace(b.path).labels(), bob_labels)  # bob's copy untouched
    assert sessions.template(root, "demo").label_counts() == fresh.label_counts()
    assert bob.open_shared(token).path == fresh.path  # its share links are kept
    alice.create("own", TILE, DEMO_CLASSES)
    with pytest.raises(ValueError, match="not a copy of a shipped demo"):
        alice.reset("own")
    with pytest.raises(ValueError, match="name of a shipped demo"):
        bob.create("demo", TILE, DEMO_CLASSES, overwrite=True)


def test_share_links_read_only_and_editable(root):
    owner, guest = session(root), session(root)
    ws = owner.create("survey", TILE, DEMO_CLASSES)
    read = owner.share("survey", "read")
    seen = guest.open_shared(read)
    assert seen.path == ws.path and seen.readonly
    assert "survey" not in guest.names()  # shared, not given
    with pytest.raises(ValueError, match="read-only: it was shared with you to look at"):
        paint(seen)
    with pytest.raises(ValueError, match="read-only"):
        jobs.TRAINING.cancel(seen)
    assert Workspace(ws.path).label_counts()["road"] == 0
    edit = owner.share("survey", "edit")
    editable = guest.open_shared(edit)
    assert not editable.readonly
    paint(editable)
    assert Workspace(ws.path).label_counts()["road"] > 0  # the guest's stroke is in the owner's workspace
    assert owner.shared_modes("survey") == ["edit", "read"]
    again = owner.share("survey", "read")  # a new read link revokes the old one
    with pytest.raises(ValueError, match="does not work"):
        guest.open_shared(read)
    assert guest.open_shared(again).readonly
    owner.unshare("survey")
    for token in (again, edit, "not-a-token", sessions.new_token()):
        with pytest.raises(ValueError, match="share link does not work"):
            guest.open_shared(token)
    with pytest.raises(ValueError, match="you have no workspace"):
        guest.share("survey", "edit")  # only the owner makes links
    assert read not in (ws.path / "access.json").read_text()  # only digests on disk


def test_signed_in_users_own_workspaces_by_their_id(root, monkeypatch):
    monkeypatch.delenv(sessions.AUTH_ENV, raising=False)
    assert not sessions.auth_required()  # off by default
    monkeypatch.setenv(sessions.AUTH_ENV, "1")
    assert sessions.auth_required()
    claims = {"iss": "https://idp.example", "sub": "u-1", "email": "a@example.org"}
    key = sessions.user_key(claims)
    assert key == "user:https://idp.example|u-1"
    assert sessions.user_key({"email": "a@example.org"}) == "user:email|a@example.org"
    with pytest.raises(ValueError, match="no user id"):
        sessions.user_key({"is_logged_in": True})
    laptop, phone = sessions.Session(root, key), sessions.Session(root, sessions.user_key(dict(claims)))
    laptop.create("mine", TILE, DEMO_CLASSES)
    assert phone.names() == ["mine"]  # the same user on another browser
    other = sessions.Session(root, sessions.user_key({**claims, "sub": "u-2"}))
    assert other.names() == [] and session(root).names() == []


def test_one_job_at_a_time_per_session(root, monkeypatch):
    s = session(root)
    a = s.create("a", TILE, DEMO_CLASSES)
    b = s.create("b", TILE, DEMO_CLASSES)
    other = session(root).create("c", TILE, DEMO_CLASSES)
    (b.path / "jobs").mkdir()
    (b.path / "jobs" / jobs.CURVES).write_text('{"model_steps": 3}')  # not a job: never counted as one
    assert jobs.active_job(b) == ""
    status = jobs.JobStatus(id="x", state="running", started=time.time())
    jobs.write_status(a, status, jobs.TRAINING.files[0])  # a run going in 'a' (its heartbeat is fresh)
    assert jobs.active_job(a) == "training run" and s.busy() == "training run in 'a'"
    from refiner.app.jobs import scene as scene_job

    with pytest.raises(RuntimeError, match="training run is already going in your workspace 'a': one job at a time"):
        scene_job.start_scene_job(b, "https://example.org/x.tif", others=s.workspaces())
    with pytest.raises(RuntimeError, match="training run is already going in this workspace"):
        scene_job.start_scene_job(a, "https://example.org/x.tif", others=s.workspaces())
    assert scene_job.SCENE.read(b) is None
    # another session is not held up by it
    started = []
    monkeypatch.setattr(jobs.ThreadBackend, "submit", lambda self, fn, *args: started.append(fn) or _Done())
    scene_job.start_scene_job(other, "https://example.org/x.tif", others=[Workspace(other.path)])
    assert started


class _Done:
    def done(self) -> bool:
        return True


def _age(folder, hours: float) -> None:
    t = time.time() - hours * 3600
    for p in (folder / ".used", folder / "access.json", folder):
        if p.exists():
            os.utime(p, (t, t))


def test_idle_session_workspaces_are_cleaned_up(root, builds, monkeypatch):
    idle, busy, recent, shared = session(root), session(root), session(root), session(root)
    old = idle.create("old", TILE, DEMO_CLASSES)
    keep = idle.create("kept", TILE, DEMO_CLASSES)
    running = busy.create("running", TILE, DEMO_CLASSES)
    fresh = recent.create("fresh", TILE, DEMO_CLASSES)
    lent = shared.create("lent", TILE, DEMO_CLASSES)
    tpl = sessions.template(root, "demo")
    token = shared.share("lent", "read")
    for ws in (old, keep, running, fresh, lent):
        _age(ws.path, 100)
    _age(fresh.path, 1)
    _age(tpl.path, 1000)
    jobs.write_status(running, jobs.JobStatus(id="j", state="running", started=time.time()), jobs.TRAINING.files[0])
    session(root).open_shared(token)  # someone used the share link just now
    idle.open("kept")  # and idle's other workspace was opened just now
    monkeypatch.setenv(sessions.TTL_ENV, "72")
    removed = sessions.cleanup(root)
    assert removed == [old.path]
    assert idle.names() == ["kept"] and busy.names() == ["running"] and recent.names() == ["fresh"]
    assert shared.names() == ["lent"] and sessions.template(root, "demo").path.is_dir()
    assert builds == ["demo"]  # the template was not removed and rebuilt
    # the TTL is the operator's: 0.5 h removes the 1-hour-old one too
    assert sessions.cleanup(root, 0.5) == [fresh.path]
    assert not recent.space.exists()  # an owner folder left empty goes too
    assert list_workspaces(busy.space) == ["running"]


def test_cleanup_runs_at_most_once_per_interval(root, monkeypatch):
    s = session(root)
    ws = s.create("w", TILE, DEMO_CLASSES)
    _age(ws.path, 100)
    monkeypatch.setenv(sessions.TTL_ENV, "10")
    (root / ".cleanup").touch()  # it ran a moment ago
    assert sessions.cleanup_if_due(root) == [] and s.names() == ["w"]
    t = time.time() - 7200
    os.utime(root / ".cleanup", (t, t))
    assert sessions.cleanup_if_due(root) == [ws.path] and s.names() == []


def test_ttl_setting(monkeypatch):
    monkeypatch.delenv(sessions.TTL_ENV, raising=False)
    assert sessions.ttl_hours() == sessions.DEFAULT_TTL_HOURS
    monkeypatch.setenv(sessions.TTL_ENV, "2.5")
    assert sessions.ttl_hours() == 2.5
    for bad in ("soon", "-1", "0"):
        monkeypatch.setenv(sessions.TTL_ENV, bad)
        assert sessions.ttl_hours() == sessions.DEFAULT_TTL_HOURS
