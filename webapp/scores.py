"""What the Train, Iterations and Compare pages share about scores: reference panel and score tables.

The reference-mask panel, and the score tables on the held-out regions and on the reference,
side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from refiner.app import reference, results
from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.data.masks import counts_by_class
from webapp import common

UNLABELLED = "unlabelled (not scored)"
MEAN_NOTE = "Every mean IoU is over the classes these labels have (named in its column), the same for every map."


def reference_panel(ws: Workspace, key: str) -> None:
    """Attach, show or detach the workspace's independent reference mask (used only for scoring)."""
    current = ws.settings.get("reference")
    title = f"Reference for scoring: {reference.describe(ws)}" if current else "Reference for scoring (none attached)"
    with st.expander(title, expanded=False):
        st.caption(
            "An independent mask of this tile (e.g. the Inria or OSM reference), or another workspace's "
            "labels on the same grid. It is never trained on: the pages score every map on it over the "
            "whole tile, beside the held-out painted regions."
        )
        if current:
            if st.button("Detach the reference", key=f"{key}_ref_detach"):
                reference.detach(ws)
                st.rerun()
            return
        src = st.radio("From", ["a mask file", "another workspace"], horizontal=True, key=f"{key}_ref_from")
        if src == "another workspace":
            others = [n for n in common.this_session().names() if n != ws.name]  # the session's own only
            if not others:
                st.caption("There is no other workspace.")
                return
            other = st.selectbox("Workspace", others, key=f"{key}_ref_ws")
            if st.button("Attach its labels as the reference", key=f"{key}_ref_attach_ws"):
                with common.guard("attaching the reference"):
                    reference.attach_workspace(ws, common.this_session().open(other))
                st.rerun()
            return
        up = st.file_uploader("Mask (GeoTIFF or PNG, one band)", type=["tif", "tiff", "png"], key=f"{key}_ref_file")
        if up is None:
            return
        with common.guard("reading the mask"):
            raw, georef = reference.read_mask(up.getvalue(), up.name)
            counts = reference.mask_values(raw)
        guide = ws.coarse_probs().argmax(0).astype(np.uint8) if ws.has_coarse() else None
        proposal = reference.propose_mapping(list(counts), ws.classes, name=up.name, raw=raw, guide=guide)
        names = [*ws.classes.names, UNLABELLED]
        st.caption("Which class is each value of the mask? (proposed from the classes' mask values)")
        mapping: dict[int, int | None] = {}
        cols = st.columns(min(4, len(counts)))
        for i, (v, n) in enumerate(counts.items()):
            guess = proposal[v]
            choice = cols[i % len(cols)].selectbox(
                f"value {v} ({n:,} px)", names, index=len(names) - 1 if guess is None else guess, key=f"{key}_ref_v{v}"
            )
            mapping[v] = None if choice == UNLABELLED else names.index(choice)
        as_codes = {v: IGNORE if c is None else c for v, c in mapping.items()}
        st.caption(f"With this mapping the mask is {counts_by_class(counts, as_codes, ws.classes)}.")
        if st.button("Attach as the reference", key=f"{key}_ref_attach", type="primary"):
            with common.guard("attaching the reference"):
                reference.attach_mask(ws, raw, georef, mapping, up.name)
            st.rerun()


def score_tables(ws: Workspace, maps: dict[str, np.ndarray]) -> None:
    """Score tables of ``maps`` on each score set (held-out regions, reference), side by side."""
    sets = results.score_sets(ws)
    if not sets:
        st.info("Paint some labels on the Label page (or attach a reference) to score the maps.")
        return
    cols = st.columns(len(sets))
    for col, ev in zip(cols, sets, strict=True):
        with col:
            st.markdown(f"**{ev.title}**")
            rows = results.score_table(maps, ev.labels, ws.classes.names, one_vs_rest=ev.one_vs_rest)
            table = pd.DataFrame(rows).set_index("method")
            st.table(table.rename(columns=lambda c: common.plain(c) if "IoU" in c else c))  # class names: user text
            st.caption(f"On {ev.pixels:,} pixels: {ev.description}. {MEAN_NOTE}")
