"""Compare: coarse CNN, dense CRF and RNN side by side, with scores and where they disagree."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from refiner import results, viz
from refiner.crf import CRFParams
from refiner.metrics import evaluate
from webapp import common
from webapp import presets as model_choice

ws = common.page("Compare")
st.write(
    "The same view refined two ways: a fully connected CRF (the usual post-processing, with "
    "hand-set or grid-searched parameters) and the learned RNN. Scores use held-out labels."
)

with common.guard("reading the workspace"):
    tile = ws.tile()
    classes = ws.classes
    coarse = ws.coarse_probs()
    params = results.crf_params(ws)

with st.expander("CRF parameters", expanded=False):
    with st.form("crf_form"):
        c = st.columns(5)
        g_sxy = c[0].number_input("Gaussian σxy", 0.5, 50.0, float(params.gaussian_sxy), key="g_sxy")
        g_w = c[1].number_input("Gaussian weight", 0.0, 50.0, float(params.gaussian_compat), key="g_w")
        b_sxy = c[2].number_input("Bilateral σxy", 1.0, 200.0, float(params.bilateral_sxy), key="b_sxy")
        b_rgb = c[3].number_input("Bilateral σrgb", 1.0, 100.0, float(params.bilateral_srgb), key="b_rgb")
        b_w = c[4].number_input("Bilateral weight", 0.0, 50.0, float(params.bilateral_compat), key="b_w")
        if st.form_submit_button("Apply"):
            new = CRFParams(g_sxy, g_w, b_sxy, b_rgb, b_w, params.iterations)
            with common.guard("saving the CRF parameters"):
                ws.update_settings(crf=new.to_dict())
            st.rerun()
    if st.button("Grid search on the painted labels", key="grid_search"):
        with common.guard("grid search"), st.spinner("Trying CRF parameters on the painted pixels..."):
            found = results.search_crf(ws)
        st.success(
            f"Best of {len(found.trials)} settings (mean IoU {found.best_scores.mean_iou:.3f} on the painted, "
            f"not held-out pixels): {found.best.to_dict()}"
        )
        params = found.best
    st.caption(f"In use: {params.to_dict()}")

model, model_params = model_choice.choose("compare_model")
with common.guard("computing the maps"), st.spinner("Dense CRF and RNN on the tile (cached afterwards)..."):
    crf = results.crf_probs(ws, params)
    rnn = results.model_refinement(ws, model, **model_params)[-1]
maps = {
    "Coarse CNN": coarse.argmax(0).astype("uint8"),
    "Dense CRF": crf.argmax(0).astype("uint8"),
    "RNN" if model == model_choice.LEARNED else model_choice.label(model): rnn.argmax(0).astype("uint8"),
}

view = common.view_controls(tile.shape, "compare", max_canvas=400)
opacity = st.slider("Opacity", 0.0, 1.0, 0.7, 0.05, key="compare_opacity")
rgb = viz.to_rgb(tile.image)
cols = st.columns(3)
for col, (name, m) in zip(cols, maps.items(), strict=True):
    with col:
        common.show(viz.blend(rgb, viz.colorize(m, classes), opacity), caption=name, view=view)

st.subheader("Scores")
ev = results.eval_labels(ws)
if ev is None:
    st.info("Paint some labels on the Label page to score the methods.")
else:
    rows = []
    for name, m in maps.items():
        s = evaluate(m, ev.labels, len(classes))
        row = {"method": name, "overall accuracy": round(s.overall_accuracy, 4), "mean IoU": round(s.mean_iou, 4)}
        row.update({f"IoU {n}": round(v, 4) for n, v in zip(classes.names, s.iou, strict=True)})
        rows.append(row)
    st.table(pd.DataFrame(rows).set_index("method"))
    st.caption(f"On {ev.pixels:,} pixels: {ev.description}.")

st.subheader("Where they disagree")
dc1, dc2 = st.columns([2, 1])
with dc1:
    common.show(viz.disagreement_image(list(maps.values()), rgb), view=view, caption="disagreement")
with dc2:
    d = viz.disagreement(list(maps.values()))
    st.write(
        f"White (dimmed image): all three agree ({(d == 0).mean():.1%} of the tile). "
        f"Orange: two of them agree ({(d == 1).mean():.1%}). Red: all three differ ({(d == 2).mean():.2%})."
    )
