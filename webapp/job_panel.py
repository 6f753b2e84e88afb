"""One progress panel for every kind of background job (:class:`refiner.app.jobs.base.JobKind`).

The Train page (training), the Export page (the whole scene) and the Compare page's CRF panel
(the grid search) show their job the same way: a progress bar that says what the job is doing,
what the kind adds (metrics, a chart, downloads), the job's message (its error when it failed),
a Cancel button while it runs, and a rerun of the whole page when it ends so polling stops and
the page's form unlocks. The panel polls the status file every second while the job is active.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from refiner.app.jobs.base import JobKind, JobState
from refiner.app.workspace import Workspace

S = TypeVar("S", bound=JobState)


def job_label(state: str, running: str) -> str:
    """The progress-bar text for a background job in ``state`` (``running``: what it is doing)."""
    return {
        "queued": "Starting…",
        "running": running,
        "finished": "Finished",
        "cancelled": "Cancelled",
        "failed": "Failed",
        "interrupted": "Interrupted",
    }[state]


def job_panel(
    ws: Workspace,
    kind: JobKind[S],
    doing: Callable[[S], str],
    *,
    failed: str,
    cancel: tuple[str, str, str],
    idle: Callable[[], object],
    details: Callable[[S], object] | None = None,
    outputs: Callable[[S], object] | None = None,
) -> None:
    """Show the workspace's job of ``kind``, refreshed every second while it is active.

    Args:
        ws: the page's workspace (read-only ones show the panel with Cancel disabled).
        kind: the job kind, e.g. ``TRAINING``.
        doing: the progress bar's text while it runs, from its status ("step 3 of 50").
        failed: what precedes the error when it failed ("Training failed").
        cancel: the Cancel button's label, its widget key, and the toast once it is pressed.
        idle: draws what the page says when the workspace has never run this kind.
        details: draws what the kind adds under the progress bar (metrics, a chart).
        outputs: draws what comes after the job's message (download buttons).
    """
    status = kind.read(ws)
    watching = status is not None and status.active

    @st.fragment(run_every=1.0 if watching else None)
    def panel() -> None:
        now = kind.read(ws)
        if now is None:
            idle()
            return
        st.progress(now.fraction, text=job_label(now.state, doing(now)))
        if details is not None:
            details(now)
        if now.state == "failed":
            st.error(f"{failed}: {now.message}")
        elif now.message:
            st.caption(now.message)
        if outputs is not None:
            outputs(now)
        label, key, toast = cancel
        if now.active:
            if st.button(label, key=key, disabled=bool(ws.readonly)):
                kind.cancel(ws)
                st.toast(toast)
        elif watching:  # it just ended: rerun the page so polling stops and its form unlocks
            st.rerun(scope="app")

    panel()
