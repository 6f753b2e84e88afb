"""Filters: what the RNN learned, as 5x5 kernels and their responses on this tile (the paper's Fig. 11)."""

from __future__ import annotations

import streamlit as st

from refiner.app import viz
from refiner.models.store import load_model
from webapp import common

ws = common.page("Filters")
st.write(
    "Each iteration convolves the class heat maps with filters **M_i** and the image with filters "
    "**N_j** (5×5 each), then a small per-class network turns those features into the update. "
    "Trained filters often look like gradient or edge operators (on heat maps) and colour detectors "
    "such as vegetation (on the image)."
)

with common.guard("loading the RNN"):
    if not ws.has_model("rnn"):
        raise ValueError("this workspace has no RNN yet: train one on the Train page")
    bundle = load_model(ws.model_dir("rnn"), expect="rnn")
    tile = ws.tile()
    probs = ws.coarse_probs()
classes = ws.classes
blocks = len(bundle.net.blocks)
block = st.select_slider("Iteration's parameters", list(range(blocks)), 0, key="block") if blocks > 1 else 0

m = viz.map_kernels(bundle.net, block)
n = viz.image_kernels(bundle.net, block)


def grid(kernels, prefix: str, per_row: int = 16) -> None:
    for start in range(0, len(kernels), per_row):
        cols = st.columns(per_row)
        for i, col in enumerate(cols):
            if start + i < len(kernels):
                col.image(common.to_png(viz.kernel_image(kernels[start + i], 40)), caption=f"{prefix}{start + i}")


st.subheader("M_i: filters on the heat maps (blue < 0 < red)")
grid(m, "M")
st.subheader("N_j: filters on the image (shown as colour)")
grid(n, "N")

st.subheader("Response of one filter on this tile")
c1, c2, c3 = st.columns(3)
kind = c1.radio("Filter bank", ["M (heat maps)", "N (image)"], key="filter_kind", horizontal=True)
index = c2.number_input("Filter number", 0, (len(m) if kind.startswith("M") else len(n)) - 1, 0, key="filter_index")
cls = c3.selectbox(
    "Heat map of class",
    classes.names,
    index=min(1, len(classes) - 1),
    key="filter_class",
    disabled=not kind.startswith("M"),
)
with common.guard("computing the response"):
    response = viz.filter_response(
        bundle,
        tile.image,
        probs,
        "map" if kind.startswith("M") else "image",
        int(index),
        class_index=classes.names.index(cls),
        block=block,
    )
view = common.view_controls(tile.shape, "filters", max_canvas=480, ws=ws)
left, right = st.columns(2)
with left:
    common.show(viz.signed(response), view=view, caption=f"response of {'M' if kind.startswith('M') else 'N'}{index}")
with right:
    kernel = m[int(index)] if kind.startswith("M") else n[int(index)].sum(0)
    st.plotly_chart(
        viz.kernel_figure(kernel, f"kernel weights{' (summed over bands)' if kind.startswith('N') else ''}"),
        key="kernel_chart",
    )
    st.caption(
        "Input: "
        + (f"the coarse score map of '{cls}' (u₀)" if kind.startswith("M") else "the normalised image")
        + f". Response range {response.min():.2f} … {response.max():.2f}."
    )

common.end_of_run()  # the hidden marker browser tests wait on (webapp.common.end_of_run)
