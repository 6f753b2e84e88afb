"""The real demos: built from the shared data at run time, or not offered, saying why."""

from __future__ import annotations

import numpy as np
import pytest

from refiner.app.demos import REAL_DEMOS, create_real_demo, data_dir, unavailable
from refiner.core.classes import IGNORE
from tests.models.test_pretrained import write_fixture_model


def test_without_the_data_the_demo_is_not_offered_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_DATA", str(tmp_path / "nothing"))
    assert data_dir() == tmp_path / "nothing"
    why = unavailable("real-roads")
    assert "massachusetts_roads/images/12.jpg" in why and "REFINER_DATA" in why
    with pytest.raises(FileNotFoundError, match="REFINER_DATA"):
        create_real_demo(tmp_path, "real-roads")
    with pytest.raises(ValueError, match="no real demo called"):
        create_real_demo(tmp_path, "nowhere")


@pytest.mark.parametrize("name", sorted(REAL_DEMOS))
def test_a_real_demo_is_a_window_with_painted_boxes_and_a_coarse_map(name, tmp_path, monkeypatch):
    if unavailable(name):
        pytest.skip(unavailable(name))
    write_fixture_model(tmp_path / "pretrained", "coarse_1m", "coarse", REAL_DEMOS[name].classes)
    monkeypatch.setenv("REFINER_PRETRAINED", str(tmp_path / "pretrained"))
    ws = create_real_demo(tmp_path / "ws", name)
    demo = REAL_DEMOS[name]
    assert ws.shape == demo.window[2:] and ws.tile().resolution == pytest.approx(demo.pixel_size or 0.3)
    labels = ws.labels()
    painted = labels != IGNORE
    assert 0.01 < painted.mean() < 0.5  # a few boxes, not the whole reference
    assert len(np.unique(labels[painted])) == 2  # background and the data set's one class
    assert ws.settings["coarse"]["model"] == "coarse_1m" and ws.coarse_probs().shape == (3, *ws.shape)


def test_a_real_demo_is_a_read_only_template_each_session_copies(tmp_path, monkeypatch):
    from refiner.app import sessions

    if unavailable("real-roads"):
        pytest.skip(unavailable("real-roads"))
    write_fixture_model(tmp_path / "pretrained", "coarse_1m", "coarse", REAL_DEMOS["real-roads"].classes)
    monkeypatch.setenv("REFINER_PRETRAINED", str(tmp_path / "pretrained"))
    root = tmp_path / "ws"
    a, b = (sessions.Session(root, sessions.browser_key(sessions.new_token())) for _ in range(2))
    mine, theirs = a.open_template_copy("real-roads"), b.open_template_copy("real-roads")
    template = sessions.template(root, "real-roads")
    assert template.readonly and len({mine.path, theirs.path, template.path}) == 3
    mine.edit_labels(lambda now: np.full_like(now, IGNORE))
    with pytest.raises(ValueError, match="read-only"):
        template.edit_labels(lambda now: np.full_like(now, IGNORE))
    assert (theirs.labels() != IGNORE).any() and np.array_equal(theirs.labels(), template.labels())
    assert np.array_equal(a.reset("real-roads").labels(), template.labels())
