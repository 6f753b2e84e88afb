"""The coarse CNN for a workspace: which shipped one fits it, and its (or the workspace's own) probabilities.

The catalogue and the rules of which model fits which classes and resolution are the engine's
(:mod:`refiner.models.pretrained`); this module only says what a workspace contributes to them
(its classes and the resolution its source states) and where the result goes.
"""

from __future__ import annotations

from pathlib import Path

from refiner.app.workspace import Workspace
from refiner.core.classes import check_compatible
from refiner.models.pretrained import Pick, coarse_probs_for, pick_coarse


def workspace_resolution(ws: Workspace) -> float | None:
    """A workspace's ground resolution: from its georeferencing, or as the user stated it."""
    return (ws.settings.get("source") or {}).get("resolution")


#: What a map's source says when it averages the tile's 8 turns and flips.
TTA_NOTE = ", 8 turns and flips averaged"


def coarse_into_workspace(ws: Workspace, *, root: str | Path | None = None, tta: bool = False) -> Pick:
    """Pick the shipped coarse CNN for a workspace and, when one fits, write its probabilities there.

    The probabilities' source says which model and why (and ``tta``: that the tile's 8 turns and
    flips were averaged); the pick is returned either way.
    """
    pick = pick_coarse(ws.classes, workspace_resolution(ws), root=root)
    if pick.model is not None:
        probs = coarse_probs_for(pick, ws.tile(), tta=tta)
        origin = _origin(f"shipped coarse CNN {pick.model.name}", tta, model=pick.model.name, why=pick.reason)
        ws.write_coarse_probs(probs, {**origin, "resolution": pick.model.resolution})
    return pick


def own_coarse_into_workspace(ws: Workspace, *, tta: bool = False) -> None:
    """Run the coarse CNN uploaded to a workspace on its tile and write the probabilities there.

    Refused with a clear message when that model's classes are not the workspace's.
    """
    from refiner.models.inference import predict_coarse
    from refiner.models.store import load_model

    bundle = load_model(ws.model_dir("coarse"), expect="coarse")
    todo = "upload probabilities or a CNN trained for these classes"
    check_compatible(bundle.classes, ws.classes, "the workspace's coarse CNN", "this workspace", todo)
    origin = _origin("coarse CNN (coarse)", tta, resolution=bundle.resolution)
    ws.write_coarse_probs(predict_coarse(bundle, ws.tile(), tta=tta), origin)


def _origin(source: str, tta: bool, **extra: object) -> dict:
    """A coarse map's origin record: its source (saying when 8 turns and flips were averaged) and more."""
    return {"source": source + (TTA_NOTE if tta else ""), "tta": tta, **extra}
