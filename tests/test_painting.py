import numpy as np

from refiner.classes import IGNORE
from refiner.painting import ERASER, UNPAINTED, View, apply_strokes, decode_strokes, make_view
from refiner.synthetic import DEMO_CLASSES


def test_strokes_map_to_the_nearest_brush_and_ignore_faint_pixels():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (*DEMO_CLASSES.colors[1], 255)
    rgba[0, 1] = (245, 195, 45, 200)  # antialiased road yellow
    rgba[0, 2] = (*ERASER, 255)
    rgba[1, 0] = (*DEMO_CLASSES.colors[1], 60)  # faint edge: not painted
    codes = decode_strokes(rgba, DEMO_CLASSES)
    assert codes.tolist() == [[1, 2, IGNORE], [UNPAINTED, UNPAINTED, UNPAINTED]]


def test_strokes_on_a_zoomed_view_land_in_that_window():
    labels = np.full((100, 100), IGNORE, np.uint8)
    labels[0, 0] = 0
    view = View(row=40, col=20, height=10, width=10, scale=4.0)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[0:8, 0:40] = (*DEMO_CLASSES.colors[2], 255)  # top two view rows
    out, changed = apply_strokes(labels, rgba, view, DEMO_CLASSES)
    assert changed == 20 and (out[40:42, 20:30] == 2).all()
    assert out[0, 0] == 0 and (out[42:, :] == IGNORE).all()
    # the eraser unlabels
    rgba[:] = 0
    rgba[0:4, 0:4] = (*ERASER, 255)
    out2, changed = apply_strokes(out, rgba, view, DEMO_CLASSES)
    assert changed == 1 and out2[40, 20] == IGNORE


def test_views_stay_inside_the_tile():
    v = make_view((512, 512), 1, (0.5, 0.5), 640)
    assert (v.row, v.col, v.height, v.width) == (0, 0, 512, 512) and v.canvas_size == (640, 640)
    v = make_view((512, 512), 4, (1.0, 0.0), 640)
    assert v.height == 128 and v.row == 384 and v.col == 0 and v.canvas_size == (640, 640)
    v = make_view((100, 3000), 2, (0.5, 0.5), 600)
    assert v.height == 100 and v.width == 1500
