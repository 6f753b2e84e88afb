"""The Compare page's CRF panel: the parameters in use (hand-set or grid-searched) and the grid search.

The search runs in the background (:mod:`refiner.app.jobs.crf`) with progress, estimate and cancel.
"""

from __future__ import annotations

import math

import streamlit as st

from refiner.app.jobs import crf as crf_job
from refiner.app.workspace import Workspace
from refiner.baselines.crf import DEFAULT_GRID, CRFParams
from webapp import common
from webapp.job_panel import job_panel

TRIALS = math.prod(len(v) for v in DEFAULT_GRID.values())
FIELDS = {  # widget key: (label, CRFParams field, min, max)
    "g_sxy": ("Gaussian σxy", "gaussian_sxy", 0.5, 50.0),
    "g_w": ("Gaussian weight", "gaussian_compat", 0.0, 50.0),
    "b_sxy": ("Bilateral σxy", "bilateral_sxy", 1.0, 200.0),
    "b_rgb": ("Bilateral σrgb", "bilateral_srgb", 1.0, 100.0),
    "b_w": ("Bilateral weight", "bilateral_compat", 0.0, 50.0),
}


def crf_panel(ws: Workspace, params: CRFParams) -> None:
    """The CRF form (showing ``params``, the ones in use) and the grid search's panel."""
    search = crf_job.CRF_SEARCH.read(ws)
    searching = search is not None and search.active
    with st.container(border=True):
        st.markdown("**Dense CRF parameters**")
        in_use = params.to_dict()
        if st.session_state.get("crf_shown") != in_use:  # the form shows the parameters in use
            st.session_state.update({k: float(in_use[f]) for k, (_, f, _, _) in FIELDS.items()}, crf_shown=in_use)
        with st.form("crf_form"):
            c = st.columns(len(FIELDS))
            fields = enumerate(FIELDS.items())
            values = {f: c[i].number_input(lab, lo, hi, key=k) for i, (k, (lab, f, lo, hi)) in fields}
            if st.form_submit_button("Apply", disabled=searching):
                ws.update_settings(crf=CRFParams(**{**in_use, **values}).to_dict())
                st.rerun()
        if st.button("Grid search on the painted labels", key="grid_search", disabled=searching):
            with common.guard("starting the grid search"):
                crf_job.start_crf_search(ws)
            st.rerun()

        job_panel(
            ws,
            crf_job.CRF_SEARCH,
            _doing,
            failed="The grid search failed",
            cancel=("Cancel the grid search", "cancel_crf", "Cancelling: the best parameters so far are kept."),
            idle=lambda: st.caption(
                f"The grid search tries {TRIALS} settings on windows around the painted (not held-out) "
                "labels, in the background: you may leave the page."
            ),
            details=_best_so_far,
        )  # when it ends, the page reruns and the form shows the parameters found
        st.caption(f"In use: {in_use}")


def _doing(now: crf_job.CRFSearchStatus) -> str:
    eta = f", about {now.eta:.0f} s left" if now.eta is not None and now.active else ""
    return f"Grid search: {now.done} of {now.total or '…'} settings{eta}"


def _best_so_far(now: crf_job.CRFSearchStatus) -> None:
    if now.best_mean_iou is not None:
        st.caption(f"Best so far: mean IoU {now.best_mean_iou:.3f} on the painted pixels with {now.best}")
