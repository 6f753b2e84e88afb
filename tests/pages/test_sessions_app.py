"""Many people on one server, through the pages: own workspaces per session, the demo as a
template, reset with confirmation, share links, optional sign-in, one job per session, upload limits."""

from __future__ import annotations

import time

import numpy as np
import pytest

from refiner.app import jobs, sessions
from refiner.app.workspace import Workspace
from tests.helpers import REPO, make_template, make_workspace, run, session

ALICE, BOB = (sessions.sign_session(f"{who}-session-token-0123456789ab") for who in ("alice", "bob"))


@pytest.fixture()
def root(tmp_path, monkeypatch):
    """A workspaces root whose demo template is a small workspace made in code."""
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.delenv(sessions.AUTH_ENV, raising=False)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sessions, "_builders", lambda: {"demo": make_template})
    return tmp_path


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def stroke(ws: Workspace, value: int = 2) -> None:
    """What the Label page does with a canvas stroke (AppTest cannot draw on the canvas)."""
    ws.edit_labels(lambda now: np.where(np.eye(*now.shape, dtype=bool), value, now).astype(np.uint8))


def test_two_sessions_get_their_own_demo_and_do_not_see_each_others_strokes(root):
    a, b = run("pages/1_Label.py", ALICE), run("pages/1_Label.py", BOB)
    alice, bob = session(root, ALICE), session(root, BOB)
    assert alice.names() == ["demo"] and bob.names() == ["demo"]
    assert alice.open("demo").path != bob.open("demo").path
    assert a.sidebar.selectbox[0].options == ["demo"] == b.sidebar.selectbox[0].options
    roads = metrics(b)["road"]
    stroke(alice.open("demo"))
    a.run()
    b.run()
    assert metrics(a)["road"] != roads and metrics(b)["road"] == roads
    # a workspace alice creates is hers only
    make_workspace(root, "alice-only", token=ALICE)
    assert "alice-only" in run("pages/1_Label.py", ALICE).sidebar.selectbox[0].options
    assert run("pages/1_Label.py", BOB).sidebar.selectbox[0].options == ["demo"]
    # typing another session's workspace into the address opens one's own instead
    at = run("pages/1_Label.py", BOB, ws="alice-only")
    assert at.sidebar.selectbox[0].value == "demo" and metrics(at)["road"] == roads


def test_reset_asks_first_and_resets_only_the_own_copy(root):
    alice, bob = session(root, ALICE), session(root, BOB)
    at, _ = run("app.py", ALICE), run("app.py", BOB)
    stroke(alice.open("demo"), 1)
    stroke(bob.open("demo"), 2)
    bob_labels = bob.open("demo").labels()
    alice_labels = alice.open("demo").labels()
    at.button(key="reset_demo").click().run()
    assert any("Only your copy changes" in w.value for w in at.warning)
    assert np.array_equal(alice.open("demo").labels(), alice_labels)  # nothing yet: it asks first
    at.button(key="reset_demo_no").click().run()
    assert not at.warning and np.array_equal(alice.open("demo").labels(), alice_labels)
    at.button(key="reset_demo").click().run()
    at.button(key="reset_demo_yes").click().run()
    assert not at.exception and not at.error
    template = sessions.template(root, "demo")
    assert np.array_equal(alice.open("demo").labels(), template.labels())
    assert np.array_equal(bob.open("demo").labels(), bob_labels)  # bob keeps his stroke
    assert not np.array_equal(template.labels(), bob_labels)


def test_a_share_link_opens_the_workspace_read_only_for_another_session(root):
    at = run("pages/1_Label.py", ALICE)
    at.sidebar.button(key="share_read").click().run()
    link = at.sidebar.code[0].value
    assert "?share=" in link
    token = link.split("?share=")[1]
    alice_ws = session(root, ALICE).open("demo")
    before = alice_ws.labels()
    b = run("pages/1_Label.py", BOB, share=token)
    assert any("Read-only: it was shared with you to look at" in i.value for i in b.info)
    assert b.button(key="undo").disabled
    assert b.sidebar.selectbox[0].options == ["demo (shared, read-only)"]  # listed, not made his
    assert b.sidebar.selectbox[0].value == f"share:{token}"
    assert session(root, BOB).names() == []
    assert metrics(b)["road"] == f"{int((before == 2).sum()):,}"
    t = run("pages/2_Train.py", BOB, share=token)
    assert next(btn for btn in t.button if btn.label == "Start training").disabled
    assert np.array_equal(Workspace(alice_ws.path).labels(), before)
    # alice stops sharing: the link opens nothing, bob is back in his own workspace
    at.sidebar.button(key="unshare").click().run()
    b = run("pages/1_Label.py", BOB, share=token)
    assert any("share link does not work" in w.value for w in b.warning)
    assert b.sidebar.selectbox[0].value == "demo" and "share" not in b.query_params


def test_an_editable_link_lets_the_guest_paint_in_the_owners_workspace(root):
    at = run("pages/1_Label.py", ALICE)
    at.sidebar.button(key="share_edit").click().run()
    token = at.sidebar.code[0].value.split("?share=")[1]
    b = run("pages/1_Label.py", BOB, share=token)
    assert not any("Read-only" in i.value for i in b.info)
    guest = session(root, BOB).open_shared(token)
    stroke(guest)
    at.run()
    assert metrics(at)["road"] == metrics(b.run())["road"]
    assert Workspace(session(root, ALICE).open("demo").path).label_counts() == guest.label_counts()
    assert sessions.template(root, "demo").label_counts() != guest.label_counts()  # the template stays


def test_sign_in_is_off_by_default_and_keys_workspaces_by_user_when_on(root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    def page(token, user, secrets=None):
        at = AppTest.from_file(str(REPO / "pages/1_Label.py"), default_timeout=180)
        at.query_params["session"] = token
        at.user = user
        if secrets:
            at.secrets["auth"] = secrets
        return at.run()

    signed_in = {"is_logged_in": True, "iss": "https://idp.example", "sub": "u-1", "email": "a@example.org"}
    page(ALICE, signed_in)  # off by default: an identity is not used, the browser token is
    assert session(root, ALICE).names() == ["demo"]
    user = sessions.Session(root, sessions.user_key(signed_in))
    assert user.names() == []

    monkeypatch.setenv(sessions.AUTH_ENV, "1")
    at = page(BOB, {"is_logged_in": False})
    assert at.error and "[auth] section is missing" in at.error[0].value  # the operator forgot the secrets
    auth = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32}
    at = page(BOB, {"is_logged_in": False}, auth)
    assert at.button(key="login").label == "Sign in" and not at.metric
    assert session(root, BOB).names() == []  # nothing made before signing in
    at = page(BOB, signed_in, auth)
    assert not at.exception and user.names() == ["demo"] and session(root, BOB).names() == []
    at = page(ALICE, signed_in, auth)  # the same user in another browser: the same workspaces
    assert at.sidebar.selectbox[0].options == ["demo"]
    page(ALICE, {**signed_in, "sub": "u-2"}, auth)  # another user in that browser: their own copy
    second = sessions.Session(root, sessions.user_key({**signed_in, "sub": "u-2"}))
    assert second.names() == ["demo"] and second.open("demo").path != user.open("demo").path


def test_a_second_job_in_the_same_session_is_refused_with_a_message(root):
    run("app.py", ALICE)
    other = make_workspace(root, "other", token=ALICE)
    running = jobs.JobStatus(id="j1", state="running", started=time.time(), steps=10)
    jobs.write_status(other, running, jobs.TRAINING.files[0])
    at = run("pages/2_Train.py", ALICE, ws="demo")
    at.number_input(key="steps").set_value(6)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert at.error and "training run is already going in your workspace 'other'" in at.error[0].value
    assert "one job at a time per session" in at.error[0].value
    assert jobs.TRAINING.read(session(root, ALICE).open("demo")) is None
    # another session is free to train meanwhile
    b = run("pages/2_Train.py", BOB)
    b.number_input(key="steps").set_value(2)
    b.number_input(key="patch").set_value(24)
    next(x for x in b.button if x.label == "Start training").click().run()
    assert not b.error
    done = jobs.TRAINING.wait(session(root, BOB).open("demo"), timeout=120)
    assert done.state == "finished", done.message


def test_upload_limits_are_stated_next_to_the_uploaders(root, monkeypatch):
    monkeypatch.setenv("REFINER_MAX_READ_PIXELS", str(4_000_000))
    at = run("app.py", ALICE)
    texts = [c.value for c in at.caption]
    assert any("Up to 200 MB per file and 4.0 megapixels" in t for t in texts)
    label = run("pages/1_Label.py", ALICE)
    assert any("Up to 200 MB per file" in c.value for c in label.caption)
