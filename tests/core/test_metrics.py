import numpy as np
import pytest

from refiner.core.metrics import confusion_matrix, evaluate


def test_scores_equal_hand_computed_values():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]], np.uint8)
    cm = confusion_matrix(pred, truth, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = evaluate(pred, truth, 3)
    assert s.pixels == 7
    assert s.overall_accuracy == pytest.approx(5 / 7)
    # IoU = TP / (TP + FP + FN): class 0: 2/(2+1+1), class 1: 2/(2+1+0), class 2: 1/(1+0+1)
    assert s.iou == pytest.approx((0.5, 2 / 3, 0.5))
    assert s.mean_iou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)


def test_unlabelled_pixels_are_ignored_and_absent_classes_left_out():
    truth = np.array([[0, 255], [0, 255]], np.uint8)
    pred = np.array([[0, 1], [0, 1]], np.uint8)
    s = evaluate(pred, truth, 2)
    assert s.overall_accuracy == 1.0 and s.pixels == 2
    assert np.isnan(s.iou[1]) and s.mean_iou == 1.0
    assert s.to_dict(["bg", "fg"])["iou"]["fg"] is None


def test_errors():
    with pytest.raises(ValueError, match="differ in size"):
        evaluate(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8), 2)
    with pytest.raises(ValueError, match="no labelled pixels"):
        evaluate(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8), 2)


def test_maps_scored_on_one_truth_average_the_same_classes():
    """A road-only truth: building was 0.0 in the mean of a map predicting some, left out of another's."""
    truth = np.array([[0, 0, 2, 2], [0, 0, 2, 255]], np.uint8)  # background and road, no building
    some_building = np.array([[0, 1, 2, 2], [0, 0, 2, 0]], np.uint8)
    no_building = np.array([[0, 0, 2, 0], [0, 0, 2, 0]], np.uint8)
    a, b = evaluate(some_building, truth, 3), evaluate(no_building, truth, 3)
    assert a.in_mean == b.in_mean == (0, 2)
    assert np.isnan(a.iou[1]) and np.isnan(b.iou[1])  # no IoU for a class the truth does not label
    assert a.mean_iou == pytest.approx((3 / 4 + 1) / 2)  # the building pixel still costs background
    assert b.mean_iou == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert a.to_dict(["background", "building", "road"])["mean_over"] == ["background", "road"]


def test_a_one_class_truth_scores_that_class_against_the_rest():
    truth = np.array([[0, 0, 2, 2]], np.uint8)  # a road mask: road and not-road
    pred = np.array([[1, 0, 2, 2]], np.uint8)  # a building is not road: right here
    s = evaluate(pred, truth, 3, one_vs_rest=True)
    assert s.overall_accuracy == 1.0 and s.mean_iou == 1.0 and s.in_mean == (0, 2)
    three = np.array([[0, 1, 2, 2]], np.uint8)  # labels of several classes: no merging
    assert evaluate(pred, three, 3, one_vs_rest=True).overall_accuracy == 0.5


def test_errors_by_boundary_distance_count_what_a_refinement_fixes_and_makes_where():
    from refiner.core.metrics import errors_by_boundary_distance

    truth = np.zeros((8, 8), np.uint8)
    truth[:, 4:] = 1  # columns 4..7 are 1..4 px from the boundary, as are 3..0
    truth[0, 0] = 255  # unlabelled: left out
    before = np.zeros_like(truth)  # misses the whole right half
    after = truth.copy()
    after[0, 0] = 0
    after[:, 7] = 0  # still wrong 4 px inside
    after[1:, 0] = 1  # a new error 4 px inside the left half
    rows = {r["from"]: r for r in errors_by_boundary_distance(before, after, truth)}
    assert rows[1] == {"from": 1, "to": 2, "pixels": 16, "errors_before": 8, "errors_after": 0, "fixed": 8, "made": 0}
    assert rows[2]["fixed"] == 8 and rows[2]["made"] == 0
    # 3-4 px from the boundary: columns 1 and 6 (3 px), 0 and 7 (4 px; one pixel unlabelled)
    assert rows[3] == {"from": 3, "to": 5, "pixels": 31, "errors_before": 16, "errors_after": 15, "fixed": 8,
                       "made": 7}  # fmt: skip
    assert sum(r["pixels"] for r in rows.values()) == 63
    assert rows[33]["to"] is None and rows[33]["pixels"] == 0
