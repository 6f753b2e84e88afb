"""Learn: the paper's PDEs as hand-set RNNs beside the learned one (a five-minute classroom path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from refiner.app import results, viz
from refiner.models import presets
from refiner.models.store import load_model
from webapp import common
from webapp import presets as choice

ws = common.page("Learn")
st.write(
    "The refinement RNN is a *learned* PDE (Sec. II of the paper). Classic image PDEs — heat flow, "
    "Perona–Malik edge-stopping diffusion — are special cases of its update u ← u + δu with filters "
    "and an MLP chosen **by hand**. Follow the five steps: pick an equation, read how each term becomes "
    "a filter, run it on this tile, compare with the learned RNN, and find the same operators among "
    "the learned filters."
)

# --------------------------------------------------------------------------- 1. the equation
st.header("1 · Pick an equation")
c1, c2, c3, c4 = st.columns(4)
name = c1.radio("Equation", presets.PRESETS, format_func=lambda p: presets.TITLES[p], key="learn_preset")
dt = c2.slider("Time step δt", 0.05, presets.MAX_STABLE_DT, 0.2, 0.05, key="learn_dt")
kappa = None
if name == "perona_malik":
    kappa = c3.slider("Conductance κ (score units)", 0.2, 3.0, 1.0, 0.1, key="learn_kappa_pm")
elif name == "image_guided":
    kappa = c3.slider("Conductance κ (grey levels, 0–1)", 0.02, 0.5, 0.1, 0.02, key="learn_kappa_ig")
else:
    c3.caption("The heat equation has no conductance: it smooths everywhere alike.")
T = c4.slider("Iterations T", 1, 30, 10, key="learn_T")
params = {"dt": dt, "iterations": T} | ({"kappa": kappa} if kappa is not None else {})
choice.remember(name, params)

continuous, discrete = presets.EQUATIONS[name]
st.latex(continuous)
st.caption("As the RNN computes it (one iteration, every class map u_k alike):")
st.latex(discrete)

# --------------------------------------------------------------------------- 2. terms and filters
st.header("2 · Each term is a filter")
st.write(
    "Linear terms go through the MLP exactly, as relu(a) − relu(−a). The 5×5 filters below are the "
    "preset's M_i (on the class heat maps) and N_j (on the image); blue < 0 < red."
)
terms = presets.preset_terms(name)
cols = st.columns(min(len(terms), 4))
for i, (tex, filt, kernel) in enumerate(terms):
    with cols[i % len(cols)]:
        st.latex(tex)
        st.image(common.to_png(viz.kernel_image(kernel, 80)), caption=filt)

if name == "perona_malik":
    x = np.linspace(-6 * kappa, 6 * kappa, 401)
    st.plotly_chart(
        viz.flux_figure(
            x,
            {"exact g(|x|) x": presets.pm_flux(x, kappa), "the preset's 8 ReLU units": presets.pm_flux_pl(x, kappa)},
            "The flux through one face: exact and piecewise linear",
        ),
        key="learn_flux",
    )
    st.caption(
        f"The flux g(|x|)·x is not linear, so 8 ReLU units per direction (4 × 8 = the MLP's 32) "
        f"approximate it; the largest error is {presets.PM_FLUX_ERROR:.3f}·κ = {presets.PM_FLUX_ERROR * kappa:.3f} "
        "for every difference (12 % of the peak flux κ/2). Small differences diffuse, large ones (edges) barely."
    )
elif name == "image_guided":
    with common.guard("fitting the flux"):
        fit = presets.image_guided_fit(float(kappa))
    x = np.linspace(-presets.FIT_DU, presets.FIT_DU, 201)
    curves = {}
    for step in (0.0, kappa, 3 * kappa):
        curves[f"exact, image step {step:.2f}"] = x / (1 + (step / kappa) ** 2)
        curves[f"ReLU fit, image step {step:.2f}"] = fit(x, np.full_like(x, step))
    st.plotly_chart(viz.flux_figure(x, curves, "Flux across a face for three image steps"), key="learn_flux")
    st.caption(
        "The flux g(|∇I|)·∇u multiplies an image feature by a map feature: one ReLU layer cannot do "
        "that exactly, so its 8 units per direction are fitted by least squares on |∇u| ≤ 10, |∇I| ≤ 1: "
        f"largest error {fit.max_error:.2f}, RMS {fit.rms_error:.2f} (on fluxes up to 10)."
    )

# --------------------------------------------------------------------------- 3. run it
st.header("3 · Run it on this tile, beside the learned RNN")
with common.guard("running the preset"), st.spinner("Running the preset on the tile (cached afterwards)..."):
    tile = ws.tile()
    classes = ws.classes
    preset_probs = results.preset_refinement(ws, name, **params)
learned_probs = None
if ws.has_model("rnn"):
    try:
        learned_probs = results.refinement(ws)
    except ValueError as exc:
        st.info(f"The learned RNN cannot run here: {exc}")
else:
    st.info("No learned RNN in this workspace yet: train one on the Train page to see it beside the preset.")

s1, s2 = st.columns([2, 1])
t = s1.slider("Iteration t", 0, T, T, key=f"learn_t_{T}")  # keyed by T: a smaller T resets t
cls = s2.selectbox("Fuzzy map of class", classes.names, index=min(1, len(classes) - 1), key="learn_class")
view = common.view_controls(tile.shape, "learn", max_canvas=400, ws=ws)
rgb = viz.to_rgb(tile.image)
k = classes.names.index(cls)
left, right = st.columns(2)
with left:
    p = preset_probs[t]
    common.show(
        viz.blend(rgb, viz.colorize(p.argmax(0).astype("uint8"), classes), 0.6),
        caption=f"{presets.TITLES[name]} at t = {t}",
        view=view,
    )
    common.show(
        viz.probability_overlay(rgb, p[k], 0.6), caption=f"P({cls}), {presets.TITLES[name]}, t = {t}", view=view
    )
with right:
    if learned_probs is not None:
        tl = min(t, len(learned_probs) - 1)
        q = learned_probs[tl]
        common.show(
            viz.blend(rgb, viz.colorize(q.argmax(0).astype("uint8"), classes), 0.6),
            caption=f"learned RNN at t = {tl}",
            view=view,
        )
        common.show(viz.probability_overlay(rgb, q[k], 0.6), caption=f"P({cls}), learned RNN, t = {tl}", view=view)

ev = results.eval_labels(ws)
if ev is not None:
    rows = [("coarse (t = 0)", preset_probs[0]), (f"{presets.TITLES[name]}, t = {t}", preset_probs[t])]
    if learned_probs is not None:
        rows.append((f"learned RNN, t = {len(learned_probs) - 1}", learned_probs[-1]))
    table = []
    for label, p in rows:
        s = results.iteration_scores([p], ev.labels)[0]
        mean = results.mean_label(classes.names, s.in_mean)
        table.append({"map": label, "overall accuracy": round(s.overall_accuracy, 4), mean: round(s.mean_iou, 4)})
    st.table(pd.DataFrame(table).set_index("map"))
    st.caption(
        f"On {ev.pixels:,} pixels: {ev.description}. Hand-set diffusion smooths; only the learned RNN "
        "knows where the coarse map is wrong."
    )

# --------------------------------------------------------------------------- 4. learned operators
st.header("4 · The same operators among the learned filters")
if learned_probs is None:
    st.info("Train an RNN to compare its filters with these operators.")
else:
    with common.guard("loading the RNN"):
        net = load_model(ws.model_dir("rnn"), expect="rnn").net
    learned = viz.map_kernels(net)
    matches = presets.match_filters(learned, top=3)
    st.write(
        "The paper's Fig. 11: learned M_i filters look like derivative operators. Below, each operator "
        "beside the three learned filters most correlated with it (|cosine| of the zero-mean kernels: "
        "the MLP can flip a sign), and how well all learned filters together can express it."
    )
    ops = presets.operator_bank()
    for op, found in matches.items():
        cols = st.columns(5)
        cols[0].image(common.to_png(viz.kernel_image(ops[op], 60)), caption=op)
        for col, m in zip(cols[1:4], found, strict=False):
            col.image(common.to_png(viz.kernel_image(learned[m.index], 60)), caption=f"M{m.index}: {m.correlation:.2f}")
        cols[4].metric(f"{op}: left out by these {len(found)}", f"{found[0].top_residual:.1%}")
    st.caption(
        f"Left out: the part of the operator (relative norm) that no combination of the {len(found)} filters "
        f"shown reproduces (0 % = those few together are the operator). All {len(learned)} learned filters "
        "together reproduce any 5×5 operator exactly (they have more filters than a kernel has weights), so "
        "that says nothing; how few similar filters it takes does."
    )

# --------------------------------------------------------------------------- 5. elsewhere
st.header("5 · Try it elsewhere")
st.write(
    "The presets run through the same inference code as the learned RNN: choose one as the model on "
    "the **Iterations** page (slider through t, scores per iteration) or the **Compare** page (beside "
    "the coarse CNN and the dense CRF). They use the parameters set here."
)

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
