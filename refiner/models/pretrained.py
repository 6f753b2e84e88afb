"""The shipped real-data models (``assets/pretrained``) and which one fits a task: its classes and ground resolution.

Every sub-folder of ``assets/pretrained`` holding a model (``config.json`` +
``model.safetensors``, see :mod:`refiner.models.store`) is in the catalogue; its ``card.json``
(classes, ``resolution_m``, ``kind``, split, scores) is read when there, else ``config.json``.

**Which model fits** (:func:`pick_coarse`, :func:`pick_rnn`). Class names are compared
case-insensitively and without a plural ``s`` ("Buildings" = "building").

* A coarse CNN fits when every target class is one of the model's classes and the model's
  extra classes can be merged into the target's ``background``: a background/road task
  uses a background/building/road model with ``p(background) = p(background) + p(building)``
  (a building is "not road"). A model that does not know one of the target classes does not
  fit. The same class set is preferred to a merge.
* An RNN fits on the same terms: its class-specific weights are kept for the target classes
  and those of the classes merged into background are dropped (:func:`rnn_for`), so a
  background/road target fine-tunes a background/road RNN derived from the 3-class one
  (on Massachusetts crops it refines the merged coarse map as the 3-class RNN does, road IoU
  0.314 / 0.451 / 0.236 against 0.320 / 0.451 / 0.232 for the 3-class RNN's merged output).
* Resolution: the engine resamples the tile to the model's resolution (1 m) and back, so a model
  fits tiles from ``resolution / 10`` (0.1 m: downsampling loses nothing the model needs) to
  ``2 x resolution`` (2 m: objects a 1 m model sees as a few pixels would vanish). A tile of
  unknown resolution is taken to be at the model's resolution, and the reason says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from refiner.core import paths
from refiner.core.classes import ClassSpec
from refiner.data.tile import Tile
from refiner.models.rnn import RefinerRNN
from refiner.models.store import CONFIG, WEIGHTS, AnyBundle, ModelBundle, load_model

PRETRAINED = paths.PRETRAINED  # assets/pretrained in a checkout, inside the package when installed
#: A model fits tiles from resolution * FINEST to resolution * COARSEST metres per pixel.
FINEST, COARSEST = 0.1, 2.0
BACKGROUND = "background"


def pretrained_root() -> Path:
    """Where the shipped pretrained models are.

    Returns:
        ``$REFINER_PRETRAINED`` (tests, operators with their own models), else the package's
        ``assets/pretrained`` (``coarse_1m``: background, building, road at 1 m; ``rnn_1m``).

    Example:
        ```python
        rnn = refiner.load_model(refiner.pretrained_root() / "rnn_1m", expect="rnn")
        ```
    """
    env = os.environ.get("REFINER_PRETRAINED")
    return Path(env) if env else PRETRAINED


@dataclass(frozen=True)
class Shipped:
    """One shipped model: where it is and what its card says."""

    name: str  # the folder name, e.g. "coarse_1m"
    kind: str  # "coarse" or "rnn"
    folder: Path
    classes: ClassSpec
    resolution: float | None
    card: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def load(self) -> AnyBundle:
        """The model itself, checked to be of the card's kind."""
        return load_model(self.folder, expect=self.kind)

    def summary(self) -> str:
        """One line for the UI: name, classes, resolution and, when the card has them, test scores."""
        res = f"{self.resolution:g} m" if self.resolution else "any resolution"
        text = f"{self.name} ({', '.join(self.classes.names)}; {res})"
        return text + (f", test {self.test_scores()}" if self.test_scores() else "")

    def test_scores(self) -> str:
        """The card's scores on its test tiles in words: mean IoU, or the IoU per test set.

        Per set from ``test_scores: {set: {iou: ...}}``, as ``refiner pretrain`` writes them; an RNN's
        card also has its coarse map's on the same tiles (``baseline``), said beside its own: with two
        digits and no baseline, rnn_1m's line read as coarse_1m's repeated.
        """
        scores = self.card.get("test_scores") or self.card.get("test") or {}
        if not isinstance(scores, dict):
            return ""
        if isinstance(scores.get("mean_iou"), int | float):
            return f"mean IoU {scores['mean_iou']:.3f}"
        base = (self.card.get("baseline") or {}).get("test_scores") or {}
        parts = []
        for name, s in scores.items():
            if not isinstance(s, dict) or not isinstance(s.get("iou"), int | float):
                continue
            b = base.get(name) if isinstance(base, dict) else None
            known = isinstance(b, dict) and isinstance(b.get("iou"), int | float)
            versus = f" (its coarse map {b['iou']:.3f})" if known and b is not None else ""
            parts.append(f"{name} IoU {s['iou']:.3f}{versus}")
        return ", ".join(parts)


def _norm(name: str) -> str:
    n = name.strip().lower()
    return n[:-1] if n.endswith("s") and len(n) > 3 else n


def catalogue(root: str | Path | None = None) -> list[Shipped]:
    """The shipped models under ``root`` (default :func:`pretrained_root`), sorted by name."""
    root = Path(root) if root is not None else pretrained_root()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
            continue
        try:
            config = json.loads((d / CONFIG).read_text())
            card = json.loads((d / "card.json").read_text()) if (d / "card.json").is_file() else {}
        except (OSError, json.JSONDecodeError):
            continue  # a broken folder is not offered; load_model would say why if asked
        classes = card.get("classes") or config.get("classes")
        if isinstance(classes, list):
            classes = {"names": classes}
        try:
            spec = ClassSpec.from_dict(classes)
        except (TypeError, ValueError, KeyError):
            continue
        res = card.get("resolution_m", config.get("resolution"))
        out.append(Shipped(d.name, card.get("kind", config.get("kind")), d, spec, res, card))
    return out


@dataclass(frozen=True)
class Pick:
    """The model that fits (or None) and why, in words for the UI."""

    model: Shipped | None
    reason: str
    #: For each target class, the model classes whose probabilities are summed into it.
    merge: tuple[tuple[int, ...], ...] = ()

    def adapt(self, probs: np.ndarray) -> np.ndarray:
        """The model's probabilities (K_model, H, W) as the target classes (K, H, W)."""
        return np.stack([probs[list(src)].sum(0) for src in self.merge]).astype(np.float32)


def _resolution_note(model: Shipped, resolution: float | None) -> tuple[bool, str]:
    if not model.resolution:
        return True, "it works at any resolution"
    if resolution is None:
        return True, f"the tile's resolution is unknown, so it is taken to be {model.resolution:g} m"
    lo, hi = model.resolution * FINEST, model.resolution * COARSEST
    if not lo <= resolution <= hi:
        return False, (
            f"the tile is {resolution:.2f} m/px, outside the {lo:g}-{hi:g} m range a "
            f"{model.resolution:g} m model can be resampled to"
        )
    if abs(resolution - model.resolution) / model.resolution <= 0.01:
        return True, f"the tile is at its {model.resolution:g} m"
    return True, f"the tile ({resolution:.2f} m/px) is resampled to its {model.resolution:g} m and back"


def class_merge(target: ClassSpec, model: ClassSpec) -> tuple[tuple[tuple[int, ...], ...] | None, str]:
    """How the model's classes map onto the ``target`` classes, or None and why not."""
    t_names, m_names = [_norm(n) for n in target.names], [_norm(n) for n in model.names]
    missing = [target.names[i] for i, n in enumerate(t_names) if n not in m_names]
    if missing:
        return None, f"it does not know {', '.join(missing)}"
    merge = [[m_names.index(n)] for n in t_names]
    extra = [i for i, n in enumerate(m_names) if n not in t_names]
    if extra:
        if BACKGROUND not in t_names:
            names = ", ".join(model.names[i] for i in extra)
            return None, f"it also predicts {names}, which can only be merged into a '{BACKGROUND}' class"
        merge[t_names.index(BACKGROUND)] += extra
        names = ", ".join(model.names[i] for i in extra)
        return tuple(tuple(m) for m in merge), f"its {names} merged into {BACKGROUND}"
    return tuple(tuple(m) for m in merge), "the same classes"


def pick_coarse(classes: ClassSpec, resolution: float | None, *, root: str | Path | None = None) -> Pick:
    """The shipped coarse CNN for the target classes and ground resolution (rules: module doc)."""
    return _pick("coarse", "coarse CNN", classes, resolution, root)


def pick_rnn(classes: ClassSpec, resolution: float | None, *, root: str | Path | None = None) -> Pick:
    """The shipped RNN to fine-tune from, load it with :func:`rnn_for` (rules: module doc)."""
    return _pick("rnn", "RNN", classes, resolution, root)


def _pick(kind: str, what: str, classes: ClassSpec, resolution: float | None, root: str | Path | None) -> Pick:
    """The best-ranked shipped model of ``kind`` that fits, or None with why each one does not.

    Ranked by: the same number of classes first, then the nearest resolution, then the name.
    """
    fits: list[tuple[tuple[bool, float, str], Shipped, tuple[tuple[int, ...], ...], str]] = []
    why_not = []
    for m in catalogue(root):
        if m.kind != kind:
            continue
        merge, how = class_merge(classes, m.classes)
        ok, res_note = _resolution_note(m, resolution)
        if merge is None or not ok:
            why_not.append(f"{m.name}: {how if merge is None else res_note}")
            continue
        if kind == "rnn" and len(m.classes) != len(classes):  # an RNN drops classes, it does not merge them
            dropped = ", ".join(n for n in m.classes.names if _norm(n) not in {_norm(c) for c in classes.names})
            how = f"its {', '.join(classes.names)} weights are used, those of {dropped} (background here) dropped"
        exact = len(m.classes) == len(classes)
        rank = (not exact, abs((m.resolution or 1.0) - (resolution or m.resolution or 1.0)), m.name)
        fits.append((rank, m, merge, f"{how}; {res_note}"))
    if not fits:
        return Pick(None, _none_reason(what, classes, why_not))
    _, m, merge, why = min(fits, key=lambda f: f[0])
    return Pick(m, f"{m.summary()} fits: {why}", merge)


def rnn_for(model: Shipped, classes: ClassSpec) -> ModelBundle[RefinerRNN]:
    """The shipped RNN ``model`` for the target ``classes``: as shipped, or derived for fewer classes.

    Derived = :meth:`RefinerRNN.keep_classes` of the target classes (by name, see
    :func:`class_merge`); the bundle then carries the target classes and says where it came from.
    """
    merge, how = class_merge(classes, model.classes)
    if merge is None:
        raise ValueError(f"the pretrained RNN {model.name} does not fit the classes {', '.join(classes.names)}: {how}")
    bundle = load_model(model.folder, expect="rnn")
    keep = [m[0] for m in merge]
    if keep == list(range(len(model.classes))):
        return bundle
    info = {**bundle.info, "derived_from": model.name, "classes_kept": [model.classes.names[i] for i in keep]}
    return replace(bundle, net=bundle.net.keep_classes(keep), classes=classes, info=info)


def _none_reason(what: str, classes: ClassSpec, why_not: list[str]) -> str:
    head = f"no shipped {what} fits the classes {', '.join(classes.names)}"
    return head + (" (" + "; ".join(why_not) + ")" if why_not else " (none is installed in assets/pretrained)")


def coarse_probs_for(pick: Pick, tile: Tile, *, tta: bool = False) -> np.ndarray:
    """Run the picked coarse CNN on ``tile`` and return probabilities in the target classes.

    ``tta``: average the tile's 8 turns and flips (``predict_coarse``'s test-time augmentation).
    """
    from refiner.models.inference import predict_coarse

    if pick.model is None:
        raise ValueError(pick.reason)
    return pick.adapt(predict_coarse(load_model(pick.model.folder, expect="coarse"), tile, tta=tta))
