"""Refiner web app: the pages in the order a user goes through them.

Run with ``make run`` (or ``streamlit run app.py``). This file only declares the navigation, so
the sidebar names every page after its step (Streamlit would label the entry script "app");
each page in ``pages/`` stays thin: it reads the workspace, calls :mod:`refiner`, and draws.
"""

import streamlit as st

#: (script, sidebar title, URL path): the start page first, then the user's path.
PAGES = [
    ("pages/0_Tile.py", "Tile and workspace", ""),
    ("pages/1_Label.py", "Label", "Label"),
    ("pages/2_Train.py", "Train", "Train"),
    ("pages/3_Iterations.py", "Iterations", "Iterations"),
    ("pages/4_Compare.py", "Compare", "Compare"),
    ("pages/5_Filters.py", "Filters", "Filters"),
    ("pages/6_Export.py", "Export", "Export"),
    ("pages/7_Learn.py", "Learn", "Learn"),
]

st.navigation([st.Page(path, title=title, url_path=url or None, default=not url) for path, title, url in PAGES]).run()
