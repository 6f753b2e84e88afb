import numpy as np
import pytest

from refiner.core.classes import ClassSpec


def test_encode_decode_round_trip():
    c = ClassSpec(("background", "building", "road"), (0, 128, 255))
    mask = np.array([[0, 128], [255, 0]], np.uint8)
    idx = c.encode_mask(mask)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 0]])
    np.testing.assert_array_equal(c.decode(idx), mask)


def test_255_is_unlabelled_unless_a_class_uses_it():
    c = ClassSpec(("background", "building"), (0, 1))
    np.testing.assert_array_equal(c.encode_mask(np.array([0, 1, 255], np.uint8)), [0, 1, 255])


@pytest.mark.parametrize(
    "names,values,msg",
    [
        (("a",), (), "at least two"),
        (("a", "a"), (), "unique"),
        (("a", "b"), (0,), "one mask value per class"),
        (("a", "b"), (0, 0), "distinct"),
        (("a", "b"), (0, 300), "0..255"),
    ],
)
def test_invalid_specs(names, values, msg):
    with pytest.raises(ValueError, match=msg):
        ClassSpec(names, values)


def test_parse_cli_strings():
    c = ClassSpec.parse("background, road", "0,255")
    assert c.names == ("background", "road") and c.values == (0, 255)
    with pytest.raises(ValueError, match="comma-separated integers"):
        ClassSpec.parse("a,b", "0,x")
