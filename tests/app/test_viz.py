import numpy as np
import torch

from refiner.app import viz
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle


def test_colorize_uses_class_colours_and_leaves_unlabelled_transparent():
    m = np.array([[0, 1], [2, IGNORE]], np.uint8)
    rgba = viz.colorize(m, DEMO_CLASSES)
    assert tuple(rgba[0, 1]) == (*DEMO_CLASSES.colors[1], 255)
    assert rgba[1, 1, 3] == 0
    out = viz.blend(np.zeros((2, 2, 3), np.uint8), rgba, 1.0)
    assert tuple(out[1, 0]) == DEMO_CLASSES.colors[2] and tuple(out[1, 1]) == (0, 0, 0)


def test_disagreement_counts_distinct_predictions():
    a = np.array([[0, 0, 0]])
    b = np.array([[0, 1, 1]])
    c = np.array([[0, 1, 2]])
    assert viz.disagreement([a, b, c]).tolist() == [[0, 1, 2]]
    img = viz.disagreement_image([a, b, c])
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 2]) != tuple(img[0, 1])


def test_heat_and_signed_ramps_hit_their_ends():
    h = viz.heat(np.array([[0.0, 1.0]]))
    assert tuple(h[0, 0]) == (68, 1, 84) and tuple(h[0, 1]) == (253, 231, 37)
    s = viz.signed(np.array([[-2.0, 0.0, 2.0]]))
    assert s[0, 0, 2] > s[0, 0, 0] and tuple(s[0, 1]) == (247, 247, 247) and s[0, 2, 0] > s[0, 2, 2]


def test_filter_response_is_the_convolution_with_that_kernel():
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(num_classes=3))
    bundle = ModelBundle("rnn", net, DEMO_CLASSES)
    img = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    probs = np.full((3, 20, 20), 1 / 3, np.float32)
    probs[:, :, 10:] = [[[0.1]], [[0.8]], [[0.1]]]
    r = viz.filter_response(bundle, img, probs, "map", 4, class_index=1)
    assert r.shape == (20, 20)
    # a constant region gives weight-sum x value; the edge column gives something else
    u = np.log(np.array([0.1, 0.8, 0.1])) - np.log(np.array([0.1, 0.8, 0.1])).mean()
    k = viz.map_kernels(net)[4]
    assert np.isclose(r[5, 15], k.sum() * u[1], atol=1e-5)
    assert viz.image_kernels(net).shape == (32, 3, 5, 5)
    assert viz.filter_response(bundle, img, probs, "image", 0).shape == (20, 20)
    assert viz.kernel_image(k).shape[:2] == (60, 60)


def test_figures_have_the_expected_traces():
    fig = viz.loss_figure([(1, 1.0), (2, 0.5)], [{"step": 2, "mean_iou": 0.4}])
    assert [t.name for t in fig.data] == ["training loss", "held-out mean IoU"]
    from refiner.core.metrics import Scores

    s = [Scores(0.5, (0.1, 0.2, 0.3), 0.2, 10), Scores(0.6, (0.2, 0.3, 0.4), 0.3, 10)]
    fig = viz.iteration_figure(s, DEMO_CLASSES, t=1)
    assert len(fig.data) == 5 and list(fig.data[0].y) == [0.5, 0.6]
    shapes = fig.layout.shapes
    lines = {(sh.type, sh.x0 if sh.x0 == sh.x1 else None, sh.y0 if sh.y0 == sh.y1 else None) for sh in shapes}
    assert ("line", None, 0.2) in lines  # the t = 0 baseline (its mean IoU)
    assert ("line", 1, None) in lines  # the current t


def test_a_continued_run_goes_on_from_its_start_beside_the_earlier_curve():
    fig = viz.loss_figure([(10, 0.5), (15, 0.4)], [{"step": 15, "mean_iou": 0.6}], earlier_loss=[(5, 1.0), (10, 0.7)],
                          earlier_val=[{"step": 10, "mean_iou": 0.5}], start_step=10)  # fmt: skip
    names = [t.name for t in fig.data]
    assert names == ["loss, earlier runs", "training loss", "held-out mean IoU, earlier", "held-out mean IoU"]
    assert list(fig.data[1].x) == [10, 15] and list(fig.data[0].x) == [5, 10]
    assert [sh.x0 for sh in fig.layout.shapes] == [10]


def test_label_outlines_contrast_with_the_picture():
    from refiner.app.viz import outline

    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:, 3:] = 230  # dark left half, light right half
    labels = np.full((6, 6), IGNORE, np.uint8)
    labels[1:5, 1:5] = 0
    out = outline(rgb, labels)
    assert (out[1, 1] == 255).all() and (out[1, 4] == 0).all()  # white on dark, black on light
    assert (out[2:4, 2:4] == rgb[2:4, 2:4]).all() and (out[0] == rgb[0]).all()  # inside and outside untouched
