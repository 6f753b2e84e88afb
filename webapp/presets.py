"""The model choice shared by the Learn, Iterations and Compare pages: the learned RNN or a PDE preset.

The hand-set PDE presets come with the parameters last set on the Learn page.
"""

from __future__ import annotations

import streamlit as st

from refiner.models.presets import PRESETS, TITLES

LEARNED = "learned"
CHOICES = (LEARNED, *PRESETS)
#: Defaults a teacher starts from: dt below the 1/4 stability limit, κ on the scale of score
#: differences (Perona–Malik) or of grey levels in [0, 1] (image-guided).
DEFAULTS = {"dt": 0.2, "iterations": 10, "kappa": {"perona_malik": 1.0, "image_guided": 0.1}}
STATE = "preset_params"  # not a widget key: it survives switching pages


def label(choice: str) -> str:
    """How a model choice reads in the selector."""
    return "learned RNN" if choice == LEARNED else f"{TITLES[choice]} (preset)"


def params(name: str) -> dict:
    """The preset's parameters: as last set on the Learn page, else the defaults."""
    saved = st.session_state.get(STATE, {}).get(name, {})
    out = {"dt": saved.get("dt", DEFAULTS["dt"]), "iterations": int(saved.get("iterations", DEFAULTS["iterations"]))}
    if name in DEFAULTS["kappa"]:
        out["kappa"] = saved.get("kappa", DEFAULTS["kappa"][name])
    return out


def remember(name: str, values: dict) -> None:
    """Keep a preset's parameters for the other pages (in the session, not in a widget)."""
    st.session_state.setdefault(STATE, {})[name] = dict(values)


def choose(key: str, where=st) -> tuple[str, dict]:
    """A selector learned / heat / Perona–Malik / image-guided; returns (choice, parameters)."""
    choice = where.selectbox("Model", CHOICES, format_func=label, key=key)
    return choice, ({} if choice == LEARNED else params(choice))


def describe(choice: str, values: dict) -> str:
    """The model choice in words for captions, with a preset's parameters."""
    if choice == LEARNED:
        return "the learned RNN"
    return (
        f"{TITLES[choice]} preset ("
        + ", ".join(f"{k} = {v:g}" for k, v in values.items())
        + "; set them on the Learn page)"
    )
