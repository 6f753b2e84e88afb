"""The Learn page, the preset choice on Iterations / Compare, and the hint layer on Label (AppTest)."""

from __future__ import annotations

import numpy as np
import pytest

from refiner.app import results
from refiner.core.classes import IGNORE
from refiner.models import presets
from tests.helpers import run


def mean_iou(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the labelled classes of intersection / union of argmax and labels, written out."""
    pred, painted = scores.argmax(0), labels != IGNORE
    ious = []
    for c in range(scores.shape[0]):
        if (labels == c).any():
            union = ((pred == c) | (labels == c))[painted].sum()
            ious.append(((pred == c) & (labels == c))[painted].sum() / union)
    return float(np.mean(ious))


def heat_flow(probs: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """``u += dt Δu`` (5-point Laplacian, edge values repeated) on ``log p`` centred over the classes."""
    u = np.log(np.maximum(probs.astype(np.float64), 1e-4))
    u -= u.mean(0)
    for _ in range(steps):
        p = np.pad(u, ((0, 0), (1, 1), (1, 1)), mode="edge")
        u = u + dt * (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * u)
    return u


def test_learn_page_walks_through_a_preset_beside_the_learned_rnn(app_ws):
    at = run("pages/7_Learn.py")
    assert at.radio(key="learn_preset").value == "heat"
    assert any(r"\Delta u" in x.value for x in at.latex)
    table = at.table[0].value
    assert list(table.index)[:2] == ["coarse (t = 0)", "Heat equation, t = 10"]
    assert any("learned RNN" in i for i in table.index)
    # the rows are the coarse map and 10 heat-flow steps of it (u += 0.2 Δu on the centred log
    # probabilities, no flux through the border), scored here by hand on the painted pixels, the
    # mean over the classes they label (the column names them)
    labels, coarse = app_ws.labels(), app_ws.coarse_probs()
    labelled = [n for i, n in enumerate(app_ws.classes.names) if (labels == i).any()]
    mean = f"mean IoU ({', '.join(labelled)})"
    assert mean.startswith("mean IoU (background")
    assert table.loc["coarse (t = 0)", mean] == pytest.approx(mean_iou(coarse, labels), abs=1e-4)
    heat = heat_flow(coarse, dt=0.2, steps=10)
    assert table.loc["Heat equation, t = 10", mean] == pytest.approx(mean_iou(heat, labels), abs=2e-3)
    assert abs(mean_iou(heat, labels) - mean_iou(coarse, labels)) > 0.01  # the flow changed the map
    # the learned filters are ranked against the derivative operators
    assert {"Laplacian: left out by these 3", "∂/∂x (central): left out by these 3"} <= {m.label for m in at.metric}
    assert any(m.value != "0.0%" for m in at.metric if "left out" in m.label)  # span residual: 0.0 % for all

    at.radio(key="learn_preset").set_value("perona_malik").run()
    at.slider(key="learn_kappa_pm").set_value(0.5).run()
    at.slider(key="learn_T").set_value(4).run()
    assert not at.exception
    assert "Perona–Malik, t = 4" in at.table[0].value.index
    assert any(f"{presets.PM_FLUX_ERROR * 0.5:.3f}" in c.value for c in at.caption)
    at.slider(key="learn_t_4").set_value(1).run()
    assert "Perona–Malik, t = 1" in at.table[0].value.index

    at.radio(key="learn_preset").set_value("image_guided").run()
    assert not at.exception and any("largest error" in c.value for c in at.caption)


def test_learn_page_without_an_rnn_still_runs_the_presets(tmp_path, monkeypatch):
    from tests.helpers import make_workspace

    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    make_workspace(tmp_path, "bare", with_rnn=False)
    at = run("pages/7_Learn.py")
    assert any("No learned RNN" in i.value for i in at.info)
    assert not at.error and list(at.table[0].value.index) == ["coarse (t = 0)", "Heat equation, t = 10"]


def test_iterations_and_compare_run_a_preset(app_ws):
    at = run("pages/3_Iterations.py")
    at.selectbox(key="iter_model").set_value("perona_malik").run()
    assert not at.exception
    slider = at.slider(key="iteration_perona_malik")
    assert slider.max == 10 and slider.value == 10
    probs = results.preset_refinement(app_ws, "perona_malik", dt=0.2, iterations=10, kappa=1.0)
    ev = results.eval_labels(app_ws)
    assert at.metric[0].value == f"{results.iteration_scores([probs[-1]], ev.labels)[0].overall_accuracy:.3f}"

    at = run("pages/4_Compare.py")
    assert list(at.table[0].value.index) == ["Coarse CNN", "Dense CRF", "RNN"]
    at.selectbox(key="compare_model").set_value("heat").run()
    assert list(at.table[0].value.index) == ["Coarse CNN", "Dense CRF", "Heat equation (preset)"]


def test_label_page_shows_where_to_label_next(app_ws):
    at = run("pages/1_Label.py")
    assert at.toggle(key="show_hints").value is False
    at.toggle(key="show_hints").set_value(True).run()
    assert not at.exception
    need, _ = results.label_need(app_ws)
    assert np.all(need[app_ws.labels() != 255] == 0)
    captions = " ".join(c.value for c in at.caption)
    assert "Suggested boxes" in captions and "rows" in captions


def test_the_hint_map_follows_each_training_run(app_ws):
    import os

    import torch

    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle, save_model

    before, what = results.label_need(app_ws)
    assert "RNN" in what
    assert np.array_equal(results.label_need(app_ws)[0], before)  # cached: same map again
    torch.manual_seed(7)  # "a training run": another RNN written over the old one
    net = RefinerRNN(RNNConfig(num_classes=3, iterations=3))
    with torch.no_grad():
        net.blocks[0].output.bias.fill_(3.0)  # pushes every class up alike: changes the entropy
        net.blocks[0].output.weight.mul_(20)
    save_model(ModelBundle("rnn", net, app_ws.classes, 1.0), app_ws.model_dir("rnn"))
    st = (app_ws.model_dir("rnn") / "model.safetensors").stat()
    os.utime(app_ws.model_dir("rnn") / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after, _ = results.label_need(app_ws)
    assert not np.allclose(after, before)
    assert np.all(after[app_ws.labels() != 255] == 0)


def test_no_hints_without_a_coarse_map_but_the_canvas_stays(app_ws):
    (app_ws.path / "coarse_probs.tif").unlink()
    assert not app_ws.has_coarse()
    at = run("pages/1_Label.py")
    at.toggle(key="show_hints").set_value(True).run()
    assert not at.exception and not at.error
    assert at.warning and "no coarse probabilities" in at.warning[0].value
    assert at.radio(key="brush").value == "background"  # the painting tools are still there
