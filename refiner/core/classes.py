"""The class list that travels with every model, workspace and report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Label value meaning "no label here": ignored by training and metrics.
IGNORE = 255

_PALETTE = [
    (40, 40, 40),  # background: dark grey
    (230, 60, 50),  # red
    (250, 200, 40),  # yellow
    (60, 140, 230),  # blue
    (60, 200, 90),  # green
    (190, 90, 220),  # purple
    (250, 140, 30),  # orange
    (40, 210, 210),  # cyan
]


#: Colours that go with a class's name, whatever its position: a background/road workspace drew
#: road in red, the building colour of the 3-class demo, because colours went by index.
_BY_NAME = {"background": _PALETTE[0], "building": _PALETTE[1], "road": _PALETTE[2]}


def default_colors(names: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """A colour per class: its usual one for background, building and road, the palette's next unused otherwise."""
    known = [_BY_NAME.get(n.strip().lower().removesuffix("s")) for n in names]
    spare = iter([c for c in _PALETTE if c not in known] + _PALETTE * len(names))
    return tuple(c if c is not None else next(spare) for c in known)


@dataclass(frozen=True)
class ClassSpec:
    """Class names, the pixel value of each class in mask files, and a display colour each.

    Class ``i`` is index ``i`` everywhere inside the engine; ``values[i]`` is only how mask
    files on disk encode it (e.g. roads as 255 in the Massachusetts masks).

    Attributes:
        names: the class names, at least two, distinct (index ``i`` is class ``i``).
        values: each class's pixel value in mask files, distinct, in 0..255 (default 0, 1, 2, ...).
        colors: an RGB colour per class for maps (default: a fixed palette).

    Raises:
        ValueError: fewer than two names, repeated names or values, or a values or colours list of
            another length than the names.

    Example:
        ```python
        classes = refiner.ClassSpec(("background", "road"), values=(0, 255))
        labels = refiner.read_labels("roads_mask.png", classes)  # 0 -> 0, 255 -> 1
        ```
    """

    names: tuple[str, ...]
    values: tuple[int, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if len(names) < 2:
            raise ValueError("at least two classes are needed (e.g. background and road)")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {list(names)}")
        values = tuple(int(v) for v in self.values) or tuple(range(len(names)))
        if len(values) != len(names):
            raise ValueError(f"{len(names)} classes but {len(values)} label values: give one mask value per class")
        if len(set(values)) != len(values) or any(not 0 <= v <= 255 for v in values):
            raise ValueError(f"label values must be distinct integers in 0..255, got {list(values)}")
        if len(values) >= 256:
            raise ValueError("at most 255 classes: one pixel value of a mask must be left for 'unlabelled'")
        colors = tuple(tuple(int(c) for c in col) for col in self.colors) or default_colors(names)
        if len(colors) != len(names):
            raise ValueError(f"{len(names)} classes but {len(colors)} colours")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "colors", colors)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def unlabelled_value(self) -> int:
        """The pixel value meaning "unlabelled" in the mask files of these classes (their nodata).

        255, unless 255 is a class's value (a 0/255 road mask: ``values=(0, 255)``); then the
        highest value no class uses. Writing unlabelled as 255 there made every unlabelled pixel
        of a workspace read back as road (2,250,000 px of road on a tile nobody had painted).
        """
        if IGNORE not in self.values:
            return IGNORE
        return max(set(range(IGNORE)) - set(self.values))

    def encode_mask(self, mask: np.ndarray, *, strict: bool = True) -> np.ndarray:
        """Map mask pixel values to class indices (IGNORE = unlabelled).

        255 (or :attr:`unlabelled_value` when 255 is a class's value) is unlabelled. With
        ``strict``, any other value that is no class value is an error (it usually means the
        wrong ``values`` were given); otherwise such pixels become unlabelled.
        """
        lut = np.full(256, IGNORE, dtype=np.uint8)
        for i, v in enumerate(self.values):
            lut[v] = i
        mask = np.asarray(mask)
        if mask.dtype != np.uint8:
            if mask.min() < 0 or mask.max() > 255:
                raise ValueError("label mask values must lie in 0..255")
            mask = mask.astype(np.uint8)
        out: np.ndarray = lut[mask]
        if strict:
            unknown = (out == IGNORE) & (mask != IGNORE) & (mask != self.unlabelled_value)
            if unknown.any():
                bad = sorted(int(v) for v in np.unique(mask[unknown])[:8])
                raise ValueError(
                    f"label mask has pixel values {bad} that are not class values {list(self.values)} "
                    f"(nor {self.unlabelled_value} = unlabelled); pass the right --values / label_values"
                )
        return out

    def decode(self, index_map: np.ndarray) -> np.ndarray:
        """Class indices -> mask pixel values (unlabelled becomes :attr:`unlabelled_value`, the files' nodata)."""
        lut = np.full(256, self.unlabelled_value, dtype=np.uint8)
        for i, v in enumerate(self.values):
            lut[i] = v
        return lut[np.asarray(index_map, dtype=np.uint8)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in workspace settings and model configs (:meth:`from_dict` reads it back)."""
        return {"names": list(self.names), "values": list(self.values), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassSpec:
        """A class spec from :meth:`to_dict`'s JSON; missing label values and colours take the defaults."""
        return cls(tuple(d["names"]), tuple(d.get("values", ())), tuple(tuple(c) for c in d.get("colors", ())))

    @classmethod
    def parse(cls, names: str, values: str | None = None) -> ClassSpec:
        """From CLI strings: ``"background,road"`` and ``"0,255"``."""
        n = tuple(s.strip() for s in names.split(",") if s.strip())
        try:
            v = tuple(int(s) for s in values.split(",")) if values else ()
        except ValueError as exc:
            raise ValueError(f"--values must be comma-separated integers, got {values!r}") from exc
        return cls(n, v)


def check_compatible(
    have: ClassSpec | Sequence[str] | int, need: ClassSpec | Sequence[str], what: str, against: str, todo: str
) -> None:
    """Refuse ``have`` (a model's, a probability map's, a workspace's classes) unless it fits ``need``.

    Classes fit when their names are the same, in the same order (class ``i`` is index ``i``
    everywhere); a bare band count (an ``int``: a probability map that names no classes) fits
    when there is one band per class. The ``ValueError`` names both sides, ``what`` and
    ``against`` ("the pretrained RNN rnn_1m", "this workspace"), and says what to do (``todo``).
    """
    if isinstance(have, int):
        if have != len(need):
            raise ValueError(f"{what} has {have} bands but {against} has {len(need)} classes — {todo}")
        return
    a = list(have.names if isinstance(have, ClassSpec) else have)
    b = list(need.names if isinstance(need, ClassSpec) else need)
    if a != b:
        order = " (the same classes in another order)" if sorted(a) == sorted(b) else ""
        raise ValueError(f"{what} has classes {a} but {against} has {b}{order} — {todo}")
