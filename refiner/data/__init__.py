"""Tiles, labels and maps in and out of files: reading, vector labels, writing, resampling.

Also the exports (polygons, centre lines) and the synthetic scenes used by tests and the demo.
Imports only :mod:`refiner.core`.
"""
