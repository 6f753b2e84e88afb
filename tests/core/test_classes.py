import numpy as np
import pytest

from refiner.core.classes import ClassSpec, check_compatible


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


def test_check_compatible_names_both_sides_and_what_to_do():
    three = ClassSpec(("background", "building", "road"))
    check_compatible(ClassSpec(("background", "building", "road"), (0, 128, 255)), three, "a", "b", "c")  # names only
    check_compatible(["background", "building", "road"], three, "a", "b", "c")
    check_compatible(3, three, "a", "b", "c")
    with pytest.raises(ValueError) as e:
        check_compatible(ClassSpec(("background", "road")), three, "the RNN x", "this workspace", "train a new one")
    assert str(e.value) == (
        "the RNN x has classes ['background', 'road'] but this workspace has ['background', 'building', 'road']"
        " — train a new one"
    )
    with pytest.raises(ValueError, match=r"in another order\) — fix it"):
        check_compatible(["road", "background", "building"], three, "the map", "the model", "fix it")
    with pytest.raises(ValueError, match="^the probability map has 2 bands but the model has 3 classes — predict"):
        check_compatible(2, three, "the probability map", "the model", "predict them again")


def test_a_class_valued_255_moves_unlabelled_to_a_free_value():
    """Road = 255 (a 0/255 road mask): unlabelled must not be written as 255 too, or it reads back as road."""
    roads = ClassSpec(("background", "road"), (0, 255))
    assert roads.unlabelled_value == 254
    idx = np.array([[0, 1], [255, 255]], np.uint8)  # class indices, 255 = unlabelled
    np.testing.assert_array_equal(roads.decode(idx), [[0, 255], [254, 254]])
    np.testing.assert_array_equal(roads.encode_mask(roads.decode(idx)), idx)
    assert ClassSpec(("background", "road")).unlabelled_value == 255
    with pytest.raises(ValueError, match="at most 255 classes"):
        ClassSpec(tuple(f"c{i}" for i in range(256)), tuple(range(256)))


def test_road_has_the_road_colour_whatever_its_position():
    """A background/road workspace drew road in red, the building colour (colours went by index)."""
    three = ClassSpec(("background", "building", "road"))
    two = ClassSpec(("background", "road"), (0, 255))
    assert two.colors[1] == three.colors[2] != three.colors[1]
    assert len(set(ClassSpec(("a", "b", "c", "road")).colors)) == 4  # other names: distinct palette colours
