"""Compare: coarse CNN, dense CRF and RNN side by side, with scores and where they disagree."""

from __future__ import annotations

import streamlit as st

from refiner.app import results, viz
from webapp import common, crf_panel, scores
from webapp import presets as model_choice

ws = common.page("Compare")
st.write(
    "The same view refined two ways: a fully connected CRF (the usual post-processing, with "
    "hand-set or grid-searched parameters) and the learned RNN. Scores use the held-out painted "
    "regions and, when attached, an independent reference mask over the whole tile."
)

with common.guard("reading the workspace"):
    tile = ws.tile()
    classes = ws.classes
    coarse = ws.coarse_probs()
    params = results.crf_params(ws)

crf_panel.crf_panel(ws, params)

model, model_params = model_choice.choose("compare_model")
untrained = model == model_choice.LEARNED and not ws.has_model("rnn")
with common.guard("computing the maps"), st.spinner("Dense CRF and RNN on the tile (cached afterwards)..."):
    crf = results.crf_probs(ws, params)
    maps = {"Coarse CNN": coarse.argmax(0).astype("uint8"), "Dense CRF": crf.argmax(0).astype("uint8")}
    if untrained:  # no fine-tuned RNN yet: the shipped one it would start from, else coarse vs CRF
        shipped = results.shipped_refinement(ws)
        if shipped is not None:
            maps[f"Shipped RNN {shipped[1]}"] = shipped[0][-1].argmax(0).astype("uint8")
    else:
        rnn = results.model_refinement(ws, model, **model_params)[-1]
        maps["RNN" if model == model_choice.LEARNED else model_choice.label(model)] = rnn.argmax(0).astype("uint8")
if untrained:
    st.info(
        "This workspace has no fine-tuned RNN yet: "
        + (f"shown is the shipped RNN {shipped[1]}, not yet fine-tuned on this tile. " if shipped else
           "no shipped RNN fits its classes, so the coarse map and the CRF are compared. ")
        + "Fine-tune one on the Train page."
    )  # fmt: skip

view = common.view_controls(tile.shape, "compare", max_canvas=400)
opacity = st.slider("Opacity", 0.0, 1.0, 0.7, 0.05, key="compare_opacity")
rgb = viz.to_rgb(tile.image)
cols = st.columns(len(maps))
for col, (name, m) in zip(cols, maps.items(), strict=True):
    with col:
        common.show(viz.blend(rgb, viz.colorize(m, classes), opacity), caption=name, view=view)

st.subheader("Scores")
scores.score_tables(ws, maps)
scores.reference_panel(ws, "compare")

st.subheader("Where they disagree")
dc1, dc2 = st.columns([2, 1])
with dc1:
    common.show(viz.disagreement_image(list(maps.values()), rgb), view=view, caption="disagreement")
with dc2:
    d = viz.disagreement(list(maps.values()))
    if len(maps) == 3:
        st.write(
            f"White (dimmed image): all three agree ({(d == 0).mean():.1%} of the tile). "
            f"Orange: two of them agree ({(d == 1).mean():.1%}). Red: all three differ ({(d == 2).mean():.2%})."
        )
    else:
        st.write(f"White (dimmed image): the two agree ({(d == 0).mean():.1%} of the tile). Orange: they differ.")

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
