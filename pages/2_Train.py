"""Train: fine-tune the refinement RNN on the painted labels, in the background, with live progress."""

from __future__ import annotations

import time

import streamlit as st

from refiner.app import jobs, model_history, results, viz
from refiner.app.pretrained import workspace_resolution
from refiner.core.device import pick_device
from refiner.models.pretrained import pick_rnn
from refiner.models.rnn import VARIANTS
from refiner.train.rnn import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS
from webapp import common, scores
from webapp.adapt_panel import adapt_section
from webapp.job_panel import job_panel

ws = common.page("Train")
scheduler = jobs.scheduler_setting(ws)
device = pick_device()
where = (
    f"on the **Dask cluster** at `{scheduler}` (a GPU worker if one declares it)."
    if scheduler
    else f"on **{device.type.upper()}**" + (" (no GPU found)." if device.type == "cpu" else ".")
)
status = jobs.TRAINING.read(ws)
running = status is not None and status.active
adapt_section(ws, running)
st.subheader("Fine-tune the RNN only")
st.write(
    f"Fine-tunes the RNN on your painted pixels (AdaGrad, cross-entropy), {where}"
    " Part of the painted pixels is held back to measure IoU as training goes: whole painted regions,"
    " with the training pixels within twice the RNN's reach (2 × T × kernel radius) of them left out,"
    " so the score is not made on near-copies of what it trained on."
    " A run stops when that score stops improving, and takes at most"
    f" **{jobs.TrainParams().max_seconds:.0f} s** from the click to the new RNN's scores on this page"
    " (reading the tile, training, saving and refining the tile all count; on a busy server training gets"
    " fewer steps in that time). It keeps the weights that scored best."
)
has_model = ws.has_model("rnn")
model_info = {}
if has_model:
    from refiner.models.store import load_model

    with common.guard("reading the current RNN"):
        current_model = load_model(ws.model_dir("rnn"), expect="rnn")
        model_info = {"arch": current_model.config.to_dict(), "steps": current_model.info.get("trained_steps", 0)}

HELP = {
    "steps": "Optimiser steps (one batch of patches each) in this run. Continuing adds them to the model's steps.",
    "lr": f"AdaGrad's base learning rate: {jobs.TrainParams().lr} from scratch (the paper's); fine-tuning the "
    f"pretrained RNN uses {FINETUNE_DEFAULTS.lr}, so a small patch adjusts it rather than overwriting it.",
    "iterations": "How many times the RNN updates the map (u₀ → u_T). Each reaches one kernel radius further; "
    "more iterations see further and cost time. Applies to a new RNN.",
    "variant": "class_specific: filters per class (the paper's); class_agnostic: shared by all classes; "
    "non_recurrent: different weights at each iteration. Applies to a new RNN.",
    "holdout": "Share of the painted pixels held back to score the model (whole regions, a guard band apart "
    "from the training pixels). 0: no validation, and the last weights are kept.",
    "batch": "Patches per step. Small batches of small patches run fastest on a CPU.",
    "patch": "Side of each training patch in pixels at the working resolution (plus the RNN's reach around it).",
    "distill": "How strongly the refined maps are pulled towards where training starts: the coarse map for a new "
    "RNN, the pretrained RNN's maps for a fine-tune, the current RNN's when continuing. It keeps one patch from "
    "teaching the RNN that patch's look alone: worth it when the RNN is meant for other tiles. 0 is the paper's "
    "plain training, best for the rest of the painted tile (a new RNN's default).",
}
CONTINUE, NEW = "the current RNN (continue training)", "a new RNN (from scratch)"
with common.guard("looking for a pretrained RNN"):
    pick = pick_rnn(ws.classes, workspace_resolution(ws))
PRETRAINED = f"the pretrained RNN {pick.model.name} (fine-tune)" if pick.model else None
# the pretrained RNN is the default start of a workspace's first fine-tune; afterwards, its own RNN
options = [o for o in ([CONTINUE, PRETRAINED] if has_model else [PRETRAINED]) + [NEW] if o]
start_from = st.radio("Start from", options, key="start_from", horizontal=True)
resume, from_pretrained = start_from == CONTINUE, start_from == PRETRAINED
if from_pretrained:
    st.caption(
        f"{pick.reason}. Fine-tuning keeps it close to where it started (weights pulled towards the "
        "pretrained ones, brightness/contrast jitter, stopping when the held-out IoU stops improving)."
    )
elif pick.model is None:
    st.caption(f"Training from scratch: {pick.reason}.")
if start_from == NEW:
    st.caption(
        "A new RNN trains as in the paper (refiner.train.rnn.SCRATCH_DEFAULTS): best for the rest of this tile. "
        "To apply it to other tiles unlike this patch, set 'Pull to the start' to about 3: it then starts as the "
        "coarse map and stays near it, so one patch cannot teach it that patch's look alone."
    )
if start_from != CONTINUE and has_model:
    st.caption("The current RNN is not lost: it stays in the model history below, ready to restore.")

D = jobs.TrainParams()  # the defaults: refiner.train's and refiner.models.rnn's config dataclasses
with st.form("train_form"):
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("Steps", 1, 100_000, D.steps, step=50, key="steps", help=HELP["steps"])
    lr = c2.number_input(
        "Learning rate (AdaGrad)",
        1e-4,
        0.1,
        FINETUNE_DEFAULTS.lr if from_pretrained else D.lr,
        format="%.4f",
        key="lr_pretrained" if from_pretrained else "lr",
        help=HELP["lr"],
    )
    iterations = c3.number_input("Iterations T", 1, 20, D.iterations, key="iterations", help=HELP["iterations"])
    variant = c4.selectbox("Variant", VARIANTS, index=VARIANTS.index(D.variant), key="variant", help=HELP["variant"])
    c5, c6, c7, c8 = st.columns(4)
    holdout = c5.slider("Held back for validation", 0.0, 0.5, D.holdout, 0.05, key="holdout", help=HELP["holdout"])
    batch = c6.number_input("Batch size", 1, 64, D.batch_size, key="batch", help=HELP["batch"])
    patch = c7.number_input("Patch size (px)", 16, 128, D.patch_size, step=8, key="patch", help=HELP["patch"])
    distill = c8.number_input(
        "Pull to the start",
        0.0,
        100.0,
        FINETUNE_DEFAULTS.distill if from_pretrained else SCRATCH_DEFAULTS.distill,
        step=0.5,
        key="distill_pretrained" if from_pretrained else "distill",
        help=HELP["distill"],
    )
    if has_model:
        a = model_info["arch"]
        st.caption(
            f"Current RNN: {a['variant']}, T = {a['iterations']}, {model_info['steps']} steps trained. "
            "Continuing keeps its architecture (T and variant above apply to a new RNN)."
        )
    st.caption(
        "The model kept at the end is the one that scored best on the held-out regions during the run "
        "(its step is marked on the chart), not necessarily the last."
    )
    submitted = st.form_submit_button("Start training", disabled=running or bool(ws.readonly), type="primary")

if submitted:
    params = jobs.TrainParams(
        steps=int(steps),
        lr=float(lr),
        iterations=int(model_info["arch"]["iterations"]) if resume else int(iterations),
        variant=model_info["arch"]["variant"] if resume else str(variant),
        holdout=float(holdout),
        batch_size=int(batch),
        patch_size=int(patch),
        resume=resume,
        pretrained=pick.model.name if from_pretrained and pick.model else "",
        eval_every=max(5, min(50, int(steps) // 10)),
        checkpoint_every=max(10, int(steps) // 5),
        distill=float(distill),
    )
    with common.guard("starting training"):
        if not ws.has_coarse():
            raise ValueError("compute or upload coarse probabilities on the start page first")
        others = common.this_session().workspaces()  # one job at a time per session
        jobs.start_training(ws, params, backend=jobs.backend_for(scheduler), others=others)
    st.rerun()


def _left(now: jobs.JobStatus) -> str:
    """ ", at most 38 s left" while a budgeted run is active."""
    left = now.seconds_left(time.time())
    return "" if left is None else f", at most {left:.0f} s left"


def training_details(now: jobs.JobStatus) -> None:
    """The step, loss, held-out scores and device of the run, and its loss and IoU curves."""
    m = st.columns(4)
    m[0].metric("Step", f"{now.step} / {now.steps}")
    m[1].metric("Loss", f"{now.loss[-1][1]:.4f}" if now.loss else "–")
    last_val = now.val[-1]["mean_iou"] if now.val else None
    m[2].metric("Held-out mean IoU", f"{last_val:.3f}" if last_val is not None else "–")
    m[3].metric("Device", now.device or "–")
    if now.val:
        names = ws.classes.names
        iou = now.val[-1]["iou"]
        st.caption(
            "Held-out IoU per class: "
            + ", ".join(
                f"{common.plain(n)} {v:.3f}" if v is not None else f"{common.plain(n)} –"
                for n, v in zip(names, iou, strict=True)
            )
        )
    if now.loss:
        fig = viz.loss_figure(
            now.loss, now.val, ws.classes, earlier_loss=now.earlier_loss, earlier_val=now.earlier_val,
            start_step=now.start_step if now.earlier_loss else 0, best_step=now.best_step,
        )  # fmt: skip
        st.plotly_chart(fig, key="loss_chart")


job_panel(
    ws,
    jobs.TRAINING,
    lambda now: f"Training on {now.device or '…'}: step {now.step} of {now.steps}" + _left(now),
    failed="Training failed",
    cancel=("Cancel training", "cancel", "Cancelling: the model trained so far will be kept."),
    idle=lambda: st.info("No training run yet in this workspace."),
    details=training_details,
)
if not running and has_model:
    st.subheader("The current RNN's scores")
    with common.guard("scoring the current RNN"), st.spinner("Refining the tile (cached afterwards)..."):
        maps = {"Coarse CNN": ws.coarse_probs().argmax(0), "RNN": results.refinement(ws)[-1].argmax(0)}
        scores.score_tables(ws, maps)
scores.reference_panel(ws, "train")


def _when(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


st.subheader("Model history")
kept = model_history.entries(ws)
now = model_history.current(ws)
if not kept:
    st.caption(
        "Every RNN trained here is kept (and the one a run replaces), so a new RNN never destroys the "
        "previous one. None trained yet."
    )
else:
    if now is not None and now.best_step is not None:
        st.info(f"The current RNN, **{now.name}**, {now.kept_weights()}.")
    elif now is None and has_model:
        st.caption("The current RNN is not in the history yet: it is kept there when the next run starts.")
    names = ws.classes.names
    st.table(
        [
            {
                "": "current" if now is not None and e.id == now.id else "",
                "RNN": e.name,
                "trained": _when(e.created),
                "steps": f"{e.steps:,}",
                "held-out mean IoU": f"{e.held_out_mean_iou:.3f}" if e.held_out_mean_iou is not None else "–",
                "kept step": str(e.best_step) if e.best_step is not None else "–",
                **{
                    f"IoU {common.plain(n)}": f"{v:.3f}" if v is not None else "–"
                    for n, v in zip(names, e.held_out_iou or [None] * len(names), strict=False)
                },
                "started from": e.started_from,
                "T, variant": f"{e.iterations}, {e.variant}",
            }
            for e in kept
        ]
    )
    others = {e.id: e for e in kept if now is None or e.id != now.id}
    if msg := st.session_state.pop("restored", None):
        st.success(msg)
    if others:
        h1, h2 = st.columns([3, 1])
        choice = h1.selectbox(
            "Restore an earlier RNN",
            list(others),
            format_func=lambda i: f"{others[i].name} ({_when(others[i].created)}, {others[i].steps} steps)",
            key="restore_choice",
        )
        h2.write("")
        if h2.button("Make it the current RNN", key="restore_rnn", disabled=running):
            with common.guard("restoring the RNN"):
                back = model_history.restore(ws, choice)
            st.session_state["restored"] = (
                f"{back.name} is the current RNN again; the one it replaced stays in the history."
            )
            st.rerun()
st.caption(
    "Checkpoints are written to the workspace (`models/checkpoint`); the trained model to "
    "`models/rnn`. Leaving this page, refreshing or restarting does not lose them."
)

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
