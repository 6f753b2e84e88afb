"""The app as a shared server: nothing typed in a browser reaches server files, hosts or HTML."""

from __future__ import annotations

import pytest

from refiner.app import access
from refiner.app.jobs import scene as scene_job
from refiner.app.workspace import list_workspaces
from refiner.core.classes import ClassSpec
from refiner.data.synthetic import make_scene
from tests.helpers import run, session


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch):
    monkeypatch.delenv(access.ROOTS_ENV, raising=False)
    monkeypatch.delenv(access.PRIVATE_ENV, raising=False)


@pytest.mark.parametrize("kind", ["existing", "missing", "vsicurl", "loopback"])
def test_the_cog_field_reads_no_server_file_or_local_host(app_ws, kind):
    other = app_ws.path / "tile.tif"  # another workspace's tile: must not become a new workspace
    text = {
        "existing": str(other),
        "missing": str(app_ws.path / "nothing.tif"),
        "vsicurl": "/vsicurl/http://127.0.0.1:8501/x.tif",
        "loopback": "http://127.0.0.1:8501/x.tif",
    }[kind]
    before = list_workspaces(app_ws.path.parent)
    at = run("app.py")
    at.text_input(key="cog_url").input(text).run()
    at.button(key="read_cog").click().run()
    assert not at.exception and at.error
    msg = at.error[0].value
    assert ("private, loopback" if kind == "loopback" else "cannot be read from the browser") in msg
    assert "no such file" not in msg.lower() and "not recognized" not in msg.lower()
    assert list_workspaces(app_ws.path.parent) == before


def test_the_export_scene_field_reads_no_server_file(app_ws):
    at = run("pages/6_Export.py")
    at.text_input(key="scene_source").set_value("/etc/passwd")
    next(b for b in at.button if b.label == "Refine the scene").click().run()
    assert not at.exception and "cannot be read from the browser" in at.error[0].value
    assert scene_job.SCENE.read(app_ws) is None  # no job was started


def test_class_names_are_shown_as_text_not_html(tmp_path, monkeypatch):
    from tests.helpers import REPO

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    evil = '<img src=x onerror="alert(1)">'
    session(tmp_path).create("t", make_scene(48, seed=1).tile(), ClassSpec(("background", evil), (0, 1)))
    at = run("pages/1_Label.py")
    legend = [m.value for m in at.markdown if "display:inline-block" in m.value]
    assert legend and "<img" not in legend[0] and "&lt;img" in legend[0]
