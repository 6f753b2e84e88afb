"""The Train page's "Adapt to this tile" section: start it, follow both stages, compare the maps.

The engine does the work (:mod:`refiner.app.jobs.adapt`); this only wires widgets to it.
"""

from __future__ import annotations

import streamlit as st

from refiner.app import jobs
from refiner.app.jobs import adapt as adapt_job
from refiner.app.workspace import Workspace
from webapp import common
from webapp.job_panel import job_panel

STAGE_WORDS = {
    "coarse": "Stage 1 of 2: adapting the coarse CNN to this tile",
    "rnn": "Stage 2 of 2: fine-tuning the RNN on the adapted map",
    "scoring": "Scoring the maps",
    "": "Starting",
}


def _doing(now: adapt_job.AdaptStatus) -> str:
    text = STAGE_WORDS.get(now.stage, now.stage)
    if now.stage in adapt_job.STAGES and now.steps:
        text += f" (step {now.step})"
    eta = now.eta
    return text + (f", at most {eta:.0f} s left" if eta is not None else "")


def _scores(now: adapt_job.AdaptStatus) -> None:
    if not now.scores:
        return
    for kind, by_method in now.scores.items():
        st.markdown(f"**{'Held-out painted regions' if kind == 'held-out' else 'Reference mask'}**")
        rows = []
        for method, s in by_method.items():
            row = {"map": method, "mean IoU": "–" if s["mean_iou"] is None else f"{s['mean_iou']:.3f}"}
            row.update({f"IoU {n}": "–" if v is None else f"{v:.3f}" for n, v in s["iou"].items()})
            rows.append(row)
        st.table(rows)
    if now.stage_seconds:
        st.caption("Seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in now.stage_seconds.items()))
    if now.note:
        st.caption(now.note)


def adapt_section(ws: Workspace, running: bool) -> None:
    """The section: what it does, the button, the job's panel and the choice of t = 0."""
    st.subheader("Adapt to this tile")
    cfg = adapt_job.config()
    total = sum(adapt_job.budget(cfg).values())
    st.write(
        "Teaches the painted patch to the **coarse CNN itself** (its last layer, on this tile's own pixel "
        "grid), then fine-tunes the RNN on the adapted map, in one background job. Part of the painted "
        "regions is held back: each stage keeps its start unless it scores better there. "
        f"It takes at most about {total:.0f} s on this server."
    )
    status = adapt_job.ADAPT.read(ws)
    busy = running or (status is not None and status.active)
    if st.button("Adapt to this tile", key="adapt", type="primary", disabled=busy or bool(ws.readonly)):
        with common.guard("starting the adaptation"):
            if not ws.has_coarse():
                raise ValueError("compute the coarse probabilities on the start page first")
            others = common.this_session().workspaces()
            adapt_job.start_adapt(ws, backend=jobs.backend_for(jobs.scheduler_setting(ws)), others=others)
        st.rerun()
    job_panel(
        ws,
        adapt_job.ADAPT,
        _doing,
        failed="The adaptation failed",
        cancel=("Cancel the adaptation", "cancel_adapt", "Cancelling: the workspace stays as it was."),
        idle=lambda: st.caption("Not adapted yet: the coarse map is the shipped model's."),
        details=_scores,
    )
    active = adapt_job.active_coarse(ws)
    if active in ("adapted", "shipped"):
        options = {"adapted": "the adapted coarse CNN", "shipped": "the shipped coarse CNN"}
        choice = st.radio(
            "Coarse map used as t = 0 (Iterations, Compare, Filters, Export)",
            list(options),
            index=list(options).index(active),
            format_func=options.__getitem__,
            horizontal=True,
            key="coarse_in_use",
            disabled=busy or bool(ws.readonly),
        )
        if choice != active:
            with common.guard("switching the coarse map"):
                adapt_job.use_coarse(ws, choice)
            st.rerun()
