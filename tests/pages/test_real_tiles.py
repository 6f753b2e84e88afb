"""The app on real tiles: the shipped model it picks, the resolution prompt, the pretrained start.

The shipped models are tiny fixture models written in code (``$REFINER_PRETRAINED``), so these
tests do not depend on what ``assets/pretrained`` holds.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from refiner.app import jobs
from refiner.app.workspace import Workspace
from refiner.core.classes import ClassSpec
from refiner.data.synthetic import DEMO_CLASSES
from refiner.models.store import load_model
from tests.helpers import REPO, make_workspace, run, session, train_button
from tests.models.test_pretrained import write_fixture_model


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    write_fixture_model(root, "coarse_1m", "coarse", DEMO_CLASSES)
    write_fixture_model(root, "rnn_1m", "rnn", DEMO_CLASSES)
    monkeypatch.setenv("REFINER_PRETRAINED", str(root))
    return root


@pytest.fixture()
def workspaces(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    monkeypatch.setenv("REFINER_WORKSPACES", str(root))
    monkeypatch.chdir(REPO)
    return root


def _png(h: int = 48, w: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_start_page_picks_the_shipped_model_and_says_why(shipped, workspaces):
    ws = make_workspace(workspaces, "plain", with_rnn=False)
    at = run("app.py")
    assert any("Picked for this workspace: coarse_1m" in c.value and "the same classes" in c.value for c in at.caption)
    button = at.button(key="compute_coarse")
    assert button.label == "Compute with the shipped coarse_1m"
    button.click().run()
    assert not at.exception and not at.error
    assert Workspace(ws.path).settings["coarse"]["model"] == "coarse_1m"
    assert any("coarse probabilities: shipped coarse CNN coarse_1m" in c.value for c in at.caption)


def test_the_start_page_can_average_the_shipped_models_turns_and_flips(shipped, workspaces):
    from refiner.models.pretrained import coarse_probs_for, pick_coarse

    ws = make_workspace(workspaces, "plain", with_rnn=False)
    at = run("app.py")
    at.checkbox(key="coarse_tta").check().run()
    at.button(key="compute_coarse").click().run()
    assert not at.exception and not at.error
    ws = Workspace(ws.path)
    assert ws.settings["coarse"]["tta"] is True
    assert any("coarse_1m, 8 turns and flips averaged" in c.value for c in at.caption)
    pick = pick_coarse(ws.classes, 1.0, root=shipped)
    averaged = coarse_probs_for(pick, ws.tile(), tta=True)
    np.testing.assert_allclose(ws.coarse_probs(), averaged, atol=1e-5)
    assert np.abs(ws.coarse_probs() - coarse_probs_for(pick, ws.tile())).max() > 1e-3


def test_when_no_shipped_model_fits_the_page_says_what_else_to_do(shipped, workspaces):
    from refiner.data.synthetic import make_scene

    scene = make_scene(48, seed=1)
    ws = session(workspaces).create("water", scene.tile(), ClassSpec(("background", "water")))
    at = run("app.py", ws=ws.name)
    warning = at.warning[0].value
    assert "No shipped coarse CNN fits the classes background, water" in warning
    assert "does not know water" in warning and "Bring your own probabilities" in warning
    assert "train-coarse" in warning and at.button(key="compute_coarse").disabled


def test_a_picture_upload_asks_for_its_ground_resolution(shipped, workspaces):
    make_workspace(workspaces, "first", with_rnn=False)
    at = run("app.py")
    at.file_uploader(key="tile_upload").set_value(("photo.png", _png(), "image/png")).run()
    at.number_input(key="upload_pixel_size").set_value(0.5)
    at.text_input(key="upload_name").set_value("photo")
    at.button(key="create_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ws = session(workspaces).open("photo")
    assert ws.tile().pixel_size == 0.5 and ws.tile().shape == (48, 64)
    assert ws.settings["source"]["name"] == "photo.png"
    at = run("app.py", ws="photo")
    assert {m.label: m.value for m in at.metric}["Ground resolution"] == "0.50 m/px"
    assert any("resampled to its 1 m" in c.value for c in at.caption)  # the pick uses the stated 0.5 m
    field = at.number_input(key="pixel_size_photo")
    assert field.value == 0.5
    field.set_value(2.0).run()
    at.button(key="set_pixel_size").click().run()
    assert not at.exception
    assert Workspace(ws.path).tile().pixel_size == 2.0
    assert {m.label: m.value for m in at.metric}["Ground resolution"] == "2.00 m/px"


def test_the_train_page_fine_tunes_the_pretrained_rnn_by_default(shipped, workspaces):
    ws = make_workspace(workspaces, "fresh", with_rnn=False)
    at = run("pages/2_Train.py")
    radio = at.radio(key="start_from")
    assert radio.value == "the pretrained RNN rnn_1m (fine-tune)"
    assert radio.options == ["the pretrained RNN rnn_1m (fine-tune)", "a new RNN (from scratch)"]
    assert at.number_input(key="lr_pretrained").value == pytest.approx(0.003)
    at.number_input(key="steps").set_value(4)
    at.number_input(key="patch").set_value(24)
    train_button(at).click().run()
    done = jobs.TRAINING.wait(ws, timeout=120)
    assert done.state == "finished", done.message
    assert "from the pretrained RNN rnn_1m" in done.message
    trained = load_model(ws.model_dir("rnn"), expect="rnn")
    assert trained.config.iterations == 2  # the fixture RNN's architecture, not the form's T = 5
    at.run()
    assert any("from the pretrained RNN rnn_1m" in c.value for c in at.caption)
    # afterwards the workspace's own RNN is the default, and from scratch stays an option
    assert at.radio(key="start_from").options[0] == "the current RNN (continue training)"
    at.radio(key="start_from").set_value("a new RNN (from scratch)").run()
    at.number_input(key="steps").set_value(3)
    at.number_input(key="patch").set_value(24)
    train_button(at).click().run()
    done = jobs.TRAINING.wait(ws, timeout=120)
    assert done.state == "finished" and "from a new RNN (from scratch)" in done.message
    assert load_model(ws.model_dir("rnn"), expect="rnn").config.iterations == 5
