"""The vocabulary every layer shares: class lists, scores, atomic files, windows, the device, paths.

Nothing here imports any other part of Refiner, so every layer above may use it.
"""
