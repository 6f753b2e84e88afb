"""Iterations: the class map and each class's fuzzy probabilities at every RNN iteration t."""

from __future__ import annotations

import streamlit as st

from refiner.app import results, viz
from webapp import cache, common
from webapp import presets as model_choice
from webapp import scores as score_panel

ws = common.page("Iterations")
st.write(
    "The RNN moves the coarse probabilities step by step (u₀ → u₁ → … → u_T). Slide through the "
    "iterations to see boundaries snap to image edges (the paper's Fig. 6), and how accuracy and "
    "IoU change on the held-out painted regions and, when attached, on a reference mask (Fig. 7b)."
)

model, params = model_choice.choose("iter_model")
with common.guard("refining the tile"), st.spinner("Running the RNN on the tile (cached afterwards)..."):
    # kept in memory between reruns (webapp.cache): a slider step only draws the view it shows
    stack = cache.iterations(ws, model, params)
    cache.tile_rgb(ws)  # read here, so an unreadable tile is said as such
if model != model_choice.LEARNED:
    st.caption(f"Showing {model_choice.describe(model, params)}.")
classes = ws.classes
T = stack.iterations

c1, c2, c3 = st.columns([2, 1, 1])
# one slider per model: each has its own T
t = c1.slider("Iteration t", 0, T, T, key="iteration" if model == model_choice.LEARNED else f"iteration_{model}")
cls = c2.selectbox("Fuzzy map of class", classes.names, index=min(1, len(classes) - 1), key="fuzzy_class")
opacity = c3.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="iter_opacity")
view = common.view_controls(ws.shape, "iter", max_canvas=480, ws=ws)

rgb = cache.tile_in_view(ws, view)
left, right = st.columns(2)
with left:
    common.show(
        viz.blend(rgb, viz.colorize(common.in_view(stack.maps[t], view), classes), opacity),
        caption=f"class map at t = {t}" + (" (coarse CNN)" if t == 0 else ""),
    )
with right:
    k = classes.names.index(cls)
    common.show(
        viz.probability_overlay(rgb, common.in_view(stack.probs[t, k], view, smooth=True), opacity),
        caption=f"P({cls}) at t = {t} (dark = 0, yellow = 1)",
    )
st.caption(
    "Colours: "
    + ", ".join(f"{common.plain(n)} = rgb{tuple(c)}" for n, c in zip(classes.names, classes.colors, strict=True))
)

st.subheader("Scores per iteration")
sets = results.score_sets(ws)
if not sets:
    st.info("Paint some labels on the Label page (or attach a reference) to score the iterations.")
per_set = [cache.iteration_scores(ws, stack, ev.labels, one_vs_rest=ev.one_vs_rest) for ev in sets]
for i, (col, ev) in enumerate(zip(st.columns(len(sets)) if sets else [], sets, strict=True)):
    with col:
        st.plotly_chart(cache.iteration_figure(ws, stack, ev, t), key=f"iteration_chart_{i}")
        st.caption(f"Scored on {ev.pixels:,} pixels: {ev.description}. Dotted: the coarse map (t = 0).")
for ev, scores in zip(sets, per_set, strict=True):  # one full-width row of numbers per set
    s, s0 = scores[t], scores[0]
    m = st.columns(len(classes) + 2)
    m[0].metric(f"Accuracy at t = {t}", f"{s.overall_accuracy:.3f}", help=ev.title)
    over = ", ".join(classes.names[i] for i in s.in_mean)
    label = f"Mean IoU ({ev.title.lower()}; over {over})"
    m[1].metric(label, f"{s.mean_iou:.3f}", f"{s.mean_iou - s0.mean_iou:+.3f} vs t = 0")
    for j, n in enumerate(classes.names):
        m[j + 2].metric(f"IoU {n}", "–" if s.iou[j] != s.iou[j] else f"{s.iou[j]:.3f}")
score_panel.reference_panel(ws, "iter")

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
