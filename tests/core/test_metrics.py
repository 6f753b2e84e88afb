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
