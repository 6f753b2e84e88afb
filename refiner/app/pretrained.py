"""The shipped models for a workspace: which one fits it, and their coarse probabilities written into it.

The catalogue and the rules of which model fits which classes and resolution are the engine's
(:mod:`refiner.models.pretrained`); this module only says what a workspace contributes to them
(its classes and the resolution its source states) and where the result goes.
"""

from __future__ import annotations

from pathlib import Path

from refiner.app.workspace import Workspace
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
        source = f"shipped coarse CNN {pick.model.name}" + (TTA_NOTE if tta else "")
        origin = {"source": source, "model": pick.model.name, "why": pick.reason, "tta": tta}
        ws.write_coarse_probs(probs, {**origin, "resolution": pick.model.resolution})
    return pick
