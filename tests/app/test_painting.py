import numpy as np

from refiner.app.painting import ERASER, UNPAINTED, View, apply_strokes, decode_strokes, make_view
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES


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


def _path(points, color, width=4):
    """A Fabric.js freehand stroke as the canvas reports it."""
    cmds = [["M", *points[0]]] + [["Q", *a, *b] for a, b in zip(points[:-1], points[1:], strict=True)]
    return {"type": "Path", "stroke": color, "strokeWidth": width, "path": cmds}


def test_canvas_objects_are_painted_in_order_on_the_tile_grid():
    from refiner.app.painting import apply_objects, brush_colors, hex_color

    colors = [hex_color(c) for c in brush_colors(DEMO_CLASSES)]
    labels = np.full((100, 100), IGNORE, np.uint8)
    view = View(row=40, col=20, height=20, width=20, scale=2.0)  # 40x40 canvas px
    road = _path([(0, 10), (39, 10)], colors[2], width=4)  # canvas y = 10 -> tile rows 44-45
    building = _path([(20, 0), (20, 39)], colors[1], width=4)
    out = apply_objects(labels, [road, building], view, DEMO_CLASSES)
    assert (out[44:46, 20:29] == 2).all() and (out[44:46, 31:40] == 2).all()
    assert (out[40:60, 29:31] == 1).all()  # the later stroke paints over the earlier one
    assert (out[:40] == IGNORE).all() and (out[60:] == IGNORE).all() and (out[:, :20] == IGNORE).all()
    # an eraser stroke unlabels; an object of no brush's colour is skipped
    erased = apply_objects(out, [_path([(0, 10), (10, 10)], colors[-1]), _path([(0, 30), (39, 30)], "#123456")],
                           view, DEMO_CLASSES)  # fmt: skip
    assert (erased[44:46, 20:24] == IGNORE).all() and np.array_equal(erased[50:], out[50:])


def test_dark_brushes_are_lifted_so_they_show_and_stay_distinct():
    from refiner.app.painting import brush_colors, luminance
    from refiner.core.classes import ClassSpec

    colors = brush_colors(DEMO_CLASSES)
    assert colors[0] != tuple(DEMO_CLASSES.colors[0]) and luminance(colors[0]) >= 0.29  # #282828
    assert colors[1:3] == [tuple(c) for c in DEMO_CLASSES.colors[1:]]  # bright ones unchanged
    assert len(set(colors)) == len(colors)
    two_dark = ClassSpec(("a", "b"), (0, 1), ((0, 0, 0), (1, 1, 1)))
    assert len(set(brush_colors(two_dark))) == 3
