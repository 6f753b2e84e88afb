"""The Streamlit pages' shared widgets: only wiring from widgets to the engine (:mod:`refiner.app`)."""
